"""Explore prompts (old import path): the Embed model and view, and the cluster map.

The models live in :mod:`workbench.ui.models` (no Panel needed), the Panel views in
:mod:`workbench.ui.panel.explore`, the ipywidgets box in :mod:`workbench.ui.widgets.explore`.
Importing this module imports no Panel; ``EmbedPanel``, ``ClusterMapPanel``, ``CSS`` and
``explore_widget`` load their view module when first asked for.

Examples
--------
>>> from workbench.ui.explore import ClusterMapModel, EmbedModel        # doctest: +SKIP
>>> cm = ClusterMapModel.from_bundle(bundle)                              # doctest: +SKIP
>>> cm.color_by = "router_error"; cm.select([0, 5, 9]); cm.selected       # doctest: +SKIP
>>> cm.relabel("math"); cm.save_labels("my_labels.jsonl")                 # doctest: +SKIP
>>> em = EmbedModel.from_bundle(bundle, map=cm.map)                       # doctest: +SKIP
>>> em.text = "What is the integral of x^2?"; em.expert, em.probabilities  # doctest: +SKIP
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr
from workbench.ui.models.cluster_map import ClusterMapModel
from workbench.ui.models.common import COLOR_BY, METHODS
from workbench.ui.models.embed import EmbedModel
from workbench.ui.render import escape_frame

__all__ = ["COLOR_BY", "METHODS", "ClusterMapModel", "EmbedModel", "escape_frame"]  # + lazy views

_VIEWS = {"EmbedPanel": "workbench.ui.panel.explore", "ClusterMapPanel": "workbench.ui.panel.explore",
          "CSS": "workbench.ui.panel.explore", "explore_widget": "workbench.ui.widgets.explore"}
__getattr__ = lazy_getattr(__name__, _VIEWS, globals())
