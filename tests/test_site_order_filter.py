"""The site-order filter: a spatial-order model writes each site strictly after the last (x, then y, then z)."""

import numpy as np
import pytest

from ase_llmgen.models.tokenizer import build_tokenizer
from ase_llmgen.sampling.decode import FilteredMasks
from ase_llmgen.sampling.grammar import CrystalGrammar
from ase_llmgen.sampling.order import SiteOrder
from ase_llmgen.sampling.sampler import Sampler, SampleSettings, token_texts

LATTICE = "3.0 4.0 5.0\n90 90 90\n"


def _masks_after(text: str, tokenizer=None):
    tokenizer = tokenizer or build_tokenizer()
    texts = token_texts(tokenizer)
    masks = FilteredMasks(CrystalGrammar(max_atoms=8), texts, tokenizer.eos_token_id, len(texts), [SiteOrder])
    state = masks.start()
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        state = masks.advance(state, token)
    return masks, state, texts


def _allowed_texts(text: str) -> set[str]:
    masks, state, texts = _masks_after(text)
    mask, _ = masks.allowed(state)
    return {texts[i] for i in mask.nonzero().flatten().tolist()}


def test_the_first_site_is_free():
    assert {str(d) for d in range(10)} <= _allowed_texts(LATTICE + "Na\n0.")


def test_a_new_site_cannot_step_back():
    after = LATTICE + "Na\n0.50 0.20 0.10\nCl\n0."
    assert _allowed_texts(after) & set("0123456789") == set("56789")  # x >= 0.50
    assert _allowed_texts(after + "5") & set("0123456789") == set("0123456789")  # x = 0.50 still possible
    # x = 0.50 and y = 0.20: z must be above 0.10
    assert _allowed_texts(after + "50 0.20 0.") & set("0123456789") == set("123456789")
    assert _allowed_texts(after + "50 0.20 0.1") & set("0123456789") == set("123456789")  # not 0.10 again
    # x = 0.50 and y above 0.20: any z
    assert _allowed_texts(after + "50 0.21 0.") & set("0123456789") == set("0123456789")


def test_after_the_highest_site_only_the_end_is_left():
    masks, state, texts = _masks_after(LATTICE + "Na\n0.99 0.99 0.99\n")
    mask, forced = masks.allowed(state)
    assert forced == masks.eos_id and mask.sum() == 1


def test_the_line_that_would_repeat_the_last_site_cannot_end():
    masks, state, texts = _masks_after(LATTICE + "Na\n0.25 0.25 0.25\nNa\n0.25 0.25 0.2")
    mask, _ = masks.allowed(state)
    allowed = {texts[i] for i in mask.nonzero().flatten().tolist()}
    assert "5" not in allowed and "6" in allowed


def _sorted(text: str) -> bool:
    lines = text.strip().split("\n")[3::2]
    sites = [tuple(line.split()) for line in lines]
    return all(a < b for a, b in zip(sites, sites[1:]))


@pytest.fixture
def spatial_bundle(tiny_bundle, monkeypatch):
    """The tiny model, labelled as trained on sites in spatial order."""
    monkeypatch.setattr(tiny_bundle, "meta", dict(tiny_bundle.meta, train_config={"site_order": "spatial"}))
    return tiny_bundle


def test_a_spatial_model_samples_sorted_sites(spatial_bundle):
    settings = SampleSettings(max_atoms=6, min_atoms=3, batch_size=16, require_valid=False)
    atoms, _ = Sampler(spatial_bundle, settings, seed=0).sample(16)
    assert len(atoms) == 16 and all(a.info["order_enforced"] for a in atoms)
    assert all(_sorted(a.info["text"]) for a in atoms)


def test_the_order_can_be_switched_off(spatial_bundle):
    settings = SampleSettings(max_atoms=6, min_atoms=3, batch_size=16, require_valid=False, enforce_order=False)
    free, _ = Sampler(spatial_bundle, settings, seed=0).sample(16)
    assert not any(a.info["order_enforced"] for a in free)
    assert not all(_sorted(a.info["text"]) for a in free)  # a random model steps back somewhere


def test_a_model_in_the_papers_order_has_no_order_to_keep(tiny_bundle):
    assert tiny_bundle.site_order == "as_read"
    assert not Sampler(tiny_bundle, SampleSettings()).order_enforced


def test_order_and_guard_together(spatial_bundle):
    settings = SampleSettings(max_atoms=6, min_atoms=3, batch_size=16, require_valid=False, min_distance=0.5)
    atoms, _ = Sampler(spatial_bundle, settings, seed=0).sample(8)
    assert all(_sorted(a.info["text"]) for a in atoms)
    assert all(a.get_all_distances(mic=True)[~np.eye(len(a), dtype=bool)].min() >= 0.5 for a in atoms)
