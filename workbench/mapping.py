"""The category-to-expert map, its metrics, and the exact budgeted optimizer.

A :class:`CategoryExpertMap` sends every router category (plus the ``"fallback"`` category for
low-confidence prompts) to one expert. Its quality is the category-frequency-weighted mean of the
chosen experts' per-category scores; its cost is the *average active parameters* (the same
weighting over the experts' active parameters) and the *resident parameters* (total parameters of
the distinct experts it uses, fallback included).

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
>>> m = optimize_mapping(means, {"chat": 0.5, "math": 0.5}, reg, budget_active_b=40)
>>> m.expert_for("chat"), m.expert_for("math"), m.fallback_expert
('small', 'large', 'large')
"""
from __future__ import annotations

import heapq
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import InfeasibleBudgetError, MappingError, RegistryError, ScoresError
from workbench.registry import ModelRegistry

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.scores import ExpertScores

__all__ = [
    "CategoryExpertMap",
    "Edit",
    "MapMetrics",
    "FrontierPoint",
    "optimize_mapping",
    "pareto_frontier",
    "monolithic_baselines",
]

_REL_TOL = 1e-9  # budgets / resident limits: relative tolerance
_VALUE_TOL = 1e-12  # a partial map must beat a cheaper one by more than this to be kept


class Edit(NamedTuple):
    """One hand edit of a map: ``category`` moved from ``old`` to ``new`` expert."""

    category: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.category}: {self.old} -> {self.new}"


@dataclass(frozen=True)
class MapMetrics:
    """Quality and cost of a map.

    Attributes
    ----------
    expected_score : float
        Category-frequency-weighted mean score of the chosen experts.
    average_active_params_b : float
        Category-frequency-weighted mean of the chosen experts' active parameters (billions).
    resident_params_b : float
        Total parameters (billions) of the distinct experts the map uses, fallback included.
    per_category : pandas.DataFrame
        ``category, expert, weight, score, active_params_b, score_contribution,
        active_contribution`` (contributions sum to the two averages).
    """

    expected_score: float
    average_active_params_b: float
    resident_params_b: float
    per_category: "pd.DataFrame" = field(repr=False)
    n_experts: int = 0


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


# ---------------------------------------------------------------------------------------------
# CategoryExpertMap
# ---------------------------------------------------------------------------------------------
class CategoryExpertMap:
    """Which expert answers each category, with undo/redo of hand edits.

    Parameters
    ----------
    assignments : mapping category -> expert
        Must include the fallback category (``"fallback"``), pointing at a strong generalist.
    experts : iterable of str or ModelRegistry, optional
        The known experts; assigning any other raises :class:`MappingError`.
    categories : iterable of str, optional
        The router's categories; each must be mapped and no other may be (the fallback category
        is always allowed and need not be listed).
    fallback_category : str
        Name of the low-confidence category (default ``"fallback"``).

    Attributes
    ----------
    categories : list of str
        The real categories (fallback excluded), in map order.
    assignments : dict
        A copy of ``category -> expert``, fallback included (last).

    Examples
    --------
    >>> m = CategoryExpertMap({"math": "qwen", "law": "llama", "fallback": "llama"},
    ...                       experts=["qwen", "llama", "phi"])
    >>> m.assign("law", "phi"); m.diff(CategoryExpertMap({"math": "qwen", "law": "llama",
    ...                                                   "fallback": "llama"}))
    ['law: phi -> llama']
    >>> _ = m.undo(); m.expert_for("law")
    'llama'
    """

    def __init__(
        self,
        assignments: Mapping[str, str],
        *,
        experts: Iterable[str] | ModelRegistry | None = None,
        categories: Iterable[str] | None = None,
        fallback_category: str = FALLBACK_CATEGORY,
    ) -> None:
        if not isinstance(assignments, Mapping):
            raise MappingError(
                f"assignments must be a mapping category -> expert, got {type(assignments).__name__}"
            )
        self._fallback_category = str(fallback_category)
        if experts is None:
            self._known_experts: list[str] | None = None
        elif isinstance(experts, ModelRegistry):
            self._known_experts = experts.names
        else:
            if isinstance(experts, str):
                raise MappingError("experts must be a list of names, not a single string")
            self._known_experts = [str(e) for e in experts]
        cats = None
        if categories is not None:
            if isinstance(categories, str):
                raise MappingError("categories must be a list of names, not a single string")
            cats = [str(c) for c in categories if str(c) != self._fallback_category]
        self._known_categories = cats
        self._assign = self._validated(assignments)
        self._history: list[Edit] = []
        self._redo: list[Edit] = []

    # ------------------------------------------------------------------ validation
    def _validated(self, assignments: Mapping[str, str]) -> dict[str, str]:
        bad_keys: list[str] = []
        problems: list[str] = []
        clean: dict[str, str] = {}
        for cat, expert in assignments.items():
            if not isinstance(cat, str) or not cat:
                problems.append(f"category {cat!r} must be a non-empty string")
                bad_keys.append(str(cat))
                continue
            if not isinstance(expert, str) or not expert:
                problems.append(f"category {cat!r} maps to {expert!r}, which is not an expert name")
                bad_keys.append(cat)
                continue
            clean[cat] = expert
        if self._known_experts is not None:
            known = set(self._known_experts)
            for cat, expert in clean.items():
                if expert not in known:
                    problems.append(
                        f"category {cat!r} maps to unknown expert {expert!r}; known experts: "
                        f"{', '.join(self._known_experts)}"
                    )
                    bad_keys.append(cat)
        fb = self._fallback_category
        if self._known_categories is not None:
            known_c = set(self._known_categories)
            unknown = [c for c in clean if c not in known_c and c != fb]
            for c in unknown:
                problems.append(
                    f"category {c!r} is not one of the router's categories: "
                    f"{', '.join(self._known_categories)} (or {fb!r})"
                )
                bad_keys.append(c)
            missing = [c for c in self._known_categories if c not in clean]
            if missing:
                problems.append(
                    f"categories {', '.join(map(repr, missing))} are not mapped; assign each an expert"
                )
        if fb not in clean:
            problems.append(
                f"the map has no {fb!r} entry; add {fb!r}: <a strong generalist expert> for "
                "low-confidence prompts"
            )
        if problems:
            err = MappingError("; ".join(problems))
            err.bad_keys = bad_keys  # type: ignore[attr-defined]
            raise err
        if self._known_categories is not None:
            order = [c for c in self._known_categories]
        else:
            order = [c for c in clean if c != fb]
        return {**{c: clean[c] for c in order}, fb: clean[fb]}

    # ------------------------------------------------------------------ access
    @property
    def assignments(self) -> dict[str, str]:
        return dict(self._assign)

    @property
    def categories(self) -> list[str]:
        return [c for c in self._assign if c != self._fallback_category]

    @property
    def fallback_category(self) -> str:
        return self._fallback_category

    @property
    def fallback_expert(self) -> str:
        return self._assign[self._fallback_category]

    @property
    def experts_used(self) -> list[str]:
        """Distinct experts the map uses (fallback included), in first-use order."""
        return list(dict.fromkeys(self._assign.values()))

    @property
    def known_experts(self) -> list[str] | None:
        return None if self._known_experts is None else list(self._known_experts)

    def expert_for(self, category: str) -> str:
        """The expert for ``category``; unknown categories raise :class:`MappingError`."""
        try:
            return self._assign[category]
        except KeyError:
            raise MappingError(
                f"category {category!r} is not in the map; known categories: "
                f"{', '.join(self._assign)}"
            ) from None

    __getitem__ = expert_for

    def experts_for(self, categories: Iterable[str]) -> np.ndarray:
        """Vectorised :meth:`expert_for`: the expert of each category (e.g. a router's predictions).

        Examples
        --------
        >>> m = CategoryExpertMap({"math": "qwen", "fallback": "llama"})
        >>> m.experts_for(["math", "fallback", "math"]).tolist()
        ['qwen', 'llama', 'qwen']
        """
        cats = [str(c) for c in categories]
        unknown = sorted(set(cats) - set(self._assign))
        if unknown:
            raise MappingError(
                f"categories {unknown} are not in the map; known categories: {', '.join(self._assign)}"
            )
        return np.array([self._assign[c] for c in cats], dtype=object).astype(str) if cats else np.array([], dtype=str)

    def __contains__(self, category: object) -> bool:
        return category in self._assign

    def __iter__(self):
        return iter(self._assign)

    def __len__(self) -> int:
        return len(self._assign)

    def items(self):
        return self._assign.items()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoryExpertMap):
            return NotImplemented
        return self._assign == other._assign and self._fallback_category == other._fallback_category

    def __repr__(self) -> str:
        body = ", ".join(f"{c!r}: {e!r}" for c, e in self._assign.items())
        return f"CategoryExpertMap({{{body}}})"

    def copy(self) -> "CategoryExpertMap":
        """A copy with the same assignments and known experts/categories (no history)."""
        return CategoryExpertMap(
            self._assign,
            experts=self._known_experts,
            categories=self._known_categories,
            fallback_category=self._fallback_category,
        )

    # ------------------------------------------------------------------ edits
    def assign(self, category: str, expert: str) -> None:
        """Send ``category`` to ``expert`` (recorded for :meth:`undo`; clears the redo stack)."""
        old = self.expert_for(category)
        if self._known_experts is not None and expert not in self._known_experts:
            raise MappingError(
                f"cannot assign {category!r} to unknown expert {expert!r}; known experts: "
                f"{', '.join(self._known_experts)}"
            )
        if not isinstance(expert, str) or not expert:
            raise MappingError(f"expert must be a non-empty name, got {expert!r}")
        if old == expert:
            return
        self._assign[category] = expert
        self._history.append(Edit(category, old, expert))
        self._redo.clear()

    def undo(self) -> Edit:
        """Revert the last edit and return it; raises :class:`MappingError` if there is none."""
        if not self._history:
            raise MappingError("nothing to undo: the map has no edits")
        edit = self._history.pop()
        self._assign[edit.category] = edit.old
        self._redo.append(edit)
        return edit

    def redo(self) -> Edit:
        """Re-apply the last undone edit and return it."""
        if not self._redo:
            raise MappingError("nothing to redo: no edit has been undone since the last change")
        edit = self._redo.pop()
        self._assign[edit.category] = edit.new
        self._history.append(edit)
        return edit

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def history(self) -> list[Edit]:
        """Applied edits, oldest first."""
        return list(self._history)

    def diff(self, other: "CategoryExpertMap | Mapping[str, str]") -> list[str]:
        """Readable differences, one line per category: ``"math: old -> new"``.

        ``self`` is the old side, ``other`` the new one; a category only on one side shows
        ``(unmapped)`` on the other.
        """
        theirs = other.assignments if isinstance(other, CategoryExpertMap) else dict(other)
        lines = []
        for cat in list(dict.fromkeys([*self._assign, *theirs])):
            a, b = self._assign.get(cat), theirs.get(cat)
            if a != b:
                lines.append(f"{cat}: {a or '(unmapped)'} -> {b or '(unmapped)'}")
        return lines

    # ------------------------------------------------------------------ metrics
    def metrics(
        self,
        scores: "ExpertScores | pd.DataFrame",
        registry: ModelRegistry,
        weights: Mapping[str, float] | None = None,
    ) -> MapMetrics:
        """Expected score, average active and resident parameters of this map.

        Parameters
        ----------
        scores : ExpertScores or pandas.DataFrame
            Per-prompt scores (category means and weights come from them) or a category-means
            table (index categories, columns experts).
        registry : ModelRegistry
            Parameter counts of every expert the map uses.
        weights : mapping category -> weight, optional
            Category frequencies (normalised here). Default: the scores' category shares, or equal
            weights for a means table. The fallback category counts only when it has a positive
            weight and a row in the means.

        Notes
        -----
        With the true categories this is the map's expected quality. For what a router plus this
        map actually achieve, relabel the prompts with the router's predictions (``"fallback"``
        included): ``m.metrics(scores.with_categories(router.predict(X)), registry)`` is then
        the mean over prompts of the score of the expert each prompt is sent to, and the mean of
        its active parameters.

        Examples
        --------
        >>> import pandas as pd
        >>> means = pd.DataFrame({"a": [1.0, 0.0], "b": [0.5, 0.5]}, index=["x", "y"])
        >>> m = CategoryExpertMap({"x": "a", "y": "b", "fallback": "b"})
        >>> met = m.metrics(means, ModelRegistry({"a": 7.0, "b": 13.0}), {"x": 3, "y": 1})
        >>> met.expected_score, met.average_active_params_b, met.resident_params_b
        (0.875, 8.5, 20.0)
        """
        means, w = _means_and_weights(scores, weights, map_categories=self.categories)
        registry.require(self.experts_used, context="CategoryExpertMap.metrics")
        fb = self._fallback_category
        rows = list(self.categories)
        if w.get(fb, 0.0) > 0 and fb in means.index:
            rows.append(fb)
        extra = [c for c, x in w.items() if x > 0 and c not in self._assign]
        if extra:
            raise MappingError(
                f"the scores/weights have categories {extra} that the map does not assign; "
                "assign them or drop them from the weights"
            )
        weight = np.array([float(w.get(c, 0.0)) for c in rows])
        if weight.sum() <= 0:
            raise ScoresError("the category weights of the map's categories sum to zero")
        weight = weight / weight.sum()
        score = np.zeros(len(rows))
        for i, c in enumerate(rows):
            if weight[i] == 0:
                score[i] = float(means.at[c, self._assign[c]]) if (
                    c in means.index and self._assign[c] in means.columns) else float("nan")
                continue
            e = self._assign[c]
            if c not in means.index:
                raise ScoresError(
                    f"no scores for category {c!r}; scored categories: {', '.join(map(str, means.index))}"
                )
            if e not in means.columns:
                raise ScoresError(
                    f"category {c!r} is mapped to {e!r}, which has no scores; scored experts: "
                    f"{', '.join(map(str, means.columns))}"
                )
            score[i] = float(means.at[c, e])
            if not math.isfinite(score[i]):
                raise ScoresError(f"the score of expert {e!r} on category {c!r} is NaN; fill or rescore it")
        active = np.array([registry.active(self._assign[c]) for c in rows])
        import pandas as pd

        sc = np.where(weight > 0, weight * np.nan_to_num(score), 0.0)
        per = pd.DataFrame({
            "category": rows,
            "expert": [self._assign[c] for c in rows],
            "weight": weight,
            "score": score,
            "active_params_b": active,
            "score_contribution": sc,
            "active_contribution": weight * active,
        })
        used = self.experts_used
        return MapMetrics(
            expected_score=float(sc.sum()),
            average_active_params_b=float((weight * active).sum()),
            resident_params_b=float(sum(registry.total(e) for e in used)),
            per_category=per,
            n_experts=len(used),
        )

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        """``{"fallback_category": .., "assignments": {category: expert}}`` (JSON/YAML-safe)."""
        return {"fallback_category": self._fallback_category, "assignments": dict(self._assign)}

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        experts: Iterable[str] | ModelRegistry | None = None,
        categories: Iterable[str] | None = None,
    ) -> "CategoryExpertMap":
        """Inverse of :meth:`to_dict`; a plain ``{category: expert}`` mapping is also accepted."""
        if not isinstance(data, Mapping):
            raise MappingError(f"a map must be a mapping, got {type(data).__name__}")
        if "assignments" in data and isinstance(data["assignments"], Mapping):
            unknown = set(data) - {"assignments", "fallback_category", "meta"}
            if unknown:
                raise MappingError(f"unknown keys {sorted(unknown)} in map; expected assignments, fallback_category")
            return cls(
                data["assignments"],
                experts=experts,
                categories=categories,
                fallback_category=data.get("fallback_category", FALLBACK_CATEGORY),
            )
        return cls(data, experts=experts, categories=categories)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the map as ``.json`` or ``.yaml``/``.yml`` (atomically)."""
        from workbench._paths import atomic_write_text

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            text = json.dumps(self.to_dict(), indent=2) + "\n"
        elif suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        else:
            raise MappingError(f"cannot save a map to {path}: use a .json, .yaml or .yml file")
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        experts: Iterable[str] | ModelRegistry | None = None,
        categories: Iterable[str] | None = None,
    ) -> "CategoryExpertMap":
        """Read a map written by :meth:`save` (or a plain YAML/JSON ``category: expert`` mapping).

        Errors name the file and the line of the offending category.
        """
        path = Path(path)
        if not path.exists():
            raise MappingError(f"mapping file {path} does not exist")
        suffix = path.suffix.lower()
        text = path.read_text(encoding="utf-8")
        try:
            if suffix == ".json":
                data = json.loads(text)
            elif suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            else:
                raise MappingError(f"cannot read a map from {path}: use a .json, .yaml or .yml file")
        except (ValueError, ImportError) as exc:  # json.JSONDecodeError is a ValueError
            raise MappingError(f"mapping file {path} is not valid {suffix[1:].upper()}: {exc}") from None
        except Exception as exc:  # yaml.YAMLError
            if isinstance(exc, MappingError):
                raise
            raise MappingError(f"mapping file {path} is not valid YAML: {exc}") from None
        try:
            return cls.from_dict(data, experts=experts, categories=categories)
        except MappingError as exc:
            keys = getattr(exc, "bad_keys", [])
            lines = [_line_of_key(text, k) for k in keys]
            where = ", ".join(f"{k!r} on line {n}" for k, n in zip(keys, lines) if n)
            suffix_msg = f" (see {where})" if where else ""
            err = MappingError(f"mapping file {path}: {exc}{suffix_msg}")
            err.bad_keys = keys  # type: ignore[attr-defined]
            raise err from None


def _line_of_key(text: str, key: str) -> int | None:
    pattern = re.compile(r"^\s*(?:-\s*)?[\"']?" + re.escape(key) + r"[\"']?\s*:")
    for n, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            return n
    return None


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _means_and_weights(scores, weights, map_categories=None):
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
                c for c in means.index if c != FALLBACK_CATEGORY]
            weights = {c: 1.0 for c in cats}
    else:
        raise ScoresError(
            f"scores must be an ExpertScores or a category-means DataFrame, got {type(scores).__name__}"
        )
    if means.index.has_duplicates:
        raise ScoresError(f"category means have duplicate categories: {sorted(set(means.index[means.index.duplicated()]))}")
    if means.columns.has_duplicates:
        raise ScoresError("category means have duplicate expert columns")
    out: dict[str, float] = {}
    for c, x in dict(weights).items():
        try:
            xf = float(x)
        except (TypeError, ValueError):
            raise ScoresError(f"weight of category {c!r} must be a number, got {x!r}") from None
        if not math.isfinite(xf) or xf < 0:
            raise ScoresError(f"weight of category {c!r} must be a finite number >= 0, got {x!r}")
        out[str(c)] = xf
    if map_categories is not None:
        missing = [c for c in map_categories if c not in out]
        if missing:
            raise ScoresError(
                f"no weight for categories {missing}; give every mapped category a weight "
                "(e.g. scores.category_weights())"
            )
    return means, out


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
