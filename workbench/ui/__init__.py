"""Widget-driven views over the workbench objects: ipywidgets for notebooks, Panel Viewers for
the app.

Each view is thin: a ``param.Parameterized`` model holds the state and logic (tests drive it
directly) and a ``pn.viewable.Viewer`` / ipywidgets box renders it.

- :mod:`workbench.ui.explore`: :class:`EmbedModel`/:class:`EmbedPanel` (a prompt's router
  probabilities, neighbours, map position and expert), :class:`ClusterMapModel`/
  :class:`ClusterMapPanel` (PCA / t-SNE / UMAP map, colouring, selection, relabelling),
  :func:`explore_widget`.
- :mod:`workbench.ui.mapping_editor` (model) / :mod:`workbench.ui.mapping_editor_views`: :class:`MappingEditorModel`/:class:`MappingEditorPanel`
  (category -> expert table, live metrics, frontier, optimise, undo/redo, load/save, atomic
  autosave), :func:`mapping_editor_widget`.

Names are resolved lazily, so ``import workbench.ui`` imports neither Panel nor plotly.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "EmbedModel": "workbench.ui.explore",
    "EmbedPanel": "workbench.ui.explore",
    "ClusterMapModel": "workbench.ui.explore",
    "ClusterMapPanel": "workbench.ui.explore",
    "explore_widget": "workbench.ui.explore",
    "MappingEditorModel": "workbench.ui.mapping_editor",
    "MappingEditorPanel": "workbench.ui.mapping_editor_views",
    "mapping_editor_widget": "workbench.ui.mapping_editor_views",
    # UI engineer B's views
    "ChatModel": "workbench.ui.chat",
    "ChatPanel": "workbench.ui.chat",
    "TierModel": "workbench.ui.tiers",
    "TierPanel": "workbench.ui.tiers",
    "ComposeModel": "workbench.ui.compose_view",
    "ComposePanel": "workbench.ui.compose_view",
    "compose_widget": "workbench.ui.compose_view",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'workbench.ui' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
