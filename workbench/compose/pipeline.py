"""The Comp-LLM pipeline: decompose -> route each node -> run the graph in parallel -> aggregate."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from workbench.compose.aggregate import Aggregation, get_aggregator
from workbench.compose.decompose import get_decomposer
from workbench.compose.execute import ExecutionResult, GraphExecutor, NodeResult, torch_threads
from workbench.compose.graph import QueryGraph
from workbench.compose.route import assign_experts, get_node_router
from workbench.compose.runner import PoolRunner, Runner, as_runner
from workbench.errors import GraphError

__all__ = ["ComposeResult", "Composer", "compose"]


@dataclass
class ComposeResult:
    """Everything one composed query produced.

    Attributes
    ----------
    query : str
    graph : QueryGraph
        With experts assigned.
    execution : ExecutionResult
        Per-node answers, timings, failures, critical path.
    aggregation : Aggregation
        The final answer and how it was written.
    timings : dict
        Seconds spent in ``decompose``, ``route``, ``execute``, ``aggregate`` and ``total``.
    """

    query: str
    graph: QueryGraph
    execution: ExecutionResult
    aggregation: Aggregation
    timings: dict = field(default_factory=dict)
    decomposer: str = ""
    routing: str = ""

    @property
    def answer(self) -> str:
        return self.aggregation.text

    @property
    def complete(self) -> bool:
        return self.execution.complete

    def to_dict(self) -> dict:
        return {"query": self.query, "answer": self.answer, "aggregation": self.aggregation.to_dict(),
                "execution": self.execution.to_dict(), "timings": dict(self.timings),
                "decomposer": self.decomposer, "routing": self.routing}

    def summary(self) -> str:
        t = self.timings
        lines = [f"query: {self.query}",
                 f"graph: {len(self.graph)} sub-queries, depth {self.graph.depth}, width {self.graph.width} "
                 f"(decomposer: {self.decomposer}, routing: {self.routing})"]
        for nid in self.graph.order():
            r = self.execution.nodes[nid]
            lines.append(f"  {nid} [{r.expert}] {r.status} {r.duration_s:.2f}s: {self.graph[nid].text.splitlines()[0]}")
        lines.append(self.execution.summary())
        lines.append(f"aggregation: {self.aggregation.method}" + (f" ({self.aggregation.note})" if self.aggregation.note else ""))
        lines.append("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
        return "\n".join(lines)


class Composer:
    """Compose experts within one query (Comp-LLM, arXiv 2511.22955).

    Parameters
    ----------
    runner : ExpertPool or callable
        How to ask an expert: an :class:`~workbench.experts.ExpertPool` or ``run(expert, prompt)``.
    node_router : object with ``route_many(texts)``, optional
        Gives each node its expert (:class:`SimilarityNodeRouter`, :class:`CoENodeRouter`). Without
        one, nodes need an expert already, or ``default_expert`` is used.
    decomposer : "rule", "llm" or callable, default "rule"
        ``"llm"`` asks ``llm_expert`` for the graph as JSON (with retries).
    aggregator : "llm", "template" or callable, default "llm"
        ``"llm"`` asks ``llm_expert`` to synthesise the answer, with the template as fallback.
    llm_expert : str, optional
        The expert used by the LLM decomposer and aggregator (a generalist). Defaults to
        ``default_expert``.
    default_expert : str, optional
        For nodes the router leaves without an expert.
    max_parallel, capacity_bytes, torch_threads
        Passed to :class:`GraphExecutor`; ``torch_threads`` also applies (with concurrency 1) to
        the LLM decomposer and aggregator calls.
    **gen
        Generation settings when ``runner`` is a pool (e.g. ``max_new_tokens=48``).

    Examples
    --------
    >>> composer = Composer.from_bundle(build_demo_bundle())                 # doctest: +SKIP
    >>> result = composer.run("What is 12 * 7? Then translate it into Spanish.")   # doctest: +SKIP
    >>> print(result.summary())                                             # doctest: +SKIP
    """

    def __init__(self, runner: Any, *, node_router: Any = None, decomposer: Any = "rule", aggregator: Any = "llm",
                 llm_expert: str | None = None, default_expert: str | None = None, max_parallel: int | None = None,
                 capacity_bytes: int | str | None = "auto", torch_threads: int | str | None = "auto",
                 decompose_attempts: int = 3, **gen: Any) -> None:
        self.runner: Runner = as_runner(runner, **gen)
        self.node_router = node_router
        self.default_expert = default_expert
        self.llm_expert = llm_expert or default_expert
        kwargs = {"max_attempts": decompose_attempts} if decomposer == "llm" else {}
        self.decomposer = get_decomposer(decomposer, runner=self.runner, expert=self.llm_expert, **kwargs)
        self.aggregator = get_aggregator(aggregator, runner=self.runner, expert=self.llm_expert)
        self.torch_threads = torch_threads
        self.executor = GraphExecutor(self.runner, max_parallel=max_parallel, capacity_bytes=capacity_bytes,
                                      default_expert=default_expert, torch_threads=torch_threads)

    @classmethod
    def from_pool(cls, pool: Any, *, routing: str | Any = "similarity", embedder: Any = None, coe: Any = None,
                  generalist: str | None = None, **kwargs: Any) -> "Composer":
        """A composer over an :class:`~workbench.experts.ExpertPool`.

        ``routing="similarity"`` needs ``embedder`` (expert descriptions come from the pool's
        specs); ``routing="coe"`` needs ``coe``. ``generalist`` is the LLM decomposer/aggregator
        expert and the default for unrouted nodes (default: the CoE map's fallback expert, else
        the pool's first expert).
        """
        if generalist is None:
            mapping = getattr(coe, "mapping", None)
            generalist = getattr(mapping, "fallback_expert", None) or next(iter(pool.specs))
        router = get_node_router(routing, coe=coe, embedder=embedder, specs=list(pool.specs.values()))
        kwargs.setdefault("llm_expert", generalist)
        kwargs.setdefault("default_expert", generalist)
        return cls(PoolRunner(pool, **kwargs.pop("gen", {})), node_router=router, **kwargs)

    @classmethod
    def from_bundle(cls, bundle: Any, *, routing: str | Any = "similarity", **kwargs: Any) -> "Composer":
        """A composer over the demo bundle (its pool, embedder, CoE and generalist)."""
        mapping = getattr(bundle, "mapping", None)
        generalist = kwargs.pop("generalist", None) or getattr(mapping, "fallback_expert", None)
        return cls.from_pool(bundle.pool, routing=routing, embedder=getattr(bundle, "embedder", None),
                             coe=getattr(bundle, "coe", None), generalist=generalist, **kwargs)

    @property
    def routing(self) -> str:
        return getattr(self.node_router, "method", type(self.node_router).__name__ if self.node_router else "none")

    def decompose(self, query: str) -> QueryGraph:
        return self.decomposer(query)

    def route(self, graph: QueryGraph, *, overwrite: bool = False) -> QueryGraph:
        if self.node_router is not None:
            assign_experts(graph, self.node_router, overwrite=overwrite)
        elif self.default_expert is not None:
            for node in graph:
                node.expert = node.expert or self.default_expert
        return graph

    def run(self, query: str | QueryGraph, *, callback: Any = None, on_stage: Any = None) -> ComposeResult:
        """Decompose (unless given a graph), route, execute and aggregate.

        ``callback(NodeResult)`` is called as nodes start and end; ``on_stage(name, payload)`` after
        each stage (``"graph"``, ``"routed"``, ``"executed"``, ``"answer"``) for live views.
        """
        t0 = time.perf_counter()
        if isinstance(query, QueryGraph):
            graph, text = query, query.query
            decomposer = "given"
        else:
            if not isinstance(query, str) or not query.strip():
                raise GraphError("the query is empty; give a question to compose")
            text = query
            with torch_threads(self.torch_threads, 1):  # the LLM decomposer generates one reply
                graph = self.decompose(query)
            decomposer = getattr(self.decomposer, "name", type(self.decomposer).__name__)
        t1 = time.perf_counter()
        _stage(on_stage, "graph", graph)
        self.route(graph)
        t2 = time.perf_counter()
        _stage(on_stage, "routed", graph)
        execution = self.executor.run(graph, callback=callback)
        t3 = time.perf_counter()
        _stage(on_stage, "executed", execution)
        with torch_threads(self.torch_threads, 1):
            aggregation = self.aggregator(text, execution)
        t4 = time.perf_counter()
        result = ComposeResult(text, graph, execution, aggregation,
                               {"decompose": t1 - t0, "route": t2 - t1, "execute": t3 - t2,
                                "aggregate": t4 - t3, "total": t4 - t0}, decomposer, self.routing)
        _stage(on_stage, "answer", result)
        return result

    __call__ = run


def _stage(fn: Any, name: str, payload: Any) -> None:
    if fn is not None:
        fn(name, payload)


def compose(query: str, bundle: Any = None, **kwargs: Any) -> ComposeResult:
    """Compose ``query`` over ``bundle`` (default: the offline demo bundle).

    >>> print(compose("What is 2+2, and why is it even?").answer)   # doctest: +SKIP
    """
    if bundle is None:
        from workbench.demo import build_demo_bundle

        bundle = build_demo_bundle()
    return Composer.from_bundle(bundle, **kwargs).run(query)


_ = NodeResult  # re-exported for type hints in views
