"""The mapping editor: edit the category -> expert table with live metrics and the Pareto frontier.

:class:`MappingEditorModel` holds all the state and logic (tests drive it directly; this module
imports without Panel); :class:`MappingEditorPanel` (in :mod:`workbench.ui.panel.mapping_editor`)
is a thin Panel view over it (a ``Tabulator`` with list editors, the
metrics, the frontier figure with the current map as a marker, optimise / undo / redo / load /
save), and :func:`mapping_editor_widget` (:mod:`workbench.ui.widgets.mapping_editor`) is the
ipywidgets version for notebooks. ``workbench.ui.mapping_editor`` is this module (an alias).

Every model owns **its own copy** of the map, so two browser sessions (two models built from one
bundle) never see each other's unsaved edits. Every edit is autosaved atomically (a temp file, then
a rename) to :attr:`MappingEditorModel.autosave_path`, so a crash never leaves a broken or
half-written map.

In the app, file names typed into the map file box go through a :class:`~workbench.safeio.FileBox`
(:func:`default_file_box`: ``$COE_WORKBENCH_FILES`` or ``cache_dir("files")``): names are relative
to that folder and cannot leave it, load errors never quote the file's values (a file that is not
a map may hold secrets), and :meth:`MappingEditorModel.save` never overwrites a file that is not
a map.

Examples
--------
>>> from workbench.ui.mapping_editor import MappingEditorModel      # doctest: +SKIP
>>> editor = MappingEditorModel.from_bundle(bundle)                  # doctest: +SKIP
>>> editor.set_expert("math", "math-expert"); editor.metrics.expected_score   # doctest: +SKIP
>>> editor.optimize(budget_b=0.5, locked=["code"]); editor.undo()   # doctest: +SKIP
>>> editor.save("my_map.yaml")                                       # doctest: +SKIP
"""
from __future__ import annotations

import html
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import param

from workbench.errors import MappingError, WorkbenchError
from workbench.registry import format_params  # noqa: F401  (re-exported: the unit that fits)
from workbench.mapping.problem import check_budget
from workbench.safeio import FileBox, short, short_list

__all__ = ["MappingEditorModel", "format_params",
           "default_file_box", "MAX_MAP_FILE_BYTES", "clean_autosaves", "AUTOSAVE_MAX_AGE_S"]

#: largest map file the editor reads (a map of a thousand categories is about 50 KB)
MAX_MAP_FILE_BYTES = 4 * 2**20

#: CSS classes of the editor's parts (stable names for browser tests)
CSS = {
    "root": "coe-mapping-editor",
    "table": "coe-mapping-table",
    "metrics": "coe-metrics",
    "frontier": "coe-frontier-plot",
    "budget": "coe-budget-input",
    "optimise": "coe-optimise-button",
    "undo": "coe-undo-button",
    "redo": "coe-redo-button",
    "path": "coe-mapping-path",
    "save": "coe-save-button",
    "load": "coe-load-button",
    "status": "coe-mapping-status",
}


def default_file_box() -> FileBox:
    """The folder the app's map file box reads and writes: ``$COE_WORKBENCH_FILES`` or
    ``cache_dir("files")`` (created when missing)."""
    root = os.environ.get("COE_WORKBENCH_FILES")
    if root:
        return FileBox(root)
    from workbench._paths import cache_dir

    return FileBox(cache_dir("files"))


#: session autosaves older than this are removed (by :func:`clean_autosaves`, when a session
#: first autosaves and when the app starts): a week
AUTOSAVE_MAX_AGE_S = 7 * 86400.0


def _sessions_dir() -> Path:
    from workbench._paths import cache_dir

    return cache_dir("sessions")


def _default_autosave_path() -> Path:
    return _sessions_dir() / f"mapping-{uuid.uuid4().hex[:12]}.json"


def clean_autosaves(older_than_s: float = AUTOSAVE_MAX_AGE_S, folder: str | os.PathLike | None = None
                    ) -> list[Path]:
    """Remove session autosaves (``mapping-*.json``) not changed for ``older_than_s`` seconds.

    Returns the removed paths. Autosaves exist only for sessions that edited their map; save a map
    you want to keep with :meth:`MappingEditorModel.save`.
    """
    from workbench._paths import remove_older_than

    return remove_older_than(Path(folder) if folder is not None else _sessions_dir(),
                             "mapping-*.json", older_than_s)


def _edits(action: Any) -> list[Any]:
    """The edits of what ``CategoryExpertMap.undo``/``redo`` returned (one Edit or an EditGroup)."""
    from workbench.mapping import EditGroup

    return list(action) if isinstance(action, EditGroup) else [action]


class MappingEditorModel(param.Parameterized):
    """State and logic of the mapping editor: a private copy of a map, edits, metrics, frontier.

    Parameters
    ----------
    mapping : CategoryExpertMap
        The starting map; the model edits a **copy** (the caller's object never changes).
    scores : ExpertScores or pandas.DataFrame
        Per-prompt scores (or a category-means table) the metrics and the optimiser use.
    registry : ModelRegistry
        Parameter counts of the experts.
    weights : mapping category -> weight, optional
        Category frequencies; default the scores' category shares.
    autosave_path : str or Path, optional
        Where every edit is saved atomically (JSON), from the first edit on (a session that never
        edits writes nothing). Default: a new file per model under ``cache_dir("sessions")``;
        files there untouched for :data:`AUTOSAVE_MAX_AGE_S` are removed. ``autosave=False``
        turns autosaving off.
    autosave : bool
        Save after every change (default True).
    files : FileBox, optional
        Confine :meth:`load`, :meth:`save` and :meth:`diff` to this folder (the app passes
        :func:`default_file_box`): names are relative to it, absolute paths, ``..``, links out of
        it and other suffixes are refused, and load errors never quote the file's values.
        Without it, paths are used as given (notebooks, scripts).

    Attributes
    ----------
    mapping : CategoryExpertMap
        The model's own map (read it; change it through the model's methods).
    version : int
        Increases on every change; views watch it.

    Examples
    --------
    >>> editor = MappingEditorModel(mapping, scores, registry)        # doctest: +SKIP
    >>> editor.set_expert("law", "big"); editor.undo(); editor.redo()  # doctest: +SKIP
    """

    budget_b = param.Number(default=None, allow_None=True, bounds=(0, None),
                            doc="Budget on average active parameters (billions) for optimize().")
    locked = param.List(default=[], item_type=str,
                        doc="Categories optimize() keeps as they are.")
    version = param.Integer(default=0, doc="Bumped on every change of the map or the locks.")
    status = param.String(default="", doc="The last message for the user (errors included).")
    score_description = param.String(
        default="the mean of the per-prompt scores of each category's expert, categories weighted "
                "by their share of the prompts (higher is better)",
        doc="What the expected score measures, shown next to it.")

    def __init__(self, mapping: Any, scores: Any, registry: Any, *,
                 weights: Mapping[str, float] | None = None,
                 autosave_path: str | os.PathLike | None = None, autosave: bool = True,
                 files: FileBox | None = None, **params: Any) -> None:
        from workbench.mapping import CategoryExpertMap

        if not isinstance(mapping, CategoryExpertMap):
            raise MappingError(f"MappingEditorModel needs a CategoryExpertMap, got "
                               f"{type(mapping).__name__}; load one with CategoryExpertMap.load(path)")
        super().__init__(**params)
        self._map = mapping.copy()  # each model owns its map: sessions never share edits
        self._scores = scores
        self._registry = registry
        self._weights = dict(weights) if weights is not None else None
        self._frontier_cache: dict[Any, list[Any]] = {}
        self._baselines: dict[str, Any] | None = None
        self._metrics_cache: tuple[int, Any] | None = None
        if files is not None and not isinstance(files, FileBox):
            raise MappingError(f"files must be a workbench.safeio.FileBox, got {type(files).__name__}")
        self.files: FileBox | None = files
        self.autosave = bool(autosave)
        self.autosave_path: Path | None = (Path(autosave_path) if autosave_path is not None
                                           else (_default_autosave_path() if autosave else None))
        self._check_experts(self._map.experts_used, context="the starting map")
        if self.budget_b is None:
            self.budget_b = round(self.metrics.average_active_params_b, 6)
        self._autosaved = False  # the autosave file is written on the first edit, not before

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_bundle(cls, bundle: Any, autosave_path: str | os.PathLike | None = None,
                    files: FileBox | None = None, **kwargs: Any) -> MappingEditorModel:
        """An editor over ``bundle.mapping`` with ``bundle.scores`` and ``bundle.registry``.

        ``files``: the folder the map file box is confined to (see :class:`MappingEditorModel`).
        """
        missing = [a for a in ("mapping", "scores", "registry") if getattr(bundle, a, None) is None]
        if missing:
            raise MappingError(f"the bundle has no {', '.join(missing)}; build it with "
                               "workbench.demo.build_demo_bundle() or pass them to "
                               "MappingEditorModel(mapping, scores, registry)")
        budget = getattr(bundle, "budget_b", None)
        if budget is not None and "budget_b" not in kwargs:
            kwargs["budget_b"] = float(budget)
        description = getattr(bundle, "score_description", None)
        if isinstance(description, str) and "score_description" not in kwargs:
            kwargs["score_description"] = description
        return cls(bundle.mapping, bundle.scores, bundle.registry, autosave_path=autosave_path,
                   files=files, **kwargs)

    # ------------------------------------------------------------------ read access
    @property
    def registry(self) -> Any:
        """The :class:`~workbench.registry.ModelRegistry` the metrics are computed with."""
        return self._registry

    def budget_step(self) -> float:
        """A budget step for spin boxes: a tenth of the largest expert's order of magnitude (B)."""
        import math

        top = max((self._registry.active(e) for e in self.experts), default=1.0)
        return 10 ** math.floor(math.log10(top)) / 10 if top > 0 else 0.1

    @property
    def mapping(self) -> Any:
        """The model's own :class:`CategoryExpertMap` (change it through the model)."""
        return self._map

    @property
    def categories(self) -> list[str]:
        """Rows of the table: the real categories, then the fallback category."""
        return [*self._map.categories, self._map.fallback_category]

    @property
    def experts(self) -> list[str]:
        """Experts a row may use: scored experts that the registry knows."""
        if hasattr(self._scores, "experts"):
            scored = list(self._scores.experts)
        else:
            scored = [str(c) for c in self._scores.columns]
        known = self._map.known_experts
        out = [e for e in scored if e in self._registry and (known is None or e in known)]
        for e in self._map.experts_used:  # always offer what the map already uses
            if e not in out:
                out.append(e)
        return out

    @property
    def can_undo(self) -> bool:
        return self._map.can_undo

    @property
    def can_redo(self) -> bool:
        return self._map.can_redo

    @property
    def metrics(self) -> Any:
        """:class:`~workbench.mapping.MapMetrics` of the current map (cached per version)."""
        if self._metrics_cache is None or self._metrics_cache[0] != self.version:
            m = self._map.metrics(self._scores, self._registry, self._weights)
            self._metrics_cache = (self.version, m)
        return self._metrics_cache[1]

    @property
    def current_marker(self) -> tuple[float, float]:
        """(average active params in billions, expected score) of the current map."""
        m = self.metrics
        return (m.average_active_params_b, m.expected_score)

    def _locked_map(self) -> dict[str, str]:
        return {c: self._map.expert_for(c) for c in self.locked
                if c != self._map.fallback_category}

    @property
    def frontier(self) -> list[Any]:
        """The exact Pareto frontier (every breakpoint) given the locked rows and fallback."""
        from workbench.mapping import pareto_frontier

        locked = self._locked_map()
        key = (tuple(sorted(locked.items())), self._map.fallback_expert)
        if key not in self._frontier_cache:
            self._frontier_cache[key] = pareto_frontier(
                self._scores, self._weights, self._registry, locked=locked or None,
                fallback_expert=self._map.fallback_expert)
        return self._frontier_cache[key]

    @property
    def baselines(self) -> dict[str, Any]:
        """Each expert alone, as frontier points (the monolithic baselines)."""
        if self._baselines is None:
            from workbench.mapping import monolithic_baselines

            self._baselines = monolithic_baselines(self._scores, self._weights, self._registry)
        return self._baselines

    def metrics_dict(self) -> dict[str, float]:
        """``expected_score``, ``average_active_params_b``, ``resident_params_b``, ``n_experts``."""
        m = self.metrics
        return {"expected_score": m.expected_score,
                "average_active_params_b": m.average_active_params_b,
                "resident_params_b": m.resident_params_b, "n_experts": m.n_experts}

    def table(self) -> Any:
        """The editable table: ``category, expert, locked, weight, score, active params``.

        ``active params`` is display text in the unit that fits (``134.5M``, ``7.6B``).

        Categories are HTML-escaped (``category`` is display text); ``expert`` holds raw names
        (the list editor's values).
        """
        import pandas as pd

        per = self.metrics.per_category.set_index("category")
        rows = []
        for c in self.categories:
            e = self._map.expert_for(c)
            has = c in per.index
            rows.append({
                "category": html.escape(c),
                "expert": e,
                "locked": c in self.locked,
                "weight": float(per.at[c, "weight"]) if has else 0.0,
                "score": float(per.at[c, "score"]) if has else float("nan"),
                "active params": format_params(self._registry.active(e)),
            })
        return pd.DataFrame(rows, columns=["category", "expert", "locked", "weight", "score",
                                           "active params"])

    def metrics_parts(self) -> list[tuple[str, str]]:
        """The metrics line as ``(label, value)`` pairs, numbers at reading precision."""
        m = self.metrics
        return [("Expected score", f"{m.expected_score:.3f}"),
                ("Average active params", format_params(m.average_active_params_b)),
                ("Resident params", format_params(m.resident_params_b)),
                ("Experts", str(m.n_experts))]

    def metrics_note(self) -> str:
        """What each metric measures (plain text; views escape it)."""
        return (f"Expected score: {self.score_description}. Average active params: the experts' "
                "sizes weighted by how often each category comes up. Resident params: the memory of "
                "all experts the map uses, a base that LoRA experts share counted once.")

    def figure(self) -> Any:
        """The frontier figure with the single experts and the current map as a star."""
        from workbench.plots.mapping import frontier_figure

        return frontier_figure(self.frontier, baselines=self.baselines, current=self.metrics)

    def diff(self, other: Any) -> list[str]:
        """Differences from the current map to ``other`` (a map or a path to one)."""
        if isinstance(other, (str, os.PathLike)):
            other = self._read(self._resolve(other))
        return self._map.diff(other)

    # ------------------------------------------------------------------ edits
    def _check_experts(self, names: Iterable[str], *, context: str) -> None:
        self._registry.require(list(names), context=f"mapping editor ({context})")

    def _check_category(self, category: str) -> str:
        if category not in self._map:
            raise MappingError(f"category {short(category)} is not in the map; categories: "
                               f"{short_list(self.categories)}")
        return category

    def _apply(self, changes: Sequence[tuple[str, str]], message: str) -> list[Any]:
        """Apply ``(category, expert)`` changes as one undoable action of the map's own history
        (all or nothing: every row is checked first)."""
        changes = list(changes)
        for category, expert in changes:
            self._check_category(category)
            if expert not in self._registry and self._map.expert_for(category) != expert:
                self._check_experts([expert], context=f"row {short(category)}")
        applied = self._map.assign_many(changes)
        if applied:
            self._changed(message)
        return applied

    def _changed(self, message: str) -> None:
        ok = self._autosave()
        self.status = message if ok else self.status
        self.version += 1

    def _autosave(self) -> bool:
        """Save the map atomically (temp file + fsync + rename): a failure or crash midway
        leaves the previous autosave intact. Failures are reported in :attr:`status`."""
        if not (self.autosave and self.autosave_path is not None):
            return True
        try:
            if not self._autosaved and self.autosave_path.parent == _sessions_dir():
                clean_autosaves()  # a new session file: drop the ones nobody touched for a week
            self._map.save(self.autosave_path)
            self._autosaved = True
        except OSError as exc:
            self.status = (f"error: autosave to {self.autosave_path} failed ({exc}); the edit "
                           "is kept in this session, save the map to another file")
            return False
        return True

    def set_expert(self, category: str, expert: str) -> None:
        """Send ``category`` to ``expert`` (one undoable edit, autosaved).

        Raises
        ------
        MappingError
            Unknown category or expert (the message lists the known ones).
        """
        category, expert = str(category), str(expert)
        known = self._map.known_experts
        if known is not None and expert not in known:
            raise MappingError(f"cannot assign {short(category)} to unknown expert {short(expert)}; "
                               f"experts: {short_list(self.experts)}")
        self._apply([(category, expert)], f"{category}: {self._map.expert_for(self._check_category(category))} -> {expert}")

    def set_locked(self, category: str, locked: bool = True) -> None:
        """Lock (or unlock) a row so :meth:`optimize` keeps it."""
        self._check_category(str(category))
        now = [c for c in self.locked if c != category]
        if locked:
            now.append(str(category))
        if now != list(self.locked):
            self.locked = [c for c in self.categories if c in now]
            self.status = f"{category} {'locked' if locked else 'unlocked'}"
            self.version += 1

    def undo(self) -> list[str]:
        """Undo the last action (an edit, an optimise or a load); returns its lines."""
        if not self._map.can_undo:
            raise MappingError("nothing to undo: no edits in this session")
        action = self._map.undo()
        lines = [str(e) for e in _edits(action)]
        self._changed("undone: " + "; ".join(lines))
        return lines

    def redo(self) -> list[str]:
        """Re-apply the last undone action; returns its lines."""
        if not self._map.can_redo:
            raise MappingError("nothing to redo: no undone edits since the last change")
        action = self._map.redo()
        lines = [str(e) for e in _edits(action)]
        self._changed("redone: " + "; ".join(lines))
        return lines

    def optimize(self, budget_b: float | None = None, locked: Iterable[str] | None = None,
                 **limits: Any) -> list[str]:
        """Replace the unlocked rows by the exact best map at ``budget_b`` (one undoable action).

        Parameters
        ----------
        budget_b : float, optional
            Budget on average active parameters in billions (default :attr:`budget_b`).
        locked : iterable of str, optional
            Rows to keep (default :attr:`locked`); given, it also becomes :attr:`locked`.
        **limits
            ``max_resident_b`` / ``max_experts`` passed to :func:`optimize_mapping`.

        Returns
        -------
        list of str
            The changed rows (``"math: a -> b"``); empty when the map already is optimal.

        Raises
        ------
        InfeasibleBudgetError
            The budget is below the smallest feasible one (the message says which).
        """
        from workbench.mapping import optimize_mapping

        if locked is not None:
            locked = [str(c) for c in locked]
            for c in locked:
                self._check_category(c)
            self.locked = [c for c in self.categories if c in set(locked)]
        if budget_b is None:
            budget_b = self.budget_b
        if budget_b is None:
            raise MappingError("optimise needs a budget: optimise(budget_b=...) in billions of "
                               "average active parameters")
        check_budget(budget_b)
        best = optimize_mapping(self._scores, self._weights, self._registry,
                                budget_active_b=float(budget_b), locked=self._locked_map() or None,
                                fallback_expert=self._map.fallback_expert, **limits)
        self.budget_b = float(budget_b)
        changes = [(c, e) for c, e in best.assignments.items()
                   if c in self._map and c not in self.locked]
        applied = self._apply(changes, f"optimised at {format_params(float(budget_b))}")
        if not applied:
            self.status = f"the map is already optimal at {format_params(float(budget_b))}"
        return [str(e) for e in applied]


    def optimise(self, *args: Any, **kwargs: Any) -> list[str]:
        """Deprecated spelling of :meth:`optimize` (kept for one release)."""
        import warnings

        warnings.warn("MappingEditorModel.optimise is deprecated; use optimize", DeprecationWarning,
                      stacklevel=2)
        return self.optimize(*args, **kwargs)

    # ------------------------------------------------------------------ files
    def _resolve(self, name: str | os.PathLike) -> Path:
        """The path of a typed file name: inside :attr:`files` when set (else as given)."""
        if self.files is not None:
            return self.files.resolve(name)  # FileBoxError names the problem
        return Path(name)

    def _shown(self, path: Path) -> str:
        """A path as messages show it: relative to the box (the user's own name), else in full."""
        if self.files is not None:
            try:
                return str(path.relative_to(self.files.root))
            except ValueError:
                pass
        return str(path)

    def _read(self, path: str | os.PathLike) -> Any:
        from workbench.mapping import CategoryExpertMap

        known = self._map.known_experts
        # unknown experts are caught (and described, not quoted) while reading, not later
        return CategoryExpertMap.load(path, experts=known if known is not None else self._registry,
                                      categories=self._map.categories,
                                      quote_values=self.files is None,
                                      max_bytes=MAX_MAP_FILE_BYTES)

    def load(self, path: str | os.PathLike) -> list[str]:
        """Replace the map by the one in ``path`` (one undoable action); returns changed rows.

        The file must map the same categories (errors name the file and line). With
        :attr:`files` set, ``path`` is a name inside that folder and errors never quote the
        file's values.
        """
        file = self._resolve(path)
        other = self._read(file)
        shown = self._shown(file)
        if other.fallback_category != self._map.fallback_category:
            raise MappingError(f"{shown}: its fallback category {short(other.fallback_category)} "
                               f"differs from this map's {short(self._map.fallback_category)}")
        applied = self._apply(list(other.assignments.items()), f"loaded {shown}")
        if not applied:
            self.status = f"{shown} is the same as the current map"
        return [str(e) for e in applied]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the current map to ``path`` (``.json``/``.yaml``, atomically).

        An existing file is only replaced when it is a map itself: anything else (a registry, a
        spec, a config) is refused with :class:`MappingError`, and the file stays as it was.
        With :attr:`files` set, ``path`` is a name inside that folder.
        """
        file = self._resolve(path)
        shown = self._shown(file)
        if file.is_dir():
            raise MappingError(f"{shown} is a folder; type a file name ending in .yaml or .json")
        if file.exists() and not _is_map_file(file):
            raise MappingError(f"{shown} exists and is not a map file; choose another name or "
                               "delete it")
        out = self._map.save(file)
        self.status = f"saved {shown}"
        return out


def _is_map_file(path: Path) -> bool:
    """Whether ``path`` reads as a category -> expert map (any categories and experts)."""
    from workbench.mapping import CategoryExpertMap

    try:
        CategoryExpertMap.load(path, quote_values=False, max_bytes=MAX_MAP_FILE_BYTES)
    except WorkbenchError:
        return False
    return True


# the views live in workbench.ui.panel / workbench.ui.widgets (they need Panel / ipywidgets); the
# names stay importable from here (and from workbench.ui.mapping_editor) for existing code
_VIEWS = {"MappingEditorPanel": "workbench.ui.panel.mapping_editor",
          "mapping_editor_widget": "workbench.ui.widgets.mapping_editor"}


def __getattr__(name: str) -> Any:
    if name in _VIEWS:
        import importlib

        return getattr(importlib.import_module(_VIEWS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
