"""State and rules the workbench views show: plain ``param.Parameterized`` objects, no Panel,
bokeh or ipywidgets import. Tests and notebooks drive them directly; the views in
:mod:`workbench.ui.panel` and :mod:`workbench.ui.widgets` only render them and forward events.

- :class:`EmbedModel` (:mod:`.embed`): a prompt's routing (``CoE.explain``), neighbours, map position.
- :class:`ClusterMapModel` (:mod:`.cluster_map`): PCA / t-SNE / UMAP map, colouring, selection,
  relabels (:class:`workbench.prompts.Relabels`).
- :class:`MappingEditorModel` (:mod:`.mapping_editor`): the category -> expert editor.
- :class:`ChatModel` (:mod:`.chat`), :class:`TierModel` (:mod:`.tiers`), :class:`ComposeModel`
  (:mod:`.compose`).

Names load lazily, so ``import workbench.ui.models`` is cheap.

Examples
--------
>>> from workbench.ui.models import ClusterMapModel       # doctest: +SKIP
>>> cm = ClusterMapModel.from_bundle(bundle, warm=False)  # doctest: +SKIP
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr

#: model name -> module (``workbench.ui`` lists the same models)
MODELS = {
    "EmbedModel": "workbench.ui.models.embed",
    "ClusterMapModel": "workbench.ui.models.cluster_map",
    "MappingEditorModel": "workbench.ui.models.mapping_editor",
    "ChatModel": "workbench.ui.models.chat",
    "TierModel": "workbench.ui.models.tiers",
    "ComposeModel": "workbench.ui.models.compose",
    "default_map_params": "workbench.ui.models.common",
}

_LAZY = MODELS
__all__ = sorted(_LAZY)


__getattr__ = lazy_getattr('workbench.ui.models', _LAZY, globals())


def __dir__() -> list[str]:
    return __all__
