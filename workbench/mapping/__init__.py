"""The category-to-expert map, its metrics, and the exact budgeted optimizer.

Modules: :mod:`~workbench.mapping.map` (CategoryExpertMap, its edit history, metrics and files),
:mod:`~workbench.mapping.problem` (category means and weights, tolerances, the optimizer's
problem), :mod:`~workbench.mapping.frontier` (the exact Pareto programme) and
:mod:`~workbench.mapping.optimize` (optimize_mapping, pareto_frontier, monolithic_baselines).
The map imports nothing of the optimizer, so there is no import cycle.

A :class:`CategoryExpertMap` sends every router category (plus the ``"fallback"`` category for
low-confidence prompts) to one expert. Its quality is the category-frequency-weighted mean of the
chosen experts' per-category scores; its cost is the *average active parameters* (the same
weighting over the experts' active parameters) and the *resident parameters* (total parameters of
the distinct experts it uses, fallback included, a shared base counted once).

:func:`optimize_mapping` finds the exact best map under a budget on average active parameters
(optionally also on resident parameters or the number of distinct experts), and
:func:`pareto_frontier` returns the whole quality/cost frontier in one call.

How it is exact
---------------
With one expert per category, the problem is a multiple-choice knapsack: category ``c`` with
weight ``w_c`` choosing expert ``e`` costs ``w_c * active_e`` and earns ``w_c * score[c, e]``.
A dynamic programme over categories keeps the set of non-dominated ``(cost, value)`` partial maps
(no other partial map is both cheaper and better), so after the last category that set *is* the
Pareto frontier and the optimum for any budget is a binary search away. Back-pointers recover each
map. Resident-parameter and expert-count limits are handled by an exact branch and bound over the
set of allowed experts that uses the same programme as its bound (per budget), or by the envelope
of the frontiers of every maximal expert set within the limits (the whole frontier). Ties in score
go to the cheaper map. Budgets are compared with a relative tolerance of 1e-9.

Categories with zero weight cost nothing and earn nothing; they go to the best-scoring expert
already in use, so they never add resident memory.

Examples
--------
>>> import pandas as pd
>>> from workbench.registry import ModelRegistry
>>> means = pd.DataFrame({"small": [0.9, 0.2], "large": [0.95, 0.8]}, index=["chat", "math"])
>>> reg = ModelRegistry({"small": 7.0, "large": 70.0})
>>> from workbench.mapping import optimize_mapping
>>> m = optimize_mapping(means, {"chat": 0.5, "math": 0.5}, reg, budget_active_b=40)
>>> m.expert_for("chat"), m.expert_for("math"), m.fallback_expert
('small', 'large', 'large')
"""
from __future__ import annotations

from workbench.mapping.history import Edit, EditGroup, MapHistory
from workbench.mapping.map import CategoryExpertMap, MapMetrics
from workbench.mapping.optimize import (
    FrontierPoint,
    monolithic_baselines,
    optimize_mapping,
    pareto_frontier,
)

__all__ = [
    "CategoryExpertMap",
    "Edit",
    "EditGroup",
    "MapHistory",
    "MapMetrics",
    "FrontierPoint",
    "optimize_mapping",
    "pareto_frontier",
    "monolithic_baselines",
]
