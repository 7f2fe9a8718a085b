"""The crystal tokenizer, with and without one token per fractional coordinate."""

import torch

from ase_llmgen.models.bundle import token_ids
from ase_llmgen.models.tokenizer import build_tokenizer
from ase_llmgen.sampling.decode import GrammarMasks, sample_rows
from ase_llmgen.sampling.sampler import token_texts
from ase_llmgen.text import encode
from ase_llmgen.text.grammar import CrystalGrammar
from ase_llmgen.text.paper import COORDINATES
from ase_llmgen.text.prompts import LATER_PHRASES, generation_prompt


def test_coordinates_are_one_token_only_where_a_whole_coordinate_stands():
    tok = build_tokenizer(coordinate_tokens=True)
    text = "4.1 4.1 10.25\n90 90 120\nNa\n0.00 0.50 0.99\nCl\n0.125 1.05 -0.12\n"
    pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"])
    assert pieces[pieces.index("Na") :] == (
        ["Na", "\n", "0.00", " ", "0.50", " ", "0.99", "\n", "Cl", "\n"]
        + ["0", ".", "1", "2", "5", " ", "1", ".", "0", "5", " ", "-", "0.12", "\n"]
    )
    assert "0.25" not in pieces  # not cut out of the lattice length 10.25
    assert tok.decode(tok(text)["input_ids"]) == text


def test_crystal_texts_round_trip_and_shrink(sample_records):
    chars, coords = build_tokenizer(), build_tokenizer(coordinate_tokens=True)
    # Coordinates are appended to the character vocabulary (before the phrases added later): the rest keep their ids.
    older = list(range(len(chars) - len(LATER_PHRASES)))
    assert coords.convert_ids_to_tokens(older) == chars.convert_ids_to_tokens(older)
    assert len(coords) == len(chars) + len(COORDINATES)
    for record in sample_records:
        text = encode(record.atoms)
        ids = coords(text)["input_ids"]
        assert coords.decode(ids) == text
        n_sites = len(record.atoms)
        assert len(chars(text)["input_ids"]) - len(ids) == 3 * 3 * n_sites  # 4 characters -> 1 token, 3 per site


def test_the_sampler_writes_coordinates_as_whole_tokens(tiny_coord_bundle):
    tok = tiny_coord_bundle.tokenizer
    grammar = CrystalGrammar(max_atoms=4)
    texts = token_texts(tok)
    masks = GrammarMasks(grammar, texts, tok.eos_token_id, tiny_coord_bundle.model.config.vocab_size)
    rows = sample_rows(
        tiny_coord_bundle.model,
        token_ids(tok, generation_prompt(), eos=False),
        16,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        max_new_tokens=150,
        temperature=1.5,  # a random model at a high temperature would write digits if it could
        top_p=1.0,
        generator=torch.Generator().manual_seed(0),
        masks=masks,
    )
    finished = [r for r in rows if r is not None]
    assert finished
    for row in finished:
        pieces = [texts[t] for t in row]
        lines = "".join(pieces).split("\n")
        n_coordinates = sum(len(line.split()) for line in lines[3::2])
        assert sum(p in COORDINATES for p in pieces) == n_coordinates > 0
        assert grammar.can_end(grammar.advance(grammar.start, "".join(pieces)))
