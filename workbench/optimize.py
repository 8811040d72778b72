"""The exact budgeted optimizer behind :func:`optimize_mapping` and :func:`pareto_frontier`.

With one expert per category, choosing a category-to-expert map is a multiple-choice knapsack:
category ``c`` with weight ``w_c`` choosing expert ``e`` costs ``w_c * active_e`` and earns
``w_c * score[c, e]``. A dynamic programme over categories keeps the set of non-dominated
``(cost, value)`` partial maps, so after the last category that set *is* the Pareto frontier and
the optimum for any budget is a binary search away; back-pointers recover each map.
Resident-parameter and expert-count limits are handled by an exact branch and bound over the set
of allowed experts (per budget), or by the envelope of the frontiers of every maximal expert set
within the limits (the whole frontier). See :mod:`workbench.mapping` for the map itself; these
functions are re-exported there.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import InfeasibleBudgetError, MappingError, RegistryError, ScoresError
from workbench.mapping import (
    _REL_TOL,
    _VALUE_TOL,
    CategoryExpertMap,
    FrontierPoint,
    _means_and_weights,
)
from workbench.registry import ModelRegistry

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.scores import ExpertScores

@dataclass
class _Problem:
    rows: list[str]            # categories (fallback last when it is weighted)
    experts: list[str]         # candidate experts (columns)
    w: np.ndarray              # normalised weights per row
    S: np.ndarray              # rows x experts scores (0 where not allowed)
    raw: np.ndarray            # rows x experts scores as given (may hold NaN)
    allowed: np.ndarray        # rows x experts bool
    active: np.ndarray         # per expert
    total: np.ndarray          # per expert
    categories: list[str]      # the map's real categories
    fallback_expert: str
    fallback_category: str
    registry: ModelRegistry
    dp_rows: np.ndarray        # rows the programme decides (weighted or locked)

    @property
    def fallback_index(self) -> int | None:
        return self.experts.index(self.fallback_expert) if self.fallback_expert in self.experts else None

    def complete(self, dp_choice) -> np.ndarray:
        """Full per-row expert indices from the programme's choice over ``dp_rows``.

        Zero-weight rows (no cost, no value) go to the best-scoring expert already in use, so
        they never add resident memory.
        """
        full = np.full(len(self.rows), -1, dtype=np.int64)
        full[self.dp_rows] = np.asarray(dp_choice, dtype=np.int64)
        used = list(dict.fromkeys(full[self.dp_rows].tolist()))
        fb = self.fallback_index
        if fb is not None and fb not in used:
            used.append(fb)
        for i in np.flatnonzero(full < 0):
            cand = [j for j in used if not math.isnan(self.raw[i, j])] or used
            full[i] = min(cand, key=lambda j: (-np.nan_to_num(self.raw[i, j], nan=-np.inf),
                                               self.active[j], self.experts[j]))
        return full

    def assignment(self, choice: Sequence[int]) -> dict[str, str]:
        by_row = {r: self.experts[j] for r, j in zip(self.rows, choice)}
        out = {c: by_row[c] for c in self.categories}
        out[self.fallback_category] = self.fallback_expert
        return out

    def value(self, choice) -> float:
        total = 0.0
        for i in self.dp_rows:
            total += self.w[i] * self.S[i, choice[i]]
        return float(total)

    def cost(self, choice) -> float:
        total = 0.0
        for i in self.dp_rows:
            total += self.w[i] * self.active[choice[i]]
        return float(total)

    def resident_of(self, choice: Iterable[int]) -> float:
        used = {self.experts[j] for j in choice} | {self.fallback_expert}
        return float(sum(self.registry.total(e) for e in used))

    def map_for(self, choice) -> CategoryExpertMap:
        return CategoryExpertMap(
            self.assignment(choice), experts=self.registry, categories=self.categories,
            fallback_category=self.fallback_category,
        )


def _prepare(category_means, weights, registry, locked, fallback_expert, *, context: str) -> _Problem:
    import pandas as pd

    if not isinstance(registry, ModelRegistry):
        raise RegistryError(f"{context}: registry must be a ModelRegistry, got {type(registry).__name__}")
    means, w = _means_and_weights(category_means, weights)
    if not isinstance(means, pd.DataFrame) or means.empty:
        raise ScoresError(f"{context}: category means are empty")
    means = means.copy()
    means.index = [str(c) for c in means.index]
    means.columns = [str(e) for e in means.columns]
    fb = FALLBACK_CATEGORY
    categories = [c for c in means.index if c != fb]
    if not categories:
        raise ScoresError(f"{context}: the category means have no categories besides {fb!r}")
    experts = list(means.columns)
    registry.require(experts, context=f"{context}: experts in the scores")
    missing_w = [c for c in categories if c not in w]
    if missing_w:
        raise ScoresError(
            f"{context}: no weight for categories {missing_w}; give every category a weight "
            "(e.g. scores.category_weights())"
        )
    stray = [c for c, x in w.items() if x > 0 and c not in means.index and c != fb]
    if stray:
        raise ScoresError(
            f"{context}: weights name categories with no scores: {stray}; scored categories: "
            f"{', '.join(categories)}"
        )
    values = means.to_numpy(dtype=float)
    # fallback
    locked = {str(k): str(v) for k, v in dict(locked or {}).items()}
    if fb in locked:
        if fallback_expert is not None and fallback_expert != locked[fb]:
            raise MappingError(
                f"{context}: locked[{fb!r}]={locked[fb]!r} conflicts with fallback_expert={fallback_expert!r}"
            )
        fallback_expert = locked.pop(fb)
    real_rows = [i for i, c in enumerate(means.index) if c != fb]
    wr = np.array([w.get(means.index[i], 0.0) for i in real_rows])
    if fallback_expert is None:
        sub = values[real_rows]
        if np.isnan(sub).any():
            _raise_nan(means.iloc[real_rows], context)
        wn = wr / wr.sum() if wr.sum() > 0 else np.full(len(wr), 1 / len(wr))
        overall = wn @ sub
        order = sorted(range(len(experts)), key=lambda j: (-overall[j], registry.active(experts[j]), experts[j]))
        fallback_expert = experts[order[0]]
    else:
        fallback_expert = str(fallback_expert)
        registry.require([fallback_expert], context=f"{context}: fallback_expert")
    # locked categories
    unknown = [c for c in locked if c not in categories]
    if unknown:
        raise MappingError(
            f"{context}: locked categories {unknown} are not scored categories: {', '.join(categories)}"
        )
    registry.require(locked.values(), context=f"{context}: locked experts")
    no_scores = {c: e for c, e in locked.items() if e not in experts}
    if no_scores:
        raise ScoresError(
            f"{context}: locked expert(s) have no scores: "
            + ", ".join(f"{c!r} -> {e!r}" for c, e in no_scores.items())
            + f"; scored experts: {', '.join(experts)}"
        )
    rows = list(categories)
    fb_weight = w.get(fb, 0.0)
    if fb_weight > 0 and fb in means.index:
        rows.append(fb)
        if fallback_expert not in experts:
            raise ScoresError(
                f"{context}: the fallback category has weight {fb_weight:g} but its expert "
                f"{fallback_expert!r} has no scores"
            )
        locked[fb] = fallback_expert
    row_idx = [list(means.index).index(c) for c in rows]
    S = values[row_idx]
    weight = np.array([w.get(c, 0.0) for c in rows], dtype=float)
    if weight.sum() <= 0:
        raise ScoresError(f"{context}: the category weights sum to zero")
    weight = weight / weight.sum()
    allowed = np.ones(S.shape, dtype=bool)
    for i, c in enumerate(rows):
        if c in locked:
            allowed[i] = False
            allowed[i, experts.index(locked[c])] = True
    active = np.array([registry.active(e) for e in experts])
    total = np.array([registry.total(e) for e in experts])
    locked_row = allowed.sum(axis=1) == 1
    dp_rows = np.flatnonzero((weight > 0) | locked_row)
    # NaN only matters where the programme may choose that expert
    nan = np.isnan(S) & allowed
    nan[np.setdiff1d(np.arange(len(rows)), dp_rows)] = False
    if nan.any():
        r, j = np.argwhere(nan)[0]
        raise ScoresError(
            f"{context}: {int(nan.sum())} category means are NaN, e.g. expert {experts[j]!r} on "
            f"category {rows[r]!r}; fill them, drop that expert's column, or lock the category"
        )
    raw = S.copy()
    S = np.where(allowed, np.nan_to_num(S), 0.0)
    return _Problem(rows, experts, weight, S, raw, allowed, active, total, categories,
                    fallback_expert, fb, registry, dp_rows)


def _raise_nan(df, context):
    arr = df.to_numpy(dtype=float)
    r, j = np.argwhere(np.isnan(arr))[0]
    raise ScoresError(
        f"{context}: {int(np.isnan(arr).sum())} category means are NaN, e.g. expert "
        f"{df.columns[j]!r} on category {df.index[r]!r}; fill them or drop that expert's column"
    )


# ---------------------------------------------------------------------------------------------
# the exact Pareto programme
# ---------------------------------------------------------------------------------------------
@dataclass
class _Frontier:
    cost: np.ndarray      # ascending
    value: np.ndarray     # strictly ascending
    parents: list[np.ndarray]
    choices: list[np.ndarray]  # expert index chosen at each row

    def recover(self, idx: np.ndarray) -> np.ndarray:
        """Expert indices (n_points, n_rows) of final states ``idx``."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), len(self.choices)), dtype=np.int64)
        for r in range(len(self.choices) - 1, -1, -1):
            out[:, r] = self.choices[r][idx]
            idx = self.parents[r][idx]
        return out

    def lookup(self, budget: float) -> int:
        """Index of the best state within ``budget`` (-1 if none)."""
        return int(np.searchsorted(self.cost, budget + _budget_slack(budget), side="right")) - 1


def _budget_slack(budget: float) -> float:
    return _REL_TOL * max(1.0, abs(budget))


def _row_options(p: _Problem, i: int, mask: np.ndarray | None):
    """Non-dominated (cost, value, expert) options of row ``i`` (cheapest first)."""
    ok = p.allowed[i] if mask is None else (p.allowed[i] & mask)
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    cost = p.w[i] * p.active[idx]
    value = p.w[i] * p.S[i, idx]
    names = np.array([p.experts[j] for j in idx], dtype=object)
    order = np.lexsort((names, -value, cost))
    cost, value, idx = cost[order], value[order], idx[order]
    keep = np.empty(len(idx), dtype=bool)
    best = -np.inf
    for k in range(len(idx)):
        keep[k] = value[k] > best
        if keep[k]:
            best = value[k]
    return cost[keep], value[keep], idx[keep]


def _pareto(p: _Problem, mask: np.ndarray | None = None, budget: float | None = None) -> _Frontier | None:
    """Exact Pareto set of (average active, expected score) over all maps (None if no map exists).

    With ``budget``, partial maps that cannot be completed within it are dropped early.
    """
    options = []
    for i in p.dp_rows:
        opt = _row_options(p, i, mask)
        if opt is None:
            return None
        options.append(opt)
    # cheapest completion of rows i+1.. (for budget pruning)
    min_rest = np.zeros(len(options) + 1)
    for i in range(len(options) - 1, -1, -1):
        min_rest[i] = min_rest[i + 1] + options[i][0][0]
    cost = np.zeros(1)
    value = np.zeros(1)
    parents: list[np.ndarray] = []
    choices: list[np.ndarray] = []
    limit = None if budget is None else budget + _budget_slack(budget)
    for i, (oc, ov, oi) in enumerate(options):
        k = len(oc)
        nc = (cost[:, None] + oc[None, :]).ravel()
        nv = (value[:, None] + ov[None, :]).ravel()
        par = np.repeat(np.arange(len(cost)), k)
        ch = np.tile(oi, len(cost))
        if limit is not None:
            ok = nc + min_rest[i + 1] <= limit
            nc, nv, par, ch = nc[ok], nv[ok], par[ok], ch[ok]
            if nc.size == 0:
                return None
        order = np.lexsort((-nv, nc))  # cost ascending, value descending; stable
        nc, nv, par, ch = nc[order], nv[order], par[order], ch[order]
        prev_best = np.maximum.accumulate(nv)
        keep = np.empty(len(nv), dtype=bool)
        keep[0] = True
        keep[1:] = nv[1:] > prev_best[:-1] + _VALUE_TOL * np.maximum(1.0, np.abs(prev_best[:-1]))
        # equal costs up to rounding noise: keep only the better (later) state
        kept = np.flatnonzero(keep)
        kc = nc[kept]
        same = np.zeros(len(kept), dtype=bool)
        same[:-1] = np.diff(kc) <= _VALUE_TOL * np.maximum(1.0, np.abs(kc[1:]))
        kept = kept[~same]
        cost, value = nc[kept], nv[kept]
        parents.append(par[kept])
        choices.append(ch[kept])
    return _Frontier(cost, value, parents, choices)


def _min_cost(p: _Problem) -> float:
    total = 0.0
    for i in p.dp_rows:
        opt = _row_options(p, i, None)
        total += opt[0][0]
    return float(total)


def _infeasible_budget(p: _Problem, budget: float, context: str) -> InfeasibleBudgetError:
    smallest = _min_cost(p)
    locked_note = " with the locked categories" if (p.allowed.sum(axis=1) == 1).any() else ""
    return InfeasibleBudgetError(
        f"{context}: budget_active_b={budget:g} is below the smallest feasible average active "
        f"parameters, {smallest:.6g}B (every category on its cheapest allowed expert{locked_note}); "
        f"raise the budget to at least {smallest:.6g}"
    )


# ---------------------------------------------------------------------------------------------
# branch and bound for resident-parameter / expert-count limits
# ---------------------------------------------------------------------------------------------
def _solve_limited(
    p: _Problem,
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
    res_cap = math.inf if max_resident_b is None else max_resident_b * (1 + _REL_TOL) + _REL_TOL
    k_cap = n_e + 1 if max_experts is None else int(max_experts)
    fb_total = p.registry.total(p.fallback_expert)
    fb_idx = p.experts.index(p.fallback_expert) if p.fallback_expert in p.experts else None
    required0 = np.zeros(n_e, dtype=bool)
    locked_rows = np.flatnonzero(p.allowed.sum(axis=1) == 1)
    for i in locked_rows:
        required0[np.flatnonzero(p.allowed[i])[0]] = True

    def usage(req: np.ndarray) -> tuple[float, int]:
        idx = set(np.flatnonzero(req).tolist())
        res = sum(p.total[j] for j in idx)
        cnt = len(idx)
        if fb_idx is None:
            res += fb_total
            cnt += 1
        elif fb_idx not in idx:
            res += p.total[fb_idx]
            cnt += 1
        return float(res), cnt

    def tighten(allowed: np.ndarray, req: np.ndarray) -> np.ndarray | None:
        res, cnt = usage(req)
        if res > res_cap or cnt > k_cap:
            return None
        allowed = allowed.copy()
        others = allowed & ~req
        if fb_idx is not None:
            others[fb_idx] = False  # the fallback expert is resident anyway: free to use
        free_res = res_cap - res
        allowed[others & (p.total > free_res)] = False
        if cnt >= k_cap:
            allowed &= req | (np.arange(n_e) == (fb_idx if fb_idx is not None else -1))
        return allowed

    def solve(allowed: np.ndarray):
        if minimise_cost:
            fr = _pareto(p, allowed)
            if fr is None:
                return None
            j = 0
            return -float(fr.cost[j]), fr.recover([j])[0]
        fr = _pareto(p, allowed, budget)
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
        if best is not None and bound <= best[0] + _VALUE_TOL * max(1.0, abs(best[0])):
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
            if best is not None and s[0] <= best[0] + _VALUE_TOL * max(1.0, abs(best[0])):
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
    p = _prepare(category_means, weights, registry, locked, fallback_expert, context=context)
    if max_resident_b is None and max_experts is None:
        fr = _pareto(p, None, budget)
        j = -1 if fr is None else fr.lookup(budget)
        if j < 0:
            raise _infeasible_budget(p, budget, context)
        return p.map_for(p.complete(fr.recover([j])[0]))
    best = _solve_limited(p, budget, max_resident_b, max_experts)
    if best is None:
        raise _infeasible_limits(p, budget, max_resident_b, max_experts, context)
    return p.map_for(p.complete(best[1]))


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
        return InfeasibleBudgetError(
            f"{context}: no map satisfies {lim} at any budget: the fallback expert {fb!r} "
            f"({p.registry.total(fb):g}B) and the locked experts alone exceed it; raise the limits, "
            "unlock categories or choose a smaller fallback_expert"
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
    p = _prepare(category_means, weights, registry, locked, fallback_expert, context=context)
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
    fr = _pareto(p)
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


def _limited_breakpoints(p: _Problem, max_resident_b, max_experts, context) -> list[FrontierPoint]:
    """Exact frontier under resident/expert-count limits: the Pareto envelope of the programme's
    frontiers over every maximal expert set that fits the limits."""
    n = len(p.experts)
    res_cap = math.inf if max_resident_b is None else max_resident_b * (1 + _REL_TOL) + _REL_TOL
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
        fr = _pareto(p, mask)
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
    order = np.lexsort((-v, c))
    c, v, o, st = c[order], v[order], o[order], st[order]
    prev = np.maximum.accumulate(v)
    keep = np.empty(len(v), dtype=bool)
    keep[0] = True
    keep[1:] = v[1:] > prev[:-1] + _VALUE_TOL * np.maximum(1.0, np.abs(prev[:-1]))
    kept = np.flatnonzero(keep)
    same = np.zeros(len(kept), dtype=bool)
    same[:-1] = np.diff(c[kept]) <= _VALUE_TOL * np.maximum(1.0, np.abs(c[kept][1:]))
    kept = kept[~same]
    points = []
    for k in kept:
        choice = p.complete(fronts[o[k]].recover([st[k]])[0])
        points.append(_point(p, float(c[k]), choice))
    return points


def _point(p: _Problem, budget: float, choice) -> FrontierPoint:
    return FrontierPoint(
        budget_b=float(budget),
        expected_score=p.value(choice),
        average_active_params_b=p.cost(choice),
        resident_params_b=p.resident_of(choice),
        mapping=p.map_for(choice),
    )


def monolithic_baselines(
    category_means: "pd.DataFrame | ExpertScores",
    weights: Mapping[str, float] | None,
    registry: ModelRegistry,
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
    p = _prepare(category_means, weights, registry, None, None, context="monolithic_baselines")
    out: dict[str, FrontierPoint] = {}
    for j, e in enumerate(p.experts):
        if np.isnan(p.raw[p.dp_rows, j]).any():
            continue
        q = _Problem(p.rows, p.experts, p.w, np.nan_to_num(p.raw), p.raw,
                     np.ones_like(p.allowed), p.active, p.total, p.categories, e,
                     p.fallback_category, p.registry, np.arange(len(p.rows)))
        choice = np.full(len(p.rows), j, dtype=np.int64)
        out[e] = _point(q, q.cost(choice), choice)
    return out
