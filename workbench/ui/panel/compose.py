"""Panel view of a :class:`~workbench.ui.models.ComposeModel` (the app's "Compose" tab): a plotly
graph that updates while nodes run, a node table and the answer, all user/model text HTML-escaped.
"""
from __future__ import annotations

import asyncio
import html
from typing import Any

import panel as pn

from workbench.errors import WorkbenchError
from workbench.ui.models.compose import EXAMPLES, ComposeModel
from workbench.ui.panel.common import labelled

__all__ = ["ComposePanel"]

_STYLES = """
.coe-compose-answer { white-space: pre-wrap; word-break: break-word; font-size: 14px; border: 1px solid #d0d7de;
                      border-radius: 6px; padding: 8px; background: #f6f8fa; }
.coe-compose-status { font-size: 13px; color: #57606a; }
.coe-compose-status.error { color: #cf222e; font-weight: 600; }
"""


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


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
        group = pn.widgets.RadioButtonGroup.from_param
        controls = [
            labelled(group(model.param.decomposer), "Decomposer",
                     "rule: split on connectives and numbered steps (instant); llm: the generalist "
                     "writes the graph as JSON under constrained decoding (seconds; a small model "
                     "often keeps the query whole)"),
            labelled(group(model.param.routing), "Routing",
                     "similarity: each sub-query to the expert whose description is nearest "
                     "(Comp-LLM); coe: the CoE's category router and map"),
            labelled(group(model.param.aggregator), "Aggregator",
                     "llm: the generalist writes one answer from the sub-answers; template: the "
                     "sub-answers joined in order"),
            pn.widgets.IntInput.from_param(model.param.max_parallel, label="Max parallel (0: width)",
                                           width=160, description="nodes run at once; 0 runs a "
                                           "whole level of the graph together"),
            pn.widgets.IntInput.from_param(model.param.max_new_tokens, label="New tokens", width=110,
                                           description="tokens per sub-answer")]
        self._run = pn.widgets.Button(label="Run", button_type="primary", width=90)
        self._preview = pn.widgets.Button(label="Decompose only", width=130)
        self._run.on_click(self._on_run)
        self._preview.on_click(self._on_preview)
        self._status = pn.pane.HTML("", stylesheets=[_STYLES], sizing_mode="stretch_width")
        self._figure = pn.pane.Plotly(None, sizing_mode="stretch_width", config={"displaylogo": False},
                                      visible=False)  # no empty axes before a run
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
        has_graph = m.result is not None or m.graph is not None
        self._figure.object = m.figure() if has_graph else None
        self._figure.visible = has_graph
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
