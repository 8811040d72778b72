"""The Comp-LLM view for notebooks: a query box, settings, a Run button, and the graph, table and
answer (over a :class:`~workbench.ui.models.ComposeModel`)."""
from __future__ import annotations

import html
from typing import Any

from workbench.errors import GraphError, WorkbenchError
from workbench.ui.models.compose import ComposeModel

__all__ = ["compose_widget"]


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


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
