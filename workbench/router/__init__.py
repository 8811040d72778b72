"""Routers on prompt embeddings: the two-step :class:`CategoryRouter` and the single-step
:class:`DirectRouter`.

The CoE paper (arXiv 2412.01868) routes in two steps: a classifier predicts a prompt's *category*
from its embedding, then a category-to-expert map (:mod:`workbench.mapping`) picks the expert.
Prompts the classifier is unsure about go to a fallback category served by a strong generalist
("Robust-CoE"). :class:`DirectRouter` is the single-step alternative the paper compares against:
estimate every expert's quality on a prompt from its nearest calibration neighbours and pick the
best quality per cost.

Both routers are saved without pickle (one ``.npz`` of numeric/string arrays plus a JSON header), so
a router file from elsewhere can never run code when loaded.

Modules: :mod:`~workbench.router.category` (CategoryRouter, cross_val_proba),
:mod:`~workbench.router.heads` (the classifier heads as array functions),
:mod:`~workbench.router.direct` (DirectRouter), :mod:`~workbench.router.report` (Routing,
RouterReport), :mod:`~workbench.router.io` (the file format) and :mod:`~workbench.router.common`
(what both share). The package imports scikit-learn; ``import workbench`` does not import it.
"""
from __future__ import annotations

from workbench.router.category import CategoryRouter, cross_val_proba
from workbench.router.common import CALIBRATIONS as CALIBRATIONS
from workbench.router.common import CONFIDENCES as CONFIDENCES
from workbench.router.common import HEADS as HEADS
from workbench.router.common import RouterNotFittedError
from workbench.router.direct import DirectRouter
from workbench.router.report import RouterReport, Routing, router_report

__all__ = [
    "CategoryRouter",
    "DirectRouter",
    "Routing",
    "RouterNotFittedError",
    "RouterReport",
    "cross_val_proba",
    "router_report",
]
