"""A tokenizer that keeps digits, element symbols and structure characters as
single tokens, and each fixed prompt phrase as one token.

It is a standard ``PreTrainedTokenizerFast`` (WordLevel model + a regex
pre-tokenizer), so it saves as ``tokenizer.json`` and loads with
``AutoTokenizer.from_pretrained`` like any Hugging Face tokenizer.
"""

from __future__ import annotations

import re
import string

from ase.data import chemical_symbols
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ase_llmgen.text.prompts import FIXED_PHRASES

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def crystal_vocabulary() -> list[str]:
    """Tokens in id order: specials, prompt phrases, elements, then single ASCII characters."""
    vocab = list(SPECIAL.values())
    vocab += list(dict.fromkeys(FIXED_PHRASES))
    vocab += [s for s in chemical_symbols[1:] if len(s) == 2]
    # Single printable characters cover digits, '.', ' ', '-', one-letter elements
    # and anything else a user writes, so no text is ever <unk>.
    vocab += [c for c in string.printable if c not in "\x0b\x0c\r" and c not in vocab]
    return vocab


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the crystal tokenizer from scratch (deterministic)."""
    vocab = crystal_vocabulary()
    multi = sorted((t for t in vocab[len(SPECIAL) :] if len(t) > 1), key=len, reverse=True)
    # Longest match first: phrases, then two-letter symbols, then any single character.
    pattern = "|".join(re.escape(t) for t in multi) + r"|[\s\S]"
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
