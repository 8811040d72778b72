"""Panel views of the explore models: :class:`EmbedPanel` over
:class:`~workbench.ui.models.EmbedModel` and :class:`ClusterMapPanel` over
:class:`~workbench.ui.models.ClusterMapModel`. They render the model and forward events to it.
"""
from __future__ import annotations

import html
from typing import Any

import panel as pn

from workbench.ui.models.cluster_map import ClusterMapModel
from workbench.ui.panel.common import labelled
from workbench.ui.models.embed import EmbedModel
from workbench.ui.render import escape_frame

__all__ = ["CSS", "ClusterMapPanel", "EmbedPanel"]

#: CSS classes of the panels' parts (stable names for browser tests)
CSS = {
    "embed": "coe-embed-panel",
    "embed_input": "coe-embed-input",
    "embed_button": "coe-embed-button",
    "embed_result": "coe-embed-result",
    "embed_proba": "coe-embed-proba",
    "neighbours": "coe-neighbours-table",
    "embed_map": "coe-embed-map",
    "cluster": "coe-cluster-panel",
    "method": "coe-map-method",
    "color_by": "coe-map-color",
    "map_status": "coe-map-status",
    "plot": "coe-cluster-plot",
    "selection_count": "coe-selection-count",
    "selection": "coe-selection-table",
    "relabel_input": "coe-relabel-input",
    "relabel": "coe-relabel-button",
    "labels_path": "coe-labels-path",
    "save_labels": "coe-save-labels-button",
    "clear": "coe-clear-selection-button",
}

_TEXT_FORMATTERS = {"text": {"type": "html"}, "id": {"type": "html"},
                    "category": {"type": "html"}}


#: probabilities and similarities at reading precision (the values keep full precision)
_NUMBER_FORMATTERS = {name: {"type": "money", "precision": 3, "symbol": ""}
                      for name in ("probability", "similarity", "confidence")}


def _table(df: Any, css: str, height: int = 260, tooltips: dict[str, str] | None = None) -> Any:
    return pn.widgets.Tabulator(
        escape_frame(df), show_index=False, disabled=True, sizing_mode="stretch_width",
        height=height, formatters={**_TEXT_FORMATTERS, **_NUMBER_FORMATTERS}, css_classes=[css],
        layout="fit_data_stretch", header_tooltips=dict(tooltips or {}))


class EmbedPanel(pn.viewable.Viewer):
    """Panel view of an :class:`EmbedModel`.

    Parts (CSS classes): text area ``coe-embed-input``, button ``coe-embed-button``, result line
    ``coe-embed-result`` (routed category, confidence, expert), probabilities table
    ``coe-embed-proba``, neighbours table ``coe-neighbours-table``, map ``coe-embed-map``.
    """

    def __init__(self, model: EmbedModel, *, show_map: bool = True, **params: Any) -> None:
        """``show_map=False`` leaves the map out (the app marks the prompt on its cluster map
        instead of drawing a second, near-identical one)."""
        super().__init__(**params)
        import pandas as pd

        self.model = model
        self._show_map = bool(show_map)
        self._input = pn.widgets.TextAreaInput(
            label="Prompt", value=model.text, placeholder="Type or paste a prompt",
            height=110, sizing_mode="stretch_width", css_classes=[CSS["embed_input"]])
        self._button = pn.widgets.Button(label="Embed and route", color="primary",
                                         css_classes=[CSS["embed_button"]])
        self._button.on_click(lambda e: self._submit())
        self._result = pn.pane.HTML("", css_classes=[CSS["embed_result"]],
                                    sizing_mode="stretch_width")
        self._proba = _table(pd.DataFrame(columns=["category", "probability"]),
                             CSS["embed_proba"], height=220,
                             tooltips={"probability": "the router's probability of the category"})
        self._neigh = _table(pd.DataFrame(columns=["rank", "id", "category", "similarity",
                                                   "text"]), CSS["neighbours"], height=220,
                             tooltips={"similarity": "cosine similarity of the embeddings"})
        self._plot = pn.pane.Plotly(None, css_classes=[CSS["embed_map"]], height=420,
                                    sizing_mode="stretch_width")
        model.param.watch(self._refresh, ["version"])
        self._refresh()
        self._layout = pn.Column(
            pn.pane.Markdown("### Embed a prompt"),
            self._input, self._button, self._result,
            pn.Row(pn.Column("**Router probabilities**", self._proba, width=320),
                   pn.Column("**Nearest prompts**", self._neigh, sizing_mode="stretch_width"),
                   sizing_mode="stretch_width"),
            *([self._plot] if self._show_map else []),
            css_classes=[CSS["embed"]], sizing_mode="stretch_width")

    def _submit(self) -> None:
        self.model.embed(self._input.value_input or self._input.value or "")

    def _refresh(self, *_: Any) -> None:
        import pandas as pd

        m = self.model
        if m.error:
            self._result.object = (f"<span style='color:crimson'>"
                                   f"{html.escape(m.error)}</span>")
        elif not m.category:
            self._result.object = "<i>Type a prompt and press the button.</i>"
        else:
            fb = " (low confidence: fallback)" if m.is_fallback else ""
            self._result.object = (
                f"Routed to <b>{html.escape(m.category)}</b>{html.escape(fb)} · confidence "
                f"{m.confidence:.3f} · expert <b>{html.escape(m.expert or '(no map)')}</b>")
        self._proba.value = escape_frame(m.probabilities if m.probabilities is not None else
                                         pd.DataFrame(columns=["category", "probability"]))
        neigh = m.neighbors if m.neighbors is not None else pd.DataFrame(
            columns=["rank", "row", "id", "category", "similarity", "text"])
        self._neigh.value = escape_frame(neigh.drop(columns=["row"]))
        if m.map is not None and self._show_map:
            try:
                self._plot.object = m.figure()
            except Exception as exc:
                self._result.object += f"<br><i>{html.escape(str(exc))}</i>"

    def __panel__(self) -> Any:
        return self._layout


class ClusterMapPanel(pn.viewable.Viewer):
    """Panel view of a :class:`ClusterMapModel`.

    Parts (CSS classes): method buttons ``coe-map-method``, colour select ``coe-map-color``,
    status ``coe-map-status``, the map ``coe-cluster-plot`` (box/lasso selection comes back to
    the model), selection count ``coe-selection-count``, selection table
    ``coe-selection-table``, relabel name ``coe-relabel-input`` and button
    ``coe-relabel-button``, labels file ``coe-labels-path`` with ``coe-save-labels-button``,
    and ``coe-clear-selection-button``.
    """

    def __init__(self, model: ClusterMapModel, **params: Any) -> None:
        super().__init__(**params)
        self.model = model
        self._method = pn.widgets.RadioButtonGroup.from_param(
            model.param.method, options={"PCA": "pca", "t-SNE": "tsne", "UMAP": "umap"},
            css_classes=[CSS["method"]])
        self._color = pn.widgets.Select.from_param(
            model.param.color_by, label="Colour by", css_classes=[CSS["color_by"]], width=200,
            description="best expert: the cheapest top-scoring expert of each held-out prompt; "
                        "router error: where the router's category differs from the label",
            options={"category": "category", "best expert": "best_expert",
                     "router error": "router_error", "discovered cluster": "discovered"})
        self._status = pn.pane.HTML("", css_classes=[CSS["map_status"]],
                                    sizing_mode="stretch_width")
        self._plot = pn.pane.Plotly(model.figure(), css_classes=[CSS["plot"]], height=600,
                                    sizing_mode="stretch_width")
        self._plot.param.watch(self._on_select, ["selected_data"])
        self._count = pn.pane.HTML("", css_classes=[CSS["selection_count"]])
        self._table = _table(model.selected_frame(), CSS["selection"], height=280)
        self._relabel_name = pn.widgets.TextInput(label="New category", placeholder="e.g. math",
                                                  css_classes=[CSS["relabel_input"]], width=200)
        self._relabel = pn.widgets.Button(label="Relabel selection", color="warning",
                                          css_classes=[CSS["relabel"]])
        self._path = pn.widgets.TextInput(
            label="Labels file (.jsonl / .csv)", css_classes=[CSS["labels_path"]],
            placeholder=str(model.labels_path or "default: the cache's labels folder"))
        self._save = pn.widgets.Button(label="Save labels", css_classes=[CSS["save_labels"]])
        self._clear = pn.widgets.Button(label="Clear selection", css_classes=[CSS["clear"]])
        self._relabel.on_click(lambda e: self._run(
            lambda: model.relabel(self._relabel_name.value)))
        self._save.on_click(lambda e: self._run(
            lambda: model.save_labels((self._path.value or "").strip() or None)))
        self._clear.on_click(lambda e: self._run(model.clear_selection))
        self._from_browser = False
        model.param.watch(self._redraw, ["version"])
        model.param.watch(self._on_model_selection, ["selection"])
        model.param.watch(self._show_status, ["status"])
        self._show_status()
        self._show_selection()
        self._layout = pn.Column(
            pn.pane.Markdown("### Cluster map"),
            pn.Row(labelled(self._method, "Projection",
                            "how the embeddings are laid out in 2-d; UMAP is computed in the "
                            "background"), self._color), self._status, self._plot,
            pn.Row(self._count, self._clear),
            self._table,
            pn.Row(self._relabel_name, self._relabel, self._path, self._save),
            css_classes=[CSS["cluster"]], sizing_mode="stretch_width")

    def _run(self, action: Any) -> None:
        try:
            action()
        except Exception as exc:
            self.model.status = f"error: {exc}"

    def _on_select(self, event: Any) -> None:
        self._from_browser = True
        try:
            self._run(lambda: self.model.select_from_event(event.new))
        finally:
            self._from_browser = False

    def _on_model_selection(self, *_: Any) -> None:
        self._show_selection()
        if not self._from_browser:  # the browser already shows its own selection
            self._plot.object = self.model.figure()

    def _show_selection(self) -> None:
        n = len(self.model.selection)
        self._count.object = (f"<b>{n}</b> selected" if n else
                              "Select points with the box or lasso tool")
        self._table.value = escape_frame(self.model.selected_frame())

    def _show_status(self, *_: Any) -> None:
        text = self.model.status
        colour = "crimson" if text.startswith("error") else "inherit"
        self._status.object = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def _redraw(self, *_: Any) -> None:
        self._plot.object = self.model.figure()
        self._show_selection()

    def __panel__(self) -> Any:
        return self._layout
