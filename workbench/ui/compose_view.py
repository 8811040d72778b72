"""The Comp-LLM view: type a query, see its graph of sub-queries, watch them run, read the answer.

:class:`ComposeModel` (``param.Parameterized``) holds the settings (decomposer, per-node routing,
aggregator, parallelism, token budget), runs :class:`~workbench.compose.Composer` and keeps the
graph, the live per-node results and the final :class:`~workbench.compose.ComposeResult`; tests
drive it directly. :class:`ComposePanel` renders it in the Panel app (a plotly graph that updates
while nodes run, a node table and the answer, all user/model text HTML-escaped);
:func:`compose_widget` is the ipywidgets version for notebooks.

Examples
--------
>>> from workbench.ui.compose_view import ComposeModel, ComposePanel    # doctest: +SKIP
>>> model = ComposeModel.from_bundle(bundle)                             # doctest: +SKIP
>>> model.query = "What is 12 * 7? Then translate the result into Spanish."   # doctest: +SKIP
>>> result = model.run()                                                 # doctest: +SKIP
>>> ComposePanel(model)                                                  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import html
import threading
from collections.abc import Callable
from typing import Any

import panel as pn
import param

from workbench.errors import GraphError, WorkbenchError

__all__ = ["ComposeModel", "ComposePanel", "compose_widget"]

EXAMPLES = [
    "What is 12 * 7? Then translate the result into Spanish.",
    "Explain how vaccines work, and write a short poem about the sea.",
    "Who was the first Roman emperor? When did his rule end? Compare both answers with the fall of Rome.",
    "Solve 2x + 3 = 11; then explain the second step in German.",
]

_STYLES = """
.coe-compose-answer { white-space: pre-wrap; word-break: break-word; font-size: 14px; border: 1px solid #d0d7de;
                      border-radius: 6px; padding: 8px; background: #f6f8fa; }
.coe-compose-status { font-size: 13px; color: #57606a; }
.coe-compose-status.error { color: #cf222e; font-weight: 600; }
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


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


class ComposePanel(pn.viewable.Viewer):
    """Panel view of a :class:`ComposeModel` (the app's "Compose" tab)."""

    def __init__(self, model: ComposeModel | Any, **params: Any) -> None:
        if not isinstance(model, ComposeModel):  # a bundle: what the app passes when from_bundle is absent
            model = ComposeModel.from_bundle(model)
        super().__init__(**params)
        self.model = model
        self._query = pn.widgets.TextAreaInput.from_param(model.param.query, label="Query", height=80,
                                                          sizing_mode="stretch_width")
        self._examples = pn.widgets.Select(label="Examples", options=["(pick an example)"] + EXAMPLES, width=260)
        self._examples.param.watch(self._pick_example, "value")
        controls = [pn.widgets.RadioButtonGroup.from_param(model.param.decomposer, label="decomposer"),
                    pn.widgets.RadioButtonGroup.from_param(model.param.routing, label="routing"),
                    pn.widgets.RadioButtonGroup.from_param(model.param.aggregator, label="aggregator"),
                    pn.widgets.IntInput.from_param(model.param.max_parallel, label="max parallel (0: width)", width=150),
                    pn.widgets.IntInput.from_param(model.param.max_new_tokens, label="new tokens", width=110)]
        self._run = pn.widgets.Button(label="Run", button_type="primary", width=90)
        self._preview = pn.widgets.Button(label="Decompose only", width=130)
        self._run.on_click(self._on_run)
        self._preview.on_click(self._on_preview)
        self._status = pn.pane.HTML("", stylesheets=[_STYLES], sizing_mode="stretch_width")
        self._figure = pn.pane.Plotly(None, sizing_mode="stretch_width", config={"displaylogo": False})
        self._table = pn.widgets.Tabulator(model.nodes_frame(), disabled=True, show_index=False, layout="fit_data_table",
                                           sizing_mode="stretch_width", max_height=320)
        self._answer = pn.pane.HTML("", stylesheets=[_STYLES], sizing_mode="stretch_width")
        self._layout = pn.Column(
            pn.Row(self._query, self._examples, sizing_mode="stretch_width"),
            pn.Row(*controls, sizing_mode="stretch_width"),
            pn.Row(self._run, self._preview, self._status, sizing_mode="stretch_width"),
            self._figure, self._table, pn.pane.Markdown("**Answer**"), self._answer,
            sizing_mode="stretch_width")

    @classmethod
    def from_bundle(cls, bundle: Any, **params: Any) -> "ComposePanel":
        return cls(ComposeModel.from_bundle(bundle), **params)

    def __panel__(self):
        return self._layout

    def _pick_example(self, event: Any) -> None:
        if event.new in EXAMPLES:
            self.model.query = event.new

    def refresh(self) -> None:
        """Redraw figure, table, status and answer from the model."""
        m = self.model
        cls = "coe-compose-status error" if m.error else "coe-compose-status"
        self._status.object = f'<div class="{cls}">{_esc(m.error or m.status)}</div>'
        fig = m.figure()
        self._figure.object = fig
        self._table.value = m.nodes_frame()
        if m.result is not None:
            note = f" ({_esc(m.result.aggregation.note)})" if m.result.aggregation.note else ""
            self._answer.object = (f'<div class="coe-compose-answer">{_esc(m.result.answer)}</div>'
                                   f'<div class="coe-compose-status">written by: {_esc(m.result.aggregation.method)}'
                                   f'{" / " + _esc(m.result.aggregation.expert) if m.result.aggregation.expert else ""}'
                                   f"{note}</div>")
        else:
            self._answer.object = ""

    def _on_preview(self, _event: Any = None) -> None:
        try:
            self.model.preview()
        except WorkbenchError:
            pass
        self.refresh()

    async def _on_run(self, _event: Any = None) -> None:
        if self.model.running:
            return
        self._run.disabled = True
        task = asyncio.get_running_loop().run_in_executor(None, self._run_quietly)
        try:
            while not task.done():
                await asyncio.sleep(0.3)
                self.refresh()
            await task
        finally:
            self._run.disabled = False
            self.refresh()

    def _run_quietly(self) -> None:
        try:
            self.model.run()
        except WorkbenchError:
            pass  # kept in model.error and shown


def compose_widget(bundle: Any = None, *, model: ComposeModel | None = None):
    """The notebook version: a query box, settings, a Run button, and the graph, table and answer.

    Returns
    -------
    ipywidgets.VBox
    """
    import ipywidgets as w
    from IPython.display import HTML, display

    if model is None:
        if bundle is None:
            raise GraphError("compose_widget needs the bundle (or model=ComposeModel(...))")
        model = ComposeModel.from_bundle(bundle)
    query = w.Textarea(value=model.query, layout=w.Layout(width="100%", height="60px"))
    decomposer = w.ToggleButtons(options=["rule", "llm"], value=model.decomposer, description="decomposer")
    routing = w.ToggleButtons(options=["similarity", "coe"], value=model.routing, description="routing")
    aggregator = w.ToggleButtons(options=["llm", "template"], value=model.aggregator, description="aggregator")
    button = w.Button(description="Run", button_style="primary")
    out = w.Output()

    def on_click(_b: Any) -> None:
        model.query, model.decomposer = query.value, decomposer.value
        model.routing, model.aggregator = routing.value, aggregator.value
        out.clear_output()
        with out:
            try:
                model.run()
            except WorkbenchError as exc:
                display(HTML(f"<b style='color:#cf222e'>{_esc(exc)}</b>"))
                return
            display(HTML(f"<div>{_esc(model.status)}</div>"))
            display(model.figure())
            display(model.nodes_frame())
            display(HTML(f"<pre style='white-space:pre-wrap'>{_esc(model.result.answer)}</pre>"))

    button.on_click(on_click)
    box = w.VBox([query, decomposer, routing, aggregator, button, out])
    box.model = model
    box.run = lambda: on_click(None)
    return box
