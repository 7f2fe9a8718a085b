"""Relaxation and energies of crystals with any ASE calculator registered through ``register_calculators``."""
