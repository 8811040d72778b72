"""The Comp-LLM model: the settings (decomposer, per-node routing, aggregator, parallelism, token
budget), running :class:`~workbench.compose.Composer`, and the graph, live per-node results and
final :class:`~workbench.compose.ComposeResult`. No UI; :class:`workbench.ui.panel.compose.ComposePanel`
and :func:`workbench.ui.widgets.compose.compose_widget` render it.

Examples
--------
>>> from workbench.ui.models import ComposeModel                         # doctest: +SKIP
>>> model = ComposeModel.from_bundle(bundle)                             # doctest: +SKIP
>>> model.query = "What is 12 * 7? Then translate the result into Spanish."   # doctest: +SKIP
>>> result = model.run()                                                 # doctest: +SKIP
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import param

from workbench.errors import GraphError, WorkbenchError

__all__ = ["EXAMPLES", "ComposeModel"]

EXAMPLES = [
    "What is 12 * 7? Then translate the result into Spanish.",
    "Explain how vaccines work, and write a short poem about the sea.",
    "Who was the first Roman emperor? When did his rule end? Compare both answers with the fall of Rome.",
    "Solve 2x + 3 = 11; then explain the second step in German.",
]


class ComposeModel(param.Parameterized):
    """State and logic of the Comp-LLM view (no UI).

    Parameters
    ----------
    make_composer : callable
        ``make_composer(decomposer=, routing=, aggregator=, max_parallel=, max_new_tokens=)`` ->
        :class:`~workbench.compose.Composer`. :meth:`from_bundle` builds one over the demo bundle.
    """

    query = param.String(default=EXAMPLES[0], doc="The question to compose.")
    decomposer = param.Selector(default="rule", objects=["rule", "llm"],
                                doc="rule: deterministic split (offline default); llm: ask the generalist for JSON.")
    routing = param.Selector(default="similarity", objects=["similarity", "coe"],
                             doc="similarity to expert descriptions, or the CoE router + map.")
    aggregator = param.Selector(default="llm", objects=["llm", "template"])
    max_parallel = param.Integer(default=0, bounds=(0, 16), doc="Most sub-queries at once (0: the graph's width).")
    max_new_tokens = param.Integer(default=48, bounds=(1, 512))
    running = param.Boolean(default=False, constant=False)
    status = param.String(default="")
    error = param.String(default="")
    graph = param.Parameter(default=None, doc="The decomposed (and routed) QueryGraph.")
    result = param.Parameter(default=None, doc="The last ComposeResult.")
    version = param.Integer(default=0, doc="Bumped whenever live node results change.")

    def __init__(self, make_composer: Callable[..., Any], **params: Any) -> None:
        super().__init__(**params)
        self._make_composer = make_composer
        self._composers: dict[tuple, Any] = {}
        self.live: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_bundle(cls, bundle: Any, **params: Any) -> "ComposeModel":
        """Over the demo bundle (its pool, embedder, CoE; the map's fallback expert as generalist)."""
        from workbench.compose import Composer

        def make(*, decomposer, routing, aggregator, max_parallel, max_new_tokens):
            return Composer.from_bundle(bundle, routing=routing, decomposer=decomposer, aggregator=aggregator,
                                        max_parallel=max_parallel or None, gen={"max_new_tokens": max_new_tokens})

        return cls(make, **params)

    # -- logic ----------------------------------------------------------------------------------

    def composer(self):
        key = (self.decomposer, self.routing, self.aggregator, self.max_parallel, self.max_new_tokens)
        if key not in self._composers:
            self._composers[key] = self._make_composer(
                decomposer=self.decomposer, routing=self.routing, aggregator=self.aggregator,
                max_parallel=self.max_parallel, max_new_tokens=self.max_new_tokens)
        return self._composers[key]

    def preview(self):
        """Decompose and route :attr:`query` without running it; returns (and stores) the graph."""
        self.error = ""
        try:
            composer = self.composer()
            graph = composer.route(composer.decompose(self._checked_query()))
        except WorkbenchError as exc:
            self.error, self.status = str(exc), "error"
            raise
        self.live = {}
        self.result = None
        self.graph = graph
        self.status = f"{len(graph)} sub-queries, depth {graph.depth}, width {graph.width} (not run yet)"
        return graph

    def run(self):
        """Decompose, route, execute and aggregate :attr:`query`; returns the ComposeResult.

        Errors (e.g. the LLM decomposer giving up) are stored in :attr:`error` and re-raised.
        """
        query = self._checked_query()
        self.error, self.result, self.live = "", None, {}
        self.running = True
        self.status = "decomposing…"
        try:
            result = self.composer().run(query, callback=self._on_node, on_stage=self._on_stage)
        except WorkbenchError as exc:
            self.error, self.status = str(exc), "error"
            raise
        finally:
            self.running = False
        self.result = result
        ex = result.execution
        self.status = (f"{len(ex.answers)}/{len(result.graph)} answered in {result.timings['total']:.2f}s "
                       f"(execute {ex.wall_s:.2f}s; one by one {ex.sequential_s:.2f}s; critical path "
                       f"{ex.critical_path_s:.2f}s); aggregation: {result.aggregation.method}")
        if ex.missing:
            self.status += f"; missing: {', '.join(ex.missing)}"
        return result

    def _checked_query(self) -> str:
        if not self.query or not self.query.strip():
            self.error = "type a question to compose"
            raise GraphError("the query is empty; type a question to compose")
        return self.query

    def _on_stage(self, name: str, payload: Any) -> None:
        if name in ("graph", "routed"):
            self.graph = payload
            self.status = "routing…" if name == "graph" else f"running {len(payload)} sub-queries…"
        elif name == "executed":
            self.status = "aggregating…"

    def _on_node(self, res: Any) -> None:
        with self._lock:
            self.live = {**self.live, res.id: res}
        self.version += 1

    def figure(self):
        """The plotly figure of the current state (graph, live timings, or the finished run)."""
        from workbench.plots.compose import graph_figure

        if self.result is not None:
            return graph_figure(self.result)
        if self.graph is not None:
            with self._lock:
                live = dict(self.live)
            return graph_figure(self.graph, live=live or None)
        return None

    def nodes_frame(self):
        """One row per node: id, expert, status, tier it was found in, seconds, needs, sub-query (filled), answer or error."""
        import pandas as pd

        cols = ["id", "expert", "status", "tier", "start_s", "duration_s", "needs", "sub_query", "answer"]
        if self.graph is None:
            return pd.DataFrame(columns=cols)
        rows = []
        results = self.result.execution.nodes if self.result is not None else dict(self.live)
        for node in self.graph:
            r = results.get(node.id)
            rows.append({
                "id": node.id, "expert": (r.expert if r is not None else node.expert) or "",
                "status": r.status if r is not None else "waiting",
                "tier": (r.tier_found or "") if r is not None else "",
                "start_s": None if r is None or r.start_s is None else round(r.start_s, 3),
                "duration_s": None if r is None or r.end_s is None else round(r.duration_s, 3),
                "needs": ", ".join(node.dependencies),
                "sub_query": (r.prompt if r is not None and r.prompt else node.text),
                "answer": (r.text if r is not None and r.status == "ok" else (r.error or "") if r is not None else ""),
            })
        return pd.DataFrame(rows, columns=cols)
