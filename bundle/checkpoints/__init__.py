"""Checkpoints: weights read safely (``weights``), the recipe each carries (``recipe``), pretrained weights
transferred (``pretrained``), and resumable training with atomic writes (``checkpointer``)."""

from ..values import Rule, boolean, described, existing_file, number, optional
from .checkpointer import TrainingCheckpointer, previous_path
from .pretrained import MIN_MATCH, load_pretrained
from .recipe import check_pretrained_recipe, check_recipe, make_recipe, read_recipe, recipe_path, save_weights
from .weights import WeightsError, check_weights, load_weights, non_finite_tensors

__all__ = [
    "WeightsError",
    "load_weights",
    "load_pretrained",
    "check_weights",
    "non_finite_tensors",
    "previous_path",
    "read_recipe",
    "check_recipe",
    "check_pretrained_recipe",
    "make_recipe",
    "recipe_path",
    "save_weights",
    "TrainingCheckpointer",
    "RULES",
]

# the settings this module consumes (bundle.settings gathers every component's table)
RULES: dict[str, Rule] = {
    "pretrained_ckpt": described(
        optional(existing_file), "weights to start from (matching keys are loaded, per part logged)"
    ),
    "ckpt_file": described(existing_file, "the weights inference uses"),
    "pretrained_min_match": described(
        number(0, 1),
        f"share of the encoder's tensors ``pretrained_ckpt`` must provide ({MIN_MATCH:g}: weights of another "
        "backbone are refused); lower it for a deliberate partial transfer",
    ),
    "resume": described(boolean, "continue from the resume state in ``ckpt_dir`` when there is one"),
    "keep_resume_state": described(
        boolean, "keep the resume state when all epochs are trained (to raise ``max_epochs`` and continue later)"
    ),
}
