"""Training: the config and the loop (one file, readable in one sitting)."""

from ase_llmgen.training.config import TrainConfig
from ase_llmgen.training.loop import train

__all__ = ["TrainConfig", "train"]
