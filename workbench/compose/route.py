"""Per-node routing: give every sub-query of a graph an expert.

Two ways, both selectable in :class:`~workbench.compose.pipeline.Composer`:

* :class:`SimilarityNodeRouter` (the Comp-LLM paper's way): embed a short description of each
  expert once, embed each sub-query, pick the expert whose description is most similar (cosine).
* :class:`CoENodeRouter`: send each sub-query through the CoE's category router and its
  category-to-expert map (``CoE.route``), low-confidence fallback included.

Routing happens before execution, so placeholders are not filled yet: the router sees the
sub-query with its ``{{id}}`` placeholders and injected-context lines removed.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workbench.compose.graph import PLACEHOLDER, QueryGraph
from workbench.errors import ExpertError, GraphError

__all__ = ["NodeRoute", "SimilarityNodeRouter", "CoENodeRouter", "routing_text", "assign_experts", "get_node_router"]

_CONTEXT_LINE = re.compile(r"^\s*[\w ]{0,40}:\s*\{\{[^}]+\}\}\s*$", re.MULTILINE)


def routing_text(text: str) -> str:
    """The sub-query as a router should see it: injected-context lines and placeholders removed."""
    text = _CONTEXT_LINE.sub("", text)
    text = PLACEHOLDER.sub("", text)
    return re.sub(r"\s+", " ", text).strip() or text.strip()


@dataclass
class NodeRoute:
    """Where one sub-query goes and why."""

    expert: str
    score: float | None = None          # similarity (similarity routing) or router confidence (CoE)
    category: str | None = None
    is_fallback: bool = False
    method: str = ""
    scores: dict[str, float] = field(default_factory=dict)


class SimilarityNodeRouter:
    """Route by cosine similarity between a sub-query and each expert's description.

    Parameters
    ----------
    embedder : object with ``encode(texts) -> (n, d) array``
        E.g. :class:`workbench.Embedder` (all-MiniLM-L6-v2 offline).
    descriptions : mapping
        Expert name -> short text of what it is good at (``ExpertSpec.description``).
    fallback_expert : str, optional
        Used when the best similarity is below ``min_similarity``.
    min_similarity : float, optional
        Threshold for the fallback (no fallback when ``None``).

    Examples
    --------
    >>> r = SimilarityNodeRouter.from_specs(bundle.specs, bundle.embedder)   # doctest: +SKIP
    >>> r.route("Solve 3x + 1 = 10").expert                                  # doctest: +SKIP
    'demo-stem-7m'
    """

    method = "similarity"

    def __init__(self, embedder: Any, descriptions: Mapping[str, str], *, fallback_expert: str | None = None,
                 min_similarity: float | None = None) -> None:
        import numpy as np

        descriptions = {str(k): str(v or "") for k, v in dict(descriptions).items()}
        if not descriptions:
            raise ExpertError("similarity routing needs at least one expert description")
        empty = [name for name, text in descriptions.items() if not text.strip()]
        if empty:
            raise ExpertError(f"experts {empty} have no description; similarity routing needs one per expert "
                              "(set ExpertSpec.description) or use routing='coe'")
        if fallback_expert is not None and fallback_expert not in descriptions:
            raise ExpertError(f"fallback_expert {fallback_expert!r} is not one of {sorted(descriptions)}")
        self.embedder = embedder
        self.descriptions = descriptions
        self.experts = list(descriptions)
        self.fallback_expert = fallback_expert
        self.min_similarity = min_similarity
        self._desc = self._normalise(np.asarray(embedder.encode(list(descriptions.values())), dtype="float32"))

    @staticmethod
    def _normalise(X):
        from workbench.vectors import l2_normalize

        return l2_normalize(X)

    @classmethod
    def from_specs(cls, specs: Sequence[Any], embedder: Any, **kwargs: Any) -> "SimilarityNodeRouter":
        """From :class:`~workbench.experts.ExpertSpec` objects (their ``description``; name if empty)."""
        return cls(embedder, {s.name: (s.description or s.name) for s in specs}, **kwargs)

    @classmethod
    def from_pool(cls, pool: Any, embedder: Any, **kwargs: Any) -> "SimilarityNodeRouter":
        return cls.from_specs(list(pool.specs.values()), embedder, **kwargs)

    def similarities(self, texts: Sequence[str]):
        """``(n_texts, n_experts)`` cosine similarities, columns in :attr:`experts` order."""
        import numpy as np

        X = self._normalise(np.asarray(self.embedder.encode([routing_text(t) for t in texts]), dtype="float32"))
        return X @ self._desc.T

    def route_many(self, texts: Sequence[str]) -> list[NodeRoute]:
        sims = self.similarities(texts)
        out = []
        for row in sims:
            best = int(row.argmax())
            score = float(row[best])
            fallback = self.min_similarity is not None and self.fallback_expert is not None and score < self.min_similarity
            out.append(NodeRoute(self.fallback_expert if fallback else self.experts[best], score, None, fallback,
                                 self.method, {e: float(s) for e, s in zip(self.experts, row)}))
        return out

    def route(self, text: str) -> NodeRoute:
        return self.route_many([text])[0]


class CoENodeRouter:
    """Route each sub-query through a CoE's category router and category-to-expert map.

    Parameters
    ----------
    coe : object with ``route(prompt) -> (category, confidence, is_fallback, expert)``
        A :class:`workbench.coe.CoE`.
    """

    method = "coe"

    def __init__(self, coe: Any) -> None:
        if not hasattr(coe, "route"):
            raise ExpertError(f"routing='coe' needs a CoE with a route(prompt) method, got {type(coe).__name__}")
        self.coe = coe

    def route(self, text: str) -> NodeRoute:
        category, confidence, is_fallback, expert = self.coe.route(routing_text(text))
        return NodeRoute(str(expert), None if confidence is None else float(confidence),
                         None if category is None else str(category), bool(is_fallback), self.method)

    def route_many(self, texts: Sequence[str]) -> list[NodeRoute]:
        return [self.route(t) for t in texts]


def assign_experts(graph: QueryGraph, router: Any, *, overwrite: bool = False) -> QueryGraph:
    """Set ``node.expert`` (and category / routing scores in ``meta``) for every node, in place.

    Nodes that already have an expert keep it unless ``overwrite``. Returns the graph.
    """
    todo = [n for n in graph if overwrite or not n.expert]
    if not todo:
        return graph
    routes = router.route_many([n.text for n in todo])
    for node, route in zip(todo, routes):
        node.expert = route.expert
        if route.category is not None:
            node.category = route.category
        node.meta["routing"] = {"method": route.method, "score": route.score, "is_fallback": route.is_fallback}
        if route.scores:
            node.meta["routing"]["scores"] = {k: round(v, 4) for k, v in route.scores.items()}
    return graph


def get_node_router(spec: Any, *, coe: Any = None, embedder: Any = None, specs: Sequence[Any] | None = None,
                    fallback_expert: str | None = None):
    """Resolve ``"similarity"`` / ``"coe"`` / a router object (anything with ``route_many``)."""
    if spec in (None, "similarity"):
        if embedder is None or not specs:
            raise GraphError("routing='similarity' needs an embedder and the experts' specs (descriptions)")
        return SimilarityNodeRouter.from_specs(specs, embedder, fallback_expert=fallback_expert)
    if spec == "coe":
        if coe is None:
            raise GraphError("routing='coe' needs a CoE (router + category-to-expert map); pass coe=...")
        return CoENodeRouter(coe)
    if isinstance(spec, str):
        raise GraphError(f"unknown routing {spec!r}; use 'similarity' (expert descriptions) or 'coe' (router + map)")
    if hasattr(spec, "route_many"):
        return spec
    raise GraphError(f"a node router needs a route_many(texts) method, got {type(spec).__name__}")
