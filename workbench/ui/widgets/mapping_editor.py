"""The mapping editor as an ipywidgets box for notebooks (over a
:class:`~workbench.ui.models.MappingEditorModel`)."""
from __future__ import annotations

import html
import os
from typing import Any

from workbench.errors import MappingError
from workbench.ui.models.mapping_editor import MappingEditorModel

__all__ = ["mapping_editor_widget"]


def _metrics_html(model: MappingEditorModel) -> str:
    parts = " &nbsp; ".join(f"<b>{label}</b> {html.escape(value)}"
                            for label, value in model.metrics_parts())
    return f"{parts}<br><small>{html.escape(model.metrics_note())}</small>"


def mapping_editor_widget(bundle: Any = None, *, model: MappingEditorModel | None = None,
                          autosave_path: str | os.PathLike | None = None) -> Any:
    """The mapping editor as an ipywidgets box for notebooks.

    Parameters
    ----------
    bundle : DemoBundle-like, optional
        Used through :meth:`MappingEditorModel.from_bundle` when ``model`` is not given.
    model : MappingEditorModel, optional
        Drive an existing model (the notebook can keep using it in code).

    Returns
    -------
    ipywidgets.VBox
        With the model attached as ``.model``.
    """
    import ipywidgets as w
    import plotly.graph_objects as go

    if model is None:
        if bundle is None:
            raise MappingError("mapping_editor_widget needs a bundle or model=MappingEditorModel(...)")
        model = MappingEditorModel.from_bundle(bundle, autosave_path=autosave_path)
    experts = model.experts
    dropdowns: dict[str, Any] = {}
    locks: dict[str, Any] = {}
    rows = []
    updating = {"on": False}

    def on_pick(category: str) -> Any:
        def handler(change: Any) -> None:
            if updating["on"] or change["name"] != "value":
                return
            try:
                model.set_expert(category, change["new"])
            except Exception as exc:
                model.status = f"error: {exc}"
                refresh()
        return handler

    def on_lock(category: str) -> Any:
        def handler(change: Any) -> None:
            if not updating["on"]:
                model.set_locked(category, bool(change["new"]))
        return handler

    for c in model.categories:
        dd = w.Dropdown(options=experts, value=model.mapping.expert_for(c),
                        description_tooltip=f"the expert that answers {c} prompts",
                        layout=w.Layout(width="240px"))
        dd.observe(on_pick(c), names="value")
        cb = w.Checkbox(value=c in model.locked, description="locked", indent=False,
                        description_tooltip="Optimise keeps locked rows as they are",
                        layout=w.Layout(width="80px"))
        cb.observe(on_lock(c), names="value")
        dropdowns[c], locks[c] = dd, cb
        label = w.HTML(f"<code>{html.escape(c)}</code>", layout=w.Layout(width="170px"))
        rows.extend([label, dd, cb])
    metrics = w.HTML(_metrics_html(model))
    fig = go.FigureWidget(model.figure())
    # a plain FloatText: a bounded one would silently clamp a negative budget; the model refuses it
    budget = w.FloatText(value=model.budget_b, step=model.budget_step(), description="budget (B)",
                         description_tooltip="budget on average active parameters, in billions "
                                             "(must be positive)",
                         style={"description_width": "initial"})
    opt = w.Button(description="Optimise at budget", button_style="primary",
                   tooltip="replace the unlocked rows by the best map within the budget (undoable)")
    undo = w.Button(description="Undo")
    redo = w.Button(description="Redo")
    path = w.Text(placeholder="my_map.yaml", description="map file")
    save = w.Button(description="Save")
    load = w.Button(description="Load")
    status = w.HTML("")

    def run(action: Any) -> None:
        try:
            action()
        except Exception as exc:
            model.status = f"error: {exc}"

    opt.on_click(lambda _: run(lambda: model.optimize(budget.value)))
    undo.on_click(lambda _: run(model.undo))
    redo.on_click(lambda _: run(model.redo))
    save.on_click(lambda _: run(lambda: model.save(path.value.strip() or "map.yaml")))
    load.on_click(lambda _: run(lambda: model.load(path.value.strip())))

    def refresh(*_: Any) -> None:
        updating["on"] = True
        try:
            for c in model.categories:
                dropdowns[c].value = model.mapping.expert_for(c)
                locks[c].value = c in model.locked
            metrics.value = _metrics_html(model)
            new = model.figure()
            with fig.batch_update():
                fig.data = []
                for trace in new.data:
                    fig.add_trace(trace)
            undo.disabled = not model.can_undo
            redo.disabled = not model.can_redo
            if model.budget_b is not None:
                budget.value = model.budget_b
        finally:
            updating["on"] = False

    def show_status(*_: Any) -> None:
        colour = "crimson" if model.status.startswith("error") else "inherit"
        status.value = f"<span style='color:{colour}'>{html.escape(model.status)}</span>"

    model.param.watch(refresh, ["version"])
    model.param.watch(show_status, ["status"])
    refresh()
    # one grid (aligned columns, nothing clipped), the controls under it, the frontier below
    table = w.GridBox(rows, layout=w.Layout(grid_template_columns="170px 240px 80px",
                                            grid_gap="2px 8px", width="520px"))
    fig.update_layout(width=720, height=380)
    box = w.VBox([metrics, table, w.HBox([budget, opt, undo, redo]), status, fig,
                  w.HBox([path, save, load])])
    box.model = model  # type: ignore[attr-defined]
    return box
