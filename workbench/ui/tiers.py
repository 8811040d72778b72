"""The tier view (old import path): which experts sit in GPU, CPU and disk, with their bytes.

The model is :mod:`workbench.ui.models.tiers` (no Panel needed), the HTML
:func:`workbench.ui.render.tiers_html`, the Panel view :mod:`workbench.ui.panel.tiers`
(``TierPanel`` loads Panel when first asked for).

Examples
--------
>>> from workbench.ui.tiers import TierModel, TierPanel      # doctest: +SKIP
>>> tiers = TierModel(bundle.pool)                           # doctest: +SKIP
>>> tiers.by_tier()["cpu"]                                   # doctest: +SKIP
>>> TierPanel(tiers)                                         # doctest: +SKIP
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr
from workbench.ui.models.tiers import TIERS, TierModel, expert_notes, group_by_tier
from workbench.ui.render import format_bytes, tiers_html

__all__ = ["TIERS", "TierModel", "expert_notes", "format_bytes", "group_by_tier",
           "tiers_html"]  # + the lazy TierPanel

__getattr__ = lazy_getattr(__name__, {"TierPanel": "workbench.ui.panel.tiers"}, globals())
