"""Panel view of a :class:`~workbench.ui.models.TierModel`: GPU / CPU / disk columns with one card
per expert, the tier budgets and the latest pool events, refreshed from a periodic callback on the
session's own event loop (pool events fire in worker threads)."""
from __future__ import annotations

from typing import Any

import panel as pn

from workbench.ui.models.tiers import TierModel
from workbench.ui.render import format_bytes, tiers_html

__all__ = ["TierPanel"]

_STYLES = """
.coe-tiers { display: flex; gap: 12px; width: 100%; }
.coe-tier { flex: 1; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px; min-height: 120px; }
.coe-tier h3 { margin: 0 0 4px 0; font-size: 15px; }
.coe-tier .budget { color: #57606a; font-size: 12px; margin-bottom: 6px; }
.coe-tier .bar { height: 6px; background: #eaeef2; border-radius: 3px; margin-bottom: 8px; }
.coe-tier .bar div { height: 6px; background: #0969da; border-radius: 3px; }
.coe-expert { border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 6px; margin: 4px 0;
              font-size: 13px; background: #fff; }
.coe-expert.in-use { border-color: #1a7f37; box-shadow: 0 0 0 1px #1a7f37; }
.coe-expert .bytes { float: right; font-variant-numeric: tabular-nums; }
.coe-expert .tags { color: #57606a; font-size: 11px; }
.coe-empty { color: #8c959f; font-style: italic; font-size: 12px; }
"""



class TierPanel(pn.viewable.Viewer):
    """GPU / CPU / disk columns with the experts in each and their bytes, plus the latest pool events.

    Parameters
    ----------
    model : TierModel
    period_ms : int
        How often the panel checks the model for pool events (only re-reads when something changed).
    """

    def __init__(self, model: TierModel, *, period_ms: int = 500, **params: Any) -> None:
        super().__init__(**params)
        self.model = model
        self._columns = pn.pane.HTML(tiers_html(model), stylesheets=[_STYLES],
                                     sizing_mode="stretch_width", css_classes=["coe-tier-view"])
        self._events = pn.widgets.Tabulator(self._events_frame(), disabled=True, show_index=False,
                                            sizing_mode="stretch_width", height=260)
        refresh = pn.widgets.Button(label="Refresh", width=90,
                                    description="re-read the pool now")
        refresh.on_click(lambda _e: self.model.refresh(force=True))
        names = list(getattr(model.pool, "names", []))
        self._victim = pn.widgets.Select(label="Expert", options=names, width=220,
                                         css_classes=["coe-evict-select"],
                                         description="the expert to drop from memory")
        self._evict = pn.widgets.Button(label="Evict", width=90, css_classes=["coe-evict-button"],
                                        description="drop the expert from every memory tier; "
                                                    "its next request reloads it from disk")
        self._status = pn.pane.HTML("", css_classes=["coe-tiers-status"], sizing_mode="stretch_width")
        self._evict.on_click(lambda _e: self._on_evict())
        model.param.watch(self._update, "version")
        self._period_ms = period_ms
        self._callback = None
        self._layout = pn.Column(
            pn.Row(pn.pane.Markdown("Where each expert lives now. The card of the expert that is "
                                    "generating is outlined; tiers update on every load, switch and "
                                    "eviction.", sizing_mode="stretch_width"), refresh),
            self._columns,
            pn.Row(self._victim, pn.Column(pn.Spacer(height=18), self._evict), self._status),
            pn.pane.Markdown("**Latest pool events** (newest first)"),
            self._events,
            sizing_mode="stretch_width",
        )
        try:
            self._callback = pn.state.add_periodic_callback(self._poll, period=period_ms)
        except Exception:  # no event loop (plain Python): call model.refresh() by hand
            self._callback = None

    def _events_frame(self):
        frame = self.model.events
        if frame is None or frame.empty:
            import pandas as pd

            return pd.DataFrame(columns=["time", "expert", "action", "from_tier", "to_tier", "bytes", "seconds"])
        frame = frame.copy()
        import pandas as pd

        frame["time"] = pd.to_datetime(frame["time"], unit="s").dt.strftime("%H:%M:%S")
        frame["bytes"] = frame["bytes"].map(format_bytes)
        frame["seconds"] = frame["seconds"].round(3)
        return frame[[c for c in ["time", "expert", "action", "from_tier", "to_tier", "bytes", "seconds",
                                  "detail"] if c in frame]]

    def _on_evict(self) -> None:
        import html

        try:
            text, colour = self.model.evict(self._victim.value), "inherit"
        except Exception as exc:  # e.g. in use: the pool's message says why
            text, colour = f"error: {exc}", "crimson"
        self._status.object = f"<span style='color:{colour}'>{html.escape(text)}</span>"

    def _poll(self) -> None:
        self.model.refresh()

    def _update(self, *_: Any) -> None:
        self._columns.object = tiers_html(self.model)
        self._events.value = self._events_frame()

    def __panel__(self):
        return self._layout
