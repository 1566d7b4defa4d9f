"""Config settings given on the command line: one parser for every boolean id.

``python -m monai.bundle run --resume false`` passes the STRING ``"false"``, which Python reads as true; every
boolean id of the bundle goes through ``as_bool`` so that all of them accept the same spellings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_bool"]

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def as_bool(value: Any, name: str) -> bool:
    """``value`` as a bool: ``True``/``False``, ``1``/``0``, or the strings true/false/1/0 (any case).

    Raises:
        ValueError: anything else, naming the id ``name``.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be True or False (or true/false, 1/0), got {value!r}")
