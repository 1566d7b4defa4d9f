"""Networks: the multi-task encoder-decoder (FlexibleUNet CNNs, or a ViT with a UNETR decoder: ``vit``; optionally
classifying the lungs only) and its tensor views, placement (device, memory format), export-safe shortcuts, weight
conversion."""

from .. import lazy_submodules
from .multitask import (
    MultiTaskClassifier,
    MultiTaskNet,
    MultiTaskSegmenter,
    build_encoder,
    class_probabilities,
    encoder_channels,
    lung_mask,
)
from .placement import place

__all__ = [
    "MultiTaskNet",
    "MultiTaskClassifier",
    "MultiTaskSegmenter",
    "build_encoder",
    "class_probabilities",
    "encoder_channels",
    "lung_mask",
    "place",
]

__getattr__ = lazy_submodules(__name__)
