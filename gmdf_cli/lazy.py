"""Package names loaded on first use (PEP 562): importing a package (for a config, a registry, the scoring rule)
costs no torch import until a name that needs it is used."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: ``homes`` maps each lazily exported name to its submodule
    (relative, e.g. ``".pipeline"``), imported when the name is first asked for."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(importlib.import_module(homes[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
