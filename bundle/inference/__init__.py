"""Inference on any CXR files: the inputs of a run, batch postprocessing and the files written per image."""

from .. import lazy_submodules

__getattr__ = lazy_submodules(__name__)
