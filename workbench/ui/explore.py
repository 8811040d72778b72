"""Explore prompts: the Embed panel (one prompt in, its routing out) and the cluster map.

Models hold the state and logic, views only render them:

- :class:`EmbedModel` — a typed prompt's router probabilities per category, its nearest
  neighbours in the prompt set, where it lands on the map, and which expert the map would use.
  :class:`EmbedPanel` renders it.
- :class:`ClusterMapModel` — a PCA / t-SNE / UMAP map (PCA or a cached map at once, the slow
  ones computed in a background process by :class:`~workbench.maps.MapBuilder`), coloured by
  category, best expert, router error or discovered cluster; a selection of rows that comes back
  as a :class:`~workbench.prompts.PromptSet`; relabelling the selection and saving the labels
  atomically to a separate labels file. :class:`ClusterMapPanel` renders it.
- :func:`explore_widget` — both as one ipywidgets box for notebooks.

Prompt text is untrusted input: every table, hover and list shows it HTML-escaped.

Examples
--------
>>> from workbench.ui.explore import ClusterMapModel, EmbedModel        # doctest: +SKIP
>>> cm = ClusterMapModel.from_bundle(bundle)                              # doctest: +SKIP
>>> cm.color_by = "router_error"; cm.select([0, 5, 9]); cm.selected       # doctest: +SKIP
>>> cm.relabel("math"); cm.save_labels("my_labels.jsonl")                 # doctest: +SKIP
>>> em = EmbedModel.from_bundle(bundle, map=cm.map)                       # doctest: +SKIP
>>> em.text = "What is the integral of x^2?"; em.expert, em.probabilities  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import param

from workbench.errors import MapError, PromptSetError

__all__ = ["EmbedModel", "EmbedPanel", "ClusterMapModel", "ClusterMapPanel", "explore_widget",
           "escape_frame"]

#: CSS classes of the panels' parts (stable names for browser tests)
CSS = {
    "embed": "coe-embed-panel",
    "embed_input": "coe-embed-input",
    "embed_button": "coe-embed-button",
    "embed_result": "coe-embed-result",
    "embed_proba": "coe-embed-proba",
    "neighbours": "coe-neighbours-table",
    "embed_map": "coe-embed-map",
    "cluster": "coe-cluster-panel",
    "method": "coe-map-method",
    "color_by": "coe-map-color",
    "map_status": "coe-map-status",
    "plot": "coe-cluster-plot",
    "selection_count": "coe-selection-count",
    "selection": "coe-selection-table",
    "relabel_input": "coe-relabel-input",
    "relabel": "coe-relabel-button",
    "labels_path": "coe-labels-path",
    "save_labels": "coe-save-labels-button",
    "clear": "coe-clear-selection-button",
}

METHODS = ("pca", "tsne", "umap")
COLOR_BY = ("category", "best_expert", "router_error", "discovered")
_LABEL_KEYS = {"id", "category", "previous_category"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def escape_frame(df: Any, columns: Sequence[str] | None = None) -> Any:
    """A copy of ``df`` with its text columns (all object columns by default) HTML-escaped.

    Views show these with an ``html`` formatter, so ``<script>`` reads as text, never runs.
    """
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    out = df.copy()
    if columns is None:  # text columns: object or pandas' string dtype (the default in pandas 3)
        columns = [c for c in out.columns
                   if not (is_numeric_dtype(out[c].dtype) or is_bool_dtype(out[c].dtype))]
    for c in columns:
        out[c] = _object_array([html.escape(str(v)) if v is not None else "" for v in out[c]])
    return out


def _object_array(values: list[str]) -> Any:
    """A list of strings as an object array (keeps pandas from guessing a dtype)."""
    return np.array(values, dtype=object)


def _bundle_embeddings(bundle: Any) -> np.ndarray:
    X = getattr(bundle, "embeddings", None)
    if X is None:
        embedder = getattr(bundle, "embedder", None)
        if embedder is None:
            raise MapError("the bundle has neither embeddings nor an embedder; build it with "
                           "workbench.demo.build_demo_bundle()")
        X = embedder.embed(bundle.prompts)
    X = np.asarray(X, dtype=np.float32)
    if len(X) != len(bundle.prompts):
        raise MapError(f"the bundle has {len(X)} embeddings for {len(bundle.prompts)} prompts")
    return X


def _is_model(obj: Any) -> bool:
    """A session model (ClusterMapModel, MappingEditorModel) rather than a plain object."""
    return isinstance(obj, param.Parameterized) and "version" in obj.param


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


_BUILDERS: dict[str, Any] = {}
_BUILDERS_LOCK = threading.Lock()


def _shared_builder(X: np.ndarray, seed: int | None) -> Any:
    """One MapBuilder per embeddings and seed, shared by all sessions (maps are read-only), so
    two browser sessions never compute the same UMAP twice."""
    from workbench.maps import MapBuilder

    h = hashlib.blake2b(np.ascontiguousarray(X).data, digest_size=16).hexdigest()
    key = f"{h}-{X.shape}-{seed}"
    with _BUILDERS_LOCK:
        if key not in _BUILDERS:
            _BUILDERS[key] = MapBuilder(X, seed=seed)
        return _BUILDERS[key]


def _method_name(method: str) -> str:
    m = str(method).lower().replace("-", "")
    if m not in METHODS:
        raise MapError(f"unknown map method {method!r}; use one of {', '.join(METHODS)}")
    return m


_PRETTY = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


# ---------------------------------------------------------------------------------------------
# Embed: one prompt in, its routing out
# ---------------------------------------------------------------------------------------------
class EmbedModel(param.Parameterized):
    """A typed prompt's router probabilities, nearest neighbours, map position and expert.

    Set :attr:`text` (or call :meth:`embed`); the outputs update at once.

    Parameters
    ----------
    prompts : PromptSet
        The reference prompts (neighbours come from them).
    embeddings : array of shape (n, d)
        Their embeddings, same order.
    router : CategoryRouter
        With ``route(X) -> Routing`` and ``classes_``.
    encode : callable
        ``encode(list_of_texts) -> (m, d) array`` (e.g. ``Embedder.encode``).
    mapping : CategoryExpertMap, optional
        Which expert each category goes to (settable: point it at an editor's map).
    map : Map, optional
        The 2-D map to place the prompt on.

    Attributes
    ----------
    probabilities : pandas.DataFrame
        ``category, probability``, most probable first.
    neighbours : pandas.DataFrame
        ``rank, row, id, category, similarity, text`` (raw text; views escape it).
    position : tuple of float or None
        Where the prompt lands on :attr:`map`.
    category, predicted, expert : str
        Routed category (after the fallback rule), the classifier's top category, the expert.

    Examples
    --------
    >>> em = EmbedModel.from_bundle(bundle)          # doctest: +SKIP
    >>> em.text = "Solve 3x + 5 = 11"; em.category, em.expert   # doctest: +SKIP
    """

    text = param.String(default="", doc="The prompt to embed and route.")
    k = param.Integer(default=5, bounds=(1, 100), doc="Number of nearest neighbours.")
    mapping = param.Parameter(default=None, doc="CategoryExpertMap used to pick the expert.")
    map = param.Parameter(default=None, doc="Map (workbench.maps.Map) to place the prompt on.")
    probabilities = param.DataFrame(default=None, allow_None=True, doc="category, probability")
    neighbours = param.DataFrame(default=None, allow_None=True, doc="nearest reference prompts")
    position = param.Parameter(default=None, doc="(x, y) on the map, or None")
    category = param.String(default="", doc="Routed category (fallback rule applied).")
    predicted = param.String(default="", doc="Most probable category.")
    confidence = param.Number(default=None, allow_None=True)
    is_fallback = param.Boolean(default=False)
    expert = param.String(default="", doc="Expert the map sends this prompt to.")
    error = param.String(default="", doc="Why the last prompt could not be handled.")
    version = param.Integer(default=0, doc="Bumped whenever the outputs change.")

    def __init__(self, prompts: Any, embeddings: Any, router: Any, *,
                 encode: Callable[[list[str]], Any], mapping: Any = None, map: Any = None,
                 **params: Any) -> None:
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim != 2 or len(X) != len(prompts):
            raise MapError(f"EmbedModel needs one embedding row per prompt: got shape {X.shape} "
                           f"for {len(prompts)} prompts")
        if not callable(encode):
            raise MapError("encode must be a callable texts -> embeddings, e.g. Embedder().encode")
        self._prompts = prompts
        self._X = X
        self._unit_X = _unit(X)
        self._router = router
        self._encode = encode
        follow = [src for src in (map, mapping) if _is_model(src)]
        super().__init__(mapping=None if _is_model(mapping) else mapping,
                         map=None if _is_model(map) else map, **params)
        for src in follow:
            self.follow(src)
        if self.text:
            self._update()

    def follow(self, source: Any) -> EmbedModel:
        """Keep up with another model of the same session.

        A :class:`ClusterMapModel`: place the prompt on whichever map it shows. A
        :class:`~workbench.ui.mapping_editor.MappingEditorModel`: pick the expert from the map
        being edited, re-routed on every edit. Returns ``self``.
        """
        if isinstance(source, ClusterMapModel):
            self.map = source.map
            source.param.watch(lambda *_: setattr(self, "map", source.map), ["shown_method"])
        elif _is_model(source) and hasattr(source, "mapping"):
            self.mapping = source.mapping
            source.param.watch(lambda *_: self._update(), ["version"])
        else:
            raise MapError(f"follow() takes a ClusterMapModel or a MappingEditorModel, got "
                           f"{type(source).__name__}")
        return self

    @classmethod
    def from_bundle(cls, bundle: Any, map: Any = None, **params: Any) -> EmbedModel:
        """From a demo bundle (prompts, embedder, router, mapping).

        ``map`` defaults to the cached UMAP map if there is one, else PCA; pass a
        :class:`ClusterMapModel` to follow the map it shows. ``mapping=`` (in ``params``) may be
        a map or a MappingEditorModel to follow (default ``bundle.mapping``).
        """
        X = _bundle_embeddings(bundle)
        if map is None:
            map = _shared_builder(X, 0).first()
        params.setdefault("mapping", getattr(bundle, "mapping", None))
        return cls(bundle.prompts, X, bundle.router, encode=bundle.embedder.encode, map=map,
                   **params)

    @property
    def prompts(self) -> Any:
        return self._prompts

    def embed(self, text: str) -> dict[str, Any]:
        """Set :attr:`text` to ``text`` and return the results as a dict."""
        if self.text == text:
            self._update()
        else:
            self.text = text
        return self.result()

    def result(self) -> dict[str, Any]:
        """The current outputs as a plain dict."""
        return {"text": self.text, "category": self.category, "predicted": self.predicted,
                "confidence": self.confidence, "is_fallback": self.is_fallback,
                "expert": self.expert, "position": self.position,
                "probabilities": self.probabilities, "neighbours": self.neighbours,
                "error": self.error}

    def _clear(self, error: str = "") -> None:
        self.param.update(probabilities=None, neighbours=None, position=None, category="",
                          predicted="", confidence=None, is_fallback=False, expert="",
                          error=error)

    @param.depends("text", "k", "mapping", "map", watch=True)
    def _update(self) -> None:
        import pandas as pd

        text = self.text or ""
        if not text.strip():
            self._clear()
            self.version += 1
            return
        try:
            q = np.asarray(self._encode([text]), dtype=np.float32)
            if q.ndim != 2 or q.shape != (1, self._X.shape[1]):
                raise MapError(f"the encoder returned shape {q.shape}; expected (1, "
                               f"{self._X.shape[1]}) like the reference embeddings")
            routing = self._router.route(q)
            classes = [str(c) for c in routing.classes]
            proba = np.asarray(routing.proba[0], dtype=float)
            order = np.argsort(-proba, kind="stable")
            probs = pd.DataFrame({"category": [classes[i] for i in order],
                                  "probability": proba[order]})
            sims = (_unit(q) @ self._unit_X.T)[0]
            k = min(self.k, len(sims))
            top = np.argsort(-sims, kind="stable")[:k]
            df = self._prompts.df
            cats = (df["category"].astype(str).to_numpy() if "category" in df.columns
                    else np.full(len(df), ""))
            neigh = pd.DataFrame({
                "rank": np.arange(1, k + 1), "row": top, "id": df["id"].to_numpy()[top],
                "category": cats[top], "similarity": sims[top].astype(float),
                "text": df["text"].to_numpy()[top]})
            category = str(routing.category[0])
            expert = ""
            if self.mapping is not None:
                expert = (self.mapping.expert_for(category) if category in self.mapping
                          else self.mapping.fallback_expert)
            position = self._place(q)
        except Exception as exc:  # shown in the view; the model stays usable
            self._clear(error=f"{type(exc).__name__}: {exc}")
            self.version += 1
            return
        self.param.update(probabilities=probs, neighbours=neigh, position=position,
                          category=category, predicted=str(routing.predicted[0]),
                          confidence=float(routing.confidence[0]),
                          is_fallback=bool(routing.is_fallback[0]), expert=expert, error="")
        self.version += 1

    def _place(self, q: np.ndarray, m: Any = None) -> tuple[float, float] | None:
        m = self.map if m is None else m
        if m is None:
            return None
        if (getattr(m, "embeddings", None) is None and not m.can_place_natively
                and len(m) == len(self._X)):
            # a map loaded without its embeddings: place by kNN on ours (same rows)
            from workbench.maps import Map

            m = Map(m.coords, m.method, m.params, embeddings=self._X)
        xy = m.place(q)[0]
        return (float(xy[0]), float(xy[1]))

    def figure(self, color: str = "category") -> Any:
        """The map with the reference prompts and the typed prompt as a star."""
        from workbench.plots.maps import mark_points, scatter_map

        if self.map is None:
            raise MapError("this EmbedModel has no map; pass map=... (e.g. ClusterMapModel.map)")
        fig = scatter_map(self.map, self._prompts, color=color, height=420)
        if self.position is not None:
            mark_points(fig, np.array([self.position]), "your prompt", texts=[self.text])
        fig.update_layout(dragmode="pan", uirevision="embed-map")
        return fig


# ---------------------------------------------------------------------------------------------
# Cluster map
# ---------------------------------------------------------------------------------------------
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
        self._builder = builder if builder is not None else _shared_builder(X, seed)
        self._maps: dict[str, Any] = {}
        self._colors: dict[str, np.ndarray] = {}
        self._discover_kwargs = dict(discover_kwargs or {})
        self._relabels: dict[str, str] = {}
        self._lock = threading.Lock()
        self.labels_path = Path(labels_path) if labels_path is not None else None
        self.source_path = Path(source_path) if source_path is not None else None
        first = self._builder.first()
        m = _method_name(first.method) if str(first.method).lower() in METHODS else "pca"
        self._maps[m] = first
        super().__init__(**params)
        self._shown = m
        with param.parameterized.discard_events(self):
            self.method = m
            self.shown_method = m
        self.status = f"{_PRETTY[m]} map of {len(X)} prompts" + (
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
        X = _bundle_embeddings(bundle)
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
        """Library defaults, shrunk for small prompt sets (t-SNE perplexity, UMAP neighbours)."""
        n = len(self._X)
        if method == "tsne" and n <= 90:
            return {"perplexity": float(max(1, (n - 1) // 3))}
        if method == "umap" and n <= 15:
            return {"n_neighbors": max(2, n // 2)}
        return {}

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
            self.status = (f"computing the {_PRETTY[method]} map in the background; showing "
                           f"{_PRETTY[self._shown]} until it is ready")
        b.on_ready(self._ready, method=method, on_error=self._failed(method))

    def _ready(self, m: Any) -> None:
        method = _method_name(m.method)
        with self._lock:
            self._maps[method] = m
        if self.method == method and self._shown != method:
            self._show(method)

    def _failed(self, method: str) -> Callable[[Exception], None]:
        def on_error(exc: Exception) -> None:
            if self.method == method:
                self.status = f"error: the {_PRETTY[method]} map failed: {exc}"
        return on_error

    def _show(self, method: str) -> None:
        self._shown = method
        self.param.update(shown_method=method, status=f"{_PRETTY[method]} map of "
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
            self.status = f"error: cannot compute the {_PRETTY[m]} map: {exc}"

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
        df = self._prompts.df
        if "category" in df.columns:
            base = np.array(["(none)" if v is None or (isinstance(v, float) and np.isnan(v))
                             else str(v) for v in df["category"]], dtype=object)
        else:
            base = np.full(len(df), "(none)", dtype=object)
        if self._relabels:
            ids = df["id"].astype(str).tolist()
            for i, pid in enumerate(ids):
                if pid in self._relabels:
                    base[i] = self._relabels[pid]
        return base

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
        return np.array([str(best[pos[p]]) if p in pos else "(no scores)" for p in ids],
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

        fig = scatter_map(self.map, self.plot_frame(), color=self.color_by,
                          selected=self.selection if self.selection else None,
                          title=f"{_PRETTY.get(self._shown, self._shown)} map")
        fig.update_layout(uirevision=f"cluster-{self._shown}", clickmode="event+select")
        return fig

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
        return dict(self._relabels)

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
        original = (df["category"].astype(str).to_numpy() if "category" in df.columns
                    else np.full(len(df), None))
        for r in self.selection:
            pid = str(df["id"].iat[r])
            if original[r] == category:
                self._relabels.pop(pid, None)
            else:
                self._relabels[pid] = category
        self.status = f"relabelled {len(self.selection)} prompt(s) to {category!r} (not saved yet)"
        self.version += 1
        return len(self.selection)

    def labelled_prompts(self) -> Any:
        """The prompt set with the relabels applied to its ``category`` column."""
        if not self._relabels:
            return self._prompts
        labels = [None if v == "(none)" else v for v in self.labels]
        return self._prompts.with_column("category", labels)

    def _default_labels_path(self) -> Path:
        from workbench._paths import cache_dir

        name = "".join(ch if ch.isalnum() or ch in "-_" else "_"
                       for ch in str(getattr(self._prompts, "name", "prompts")))
        return cache_dir("labels") / f"{name}-labels.jsonl"

    def save_labels(self, path: str | os.PathLike | None = None) -> Path:
        """Write the relabels (``id, category, previous_category``) atomically to ``path``.

        ``.jsonl`` (default) or ``.csv``. Never writes over the prompt file
        (:attr:`source_path`) or any file that is not a labels file.
        """
        from workbench._paths import atomic_write_text

        path = Path(path) if path is not None else (self.labels_path or self._default_labels_path())
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise PromptSetError(f"labels are saved as .jsonl or .csv, got {path.name!r}")
        if self.source_path is not None and path.resolve() == self.source_path.resolve():
            raise PromptSetError(f"{path} is the prompt file itself; labels go to a separate "
                                 "file (e.g. prompts-labels.jsonl), the source is never overwritten")
        if path.exists():
            _check_labels_file(path)
        df = self._prompts.df
        prev = (df.set_index(df["id"].astype(str))["category"] if "category" in df.columns
                else None)
        records = []
        for pid, cat in self._relabels.items():
            before = None if prev is None else prev.get(pid)
            before = None if before is None or (isinstance(before, float) and np.isnan(before)) \
                else str(before)
            records.append({"id": pid, "category": cat, "previous_category": before})
        if suffix == ".jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=["id", "category", "previous_category"])
            writer.writeheader()
            for r in records:
                writer.writerow({k: "" if v is None else v for k, v in r.items()})
            text = buf.getvalue()
        atomic_write_text(path, text)
        self.labels_path = path
        self.status = f"saved {len(records)} relabel(s) to {path}"
        return path

    def load_labels(self, path: str | os.PathLike) -> int:
        """Apply a labels file written by :meth:`save_labels`; returns how many were applied."""
        records = _read_labels(Path(path))
        ids = set(self._prompts.df["id"].astype(str))
        unknown = [(n, r["id"]) for n, r in records if r["id"] not in ids]
        if unknown:
            where = ", ".join(f"{i!r} (line {n})" for n, i in unknown[:5])
            raise PromptSetError(f"{path}: ids not in the prompt set: {where}; was it saved for "
                                 "another prompt set?")
        for _, r in records:
            self._relabels[r["id"]] = r["category"]
        self.status = f"loaded {len(records)} relabel(s) from {path}"
        self.version += 1
        return len(records)


def _check_labels_file(path: Path) -> None:
    """Raise unless ``path`` looks like a labels file (only id/category columns)."""
    try:
        _read_labels(path)
    except PromptSetError as exc:
        raise PromptSetError(f"refusing to overwrite {path}: it is not a labels file ({exc}); "
                             "choose another file name") from None


def _read_labels(path: Path) -> list[tuple[int, dict[str, str]]]:
    if not path.exists():
        raise PromptSetError(f"labels file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    out: list[tuple[int, dict[str, str]]] = []
    if path.suffix.lower() == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise PromptSetError(f"{path} line {n} is not JSON: {exc}") from None
            rows.append((n, rec))
    elif path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows = [(n, dict(r)) for n, r in enumerate(reader, start=2)]
        if reader.fieldnames and set(reader.fieldnames) - _LABEL_KEYS:
            raise PromptSetError(f"{path} has columns {reader.fieldnames}; a labels file has "
                                 "only id, category, previous_category")
    else:
        raise PromptSetError(f"labels files are .jsonl or .csv, got {path.name!r}")
    for n, rec in rows:
        if not isinstance(rec, dict) or set(rec) - _LABEL_KEYS or not {"id", "category"} <= set(rec):
            keys = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise PromptSetError(f"{path} line {n} has keys {keys}; a labels file has only "
                                 "id, category, previous_category")
        if not str(rec["category"] or "").strip():
            raise PromptSetError(f"{path} line {n}: empty category for id {rec['id']!r}")
        out.append((n, {"id": str(rec["id"]), "category": str(rec["category"])}))
    return out


# ---------------------------------------------------------------------------------------------
# Panel views
# ---------------------------------------------------------------------------------------------
import panel as pn  # noqa: E402  (views need Panel; the models above do not)

_TEXT_FORMATTERS = {"text": {"type": "html"}, "id": {"type": "html"},
                    "category": {"type": "html"}}


def _table(df: Any, css: str, height: int = 260) -> Any:
    return pn.widgets.Tabulator(
        escape_frame(df), show_index=False, disabled=True, sizing_mode="stretch_width",
        height=height, formatters=dict(_TEXT_FORMATTERS), css_classes=[css],
        layout="fit_data_stretch")


class EmbedPanel(pn.viewable.Viewer):
    """Panel view of an :class:`EmbedModel`.

    Parts (CSS classes): text area ``coe-embed-input``, button ``coe-embed-button``, result line
    ``coe-embed-result`` (routed category, confidence, expert), probabilities table
    ``coe-embed-proba``, neighbours table ``coe-neighbours-table``, map ``coe-embed-map``.
    """

    def __init__(self, model: EmbedModel, **params: Any) -> None:
        super().__init__(**params)
        import pandas as pd

        self.model = model
        self._input = pn.widgets.TextAreaInput(
            label="Prompt", value=model.text, placeholder="Type or paste a prompt",
            height=110, sizing_mode="stretch_width", css_classes=[CSS["embed_input"]])
        self._button = pn.widgets.Button(label="Embed and route", color="primary",
                                         css_classes=[CSS["embed_button"]])
        self._button.on_click(lambda e: self._submit())
        self._result = pn.pane.HTML("", css_classes=[CSS["embed_result"]],
                                    sizing_mode="stretch_width")
        self._proba = _table(pd.DataFrame(columns=["category", "probability"]),
                             CSS["embed_proba"], height=220)
        self._neigh = _table(pd.DataFrame(columns=["rank", "id", "category", "similarity",
                                                   "text"]), CSS["neighbours"], height=220)
        self._plot = pn.pane.Plotly(None, css_classes=[CSS["embed_map"]], height=420,
                                    sizing_mode="stretch_width")
        model.param.watch(self._refresh, ["version"])
        self._refresh()
        self._layout = pn.Column(
            pn.pane.Markdown("### Embed a prompt"),
            self._input, self._button, self._result,
            pn.Row(pn.Column("**Router probabilities**", self._proba, width=320),
                   pn.Column("**Nearest prompts**", self._neigh, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            self._plot, css_classes=[CSS["embed"]], sizing_mode="stretch_width")

    def _submit(self) -> None:
        self.model.embed(self._input.value_input or self._input.value or "")

    def _refresh(self, *_: Any) -> None:
        import pandas as pd

        m = self.model
        if m.error:
            self._result.object = (f"<span style='color:crimson'>"
                                   f"{html.escape(m.error)}</span>")
        elif not m.category:
            self._result.object = "<i>Type a prompt and press the button.</i>"
        else:
            fb = " (low confidence: fallback)" if m.is_fallback else ""
            self._result.object = (
                f"Routed to <b>{html.escape(m.category)}</b>{html.escape(fb)} · confidence "
                f"{m.confidence:.3f} · expert <b>{html.escape(m.expert or '(no map)')}</b>")
        self._proba.value = escape_frame(m.probabilities if m.probabilities is not None else
                                         pd.DataFrame(columns=["category", "probability"]))
        neigh = m.neighbours if m.neighbours is not None else pd.DataFrame(
            columns=["rank", "row", "id", "category", "similarity", "text"])
        self._neigh.value = escape_frame(neigh.drop(columns=["row"]))
        if m.map is not None:
            try:
                self._plot.object = m.figure()
            except Exception as exc:
                self._result.object += f"<br><i>{html.escape(str(exc))}</i>"

    def __panel__(self) -> Any:
        return self._layout


class ClusterMapPanel(pn.viewable.Viewer):
    """Panel view of a :class:`ClusterMapModel`.

    Parts (CSS classes): method buttons ``coe-map-method``, colour select ``coe-map-color``,
    status ``coe-map-status``, the map ``coe-cluster-plot`` (box/lasso selection comes back to
    the model), selection count ``coe-selection-count``, selection table
    ``coe-selection-table``, relabel name ``coe-relabel-input`` and button
    ``coe-relabel-button``, labels file ``coe-labels-path`` with ``coe-save-labels-button``,
    and ``coe-clear-selection-button``.
    """

    def __init__(self, model: ClusterMapModel, **params: Any) -> None:
        super().__init__(**params)
        self.model = model
        self._method = pn.widgets.RadioButtonGroup.from_param(
            model.param.method, options={"PCA": "pca", "t-SNE": "tsne", "UMAP": "umap"},
            css_classes=[CSS["method"]])
        self._color = pn.widgets.Select.from_param(
            model.param.color_by, label="Colour by", css_classes=[CSS["color_by"]], width=200,
            options={"category": "category", "best expert": "best_expert",
                     "router error": "router_error", "discovered cluster": "discovered"})
        self._status = pn.pane.HTML("", css_classes=[CSS["map_status"]],
                                    sizing_mode="stretch_width")
        self._plot = pn.pane.Plotly(model.figure(), css_classes=[CSS["plot"]], height=600,
                                    sizing_mode="stretch_width")
        self._plot.param.watch(self._on_select, ["selected_data"])
        self._count = pn.pane.HTML("", css_classes=[CSS["selection_count"]])
        self._table = _table(model.selected_frame(), CSS["selection"], height=280)
        self._relabel_name = pn.widgets.TextInput(label="New category", placeholder="e.g. math",
                                                  css_classes=[CSS["relabel_input"]], width=200)
        self._relabel = pn.widgets.Button(label="Relabel selection", color="warning",
                                          css_classes=[CSS["relabel"]])
        self._path = pn.widgets.TextInput(
            label="Labels file (.jsonl / .csv)", css_classes=[CSS["labels_path"]],
            placeholder=str(model.labels_path or "default: the cache's labels folder"))
        self._save = pn.widgets.Button(label="Save labels", css_classes=[CSS["save_labels"]])
        self._clear = pn.widgets.Button(label="Clear selection", css_classes=[CSS["clear"]])
        self._relabel.on_click(lambda e: self._run(
            lambda: model.relabel(self._relabel_name.value)))
        self._save.on_click(lambda e: self._run(
            lambda: model.save_labels((self._path.value or "").strip() or None)))
        self._clear.on_click(lambda e: self._run(model.clear_selection))
        self._from_browser = False
        model.param.watch(self._redraw, ["version"])
        model.param.watch(self._on_model_selection, ["selection"])
        model.param.watch(self._show_status, ["status"])
        self._show_status()
        self._show_selection()
        self._layout = pn.Column(
            pn.pane.Markdown("### Cluster map"),
            pn.Row(self._method, self._color), self._status, self._plot,
            pn.Row(self._count, self._clear),
            self._table,
            pn.Row(self._relabel_name, self._relabel, self._path, self._save),
            css_classes=[CSS["cluster"]], sizing_mode="stretch_width")

    def _run(self, action: Any) -> None:
        try:
            action()
        except Exception as exc:
            self.model.status = f"error: {exc}"

    def _on_select(self, event: Any) -> None:
        self._from_browser = True
        try:
            self._run(lambda: self.model.select_from_event(event.new))
        finally:
            self._from_browser = False

    def _on_model_selection(self, *_: Any) -> None:
        self._show_selection()
        if not self._from_browser:  # the browser already shows its own selection
            self._plot.object = self.model.figure()

    def _show_selection(self) -> None:
        n = len(self.model.selection)
        self._count.object = (f"<b>{n}</b> selected" if n else
                              "Select points with the box or lasso tool")
        self._table.value = escape_frame(self.model.selected_frame())

    def _show_status(self, *_: Any) -> None:
        text = self.model.status
        colour = "crimson" if text.startswith("error") else "inherit"
        self._status.object = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def _redraw(self, *_: Any) -> None:
        self._plot.object = self.model.figure()
        self._show_selection()

    def __panel__(self) -> Any:
        return self._layout


# ---------------------------------------------------------------------------------------------
# ipywidgets version
# ---------------------------------------------------------------------------------------------
def _html_table(df: Any, max_rows: int = 50) -> str:
    if df is None or len(df) == 0:
        return "<i>(empty)</i>"
    return df.head(max_rows).to_html(index=False, escape=True, float_format=lambda v: f"{v:.3f}")


def explore_widget(bundle: Any = None, *, cluster: ClusterMapModel | None = None,
                   embed: EmbedModel | None = None, warm: bool = True) -> Any:
    """Embed panel and cluster map as one ipywidgets box for notebooks.

    Parameters
    ----------
    bundle : DemoBundle-like, optional
        Used to build the models when they are not given.
    cluster, embed : models, optional
        Drive existing models (keep using them in code: ``box.cluster.selected``).
    warm : bool
        Start UMAP in the background (ignored when ``cluster`` is given).

    Returns
    -------
    ipywidgets.VBox
        With ``.cluster`` and ``.embed`` attached, and its widgets by name in ``.parts``.
    """
    import ipywidgets as w
    import plotly.graph_objects as go

    if cluster is None:
        if bundle is None:
            raise MapError("explore_widget needs a bundle or cluster=/embed= models")
        cluster = ClusterMapModel.from_bundle(bundle, warm=warm)
    if embed is None:
        if bundle is None:
            raise MapError("explore_widget needs a bundle to build the EmbedModel, or embed=")
        embed = EmbedModel.from_bundle(bundle, map=cluster)

    # -- embed part
    text = w.Textarea(placeholder="Type or paste a prompt", layout=w.Layout(width="100%",
                                                                               height="80px"))
    go_button = w.Button(description="Embed and route", button_style="primary")
    result = w.HTML()
    proba = w.HTML()
    neigh = w.HTML()

    def show_embed(*_: Any) -> None:
        if embed.error:
            result.value = f"<span style='color:crimson'>{html.escape(embed.error)}</span>"
        elif embed.category:
            result.value = (f"Routed to <b>{html.escape(embed.category)}</b> · confidence "
                            f"{embed.confidence:.3f} · expert "
                            f"<b>{html.escape(embed.expert or '(no map)')}</b>")
        else:
            result.value = ""
        proba.value = _html_table(embed.probabilities)
        neigh.value = _html_table(None if embed.neighbours is None
                                  else embed.neighbours.drop(columns=["row"]))
        redraw()

    go_button.on_click(lambda _: embed.embed(text.value))

    # -- cluster part
    method = w.ToggleButtons(options=[("PCA", "pca"), ("t-SNE", "tsne"), ("UMAP", "umap")],
                             value=cluster.method)
    color = w.Dropdown(options=[("category", "category"), ("best expert", "best_expert"),
                                ("router error", "router_error"),
                                ("discovered cluster", "discovered")],
                       value=cluster.color_by, description="colour by")
    status = w.HTML()
    fig = go.FigureWidget()
    count = w.HTML()
    table = w.HTML()
    new_label = w.Text(placeholder="new category")
    relabel = w.Button(description="Relabel selection", button_style="warning")
    path = w.Text(placeholder="labels file (.jsonl/.csv); empty: default")
    save = w.Button(description="Save labels")
    state = {"busy": False}

    def on_selection(trace: Any, points: Any, selector: Any) -> None:
        if state["busy"]:
            return
        rows = [int(trace.customdata[i]) for i in points.point_inds] if \
            trace.customdata is not None else []
        # one callback per trace: merge the traces' selections
        current = {r for r in cluster.selection}
        mine = {int(v) for v in (trace.customdata if trace.customdata is not None else [])}
        cluster.select(sorted((current - mine) | set(rows)))

    def redraw(*_: Any) -> None:
        state["busy"] = True
        try:
            new = cluster.figure()
            if embed.position is not None:
                from workbench.plots.maps import mark_points

                # place the prompt on the map on show
                xy = (embed.position if embed.map is cluster.map else
                      embed._place(np.asarray(embed._encode([embed.text]), dtype=np.float32),
                                   cluster.map))
                if xy is not None:
                    mark_points(new, np.array([xy]), "your prompt", texts=[embed.text])
            with fig.batch_update():
                fig.data = []
                fig.layout = new.layout
                for tr in new.data:
                    fig.add_trace(tr)
            for tr in fig.data:
                if tr.customdata is not None:
                    tr.on_selection(on_selection)
        finally:
            state["busy"] = False

    def show_selection(*_: Any) -> None:
        count.value = f"<b>{len(cluster.selection)}</b> selected"
        table.value = _html_table(cluster.selected_frame())

    def show_status(*_: Any) -> None:
        colour = "crimson" if cluster.status.startswith("error") else "inherit"
        status.value = f"<span style='color:{colour}'>{html.escape(cluster.status)}</span>"

    def run(action: Any) -> None:
        try:
            action()
        except Exception as exc:
            cluster.status = f"error: {exc}"

    method.observe(lambda ch: run(lambda: setattr(cluster, "method", ch["new"])), names="value")
    color.observe(lambda ch: run(lambda: setattr(cluster, "color_by", ch["new"])), names="value")
    relabel.on_click(lambda _: run(lambda: cluster.relabel(new_label.value)))
    save.on_click(lambda _: run(lambda: cluster.save_labels(path.value.strip() or None)))
    cluster.param.watch(redraw, ["version"])
    cluster.param.watch(show_selection, ["selection"])
    cluster.param.watch(show_status, ["status"])
    embed.param.watch(show_embed, ["version"])
    show_embed()
    show_selection()
    show_status()
    box = w.VBox([
        w.HTML("<h3>Embed a prompt</h3>"), text, go_button, result,
        w.HBox([w.VBox([w.HTML("<b>Router probabilities</b>"), proba]),
                w.VBox([w.HTML("<b>Nearest prompts</b>"), neigh])]),
        w.HTML("<h3>Cluster map</h3>"), w.HBox([method, color]), status, fig,
        count, table, w.HBox([new_label, relabel]), w.HBox([path, save]),
    ])
    box.parts = {"text": text, "button": go_button, "result": result,  # type: ignore[attr-defined]
                 "probabilities": proba, "neighbours": neigh, "method": method, "color": color,
                 "status": status, "figure": fig, "count": count, "selection": table,
                 "relabel_name": new_label, "relabel": relabel, "path": path, "save": save}
    box.cluster = cluster  # type: ignore[attr-defined]
    box.embed = embed  # type: ignore[attr-defined]
    return box
