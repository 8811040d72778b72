"""Compatibility module: the optimizer lives in :mod:`workbench.mapping.optimize`.

``from workbench.optimize import optimize_mapping, pareto_frontier, monolithic_baselines`` keeps
working; new code imports them from :mod:`workbench.mapping`.
"""
from __future__ import annotations

from workbench.mapping.optimize import (
    FrontierPoint,
    monolithic_baselines,
    optimize_mapping,
    pareto_frontier,
)

__all__ = ["FrontierPoint", "monolithic_baselines", "optimize_mapping", "pareto_frontier"]
