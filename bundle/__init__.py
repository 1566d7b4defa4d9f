"""chest_xray_ssl_multitask: components of the MONAI bundle, imported by its configs (``$import bundle``).

Subpackages and modules load on first use (``bundle.data.datalist``, ``bundle.ssl.methods``, ...), so a config
pays only for what it uses and config expressions can name any module from ``bundle`` down.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

__version__ = "0.12.0"


def lazy_submodules(package: str) -> Callable[[str], ModuleType]:
    """A module ``__getattr__`` that imports ``<package>.<name>`` on first access."""

    def __getattr__(name: str) -> ModuleType:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f".{name}", package)
        except ModuleNotFoundError as e:
            if e.name == f"{package}.{name}":
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
            raise

    return __getattr__


__getattr__ = lazy_submodules(__name__)
