"""Training probes: train a classifier (or the PDE with its solver in the loop) and record how it behaves.

``spec`` (the run and the network it describes), ``data`` (the task and the batches of every
step), ``measures`` (gradient norms, attention entropy, validation, drift), ``checkpoint``
(safetensors, by parameter name) and ``loop`` (``train``). It builds on the model layer and
knows nothing of the command line or of run directories (``pdesim.app``).
"""

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .data import batch_stream, load_data
from .loop import TrainingSetup, TrainOutcome, learning_rate, prepare, train
from .spec import MODEL_FIELDS, TrainSpec, build_model, check_memory, estimate_memory

__all__ = [
    "MODEL_FIELDS", "TrainOutcome", "TrainSpec", "TrainingSetup", "batch_stream", "build_model", "check_memory",
    "estimate_memory", "learning_rate", "load_checkpoint", "load_data", "prepare", "read_checkpoint",
    "save_checkpoint", "train",
]
