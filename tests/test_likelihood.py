import numpy as np
import pytest

from ase_llmgen.metrics.likelihood import ipt, perplexities
from ase_llmgen.text import paper


def test_perplexity_of_a_random_model_is_near_vocabulary_size(tiny_bundle, sample_records):
    texts = [paper.encode(r.atoms) for r in sample_records[:4]]
    ppl = perplexities(tiny_bundle, texts, batch_size=3)
    assert ppl.shape == (4,) and np.all(ppl > 1)
    # A random 216-token model is roughly uniform: perplexity within a factor of a few of the vocabulary.
    assert np.all(ppl < 5 * len(tiny_bundle.tokenizer)) and np.all(ppl > len(tiny_bundle.tokenizer) / 5)
    # Batching does not change the numbers.
    np.testing.assert_allclose(perplexities(tiny_bundle, texts, batch_size=1), ppl, rtol=1e-4)


def test_ipt_is_nonnegative_and_zero_without_translations(tiny_bundle, sample_records):
    atoms = [r.atoms for r in sample_records[:3]]
    result = ipt(tiny_bundle, atoms, n_translations=3, seed=0)
    assert result["ipt"] >= 0 and result["n_structures"] == 3
    assert ipt(tiny_bundle, atoms, n_translations=1)["ipt"] == 0.0


def test_nats_per_character_adds_up_and_compares_tokenizers(tiny_bundle, tiny_coord_bundle, sample_records):
    from ase_llmgen.metrics.likelihood import nats_per_character, negative_log_likelihoods

    texts = [paper.encode(r.atoms) for r in sample_records[:4]]
    nll, n_tokens = negative_log_likelihoods(tiny_bundle, texts)
    np.testing.assert_allclose(np.exp(nll / n_tokens), perplexities(tiny_bundle, texts), rtol=1e-6)
    per_char = nats_per_character(tiny_bundle, texts)
    assert per_char * sum(len(t) + 1 for t in texts) == pytest.approx(nll.sum(), rel=1e-9)
    # The coordinate tokenizer scores the same characters as fewer tokens; per character stays defined.
    _, coord_tokens = negative_log_likelihoods(tiny_coord_bundle, texts)
    assert coord_tokens.sum() < n_tokens.sum()
    assert ipt(tiny_coord_bundle, [r.atoms for r in sample_records[:2]], n_translations=1)["nats_per_char"] > 0


def test_ipt_scores_texts_in_the_models_site_order(tiny_bundle, sample_records):
    """A model trained on spatially sorted sites is scored on sorted texts, so its likelihood changes."""
    import dataclasses

    from ase_llmgen.text import augment

    atoms = [r.atoms for r in sample_records[:3]]
    assert tiny_bundle.site_order == "as_read"
    spatial = dataclasses.replace(tiny_bundle, meta={"train_config": {"site_order": "spatial"}})
    assert spatial.site_order == "spatial"
    sorted_texts = [paper.encode(augment.sort_sites(a)) for a in atoms]
    as_read = ipt(tiny_bundle, atoms, n_translations=1)
    by_order = ipt(spatial, atoms, n_translations=1)
    assert by_order["perplexity"] == pytest.approx(float(perplexities(tiny_bundle, sorted_texts).mean()), rel=1e-5)
    assert by_order["perplexity"] != pytest.approx(as_read["perplexity"], rel=1e-6)
    with pytest.raises(ValueError, match="site order"):
        augment.order_sites(atoms[0], "random")
