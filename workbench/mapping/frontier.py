"""The exact Pareto programme over a :class:`~workbench.mapping.problem.Problem`.

A dynamic programme over categories keeps the set of non-dominated ``(cost, value)`` partial maps
(no other partial map is both cheaper and better), so after the last category that set *is* the
Pareto frontier and the optimum for any budget is a binary search away; back-pointers recover each
map. :func:`nondominated` is the one pruning rule, also used for the envelope of several frontiers.
:func:`aiq` is RouterBench's one-number summary of a cost/quality curve.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.errors import UsageError
from workbench.mapping.problem import REL_TOL, VALUE_TOL, Problem

__all__ = ["Frontier", "aiq", "budget_slack", "min_cost", "nondominated", "nondecreasing_hull",
           "pareto"]


def nondominated(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated ``(cost, value)`` points, cheapest first.

    A point is kept when it is better (by more than the value tolerance) than every cheaper or
    equally cheap point; of points whose costs are equal up to rounding noise only the better one
    stays. Ties in cost and value keep the first point in input order.
    """
    order = np.lexsort((-value, cost))  # cost ascending, value descending; stable
    c, v = cost[order], value[order]
    prev_best = np.maximum.accumulate(v)
    keep = np.empty(len(v), dtype=bool)
    keep[0] = True
    keep[1:] = v[1:] > prev_best[:-1] + VALUE_TOL * np.maximum(1.0, np.abs(prev_best[:-1]))
    # equal costs up to rounding noise: keep only the better (later) state
    kept = np.flatnonzero(keep)
    kc = c[kept]
    same = np.zeros(len(kept), dtype=bool)
    same[:-1] = np.diff(kc) <= VALUE_TOL * np.maximum(1.0, np.abs(kc[1:]))
    return order[kept[~same]]


@dataclass
class Frontier:
    """Pareto states after the last row, with back-pointers to recover each map."""

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
        return int(np.searchsorted(self.cost, budget + budget_slack(budget), side="right")) - 1



def budget_slack(budget: float) -> float:
    """How far over ``budget`` a map may be and still count as within it (rounding noise)."""
    return REL_TOL * max(1.0, abs(budget))


def _row_options(p: Problem, i: int, mask: np.ndarray | None):
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



def pareto(p: Problem, mask: np.ndarray | None = None, budget: float | None = None) -> Frontier | None:
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
    limit = None if budget is None else budget + budget_slack(budget)
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
        kept = nondominated(nc, nv)
        cost, value = nc[kept], nv[kept]
        parents.append(par[kept])
        choices.append(ch[kept])
    return Frontier(cost, value, parents, choices)



def min_cost(p: Problem) -> float:
    """Average active parameters of the cheapest map (each row on its cheapest allowed expert)."""
    total = 0.0
    for i in p.dp_rows:
        opt = _row_options(p, i, None)
        total += opt[0][0]
    return float(total)


def nondecreasing_hull(costs, qualities) -> tuple[np.ndarray, np.ndarray]:
    """The non-decreasing upper convex hull of ``(cost, quality)`` points, cheapest first.

    The smallest concave, non-decreasing curve above every point, from the cheapest point (the
    best of the cheapest, where several share its cost) to the best point (the cheapest of the
    best); beyond that it stays flat. Mixing two routers at random reaches any point on a chord
    between them, which is why the hull, not the raw points, is what a router can achieve.

    Examples
    --------
    >>> c, q = nondecreasing_hull([1, 2, 3, 4], [0.2, 0.3, 0.6, 0.5])
    >>> c.tolist(), q.tolist()
    ([1.0, 3.0], [0.2, 0.6])
    """
    c = np.asarray(costs, dtype=float).ravel()
    q = np.asarray(qualities, dtype=float).ravel()
    if c.shape != q.shape or c.size == 0:
        raise UsageError(f"aiq needs as many costs as qualities, at least one of each; got "
                         f"{c.size} costs and {q.size} qualities")
    if not (np.isfinite(c).all() and np.isfinite(q).all()):
        raise UsageError("aiq needs finite costs and qualities (no NaN or infinity)")
    order = np.lexsort((-q, c))   # cost ascending, the better first among equal costs
    c, q = c[order], q[order]
    best = int(np.argmax(q))      # the first (cheapest) of the best
    hull: list[int] = []
    for k in range(best + 1):
        if hull and c[k] == c[hull[-1]]:
            continue              # same cost, not better: the first one stays
        # pop while the last hull point lies on or below the chord from its predecessor to k
        while len(hull) >= 2:
            i, j = hull[-2], hull[-1]
            if (q[j] - q[i]) * (c[k] - c[i]) <= (q[k] - q[i]) * (c[j] - c[i]):
                hull.pop()
            else:
                break
        hull.append(k)
    return c[hull], q[hull]


def aiq(costs, qualities, *, max_cost: float | None = None) -> float:
    """RouterBench's AIQ (average improvement in quality) of a set of ``(cost, quality)`` points.

    Sort the points by cost, take their non-decreasing convex hull
    (:func:`nondecreasing_hull`), extend it flat to ``max_cost``, and divide the area under it
    by ``max_cost``. Below the cheapest point the curve counts as zero, so a cheaper curve of the
    same quality scores higher. To compare several curves give them the same ``max_cost`` (the
    largest cost of any of them), as RouterBench does.

    Parameters
    ----------
    costs, qualities : sequence of float
        One point per router setting (e.g. per budget: average active parameters, accuracy).
    max_cost : float, optional
        Where the curve ends; default the largest of ``costs``. Must not be below it.

    Returns
    -------
    float
        The mean quality over costs ``0 .. max_cost`` of the extended hull.

    Examples
    --------
    >>> aiq([10.0], [0.5])                         # one point at the largest cost: no area
    0.0
    >>> aiq([10.0], [0.5], max_cost=20.0)          # flat from 10 to 20
    0.25
    >>> aiq([0.0, 10.0], [0.2, 0.6])               # a chord from 0.2 to 0.6
    0.4
    """
    hc, hq = nondecreasing_hull(costs, qualities)
    largest = float(np.max(np.asarray(costs, dtype=float)))
    top = largest if max_cost is None else float(max_cost)
    if top < largest - REL_TOL * max(1.0, abs(largest)):
        raise UsageError(f"aiq: max_cost {top:g} is below the largest cost {largest:g}")
    if top <= 0:
        raise UsageError(f"aiq needs a positive largest cost, got {top:g}")
    area = float(np.sum((hc[1:] - hc[:-1]) * (hq[1:] + hq[:-1]) / 2.0))
    area += float(hq[-1]) * max(0.0, top - float(hc[-1]))
    return area / top
