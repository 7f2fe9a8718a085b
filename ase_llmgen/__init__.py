"""ase-llmgen: language-model crystal generation for ASE and pymatgen."""

__version__ = "0.1.0"
