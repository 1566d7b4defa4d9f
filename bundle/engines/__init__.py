"""Glue between the bundle's batches and MONAI's engines: prepare_batch, postprocessing, hooks and progress."""

from .. import lazy_submodules

__getattr__ = lazy_submodules(__name__)
