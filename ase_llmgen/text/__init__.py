"""Crystals as text: codecs, augmentation and the prompts of the three tasks.

Imports only numpy, ase and pymatgen (no torch), so it is cheap to use anywhere.
"""

from ase_llmgen.text.errors import CrystalTextError
from ase_llmgen.text.paper import decode, decode_structure, encode

__all__ = ["CrystalTextError", "decode", "decode_structure", "encode"]
