"""Figure of where each expert lives: bytes per tier (GPU / CPU / disk), pinned and in-use marks."""
from __future__ import annotations

from typing import Any

from workbench.errors import PlotError
from workbench.safeio import short

TIER_COLORS = {"gpu": "#2ca02c", "cpu": "#1f77b4", "disk": "#b0b0b0"}


def _rows(residency: Any) -> list[dict]:
    if hasattr(residency, "residency") and callable(residency.residency):  # an ExpertPool
        residency = residency.residency()
    if hasattr(residency, "to_dict") and hasattr(residency, "columns"):  # a DataFrame
        residency = residency.to_dict("records")
    rows = list(residency)
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "expert" not in row:
            raise PlotError(
                f"tier_figure: residency row {i} must be a dict with 'expert' and '<tier>_bytes' keys "
                f"(as returned by ExpertPool.residency()), got {short(row)}"
            )
    return rows


def tier_figure(residency: Any, *, budgets: dict[str, int] | None = None, title: str | None = None):
    """Stacked horizontal bars: per expert, MiB held on GPU, CPU and (to be read from) disk.

    Parameters
    ----------
    residency : list of dict, DataFrame or ExpertPool
        ``ExpertPool.residency()`` rows (``expert``, ``tier``, ``gpu_bytes``, ``cpu_bytes``,
        ``disk_bytes``, optional ``pinned``, ``in_use``).
    budgets : dict, optional
        ``{"gpu": bytes, "cpu": bytes}``; shown in the title. Taken from the pool when one is passed.
    title : str, optional

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> fig = tier_figure([{"expert": "math", "tier": "cpu", "gpu_bytes": 0, "cpu_bytes": 2**20, "disk_bytes": 0}])
    >>> [t.name for t in fig.data]
    ['gpu', 'cpu', 'disk']
    """
    import plotly.graph_objects as go

    if budgets is None and hasattr(residency, "cpu_budget"):
        budgets = {"gpu": residency.gpu_budget, "cpu": residency.cpu_budget}
    rows = _rows(residency)
    labels = []
    for row in rows:
        marks = []
        if row.get("pinned"):
            marks.append("pinned")
        if row.get("in_use"):
            marks.append(f"in use x{row['in_use']}")
        labels.append(f"{row['expert']}" + (f" ({', '.join(marks)})" if marks else ""))
    fig = go.Figure()
    for tier in ("gpu", "cpu", "disk"):
        values = [row.get(f"{tier}_bytes", 0) / 2**20 for row in rows]
        fig.add_trace(go.Bar(
            name=tier, y=labels, x=values, orientation="h", marker_color=TIER_COLORS[tier],
            customdata=[[row.get("tier", ""), ", ".join(row.get("modules", {}).get(tier, []) or [])[:200]] for row in rows],
            hovertemplate="%{y}<br>" + tier + ": %{x:.2f} MiB<br>resident: %{customdata[0]}<br>modules: %{customdata[1]}<extra></extra>",
        ))
    if title is None:
        title = "Expert residency by tier"
        if budgets:
            used = {t: sum(row.get(f"{t}_bytes", 0) for row in rows) for t in ("gpu", "cpu")}
            parts = [f"{t.upper()} {used[t] / 2**20:.1f}/{budgets[t] / 2**20:.1f} MiB" for t in ("gpu", "cpu") if budgets.get(t)]
            if parts:
                title += " (" + ", ".join(parts) + ")"
    fig.update_layout(barmode="stack", title=title, xaxis_title="MiB", yaxis_title="expert",
                      yaxis={"autorange": "reversed"}, legend_title="tier", height=160 + 28 * max(1, len(rows)))
    return fig
