"""The mapping editor as an ipywidgets box for notebooks (over a
:class:`~workbench.ui.models.MappingEditorModel`)."""
from __future__ import annotations

import html
import os
from typing import Any

from workbench.errors import MappingError
from workbench.registry import format_params
from workbench.ui.models.mapping_editor import MappingEditorModel

__all__ = ["mapping_editor_widget"]


def _metrics_html(model: MappingEditorModel) -> str:
    m = model.metrics
    return (f"<b>Expected score</b> {m.expected_score:.4g} &nbsp; "
            f"<b>Average active params</b> {format_params(m.average_active_params_b)} &nbsp; "
            f"<b>Resident params</b> {format_params(m.resident_params_b)} &nbsp; "
            f"<b>Experts</b> {m.n_experts}")


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
                        layout=w.Layout(width="260px"))
        dd.observe(on_pick(c), names="value")
        cb = w.Checkbox(value=c in model.locked, description="locked", indent=False,
                        layout=w.Layout(width="90px"))
        cb.observe(on_lock(c), names="value")
        dropdowns[c], locks[c] = dd, cb
        label = w.HTML(f"<code>{html.escape(c)}</code>", layout=w.Layout(width="180px"))
        rows.append(w.HBox([label, dd, cb]))
    metrics = w.HTML(_metrics_html(model))
    fig = go.FigureWidget(model.figure())
    budget = w.BoundedFloatText(value=model.budget_b, min=0.0, max=1e9,
                                step=model.budget_step(), description="budget (B)")
    opt = w.Button(description="Optimise at budget", button_style="primary")
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
    box = w.VBox([metrics, w.HBox([w.VBox(rows), fig]),
                  w.HBox([budget, opt, undo, redo]), w.HBox([path, save, load]), status])
    box.model = model  # type: ignore[attr-defined]
    return box
