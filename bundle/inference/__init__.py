"""Inference on any CXR files: the inputs of a run, batch postprocessing and the files written per image; the same
predictions from Python (``load_model``, from ``predictor``, loaded on first access)."""

from .. import lazy_submodules

__getattr__ = lazy_submodules(__name__, {"load_model": "predictor"})
