"""Structure checks (validity, symmetry, conditions) and their home in ASE databases.

Imports no torch: usable on any ASE database, whatever wrote it.
"""
