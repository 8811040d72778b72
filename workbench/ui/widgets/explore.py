"""The Embed view and the cluster map as one ipywidgets box for notebooks (over
:class:`~workbench.ui.models.EmbedModel` and :class:`~workbench.ui.models.ClusterMapModel`)."""
from __future__ import annotations

import html
from typing import Any

import numpy as np

from workbench.errors import MapError
from workbench.ui.models.cluster_map import ClusterMapModel
from workbench.ui.models.embed import EmbedModel

__all__ = ["explore_widget"]


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
        neigh.value = _html_table(None if embed.neighbors is None
                                  else embed.neighbors.drop(columns=["row"]))
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
                xy = embed.place_on(cluster.map)
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
                 "probabilities": proba, "neighbors": neigh, "method": method, "color": color,
                 "status": status, "figure": fig, "count": count, "selection": table,
                 "relabel_name": new_label, "relabel": relabel, "path": path, "save": save}
    box.cluster = cluster  # type: ignore[attr-defined]
    box.embed = embed  # type: ignore[attr-defined]
    return box
