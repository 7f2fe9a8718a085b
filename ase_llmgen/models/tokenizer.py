"""A tokenizer that keeps digits, element symbols and structure characters as
single tokens, and each fixed prompt phrase as one token.

With ``coordinate_tokens`` the codec's own pieces (:attr:`ase_llmgen.registry.Codec.tokens`)
are single tokens too; for the paper format every fractional coordinate it writes
(``0.00`` .. ``0.99``): a site line takes 6 tokens instead of
15, so a crystal is about half as many tokens, which halves training and
sampling cost per crystal and shortens the distance, in tokens, between a site
and the earlier sites it must not repeat.

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

from ase_llmgen.registry import DEFAULT_CODEC, Codec
from ase_llmgen.text.prompts import FIXED_PHRASES, LATER_PHRASES

SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def _codec(codec: Codec | str | None) -> Codec:
    from ase_llmgen.plugins import get_codec

    return codec if isinstance(codec, Codec) else get_codec(codec or DEFAULT_CODEC)


def crystal_vocabulary(coordinate_tokens: bool = False, codec: Codec | str | None = None) -> list[str]:
    """Tokens in id order: specials, prompt phrases, elements, single ASCII characters, the codec's pieces
    (``coordinate_tokens``; the paper's coordinates), then the phrases added later (``LATER_PHRASES``)."""
    vocab = list(SPECIAL.values())
    vocab += [p for p in dict.fromkeys(FIXED_PHRASES) if p not in LATER_PHRASES]
    vocab += [s for s in chemical_symbols[1:] if len(s) == 2]
    # Single printable characters cover digits, '.', ' ', '-', one-letter elements
    # and anything else a user writes, so no text is ever <unk>.
    vocab += [c for c in string.printable if c not in "\x0b\x0c\r" and c not in vocab]
    # Appended last, so the ids of the character-level vocabulary stay the same with or without them.
    if coordinate_tokens:
        vocab += [t for t in dict.fromkeys(_codec(codec).tokens) if t not in vocab]
    vocab += [p for p in LATER_PHRASES if p not in vocab]
    return vocab


def build_tokenizer(coordinate_tokens: bool = False, codec: Codec | str | None = None) -> PreTrainedTokenizerFast:
    """Build the crystal tokenizer for ``codec`` (default: the paper's) from scratch (deterministic).

    ``coordinate_tokens`` adds the codec's pieces as single tokens (the paper's ``0.00`` .. ``0.99``);
    they are matched only where the codec's ``token_pattern`` finds them (the paper's: where a whole
    coordinate stands, not inside ``10.25`` or ``0.125``), so other numbers keep their digit-by-digit tokens.
    """
    codec = _codec(codec)
    vocab = crystal_vocabulary(coordinate_tokens, codec)
    pieces = set(codec.tokens) if coordinate_tokens else set()
    multi = sorted((t for t in vocab[len(SPECIAL) :] if len(t) > 1 and t not in pieces), key=len, reverse=True)
    # Longest match first: (the codec's pieces,) phrases, two-letter symbols, then any single character.
    pattern = "|".join(re.escape(t) for t in multi) + r"|[\s\S]"
    if coordinate_tokens and pieces:
        found = codec.token_pattern or "|".join(re.escape(t) for t in sorted(pieces, key=len, reverse=True))
        pattern = f"(?:{found})|" + pattern
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
