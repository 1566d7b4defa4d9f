"""Evaluation of a trained model on a test split: metrics, lung attention and the report files."""

from .. import lazy_submodules

__getattr__ = lazy_submodules(__name__)
