"""Plotly figures: pure functions, data in, figure out. Importing :mod:`workbench` never imports
plotly; these modules do. Names are resolved lazily from the sub-modules below.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    # cluster maps
    "scatter_map": "workbench.plots.maps",
    "mark_points": "workbench.plots.maps",
    # routing and mapping
    "confusion_figure": "workbench.plots.router",
    "frontier_figure": "workbench.plots.mapping",
    "category_expert_heatmap": "workbench.plots.mapping",
    # experts and composition
    "tier_figure": "workbench.plots.experts",
    "graph_figure": "workbench.plots.compose",
}


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'workbench.plots' has no attribute {name!r}") from None
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(_LAZY)
