"""Data: readers for every CXR format, load transforms, datalists and splits, and two-view pretraining datasets."""

from .. import lazy_submodules

__getattr__ = lazy_submodules(__name__)
