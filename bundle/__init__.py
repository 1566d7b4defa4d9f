"""chest_xray_ssl_multitask: components of the MONAI bundle, imported by its configs (``$import bundle``).

Submodules load on first use (``bundle.data``, ``bundle.networks``, ...), so a config pays only for what it uses.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__version__ = "0.2.0"


def __getattr__(name: str) -> ModuleType:
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{name}":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        raise
