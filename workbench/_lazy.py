"""Module-level ``__getattr__`` that imports a name's module only when the name is asked for.

``workbench`` itself (so ``import workbench`` stays light), ``workbench.ui``, ``workbench.ui.models``
and the old view modules (``workbench.ui.explore``, ``.chat``, ``.tiers``, ``.compose_view``) use
it: their models import without Panel, their views load Panel when first named.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(module_name: str, names: Mapping[str, str],
                 namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``module_name`` resolving ``names`` (``name -> module``) on first use
    and caching the value in ``namespace`` (the module's ``globals()``)."""

    def __getattr__(name: str) -> Any:
        try:
            source = names[name]
        except KeyError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(source), name)
        namespace[name] = value
        return value

    return __getattr__
