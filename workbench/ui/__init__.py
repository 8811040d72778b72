"""Views over the workbench objects, kept apart from the models they show.

- :mod:`workbench.ui.models`: the state and rules (``param`` objects; no Panel, bokeh or
  ipywidgets import): :class:`EmbedModel`, :class:`ClusterMapModel`, :class:`MappingEditorModel`,
  :class:`ChatModel`, :class:`TierModel`, :class:`ComposeModel`. Tests and notebooks drive them.
- :mod:`workbench.ui.panel`: the Panel Viewers of the app (``EmbedPanel``, ``ClusterMapPanel``,
  ``MappingEditorPanel``, ``ChatPanel``, ``TierPanel``, ``ComposePanel``): render a model,
  forward events to it.
- :mod:`workbench.ui.widgets`: the ipywidgets boxes for notebooks (``explore_widget``,
  ``mapping_editor_widget``, ``compose_widget``).
- :mod:`workbench.ui.render`: escaped HTML the views share.

The old modules (``workbench.ui.explore``, ``.mapping_editor``, ``.mapping_editor_views``,
``.chat``, ``.tiers``, ``.compose_view``) keep working: they re-export the models and load a view
only when it is asked for. Names are resolved lazily, so ``import workbench.ui`` imports neither
Panel nor plotly.
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr
from workbench.ui.models import MODELS

_LAZY = {
    **{name: module for name, module in MODELS.items() if name != "default_map_params"},
    "EmbedPanel": "workbench.ui.panel.explore",
    "ClusterMapPanel": "workbench.ui.panel.explore",
    "MappingEditorPanel": "workbench.ui.panel.mapping_editor",
    "ChatPanel": "workbench.ui.panel.chat",
    "TierPanel": "workbench.ui.panel.tiers",
    "ComposePanel": "workbench.ui.panel.compose",
    "explore_widget": "workbench.ui.widgets.explore",
    "mapping_editor_widget": "workbench.ui.widgets.mapping_editor",
    "compose_widget": "workbench.ui.widgets.compose",
}

__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr('workbench.ui', _LAZY, globals())


def __dir__() -> list[str]:
    return __all__
