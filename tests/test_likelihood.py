import numpy as np

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
