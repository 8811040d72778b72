"""The cluster-map model: a PCA / t-SNE / UMAP map of the prompts with colouring, selection and
relabelling.

PCA (or a cached map) is there at once; the slow projections are computed in a background process
by :class:`~workbench.maps.MapBuilder`. Relabels and their labels-file format are
:class:`workbench.prompts.Relabels`. No Panel, bokeh or ipywidgets import; the views are
:class:`workbench.ui.panel.explore.ClusterMapPanel` and :func:`workbench.ui.widgets.explore.explore_widget`.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import param

from workbench.errors import MapError, PromptSetError
from workbench.prompts import Relabels
from workbench.ui.models.common import (
    COLOR_BY,
    METHODS,
    PRETTY,
    bundle_embeddings,
    default_map_params,
    method_name,
    shared_builder,
)

__all__ = ["ClusterMapModel"]


#: the best-expert colour of a prompt no expert was scored on (the training prompts)
NOT_SCORED = "not scored (training prompt)"


class ClusterMapModel(param.Parameterized):
    """A 2-D map of the prompts with colouring, selection and relabelling.

    Parameters
    ----------
    prompts : PromptSet
    embeddings : array of shape (n, d)
    router : CategoryRouter, optional
        Needed for ``color_by="router_error"``.
    scores : ExpertScores, optional
        Needed for ``color_by="best_expert"`` (ties go to the cheapest by ``registry``).
    registry : ModelRegistry, optional
    builder : MapBuilder, optional
        Default: one shared per embeddings, so sessions share background maps.
    warm : bool
        Start UMAP in a background process at once (default True).
    labels_path : str or Path, optional
        Default file for :meth:`save_labels`.
    source_path : str or Path, optional
        The user's prompt file: :meth:`save_labels` refuses to write over it.

    Attributes
    ----------
    method : {"pca", "tsne", "umap"}
        The requested projection; until a slow one is ready the last map stays on show
        (:attr:`shown_method`, :attr:`status`).
    color_by : {"category", "best_expert", "router_error", "discovered"}
    selection : list of int
        Selected row numbers (from the browser's box/lasso, or :meth:`select`).
    """

    method = param.Selector(default="pca", objects=list(METHODS), doc="Projection to show.")
    color_by = param.Selector(default="category", objects=list(COLOR_BY), doc="Colour points by.")
    selection = param.List(default=[], item_type=int, doc="Selected row numbers.")
    shown_method = param.String(default="pca", doc="The projection on show now.")
    status = param.String(default="", doc="Background work and last message.")
    version = param.Integer(default=0, doc="Bumped when the map, colours or labels change.")

    def __init__(self, prompts: Any, embeddings: Any, *, router: Any = None, scores: Any = None,
                 registry: Any = None, builder: Any = None, seed: int | None = 0,
                 warm: bool = True, labels_path: str | os.PathLike | None = None,
                 source_path: str | os.PathLike | None = None, discover_kwargs: Mapping | None = None,
                 **params: Any) -> None:
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim != 2 or len(X) != len(prompts):
            raise MapError(f"ClusterMapModel needs one embedding row per prompt: got shape "
                           f"{X.shape} for {len(prompts)} prompts")
        self._prompts = prompts
        self._X = X
        self._router = router
        self._scores = scores
        self._registry = registry
        self._seed = seed
        self._builder = builder if builder is not None else shared_builder(X, seed)
        self._maps: dict[str, Any] = {}
        self._colors: dict[str, np.ndarray] = {}
        self._discover_kwargs = dict(discover_kwargs or {})
        self._relabels = Relabels()
        self._lock = threading.Lock()
        self._marker: tuple[np.ndarray, str] | None = None
        self.labels_path = Path(labels_path) if labels_path is not None else None
        self.source_path = Path(source_path) if source_path is not None else None
        first = self._builder.first()
        m = method_name(first.method) if str(first.method).lower() in METHODS else "pca"
        self._maps[m] = first
        super().__init__(**params)
        self._shown = m
        with param.parameterized.discard_events(self):
            self.method = m
            self.shown_method = m
        self.status = f"{PRETTY[m]} map of {len(X)} prompts" + (
            " (from the cache)" if getattr(first, "from_cache", False) else "")
        if warm and m != "umap":
            try:
                self._start("umap", show=False)
                if "umap" not in self._maps:
                    self.status += "; UMAP is computing in the background"
            except Exception as exc:  # e.g. too few points: the other maps still work
                self.status += f"; no UMAP: {exc}"

    @classmethod
    def from_bundle(cls, bundle: Any, **kwargs: Any) -> ClusterMapModel:
        """From a demo bundle (prompts, embeddings or embedder, router, scores, registry)."""
        X = bundle_embeddings(bundle)
        return cls(bundle.prompts, X, router=getattr(bundle, "router", None),
                   scores=getattr(bundle, "scores", None),
                   registry=getattr(bundle, "registry", None), **kwargs)

    # ------------------------------------------------------------------ maps
    @property
    def prompts(self) -> Any:
        return self._prompts

    @property
    def embeddings(self) -> np.ndarray:
        return self._X

    @property
    def map(self) -> Any:
        """The :class:`~workbench.maps.Map` on show."""
        return self._maps[self._shown]

    @property
    def maps(self) -> dict[str, Any]:
        """Maps computed so far, by method."""
        return dict(self._maps)

    def _params(self, method: str) -> dict[str, Any]:
        """Library defaults, shrunk for small prompt sets (:func:`default_map_params`)."""
        return default_map_params(method, len(self._X))

    def _start(self, method: str, *, show: bool) -> None:
        b = self._builder
        params = self._params(method)
        cached = b.cached(method, **params)
        if cached is not None:
            self._maps[method] = cached
            if show:
                self._show(method)
            return
        b.warm(method, **params)
        if show:
            self.status = (f"computing the {PRETTY[method]} map in the background; showing "
                           f"{PRETTY[self._shown]} until it is ready")
        b.on_ready(self._ready, method=method, on_error=self._failed(method))

    def _ready(self, m: Any) -> None:
        method = method_name(m.method)
        with self._lock:
            self._maps[method] = m
        if self.method == method and self._shown != method:
            self._show(method)

    def _failed(self, method: str) -> Callable[[Exception], None]:
        def on_error(exc: Exception) -> None:
            if self.method == method:
                self.status = f"error: the {PRETTY[method]} map failed: {exc}"
        return on_error

    def _show(self, method: str) -> None:
        self._shown = method
        self.param.update(shown_method=method, status=f"{PRETTY[method]} map of "
                          f"{len(self._X)} prompts")
        self.version += 1

    @param.depends("method", watch=True)
    def _on_method(self) -> None:
        m = self.method
        try:
            if m in self._maps:
                self._show(m)
            else:
                self._start(m, show=True)
        except Exception as exc:  # e.g. a missing optional package: say so, keep the old map
            self.status = f"error: cannot compute the {PRETTY[m]} map: {exc}"

    def wait(self, timeout: float | None = None) -> Any:
        """Block until the requested :attr:`method`'s map is on show; return it.

        Raises :class:`~workbench.maps.MapTimeoutError` after ``timeout`` seconds.
        """
        m = self.method
        if m not in self._maps:
            if m not in self._builder.running() and not self._builder.ready(m):
                self._start(m, show=False)
            if m not in self._maps:
                self._ready(self._builder.result(m, timeout=timeout))
        if self._shown != m:
            self._show(m)
        return self.map

    # ------------------------------------------------------------------ colours
    @property
    def labels(self) -> np.ndarray:
        """Each prompt's category with the relabels applied (``"(none)"`` where missing)."""
        return self._relabels.labels(self._prompts)

    def color_values(self, color_by: str | None = None) -> np.ndarray:
        """The colour value of every point for ``color_by`` (default :attr:`color_by`)."""
        c = color_by or self.color_by
        if c not in COLOR_BY:
            raise MapError(f"unknown color_by {c!r}; use one of {', '.join(COLOR_BY)}")
        if c == "category":
            return self.labels
        if c == "router_error":
            return self._router_error()
        if c not in self._colors:
            self._colors[c] = self._best_expert() if c == "best_expert" else self._discovered()
        return self._colors[c]

    def _router_error(self) -> np.ndarray:
        if self._router is None:
            raise MapError("colouring by router error needs a router: pass router=... (a fitted "
                           "CategoryRouter)")
        if "predicted" not in self._colors:
            r = self._router.route(self._X)
            self._colors["predicted"] = np.array([str(v) for v in r.predicted], dtype=object)
            self._colors["fallback"] = np.asarray(r.is_fallback, dtype=bool)
        pred = self._colors["predicted"]
        fallback = self._colors["fallback"]
        truth = self.labels
        out = np.where(pred == truth, "correct", "wrong").astype(object)
        out[truth == "(none)"] = "(no label)"
        out[fallback] = "fallback (unsure)"
        return out

    def _best_expert(self) -> np.ndarray:
        s = self._scores
        if s is None:
            raise MapError("colouring by best expert needs scores: pass scores=... "
                           "(an ExpertScores over these prompts)")
        costs = None
        if self._registry is not None and all(e in self._registry for e in s.experts):
            costs = {e: self._registry.active(e) for e in s.experts}
        best = s.best_expert(costs)
        pos = {p: i for i, p in enumerate(s.prompt_ids)}
        ids = self._prompts.df["id"].astype(str).tolist()
        return np.array([str(best[pos[p]]) if p in pos else NOT_SCORED for p in ids],
                        dtype=object)

    def _discovered(self) -> np.ndarray:
        from workbench.discover import discover_categories

        kw = dict(self._discover_kwargs)
        if "n_clusters" not in kw:
            cats = [c for c in set(self.labels.tolist()) if c != "(none)"]
            if 2 <= len(cats) <= len(self._X) - 1:
                kw["n_clusters"] = len(cats)
        d = discover_categories(self._X, self._prompts.texts, seed=self._seed or 0, **kw)
        return np.asarray(d.labels, dtype=object)

    @param.depends("color_by", watch=True)
    def _on_color(self) -> None:
        try:
            self.color_values()
            self.status = f"coloured by {self.color_by.replace('_', ' ')}"
        except Exception as exc:
            self.status = f"error: {exc}"
        self.version += 1

    def plot_frame(self) -> Any:
        """``id, text`` and the colour column, in prompt order (what the figure shows)."""
        df = self._prompts.df[["id", "text"]].copy()
        try:
            df[self.color_by] = self.color_values()
        except MapError:
            df[self.color_by] = "(unavailable)"
        return df

    def figure(self) -> Any:
        """The scatter map: hover with escaped prompt text, ``customdata`` = row number,
        unselected points dimmed but visible."""
        from workbench.plots.maps import scatter_map

        from workbench.plots.maps import mark_points

        fig = scatter_map(self.map, self.plot_frame(), color=self.color_by,
                          selected=self.selection if self.selection else None,
                          title=f"{PRETTY.get(self._shown, self._shown)} map")
        fig.update_layout(uirevision=f"cluster-{self._shown}", clickmode="event+select")
        if self._marker is not None:
            embedding, text = self._marker
            try:
                xy = self.map.place(embedding[None, :])[0]
            except Exception as exc:  # the points still show; the status says why
                self.status = f"your prompt could not be placed on this map: {exc}"
            else:
                mark_points(fig, np.asarray(xy), "your prompt", texts=[text])
        if self.color_by == "best_expert":
            n = int((self.color_values() == NOT_SCORED).sum())
            if n:
                fig.add_annotation(
                    text=f"{n} of {len(self._X)} prompts have no scores: experts were scored "
                         "on the held-out prompts only (training prompts would flatter them)",
                    xref="paper", yref="paper", x=0, y=1.0, yanchor="bottom", showarrow=False,
                    font={"size": 11})
        return fig

    def mark(self, embedding: Any = None, text: str = "") -> None:
        """Show a prompt (its embedding row) as a star on whichever map is on show; ``None``
        removes it. The Explore tab marks the prompt typed in the Embed panel."""
        if embedding is None:
            self._marker = None
        else:
            q = np.asarray(embedding, dtype=np.float32).reshape(-1)
            if q.shape[0] != self._X.shape[1]:
                raise MapError(f"mark needs an embedding of {self._X.shape[1]} values, got "
                               f"{q.shape[0]}")
            self._marker = (q, str(text))
        self.version += 1

    # ------------------------------------------------------------------ selection
    def select(self, rows: Any) -> list[int]:
        """Select rows by position (ints), boolean mask, or ids; returns the row numbers."""
        n = len(self._prompts)
        arr = np.asarray(list(rows) if not hasattr(rows, "__array__") else rows)
        if arr.size == 0:
            sel: list[int] = []
        elif arr.dtype == bool:
            if arr.shape != (n,):
                raise MapError(f"selection mask has shape {arr.shape}, expected ({n},)")
            sel = np.flatnonzero(arr).tolist()
        elif arr.dtype.kind in "iu":
            bad = arr[(arr < 0) | (arr >= n)]
            if bad.size:
                raise MapError(f"selected rows {bad[:5].tolist()} are out of range 0..{n - 1}")
            sel = sorted(set(int(i) for i in arr))
        else:
            pos = {p: i for i, p in enumerate(self._prompts.df["id"].astype(str))}
            missing = [str(s) for s in arr.astype(str) if s not in pos]
            if missing:
                raise MapError(f"selected ids {missing[:5]} are not in the prompt set")
            sel = sorted({pos[s] for s in arr.astype(str)})
        self.selection = sel
        return sel

    @staticmethod
    def rows_from_event(event: Mapping[str, Any] | None) -> list[int]:
        """Row numbers from a plotly ``selected_data`` event (points carry ``customdata``)."""
        if not event:
            return []
        rows = []
        for p in event.get("points", []) or []:
            cd = p.get("customdata")
            if isinstance(cd, (list, tuple)):
                cd = cd[0] if cd else None
            if cd is None:
                continue  # e.g. a marked point without a row
            try:
                rows.append(int(cd))
            except (TypeError, ValueError):
                continue
        return sorted(set(rows))

    def select_from_event(self, event: Mapping[str, Any] | None) -> list[int]:
        """Apply a plotly selection event; returns the selected rows."""
        return self.select(self.rows_from_event(event))

    def clear_selection(self) -> None:
        self.selection = []

    @property
    def selected(self) -> Any:
        """The selected rows as a :class:`~workbench.prompts.PromptSet` (relabels applied)."""
        return self.labelled_prompts().subset(np.asarray(self.selection, dtype=np.int64))

    def selected_frame(self) -> Any:
        """``row, id, category, text`` of the selection (raw text; views escape it)."""
        import pandas as pd

        rows = np.asarray(self.selection, dtype=np.int64)
        df = self._prompts.df
        return pd.DataFrame({"row": rows, "id": df["id"].to_numpy()[rows].astype(str),
                             "category": self.labels[rows],
                             "text": df["text"].to_numpy()[rows]})

    # ------------------------------------------------------------------ relabel
    @property
    def relabels(self) -> dict[str, str]:
        """``id -> new category`` for every prompt relabelled in this session."""
        return self._relabels.to_dict()

    def relabel(self, category: str, rows: Any = None) -> int:
        """Give the selected rows (or ``rows``) the category ``category``; returns how many."""
        if not isinstance(category, str) or not category.strip():
            raise PromptSetError(f"the new category must be a non-empty name, got {category!r}")
        category = category.strip()
        if rows is not None:
            self.select(rows)
        if not self.selection:
            raise PromptSetError("nothing is selected: select points on the map (box or lasso) "
                                 "or pass rows=[...] before relabelling")
        df = self._prompts.df
        original = (df["category"].to_numpy() if "category" in df.columns
                    else np.full(len(df), None))
        for r in self.selection:
            before = original[r]
            self._relabels.set(str(df["id"].iat[r]), category,
                               previous=None if before is None or (isinstance(before, float)
                                                                   and np.isnan(before))
                               else str(before))
        self.status = f"relabelled {len(self.selection)} prompt(s) to {category!r} (not saved yet)"
        self.version += 1
        return len(self.selection)

    def labelled_prompts(self) -> Any:
        """The prompt set with the relabels applied to its ``category`` column."""
        return self._relabels.apply(self._prompts)

    def _default_labels_path(self) -> Path:
        from workbench._paths import cache_dir

        name = "".join(ch if ch.isalnum() or ch in "-_" else "_"
                       for ch in str(getattr(self._prompts, "name", "prompts")))
        return cache_dir("labels") / f"{name}-labels.jsonl"

    def save_labels(self, path: str | os.PathLike | None = None) -> Path:
        """Write the relabels (``id, category, previous_category``) atomically to ``path``.

        ``.jsonl`` (default) or ``.csv`` (:meth:`workbench.prompts.Relabels.save`). Never writes
        over the prompt file (:attr:`source_path`) or any file that is not a labels file.
        """
        path = Path(path) if path is not None else (self.labels_path or self._default_labels_path())
        self._relabels.save(path, self._prompts, source_path=self.source_path)
        self.labels_path = path
        self.status = f"saved {len(self._relabels)} relabel(s) to {path}"
        return path

    def load_labels(self, path: str | os.PathLike) -> int:
        """Apply a labels file written by :meth:`save_labels`; returns how many were applied."""
        loaded = Relabels.load(path, self._prompts)
        self._relabels.update(loaded.to_dict())
        self.status = f"loaded {len(loaded)} relabel(s) from {path}"
        self.version += 1
        return len(loaded)
