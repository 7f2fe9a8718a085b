"""Datasets: read crystals from CDVAE CSVs, ASE databases or any ASE-readable file,
and turn them into the stream of training texts of the multi-task curriculum."""

from ase_llmgen.data.curriculum import CurriculumConfig, training_text, training_texts
from ase_llmgen.data.readers import DataError, Record, read_records

__all__ = ["CurriculumConfig", "DataError", "Record", "read_records", "training_text", "training_texts"]
