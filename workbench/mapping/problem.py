"""What the map and the optimizer share: the category means and weights of a scores table, the
numeric tolerances, and the optimizer's problem (:class:`Problem`, built by :func:`prepare_problem`):
categories by experts, with weights, scores, allowed choices and parameter counts.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import MappingError, RegistryError, ScoresError
from workbench.registry import ModelRegistry, format_params
from workbench.safeio import short, short_list

__all__ = ["REL_TOL", "VALUE_TOL", "Problem", "check_budget", "means_and_weights", "prepare_problem"]

REL_TOL = 1e-9  # budgets / resident limits: relative tolerance
VALUE_TOL = 1e-12  # a partial map must beat a cheaper one by more than this to be kept


def means_and_weights(scores, weights, map_categories=None, fallback_category: str = FALLBACK_CATEGORY):
    """Return (category means DataFrame, weights dict) from ExpertScores or a means table."""
    import pandas as pd

    from workbench.scores import ExpertScores

    if isinstance(scores, ExpertScores):
        means = scores.category_means()
        if weights is None:
            w = scores.category_weights()
            if map_categories is not None:
                for c in map_categories:
                    w.setdefault(c, 0.0)  # a category with no scored prompts has zero share
            weights = w
    elif isinstance(scores, pd.DataFrame):
        means = scores
        if weights is None:
            cats = list(map_categories) if map_categories is not None else [
                c for c in means.index if c != fallback_category]
            weights = {c: 1.0 for c in cats}
    else:
        raise ScoresError(
            f"scores must be an ExpertScores or a category-means DataFrame, got {type(scores).__name__}"
        )
    if means.index.has_duplicates:
        dup = sorted(map(str, set(means.index[means.index.duplicated()])))
        raise ScoresError(f"category means have duplicate categories: {short_list(dup, quote=True)}")
    if means.columns.has_duplicates:
        raise ScoresError("category means have duplicate expert columns")
    out: dict[str, float] = {}
    for c, x in dict(weights).items():
        try:
            xf = float(x)
        except (TypeError, ValueError):
            raise ScoresError(f"weight of category {short(c)} must be a number, got {short(x)}") from None
        if not math.isfinite(xf) or xf < 0:
            raise ScoresError(f"weight of category {short(c)} must be a finite number >= 0, got "
                              f"{short(x)}")
        out[str(c)] = xf
    if map_categories is not None:
        missing = [c for c in map_categories if c not in out]
        if missing:
            raise ScoresError(
                f"no weight for categories {short(missing)}; give every mapped category a weight "
                "(e.g. scores.category_weights())"
            )
    return means, out



@dataclass
class Problem:
    """A map-choosing problem: rows (categories) by candidate experts."""

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
    def locked_indices(self) -> list[int]:
        """The experts of the locked rows (rows with a single allowed expert), without repeats."""
        rows = np.flatnonzero(self.allowed.sum(axis=1) == 1)
        return list(dict.fromkeys(int(np.flatnonzero(self.allowed[i])[0]) for i in rows))

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
        """Resident parameters of the experts in ``choice`` and the fallback expert (a shared
        base counted once, see :meth:`ModelRegistry.resident`)."""
        return self.registry.resident([self.experts[j] for j in choice] + [self.fallback_expert])


def prepare_problem(category_means, weights, registry, locked, fallback_expert, *, context: str,
                    fallback_category: str = FALLBACK_CATEGORY) -> Problem:
    """Validate the optimizer's inputs (``context`` names the caller in errors) into a Problem."""
    import pandas as pd

    if not isinstance(registry, ModelRegistry):
        raise RegistryError(f"{context}: registry must be a ModelRegistry, got {type(registry).__name__}")
    means, w = means_and_weights(category_means, weights, fallback_category=fallback_category)
    if not isinstance(means, pd.DataFrame) or means.empty:
        raise ScoresError(f"{context}: category means are empty")
    means = means.copy()
    means.index = [str(c) for c in means.index]
    means.columns = [str(e) for e in means.columns]
    fb = str(fallback_category)
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
    return Problem(rows, experts, weight, S, raw, allowed, active, total, categories,
                    fallback_expert, fb, registry, dp_rows)


def _raise_nan(df, context):
    arr = df.to_numpy(dtype=float)
    r, j = np.argwhere(np.isnan(arr))[0]
    raise ScoresError(
        f"{context}: {int(np.isnan(arr).sum())} category means are NaN, e.g. expert "
        f"{df.columns[j]!r} on category {df.index[r]!r}; fill them or drop that expert's column"
    )


def check_budget(budget_b: object) -> float:
    """``budget_b`` as a float, or a :class:`MappingError` saying why it is refused (never
    silently replaced): a budget must be a positive, finite number of billions of parameters."""
    try:
        value = float(budget_b)
    except (TypeError, ValueError):
        raise MappingError(f"budget {short(budget_b)} is not a number; type a positive budget on "
                           "average active parameters") from None
    if not math.isfinite(value) or value <= 0:
        raise MappingError(f"budget {format_params(value) if math.isfinite(value) else value} "
                           "refused: a budget on average active parameters must be positive; "
                           "type a value above 0 (the cheapest expert's size is the smallest "
                           "feasible one)")
    return value
