"""The category-to-expert map: :class:`CategoryExpertMap` (with the undo/redo history of hand
edits, :class:`Edit`), its metrics (:class:`MapMetrics`) and its JSON/YAML files.

A map sends every router category (plus the fallback category for low-confidence prompts) to one
expert. Its quality is the category-frequency-weighted mean of the chosen experts' per-category
scores; its cost is the *average active parameters* (the same weighting over the experts' active
parameters) and the *resident parameters* (total parameters of the distinct experts it uses,
fallback included, with a base that experts share counted once).
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import MappingError, ScoresError
from workbench.mapping.history import Edit, EditGroup, MapHistory
from workbench.mapping.problem import means_and_weights
from workbench.registry import ModelRegistry
from workbench.safeio import MAX_USER_FILE_BYTES, describe, short, short_list

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.scores import ExpertScores

__all__ = ["CategoryExpertMap", "Edit", "MapMetrics"]

_MAX_PROBLEMS = 10  # problems of one kind listed in a validation error (the rest are counted)
_MAX_LINE_KEYS = 20  # bad keys whose line a file error looks up


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
        Total parameters (billions) of the distinct experts the map uses, fallback included; a
        base that several experts share (LoRA adapters) is counted once.
    per_category : pandas.DataFrame
        ``category, expert, weight, score, active_params_b, score_contribution,
        active_contribution`` (contributions sum to the two averages).
    """

    expected_score: float
    average_active_params_b: float
    resident_params_b: float
    per_category: "pd.DataFrame" = field(repr=False)
    n_experts: int = 0


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
    quote_values : bool
        Quote bad values (expert names) in error messages (default). ``False`` describes them
        instead (``"a 1,700-character string"``): for maps read from files that may not be maps
        at all (the app's file box), whose values must never be echoed.

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
        quote_values: bool = True,
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
        self._assign = self._validated(assignments, quote_values=bool(quote_values))
        self._history = MapHistory()

    # ------------------------------------------------------------------ validation
    def _validated(self, assignments: Mapping[str, str], *, quote_values: bool = True) -> dict[str, str]:
        bad_keys: list[str] = []
        problems: list[str] = []
        clean: dict[str, str] = {}

        def capped(items: list[str]) -> list[str]:
            if len(items) > _MAX_PROBLEMS:
                return [*items[:_MAX_PROBLEMS], f"... ({len(items) - _MAX_PROBLEMS} more like these)"]
            return items

        shape: list[str] = []
        for cat, expert in assignments.items():
            if not isinstance(cat, str) or not cat:
                shape.append(f"category {short(cat)} must be a non-empty string")
                bad_keys.append(str(cat))
                continue
            if not isinstance(expert, str) or not expert:
                if quote_values:
                    shape.append(f"category {short(cat)} maps to {short(expert)}, which is not an "
                                 "expert name")
                else:
                    shape.append(f"the value of {short(cat)} is not an expert name "
                                 f"({describe(expert)})")
                bad_keys.append(cat)
                continue
            clean[cat] = expert
        problems += capped(shape)
        if self._known_experts is not None:
            known = set(self._known_experts)
            wrong = []
            for cat, expert in clean.items():
                if expert not in known:
                    if quote_values:
                        wrong.append(f"category {short(cat)} maps to unknown expert {short(expert)}")
                    else:
                        wrong.append(f"the value of {short(cat)} is not one of the experts "
                                     f"({describe(expert)})")
                    bad_keys.append(cat)
            if wrong:
                problems += capped(wrong)
                problems.append(f"known experts: {short_list(self._known_experts)}")
        fb = self._fallback_category
        if self._known_categories is not None:
            known_c = set(self._known_categories)
            unknown = [c for c in clean if c not in known_c and c != fb]
            if unknown:
                listed = f"{short_list(self._known_categories)} (or {short(fb)})"
                if len(unknown) == 1:
                    problems.append(f"category {short(unknown[0])} is not one of the router's "
                                    f"categories: {listed}")
                else:
                    problems.append(f"categories {short_list(unknown, quote=True)} are not among "
                                    f"the router's categories: {listed}")
                bad_keys += unknown
            missing = [c for c in self._known_categories if c not in clean]
            if missing:
                problems.append(
                    f"categories {short_list(missing, quote=True)} are not mapped; assign each an "
                    "expert"
                )
        if fb not in clean:
            problems.append(
                f"the map has no {short(fb)} entry; add {short(fb)}: <a strong generalist expert> "
                "for low-confidence prompts"
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
                f"category {short(category)} is not in the map; known categories: "
                f"{short_list(self._assign)}"
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
                f"categories {short(unknown)} are not in the map; known categories: "
                f"{short_list(self._assign)}"
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
    def _check_assignment(self, category: str, expert: str) -> str:
        old = self.expert_for(category)
        if self._known_experts is not None and expert not in self._known_experts:
            raise MappingError(
                f"cannot assign {short(category)} to unknown expert {short(expert)}; known experts: "
                f"{short_list(self._known_experts)}"
            )
        if not isinstance(expert, str) or not expert:
            raise MappingError(f"expert must be a non-empty name, got {short(expert)}")
        return old

    def assign(self, category: str, expert: str) -> None:
        """Send ``category`` to ``expert`` (recorded for :meth:`undo`; clears the redo stack)."""
        self.assign_many([(category, expert)])

    def assign_many(self, changes: Iterable[tuple[str, str]]) -> list[Edit]:
        """Apply ``(category, expert)`` changes as **one** undoable action (all or nothing).

        Every change is checked before any is applied; unchanged rows are skipped. Returns the
        edits made (empty when nothing changed, and then nothing is recorded).
        """
        planned: dict[str, str] = {}
        for category, expert in changes:
            self._check_assignment(category, expert)
            planned[category] = expert
        edits = []
        for category, expert in planned.items():
            old = self._assign[category]
            if old != expert:
                edits.append(Edit(category, old, expert))
        if not edits:
            return []
        for e in edits:
            self._assign[e.category] = e.new
        self._history.record(edits)
        return edits

    def undo(self) -> Edit | EditGroup:
        """Revert the last action and return it (an :class:`Edit`, or an :class:`EditGroup` for an
        action of several edits); raises :class:`MappingError` if there is none."""
        action = self._history.undo()
        for edit in reversed(list(action) if isinstance(action, EditGroup) else [action]):
            self._assign[edit.category] = edit.old
        return action

    def redo(self) -> Edit | EditGroup:
        """Re-apply the last undone action and return it (like :meth:`undo`)."""
        action = self._history.redo()
        for edit in list(action) if isinstance(action, EditGroup) else [action]:
            self._assign[edit.category] = edit.new
        return action

    @property
    def can_undo(self) -> bool:
        return self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history.can_redo

    @property
    def history(self) -> list[Edit]:
        """Applied edits, oldest first (the edits of a multi-row action in their order)."""
        return self._history.edits

    @property
    def actions(self) -> list[tuple[Edit, ...]]:
        """Applied undoable actions, oldest first (each one or more edits)."""
        return self._history.actions

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
        means, w = means_and_weights(scores, weights, map_categories=self.categories,
                                     fallback_category=self._fallback_category)
        registry.require(self.experts_used, context="CategoryExpertMap.metrics")
        fb = self._fallback_category
        rows = list(self.categories)
        if w.get(fb, 0.0) > 0 and fb in means.index:
            rows.append(fb)
        extra = [c for c, x in w.items() if x > 0 and c not in self._assign]
        if extra:
            raise MappingError(
                f"the scores/weights have categories {short(extra)} that the map does not assign; "
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
                    f"no scores for category {short(c)}; scored categories: {short_list(means.index)}"
                )
            if e not in means.columns:
                raise ScoresError(
                    f"category {short(c)} is mapped to {short(e)}, which has no scores; scored "
                    f"experts: {short_list(means.columns)}"
                )
            score[i] = float(means.at[c, e])
            if not math.isfinite(score[i]):
                raise ScoresError(f"the score of expert {short(e)} on category {short(c)} is NaN; "
                                  "fill or rescore it")
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
            resident_params_b=registry.resident(used),
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
        quote_values: bool = True,
    ) -> "CategoryExpertMap":
        """Inverse of :meth:`to_dict`; a plain ``{category: expert}`` mapping is also accepted.

        ``quote_values=False``: error messages describe bad values instead of quoting them (see
        :class:`CategoryExpertMap`).
        """
        if not isinstance(data, Mapping):
            raise MappingError(f"a map must be a mapping, got {type(data).__name__}")
        if "assignments" in data and isinstance(data["assignments"], Mapping):
            unknown = set(data) - {"assignments", "fallback_category", "meta"}
            if unknown:
                names = short_list(sorted(map(str, unknown)), quote=True)
                raise MappingError(f"unknown keys [{names}] in map; expected assignments, "
                                   "fallback_category")
            fb = data.get("fallback_category", FALLBACK_CATEGORY)
            if not isinstance(fb, str) or not fb:
                got = short(fb) if quote_values else describe(fb)
                raise MappingError(f"fallback_category must be a category name, got {got}")
            if not quote_values and fb not in data["assignments"]:
                raise MappingError(f"the value of 'fallback_category' is not one of the map's "
                                   f"categories ({describe(fb)})")
            return cls(
                data["assignments"],
                experts=experts,
                categories=categories,
                fallback_category=fb,
                quote_values=quote_values,
            )
        return cls(data, experts=experts, categories=categories, quote_values=quote_values)

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
        quote_values: bool = True,
        max_bytes: int = MAX_USER_FILE_BYTES,
    ) -> "CategoryExpertMap":
        """Read a map written by :meth:`save` (or a plain YAML/JSON ``category: expert`` mapping).

        Errors name the file and the line of the offending category. YAML aliases, duplicate keys
        (YAML and JSON) and files over ``max_bytes`` are refused. ``quote_values=False`` never
        quotes the file's values in errors (for files a browser user picks: they may hold secrets).
        """
        from workbench.safeio import load_json, load_yaml, read_text_limited

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".json", ".yaml", ".yml"):
            raise MappingError(f"cannot read a map from {path}: use a .json, .yaml or .yml file")
        text = read_text_limited(path, error=MappingError, max_bytes=max_bytes, what="mapping file")
        if suffix == ".json":
            data = load_json(text, f"mapping file {path}", error=MappingError)
        else:
            data = load_yaml(text, f"mapping file {path}", error=MappingError)
        try:
            return cls.from_dict(data, experts=experts, categories=categories,
                                 quote_values=quote_values)
        except MappingError as exc:
            keys = getattr(exc, "bad_keys", [])
            where = _key_lines(text, list(dict.fromkeys(keys))[:_MAX_LINE_KEYS])
            suffix_msg = f" (see {where})" if where else ""
            err = MappingError(f"mapping file {path}: {exc}{suffix_msg}")
            err.bad_keys = keys  # type: ignore[attr-defined]
            raise err from None


def _key_lines(text: str, keys: list[str]) -> str:
    """``"'law' on line 2, 'x' on line 5"`` for the keys found in ``text``."""
    lines = text.splitlines()
    found = []
    for k in keys:
        n = _line_of_key(lines, k)
        if n:
            found.append(f"{short(k)} on line {n}")
    return ", ".join(found)


def _line_of_key(lines: list[str], key: str) -> int | None:
    pattern = re.compile(r"^\s*(?:-\s*)?[\"']?" + re.escape(key) + r"[\"']?\s*:")
    for n, line in enumerate(lines, start=1):
        if key in line and pattern.search(line):
            return n
    return None
