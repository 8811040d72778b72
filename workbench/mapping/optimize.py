"""The exact budgeted optimizer: :func:`optimize_mapping`, :func:`pareto_frontier` and
:func:`monolithic_baselines`.

With one expert per category, choosing a category-to-expert map is a multiple-choice knapsack:
category ``c`` with weight ``w_c`` choosing expert ``e`` costs ``w_c * active_e`` and earns
``w_c * score[c, e]``. The exact Pareto programme (:mod:`workbench.mapping.frontier`) solves it for
every budget at once. Resident-parameter and expert-count limits are handled by an exact branch and
bound over the set of allowed experts (per budget), or by the envelope of the frontiers of every
maximal expert set within the limits (the whole frontier). See :mod:`workbench.mapping` for the map
itself; these functions are re-exported there.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import InfeasibleBudgetError, MappingError
from workbench.mapping.frontier import min_cost, nondominated, pareto
from workbench.mapping.map import CategoryExpertMap
from workbench.mapping.problem import REL_TOL, VALUE_TOL, Problem, prepare_problem
from workbench.registry import ModelRegistry

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.scores import ExpertScores

__all__ = ["FrontierPoint", "monolithic_baselines", "optimize_mapping", "pareto_frontier"]


@dataclass(frozen=True)
class FrontierPoint:
    """One optimal map on the quality/cost frontier.

    ``budget_b`` is the budget asked for (or, for breakpoints, the map's own average active
    parameters); ``average_active_params_b <= budget_b``.
    """

    budget_b: float
    expected_score: float
    average_active_params_b: float
    resident_params_b: float
    mapping: "CategoryExpertMap" = field(repr=False)


def map_for(p: Problem, choice) -> CategoryExpertMap:
    """The map of a full per-row expert choice."""
    return CategoryExpertMap(
        p.assignment(choice), experts=p.registry, categories=p.categories,
        fallback_category=p.fallback_category,
    )


def _infeasible_budget(p: Problem, budget: float, context: str) -> InfeasibleBudgetError:
    smallest = min_cost(p)
    locked_note = " with the locked categories" if p.locked_indices else ""
    return InfeasibleBudgetError(
        f"{context}: budget_active_b={budget:g} is below the smallest feasible average active "
        f"parameters, {smallest:.6g}B (every category on its cheapest allowed expert{locked_note}); "
        f"raise the budget to at least {smallest:.6g}"
    )



# ---------------------------------------------------------------------------------------------
# branch and bound for resident-parameter / expert-count limits
# ---------------------------------------------------------------------------------------------
def _solve_limited(
    p: Problem,
    budget: float | None,
    max_resident_b: float | None,
    max_experts: int | None,
    *,
    minimise_cost: bool = False,
) -> tuple[float, np.ndarray] | None:
    """Exact best choice under the budget and the limits (None if none is feasible).

    Nodes fix a set of allowed experts and a set of required (resident) experts; the bound is the
    Pareto programme over the allowed experts. With ``minimise_cost`` the objective is the least
    average active parameters (used to report the smallest feasible budget).
    """
    n_e = len(p.experts)
    res_cap = math.inf if max_resident_b is None else max_resident_b * (1 + REL_TOL) + REL_TOL
    k_cap = n_e + 1 if max_experts is None else int(max_experts)
    fb_idx = p.experts.index(p.fallback_expert) if p.fallback_expert in p.experts else None
    required0 = np.zeros(n_e, dtype=bool)
    required0[p.locked_indices] = True
    # what adding expert j costs in memory: its own parameters, plus its shared base (LoRA
    # adapters of one base model) unless an expert already counted brings that base
    infos = [p.registry[e] for e in p.experts]
    own = np.array([m.own_params_b for m in infos])
    base_size = np.array([m.base_params_b or 0.0 for m in infos])
    base_of = [m.base for m in infos]

    def usage(req: np.ndarray) -> tuple[float, int]:
        names = [p.experts[j] for j in np.flatnonzero(req)] + [p.fallback_expert]
        return p.registry.resident(names), len(set(names))

    def tighten(allowed: np.ndarray, req: np.ndarray) -> np.ndarray | None:
        res, cnt = usage(req)
        if res > res_cap or cnt > k_cap:
            return None
        allowed = allowed.copy()
        others = allowed & ~req
        if fb_idx is not None:
            others[fb_idx] = False  # the fallback expert is resident anyway: free to use
        free_res = res_cap - res
        present = {base_of[j] for j in np.flatnonzero(req)} | {p.registry[p.fallback_expert].base}
        adds = own + np.array([0.0 if base_of[j] in present else base_size[j] for j in range(n_e)])
        allowed[others & (adds > free_res)] = False
        if cnt >= k_cap:
            allowed &= req | (np.arange(n_e) == (fb_idx if fb_idx is not None else -1))
        return allowed

    def solve(allowed: np.ndarray):
        if minimise_cost:
            fr = pareto(p, allowed)
            if fr is None:
                return None
            j = 0
            return -float(fr.cost[j]), fr.recover([j])[0]
        fr = pareto(p, allowed, budget)
        if fr is None:
            return None
        j = fr.lookup(budget)
        if j < 0:
            return None
        return float(fr.value[j]), fr.recover([j])[0]

    root_allowed = tighten(np.ones(n_e, dtype=bool), required0)
    if root_allowed is None:
        return None
    best: tuple[float, np.ndarray] | None = None
    counter = 0
    heap: list = []
    sol = solve(root_allowed)
    if sol is None:
        return None
    heapq.heappush(heap, (-sol[0], counter, root_allowed, required0, sol))
    while heap:
        neg_bound, _, allowed, req, sol = heapq.heappop(heap)
        bound = -neg_bound
        if best is not None and bound <= best[0] + VALUE_TOL * max(1.0, abs(best[0])):
            break
        val, choice = sol
        used = req.copy()
        used[np.unique(choice)] = True
        res, cnt = usage(used)
        if res <= res_cap and cnt <= k_cap:
            if best is None or val > best[0]:
                best = (val, choice)
            continue
        # branch on the biggest used expert that is not yet required
        cand = [j for j in np.unique(choice) if not req[j] and j != fb_idx]
        if not cand:  # cannot happen: then used == req which passed tighten
            continue
        e = max(cand, key=lambda j: (p.total[j], -j))
        # child 1: e excluded
        a1 = allowed.copy()
        a1[e] = False
        a1 = tighten(a1, req)
        # child 2: e required (counted resident)
        r2 = req.copy()
        r2[e] = True
        a2 = tighten(allowed, r2)
        for a, r in ((a1, req), (a2, r2)):
            if a is None:
                continue
            s = solve(a)
            if s is None:
                continue
            if best is not None and s[0] <= best[0] + VALUE_TOL * max(1.0, abs(best[0])):
                continue
            counter += 1
            heapq.heappush(heap, (-s[0], counter, a, r, s))
    return best


# ---------------------------------------------------------------------------------------------
# public optimizer API
# ---------------------------------------------------------------------------------------------
def optimize_mapping(
    category_means: "pd.DataFrame | ExpertScores",
    weights: Mapping[str, float] | None,
    registry: ModelRegistry,
    *,
    budget_active_b: float,
    max_resident_b: float | None = None,
    max_experts: int | None = None,
    locked: Mapping[str, str] | None = None,
    fallback_expert: str | None = None,
    fallback_category: str = FALLBACK_CATEGORY,
) -> CategoryExpertMap:
    """The exact best map under a budget on average active parameters.

    Parameters
    ----------
    category_means : pandas.DataFrame or ExpertScores
        Mean score per category (index) and expert (columns), e.g. ``scores.category_means()``.
        Every column is a candidate expert.
    weights : mapping category -> weight
        Category frequencies (normalised here), e.g. ``scores.category_weights()``. May be
        ``None`` when ``category_means`` is an ExpertScores.
    registry : ModelRegistry
        Parameter counts of every candidate expert.
    budget_active_b : float
        Upper bound on the weighted average of the chosen experts' active parameters (billions).
    max_resident_b : float, optional
        Upper bound on the total parameters of the distinct experts used (fallback included).
    max_experts : int, optional
        Upper bound on the number of distinct experts (fallback included).
    locked : mapping category -> expert, optional
        Categories fixed by hand; the rest are optimised.
    fallback_expert : str, optional
        Expert for the fallback category; default the best expert by weighted mean score.
    fallback_category : str
        The name of the fallback category (default ``"fallback"``; the map's and the router's).

    Returns
    -------
    CategoryExpertMap
        Maximises the expected score; ties go to lower average active parameters.

    Raises
    ------
    InfeasibleBudgetError
        No map meets the limits; the message gives the smallest feasible budget.

    Examples
    --------
    >>> import pandas as pd
    >>> means = pd.DataFrame({"a": [0.5, 0.9], "b": [0.8, 0.6]}, index=["x", "y"])
    >>> reg = ModelRegistry({"a": 7.0, "b": 7.0})
    >>> optimize_mapping(means, {"x": 1, "y": 1}, reg, budget_active_b=7).assignments
    {'x': 'b', 'y': 'a', 'fallback': 'a'}
    """
    context = "optimize_mapping"
    budget = _check_number(budget_active_b, "budget_active_b", context)
    if max_resident_b is not None:
        max_resident_b = _check_number(max_resident_b, "max_resident_b", context)
    if max_experts is not None:
        if isinstance(max_experts, bool) or int(max_experts) != max_experts or max_experts < 1:
            raise MappingError(f"{context}: max_experts must be a positive integer, got {max_experts!r}")
        max_experts = int(max_experts)
    p = prepare_problem(category_means, weights, registry, locked, fallback_expert, context=context,
                        fallback_category=fallback_category)
    if max_resident_b is None and max_experts is None:
        fr = pareto(p, None, budget)
        j = -1 if fr is None else fr.lookup(budget)
        if j < 0:
            raise _infeasible_budget(p, budget, context)
        return map_for(p, p.complete(fr.recover([j])[0]))
    best = _solve_limited(p, budget, max_resident_b, max_experts)
    if best is None:
        raise _infeasible_limits(p, budget, max_resident_b, max_experts, context)
    return map_for(p, p.complete(best[1]))


def _check_number(x, name, context) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise MappingError(f"{context}: {name} must be a number of billions, got {x!r}") from None
    if not math.isfinite(v) or v < 0:
        raise MappingError(f"{context}: {name} must be a finite number >= 0, got {x!r}")
    return v


def _infeasible_limits(p, budget, max_resident_b, max_experts, context) -> InfeasibleBudgetError:
    limits = []
    if max_resident_b is not None:
        limits.append(f"max_resident_b={max_resident_b:g}")
    if max_experts is not None:
        limits.append(f"max_experts={max_experts}")
    lim = ", ".join(limits)
    cheapest = _solve_limited(p, None, max_resident_b, max_experts, minimise_cost=True)
    if cheapest is None:
        fb = p.fallback_expert
        needed = list(dict.fromkeys([fb, *(p.experts[j] for j in p.locked_indices)]))
        return InfeasibleBudgetError(
            f"{context}: no map satisfies {lim} at any budget: the fallback expert {fb!r} and the "
            f"locked experts alone need {p.registry.resident(needed):g}B resident in {len(needed)} "
            "expert(s), or none fits beside them; raise the limits, unlock categories or choose a "
            "smaller fallback_expert"
        )
    smallest = -cheapest[0]
    return InfeasibleBudgetError(
        f"{context}: budget_active_b={budget:g} is below the smallest feasible average active "
        f"parameters under {lim}, {smallest:.6g}B; raise the budget to at least {smallest:.6g} "
        f"or loosen the limits (the fallback expert {p.fallback_expert!r} and any locked experts "
        "count towards them)"
    )


def pareto_frontier(
    category_means: "pd.DataFrame | ExpertScores",
    weights: Mapping[str, float] | None,
    registry: ModelRegistry,
    *,
    budgets: Sequence[float] | None = None,
    locked: Mapping[str, str] | None = None,
    fallback_expert: str | None = None,
    max_resident_b: float | None = None,
    max_experts: int | None = None,
    fallback_category: str = FALLBACK_CATEGORY,
) -> list[FrontierPoint]:
    """The exact quality/cost frontier, in one call.

    Parameters
    ----------
    category_means, weights, registry, locked, fallback_expert
        As in :func:`optimize_mapping`.
    budgets : sequence of float, optional
        Budgets on average active parameters; one optimal map per budget (in the given order).
        ``None`` returns every breakpoint: each map on the frontier, cheapest first, where each
        is strictly better than all cheaper ones.
    max_resident_b, max_experts : optional
        Extra limits as in :func:`optimize_mapping`. With ``budgets`` each budget is solved by
        branch and bound; without, the frontier is the envelope of the frontiers of every
        maximal expert set that fits the limits.

    Returns
    -------
    list of FrontierPoint

    Raises
    ------
    InfeasibleBudgetError
        A budget below the smallest feasible one.
    """
    context = "pareto_frontier"
    p = prepare_problem(category_means, weights, registry, locked, fallback_expert, context=context,
                        fallback_category=fallback_category)
    limited = max_resident_b is not None or max_experts is not None
    if limited:
        if budgets is None:
            return _limited_breakpoints(p, max_resident_b, max_experts, context)
        points = []
        for b in budgets:
            b = _check_number(b, "budget", context)
            best = _solve_limited(p, b, max_resident_b, max_experts)
            if best is None:
                raise _infeasible_limits(p, b, max_resident_b, max_experts, context)
            points.append(_point(p, b, p.complete(best[1])))
        return points
    fr = pareto(p)
    if budgets is None:
        choices = fr.recover(np.arange(len(fr.cost)))
        return [_point(p, float(fr.cost[k]), p.complete(choices[k])) for k in range(len(fr.cost))]
    budgets = [_check_number(b, "budget", context) for b in budgets]
    idx = np.array([fr.lookup(b) for b in budgets], dtype=np.int64)
    if (idx < 0).any():
        raise _infeasible_budget(p, budgets[int(np.argmax(idx < 0))], context)
    uniq, inverse = np.unique(idx, return_inverse=True)
    full = [p.complete(c) for c in fr.recover(uniq)]
    return [_point(p, b, full[u]) for b, u in zip(budgets, inverse)]


def _limited_breakpoints(p: Problem, max_resident_b, max_experts, context) -> list[FrontierPoint]:
    """Exact frontier under resident/expert-count limits: the Pareto envelope of the programme's
    frontiers over every maximal expert set that fits the limits."""
    n = len(p.experts)
    res_cap = math.inf if max_resident_b is None else max_resident_b * (1 + REL_TOL) + REL_TOL
    k_cap = n + 1 if max_experts is None else int(max_experts)
    fb = p.fallback_index
    base = {int(np.flatnonzero(p.allowed[i])[0]) for i in np.flatnonzero(p.allowed.sum(axis=1) == 1)}
    if fb is not None:
        base.add(fb)
    base_res = sum(p.total[j] for j in base) + (0.0 if fb is not None else p.registry.total(p.fallback_expert))
    base_cnt = len(base) + (0 if fb is not None else 1)
    if base_res > res_cap or base_cnt > k_cap:
        raise _infeasible_limits(p, 0.0, max_resident_b, max_experts, context)
    cands = [j for j in range(n) if j not in base]
    subsets: list[set[int]] = []
    visited = 0

    def dfs(k: int, chosen: set[int], res: float, cnt: int) -> None:
        nonlocal visited
        visited += 1
        if visited > 200_000:
            raise MappingError(
                f"{context}: too many expert sets fit the limits to enumerate the whole frontier; "
                "pass budgets=[...] (each is then solved exactly by branch and bound)"
            )
        if k == len(cands):
            if not any(j not in chosen and res + p.total[j] <= res_cap and cnt < k_cap for j in cands):
                subsets.append(base | chosen)
            return
        j = cands[k]
        if res + p.total[j] <= res_cap and cnt < k_cap:
            chosen.add(j)
            dfs(k + 1, chosen, res + p.total[j], cnt + 1)
            chosen.discard(j)
        dfs(k + 1, chosen, res, cnt)

    dfs(0, set(), base_res, base_cnt)
    fronts, cost, value, owner, state = [], [], [], [], []
    for s_idx, subset in enumerate(subsets):
        mask = np.zeros(n, dtype=bool)
        mask[list(subset)] = True
        fr = pareto(p, mask)
        fronts.append(fr)
        if fr is None:
            continue
        cost.append(fr.cost)
        value.append(fr.value)
        owner.append(np.full(len(fr.cost), s_idx))
        state.append(np.arange(len(fr.cost)))
    if not cost:
        raise _infeasible_limits(p, 0.0, max_resident_b, max_experts, context)
    c, v, o, st = (np.concatenate(x) for x in (cost, value, owner, state))
    kept = nondominated(c, v)
    points = []
    for k in kept:
        choice = p.complete(fronts[o[k]].recover([st[k]])[0])
        points.append(_point(p, float(c[k]), choice))
    return points


def _point(p: Problem, budget: float, choice) -> FrontierPoint:
    return FrontierPoint(
        budget_b=float(budget),
        expected_score=p.value(choice),
        average_active_params_b=p.cost(choice),
        resident_params_b=p.resident_of(choice),
        mapping=map_for(p, choice),
    )


def monolithic_baselines(
    category_means: "pd.DataFrame | ExpertScores",
    weights: Mapping[str, float] | None,
    registry: ModelRegistry,
    *,
    fallback_category: str = FALLBACK_CATEGORY,
) -> dict[str, FrontierPoint]:
    """Every candidate expert alone (all categories and the fallback on it), as frontier points.

    Experts with a NaN mean on a weighted category are left out.

    Examples
    --------
    >>> import pandas as pd
    >>> means = pd.DataFrame({"a": [0.5, 0.9], "b": [0.8, 0.6]}, index=["x", "y"])
    >>> base = monolithic_baselines(means, {"x": 1, "y": 1}, ModelRegistry({"a": 7.0, "b": 8.0}))
    >>> round(base["a"].expected_score, 3), base["b"].average_active_params_b
    (0.7, 8.0)
    """
    p = prepare_problem(category_means, weights, registry, None, None, context="monolithic_baselines",
                        fallback_category=fallback_category)
    out: dict[str, FrontierPoint] = {}
    for j, e in enumerate(p.experts):
        if np.isnan(p.raw[p.dp_rows, j]).any():
            continue
        q = Problem(p.rows, p.experts, p.w, np.nan_to_num(p.raw), p.raw,
                     np.ones_like(p.allowed), p.active, p.total, p.categories, e,
                     p.fallback_category, p.registry, np.arange(len(p.rows)))
        choice = np.full(len(p.rows), j, dtype=np.int64)
        out[e] = _point(q, q.cost(choice), choice)
    return out
