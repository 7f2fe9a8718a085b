"""Sampling: the token-level crystal grammar, the batched sampler, and the
generators that expose it as ASE / pymatgen structure sources."""
