"""Panel view of a :class:`~workbench.ui.models.MappingEditorModel` (the app's Mapping tab). It
renders the model and forwards edits to it; every rule lives in the model
(:mod:`workbench.ui.models.mapping_editor`, which imports without Panel).
"""
from __future__ import annotations

import html
import logging
from typing import Any

import panel as pn

from workbench.errors import MappingError, WorkbenchError
from workbench.mapping.problem import check_budget
from workbench.ui.models.mapping_editor import CSS, MappingEditorModel

__all__ = ["MappingEditorPanel"]

_log = logging.getLogger(__name__)
#: most characters of an error shown in the status line
_MAX_STATUS = 1200
#: mapping rows shown at once before the table pages
_ROWS_PER_PAGE = 20


def _error_text(exc: BaseException) -> str:
    """An error for the browser's status line: the workbench's own (bounded) messages, never the
    text of an unexpected exception (which could quote a file's contents); that goes to the log."""
    if isinstance(exc, (WorkbenchError, OSError)):
        text = str(exc)
    else:
        _log.exception("mapping editor: unexpected error")
        text = f"unexpected {type(exc).__name__}; the server log has the details"
    if len(text) > _MAX_STATUS:
        text = text[: _MAX_STATUS - 3] + "..."
    return text



def _format_metrics(model: MappingEditorModel) -> str:
    parts = " &nbsp;·&nbsp; ".join(f"**{label}** {value}" for label, value in model.metrics_parts())
    return f"{parts}\n\n<small>{html.escape(model.metrics_note())}</small>"


def _display_table(table: Any) -> Any:
    """The table as shown: a row without a score (the fallback, unweighted) shows an empty cell,
    not "NaN"."""
    table = table.copy()
    table["score"] = table["score"].astype(object).where(table["score"].notna(), None)
    return table


class MappingEditorPanel(pn.viewable.Viewer):
    """Panel view of a :class:`MappingEditorModel`.

    Parts (CSS classes for browser tests): the table ``coe-mapping-table`` (edit the ``expert``
    cell with its list editor, tick ``locked``), metrics ``coe-metrics``, frontier plot
    ``coe-frontier-plot``, budget ``coe-budget-input``, buttons ``coe-optimise-button``,
    ``coe-undo-button``, ``coe-redo-button``, path ``coe-mapping-path`` with ``coe-save-button``
    and ``coe-load-button``, and the status line ``coe-mapping-status``.
    """

    def __init__(self, model: MappingEditorModel, **params: Any) -> None:
        super().__init__(**params)
        self.model = model
        self._table = pn.widgets.Tabulator(
            _display_table(model.table()), show_index=False, sizing_mode="stretch_width",
            # every row visible (12 categories + fallback in the demo); long maps page
            pagination="local" if len(model.categories) > _ROWS_PER_PAGE else None,
            page_size=_ROWS_PER_PAGE,
            editors={"category": None, "weight": None, "score": None, "active params": None,
                     "expert": {"type": "list", "values": model.experts},
                     "locked": {"type": "tickCross"}},
            formatters={"category": {"type": "html"}, "locked": {"type": "tickCross"},
                        "expert": {"type": "plaintext"},
                        "weight": {"type": "money", "precision": 3, "symbol": ""},
                        "score": {"type": "money", "precision": 3, "symbol": ""}},
            header_tooltips={"expert": "click a cell to pick another expert",
                             "locked": "locked rows are kept by Optimise",
                             "weight": "share of the prompts in this category",
                             "score": "this expert's mean score on the category",
                             "active params": "parameters active per token"},
            css_classes=[CSS["table"]],
        )
        self._table.on_edit(self._on_edit)
        self._metrics = pn.pane.Markdown(_format_metrics(model), css_classes=[CSS["metrics"]])
        self._plot = pn.pane.Plotly(model.figure(), css_classes=[CSS["frontier"]],
                                    sizing_mode="stretch_width", height=380)
        # the budget in the unit that fits: millions for experts below 1B (the demo), else billions
        top = max((model.registry.active(e) for e in model.experts), default=1.0)
        self._unit = 1e3 if top < 1 else 1.0
        self._budget = pn.widgets.FloatInput(
            label=f"Budget (avg active params, {'millions' if self._unit > 1 else 'billions'})",
            value=self._shown(model.budget_b), step=model.budget_step() * self._unit,
            description="Optimise picks the best map whose average active parameters stay within "
                        "this budget; it must be positive",
            css_classes=[CSS["budget"]], width=200)
        # no start bound: the browser would silently clamp a negative value; refuse it instead
        self._budget.param.watch(self._check_budget, "value")
        self._optimise = pn.widgets.Button(label="Optimise at budget", color="primary",
                                           description="replace the unlocked rows by the best map "
                                                       "within the budget (undoable)",
                                           css_classes=[CSS["optimise"]])
        self._undo = pn.widgets.Button(label="Undo", css_classes=[CSS["undo"]],
                                       disabled=not model.can_undo)
        self._redo = pn.widgets.Button(label="Redo", css_classes=[CSS["redo"]],
                                       disabled=not model.can_redo)
        files = model.files
        self._path = pn.widgets.TextInput(
            label="Map file (.yaml / .json)" if files is None else
                  "Map file (.yaml / .json) in the workbench folder",
            placeholder="my_map.yaml", css_classes=[CSS["path"]])
        self._save = pn.widgets.Button(label="Save", css_classes=[CSS["save"]])
        self._load = pn.widgets.Button(label="Load", css_classes=[CSS["load"]])
        self._status = pn.pane.Alert("", alert_type="light", css_classes=[CSS["status"]])
        self._optimise.on_click(lambda e: self._run(lambda: model.optimize(self._budget_b())))
        self._undo.on_click(lambda e: self._run(model.undo))
        self._redo.on_click(lambda e: self._run(model.redo))
        self._save.on_click(lambda e: self._run(lambda: model.save(self._need_path())))
        self._load.on_click(lambda e: self._run(lambda: model.load(self._need_path())))
        model.param.watch(self._refresh, ["version"])
        model.param.watch(self._show_status, ["status"])
        autosave = (f"Edits are autosaved to `{model.autosave_path}`" if model.autosave_path
                    else "Autosave is off")
        if files is not None:
            autosave += (f". Map file names are relative to `{files.root}` (no absolute paths or "
                         "`..`); Save never replaces a file that is not a map")
        self._note = pn.pane.Markdown(autosave, styles={"font-size": "smaller"})
        self._layout = pn.Column(
            pn.pane.Markdown("### Category → expert map"),
            self._metrics,
            pn.Row(
                pn.Column(self._table,
                          pn.Row(self._budget, self._optimise, self._undo, self._redo),
                          pn.Row(self._path, self._save, self._load),
                          self._note,
                          sizing_mode="stretch_width"),
                pn.Column(self._plot, sizing_mode="stretch_width"),
                sizing_mode="stretch_width"),
            self._status,
            css_classes=[CSS["root"]], sizing_mode="stretch_width",
        )

    def _need_path(self) -> str:
        path = (self._path.value or "").strip()
        if not path:
            raise MappingError("type a file name (.yaml or .json) in the map file box first")
        return path

    def _shown(self, budget_b: float | None) -> float | None:
        """A budget in billions as the input shows it (its unit), rounded for reading."""
        return None if budget_b is None else round(float(budget_b) * self._unit, 4)

    def _budget_b(self) -> float:
        value = self._budget.value
        return check_budget(None if value is None else value / self._unit)

    def _check_budget(self, event: Any) -> None:
        try:
            self._budget_b()
        except MappingError as exc:
            self.model.status = f"error: {exc}"

    def _run(self, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # show every failure to the user, keep the app alive
            self.model.status = f"error: {_error_text(exc)}"
            self._refresh(keep_budget=True)  # the refused value stays as the user typed it

    def _on_edit(self, event: Any) -> None:
        category = self.model.categories[event.row]
        if event.column == "expert":
            self._run(lambda: self.model.set_expert(category, event.value))
        elif event.column == "locked":
            self._run(lambda: self.model.set_locked(category, bool(event.value)))
        else:
            self._refresh()

    def _show_status(self, *_: Any) -> None:
        text = self.model.status
        self._status.object = html.escape(text)
        self._status.alert_type = "danger" if text.startswith("error") else "light"

    def _refresh(self, *_: Any, keep_budget: bool = False) -> None:
        m = self.model
        self._table.value = _display_table(m.table())
        self._metrics.object = _format_metrics(m)
        self._plot.object = m.figure()
        self._undo.disabled = not m.can_undo
        self._redo.disabled = not m.can_redo
        if m.budget_b is not None and not keep_budget:
            self._budget.value = self._shown(m.budget_b)

    def __panel__(self) -> Any:
        return self._layout
