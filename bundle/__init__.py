"""chest_xray_ssl_multitask: components of the MONAI bundle, imported by its configs (``$import bundle``).

Subpackages and modules load on first use (``bundle.data.datalist``, ``bundle.ssl.methods``, ...), so a config
pays only for what it uses and config expressions can name any module from ``bundle`` down. ``bundle.load_model``
(``bundle.inference.predictor``) loads the same way, on first access: predictions from Python.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__version__ = "0.15.1"


def lazy_submodules(package: str, attributes: Mapping[str, str] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``<package>.<name>`` on first access.

    ``attributes`` maps a name to the submodule (relative to ``package``) that defines it: ``bundle.load_model``
    is ``bundle.inference.predictor.load_model``, imported only when it is first asked for.
    """
    lazy = dict(attributes or {})

    def __getattr__(name: str) -> Any:
        if name in lazy:
            return getattr(importlib.import_module(f".{lazy[name]}", package), name)
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f".{name}", package)
        except ModuleNotFoundError as e:
            if e.name == f"{package}.{name}":
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
            raise

    return __getattr__


__getattr__ = lazy_submodules(__name__, {"load_model": "inference.predictor"})
