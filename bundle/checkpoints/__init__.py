"""Checkpoints: weights read safely (``weights``), pretrained weights transferred (``pretrained``), and resumable
training with atomic writes (``checkpointer``)."""

from ..values import Rule, boolean, described, existing_file, optional
from .checkpointer import TrainingCheckpointer, previous_path
from .pretrained import load_pretrained
from .weights import WeightsError, check_weights, load_weights, non_finite_tensors

__all__ = [
    "WeightsError",
    "load_weights",
    "load_pretrained",
    "check_weights",
    "non_finite_tensors",
    "previous_path",
    "TrainingCheckpointer",
    "RULES",
]

# the settings this module consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "pretrained_ckpt": described(
        optional(existing_file), "weights to start from (matching keys are loaded, per part logged)"
    ),
    "ckpt_file": described(existing_file, "the weights inference uses"),
    "resume": described(boolean, "continue from the resume state in ``ckpt_dir`` when there is one"),
}
