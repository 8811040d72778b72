"""The Embed model: one prompt in, its routing out (router probabilities, nearest neighbours in
the prompt set, where it lands on the map, and the expert the map would use).

The routing itself is :meth:`workbench.coe.CoE.explain` (or :func:`workbench.coe.explain_routing`
when there is no CoE): an unmapped category is an error here exactly as in the CoE runtime.
No Panel, bokeh or ipywidgets import; the views are :class:`workbench.ui.panel.explore.EmbedPanel`
and :func:`workbench.ui.widgets.explore.explore_widget`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import param

from workbench.errors import MapError
from workbench.ui.models.common import (
    bundle_embeddings,
    is_session_model,
    shared_builder,
)
from workbench.vectors import l2_normalize

__all__ = ["EmbedModel"]


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
    coe : CoE, optional
        When given, routing is ``coe.explain(text)`` (while :attr:`mapping` is the CoE's own map;
        an edited map routes through :func:`~workbench.coe.explain_routing`, the same rule).

    Attributes
    ----------
    probabilities : pandas.DataFrame
        ``category, probability``, most probable first.
    neighbors : pandas.DataFrame
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
    neighbors = param.DataFrame(default=None, allow_None=True, doc="nearest reference prompts")
    position = param.Parameter(default=None, doc="(x, y) on the map, or None")
    category = param.String(default="", doc="Routed category (fallback rule applied).")
    predicted = param.String(default="", doc="Most probable category.")
    confidence = param.Number(default=None, allow_None=True)
    is_fallback = param.Boolean(default=False)
    expert = param.String(default="", doc="Expert the map sends this prompt to.")
    embedding = param.Parameter(default=None, doc="The prompt's embedding row (or None).")
    error = param.String(default="", doc="Why the last prompt could not be handled.")
    version = param.Integer(default=0, doc="Bumped whenever the outputs change.")

    def __init__(self, prompts: Any, embeddings: Any, router: Any, *,
                 encode: Callable[[list[str]], Any], mapping: Any = None, map: Any = None,
                 coe: Any = None, **params: Any) -> None:
        X = np.asarray(embeddings, dtype=np.float32)
        if X.ndim != 2 or len(X) != len(prompts):
            raise MapError(f"EmbedModel needs one embedding row per prompt: got shape {X.shape} "
                           f"for {len(prompts)} prompts")
        if not callable(encode):
            raise MapError("encode must be a callable texts -> embeddings, e.g. Embedder().encode")
        self._prompts = prompts
        self._X = X
        self._unit_X = l2_normalize(X)
        self._router = router
        self._encode = encode
        self._coe = coe
        follow = [src for src in (map, mapping) if is_session_model(src)]
        super().__init__(mapping=None if is_session_model(mapping) else mapping,
                         map=None if is_session_model(map) else map, **params)
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
        from workbench.ui.models.cluster_map import ClusterMapModel

        if isinstance(source, ClusterMapModel):
            self.map = source.map
            source.param.watch(lambda *_: setattr(self, "map", source.map), ["shown_method"])
        elif is_session_model(source) and hasattr(source, "mapping"):
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
        X = bundle_embeddings(bundle)
        if map is None:
            map = shared_builder(X, 0).first()
        params.setdefault("mapping", getattr(bundle, "mapping", None))
        params.setdefault("coe", getattr(bundle, "coe", None))
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

    @property
    def neighbours(self):
        """Deprecated spelling of :attr:`neighbors` (removed in the next release)."""
        import warnings

        warnings.warn("EmbedModel.neighbours is now EmbedModel.neighbors", DeprecationWarning,
                      stacklevel=2)
        return self.neighbors

    def result(self) -> dict[str, Any]:
        """The current outputs as a plain dict."""
        return {"text": self.text, "category": self.category, "predicted": self.predicted,
                "confidence": self.confidence, "is_fallback": self.is_fallback,
                "expert": self.expert, "position": self.position,
                "probabilities": self.probabilities, "neighbors": self.neighbors,
                "error": self.error}

    def _clear(self, error: str = "") -> None:
        self.param.update(probabilities=None, neighbors=None, position=None, embedding=None,
                          category="",
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
            ex = self.explain(text)
            q = np.asarray(ex.embedding, dtype=np.float32)[None, :]
            probs = pd.DataFrame({"category": [c for c, _ in ex.probabilities],
                                  "probability": [p for _, p in ex.probabilities]})
            sims = (l2_normalize(q) @ self._unit_X.T)[0]
            k = min(self.k, len(sims))
            top = np.argsort(-sims, kind="stable")[:k]
            df = self._prompts.df
            cats = (df["category"].astype(str).to_numpy() if "category" in df.columns
                    else np.full(len(df), ""))
            neigh = pd.DataFrame({
                "rank": np.arange(1, k + 1), "row": top, "id": df["id"].to_numpy()[top],
                "category": cats[top], "similarity": sims[top].astype(float),
                "text": df["text"].to_numpy()[top]})
            position = self._place(q)
        except Exception as exc:  # shown in the view; the model stays usable
            self._clear(error=f"{type(exc).__name__}: {exc}")
            self.version += 1
            return
        self.param.update(probabilities=probs, neighbors=neigh, position=position, embedding=q[0],
                          category=ex.category, predicted=ex.predicted,
                          confidence=ex.confidence, is_fallback=ex.is_fallback,
                          expert=ex.expert, error="")
        self.version += 1

    def explain(self, text: str) -> Any:
        """The routing of ``text`` (a :class:`~workbench.coe.Explanation`, with its embedding).

        Through the CoE when this model has one and routes with its map, else
        :func:`~workbench.coe.explain_routing` over this model's encoder, router and
        :attr:`mapping`. An unmapped category raises :class:`~workbench.errors.MappingError`.
        """
        from workbench.coe import explain_routing

        coe = self._coe
        if coe is not None and (self.mapping is None or self.mapping is coe.mapping):
            return coe.explain(text)
        q = self.encode(text)
        return explain_routing(q, self._router, self.mapping, prompt=text)

    def encode(self, text: str) -> np.ndarray:
        """The ``(1, d)`` embedding of ``text``, checked against the reference embeddings."""
        q = np.asarray(self._encode([text]), dtype=np.float32)
        if q.ndim != 2 or q.shape != (1, self._X.shape[1]):
            raise MapError(f"the encoder returned shape {q.shape}; expected (1, "
                           f"{self._X.shape[1]}) like the reference embeddings")
        return q

    def place_on(self, m: Any) -> tuple[float, float] | None:
        """Where the current prompt lands on the map ``m`` (``None`` without a prompt)."""
        if not (self.text or "").strip() or self.error:
            return None
        if m is self.map:
            return self.position
        return self._place(self.encode(self.text), m)

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
