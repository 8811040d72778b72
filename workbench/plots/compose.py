"""The Comp-LLM query graph as a plotly figure.

:func:`graph_figure` draws a :class:`~workbench.compose.QueryGraph` (before it runs) or an
executed one (a :class:`~workbench.compose.ExecutionResult` or
:class:`~workbench.compose.ComposeResult`):

* before execution: nodes laid out by dependency level (x) and position in the level (y), coloured
  by their expert, arrows for dependencies;
* after execution: one row per node on a time axis, a bar from the node's start to its end
  (coloured by expert; failed nodes outlined red, skipped ones grey), arrows from each upstream
  node's end to its dependent's start, and the critical path drawn thicker.

Examples
--------
>>> from workbench.plots.compose import graph_figure
>>> graph_figure(result).show()        # doctest: +SKIP
"""
from __future__ import annotations

import html
import textwrap
from typing import Any

import plotly.graph_objects as go

from workbench.errors import GraphError

__all__ = ["graph_figure", "expert_colors"]

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#EECA3B", "#9D755D",
           "#FF9DA6", "#BAB0AC"]
_STATUS_LINE = {"ok": ("rgba(0,0,0,0.35)", 1), "failed": ("#cf222e", 3), "skipped": ("#8c959f", 2),
                "pending": ("rgba(0,0,0,0.2)", 1), "running": ("#0969da", 2)}


def expert_colors(experts) -> dict[str, str]:
    """A stable colour per expert name (sorted, cycling through the palette)."""
    names = sorted({str(e) for e in experts if e is not None})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _short(text: str, width: int = 60) -> str:
    first = " ".join(str(text).split())
    return first if len(first) <= width else first[: width - 1] + "…"


def _hover(lines: list[str]) -> str:
    return "<br>".join(html.escape(line) for line in lines)


def _wrap(text: str, width: int = 70, max_lines: int = 4) -> list[str]:
    lines = textwrap.wrap(" ".join(str(text).split()), width) or [""]
    return lines[:max_lines] + (["…"] if len(lines) > max_lines else [])


def _unpack(obj: Any):
    """(graph, execution or None) from a QueryGraph, ExecutionResult or ComposeResult."""
    from workbench.compose import ComposeResult, ExecutionResult, QueryGraph

    if isinstance(obj, ComposeResult):
        return obj.graph, obj.execution
    if isinstance(obj, ExecutionResult):
        return obj.graph, obj
    if isinstance(obj, QueryGraph):
        return obj, None
    raise GraphError(f"graph_figure needs a QueryGraph, ExecutionResult or ComposeResult, got {type(obj).__name__}")


def graph_figure(obj: Any, *, colors: dict[str, str] | None = None, title: str | None = None,
                 live: dict | None = None, height: int | None = None) -> go.Figure:
    """Plot a query graph, with per-node timings on a time axis once it has run.

    Parameters
    ----------
    obj : QueryGraph, ExecutionResult or ComposeResult
    colors : dict, optional
        Expert -> colour; :func:`expert_colors` by default.
    title : str, optional
    live : dict, optional
        Node id -> :class:`~workbench.compose.NodeResult` while a run is in progress (the view's
        live update): finished and running nodes are drawn on the time axis, the rest as pending.
    height : int, optional

    Returns
    -------
    plotly.graph_objects.Figure
    """
    graph, execution = _unpack(obj)
    nodes = execution.nodes if execution is not None else live
    colors = colors or expert_colors([n.expert for n in graph])
    if nodes and any(r.start_s is not None for r in nodes.values()):
        fig = _timeline(graph, nodes, execution, colors)
    else:
        fig = _layered(graph, colors)
    n = len(graph)
    fig.update_layout(
        title=title if title is not None else _title(graph, execution),
        height=height or max(280, 100 + 48 * (n if nodes else max(len(lv) for lv in graph.levels()))),
        margin=dict(l=10, r=10, t=90, b=40), plot_bgcolor="white",
        title_y=0.98, title_yanchor="top",
        legend=dict(title="expert", orientation="h", yanchor="bottom", y=1.01, x=0),
        hoverlabel=dict(align="left"),
    )
    return fig


def _title(graph, execution) -> str:
    head = f"query graph: {len(graph)} sub-queries, depth {graph.depth}, width {graph.width}"
    if execution is None:
        return head
    cp_s, _ = execution.critical_path
    tail = (f" | wall {execution.wall_s:.2f}s, critical path {cp_s:.2f}s, one by one {execution.sequential_s:.2f}s")
    if execution.missing:
        tail += f" | missing: {', '.join(execution.missing)}"
    return head + tail


def _layered(graph, colors) -> go.Figure:
    levels = graph.levels()
    pos = {}
    for x, level in enumerate(levels):
        for i, nid in enumerate(level):
            pos[nid] = (x, -(i - (len(level) - 1) / 2))
    fig = go.Figure()
    for up, down in graph.edges():
        (x0, y0), (x1, y1) = pos[up], pos[down]
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#57606a",
                           standoff=16, startstandoff=16)
    by_expert: dict[str, list[str]] = {}
    for node in graph:
        by_expert.setdefault(node.expert or "(unrouted)", []).append(node.id)
    for expert, ids in by_expert.items():
        fig.add_trace(go.Scatter(
            x=[pos[i][0] for i in ids], y=[pos[i][1] for i in ids], mode="markers+text", name=expert,
            marker=dict(size=30, color=colors.get(expert, "#bbbbbb"), line=dict(color="#333", width=1)),
            text=ids, textposition="middle center", textfont=dict(color="white", size=11),
            hovertext=[_hover([f"{i} → {expert}", *_wrap(graph[i].text),
                               f"needs: {', '.join(graph[i].dependencies) or '-'}"]) for i in ids],
            hoverinfo="text"))
        fig.add_trace(go.Scatter(
            x=[pos[i][0] for i in ids], y=[pos[i][1] - 0.32 for i in ids], mode="text", showlegend=False,
            text=[html.escape(_short(graph[i].text.splitlines()[0], 34)) for i in ids], hoverinfo="skip",
            textfont=dict(size=10, color="#24292f")))
    fig.update_xaxes(title="dependency level", tickvals=list(range(len(levels))),
                     range=[-0.6, len(levels) - 0.4], showgrid=False, zeroline=False)
    fig.update_yaxes(visible=False, range=[min(p[1] for p in pos.values()) - 0.8, max(p[1] for p in pos.values()) + 0.6])
    return fig


def _timeline(graph, nodes, execution, colors) -> go.Figure:
    order = graph.order()
    row = {nid: i for i, nid in enumerate(order)}
    labels = [f"{nid}: {_short(graph[nid].text.splitlines()[0], 30)}" for nid in order]
    critical: set[tuple[str, str]] = set()
    cp_nodes: set[str] = set()
    if execution is not None:
        _, path = execution.critical_path
        cp_nodes = set(path)
        critical = set(zip(path, path[1:]))
    now = max([r.end_s or r.start_s or 0.0 for r in nodes.values()] + [0.0])
    fig = go.Figure()
    shown: set[str] = set()
    for nid in order:
        r = nodes.get(nid)
        expert = (r.expert if r is not None else None) or graph[nid].expert or "(unrouted)"
        status = r.status if r is not None else "pending"
        start = r.start_s if r is not None and r.start_s is not None else None
        end = r.end_s if r is not None and r.end_s is not None else (now if start is not None else None)
        if start is None:
            status = "pending"
        if start is not None and (r.end_s is None):
            status = "running"
        line_color, line_width = _STATUS_LINE.get(status, _STATUS_LINE["ok"])
        if nid in cp_nodes and status == "ok":
            line_color, line_width = "#24292f", 2.5
        color = "#d0d7de" if status in ("skipped", "pending") else colors.get(expert, "#bbbbbb")
        duration = max((end or 0.0) - (start or 0.0), 0.0)
        lines = [f"{nid} → {expert} [{status}]", *_wrap(r.prompt if r is not None and r.prompt else graph[nid].text)]
        if start is not None:
            lines.append(f"start {start:.3f}s, end {end:.3f}s, {duration:.3f}s" + (
                f", {r.new_tokens} tokens" if r is not None and r.new_tokens else ""))
        if r is not None and r.status == "ok" and r.text:
            lines += ["answer:", *_wrap(r.text, max_lines=3)]
        if r is not None and r.error:
            lines += ["error:", *_wrap(r.error, max_lines=3)]
        fig.add_trace(go.Bar(
            y=[labels[row[nid]]], x=[duration if duration > 0 else 0.002], base=[start or 0.0], orientation="h",
            name=expert, legendgroup=expert, showlegend=expert not in shown and status not in ("skipped", "pending"),
            marker=dict(color=color, line=dict(color=line_color, width=line_width),
                        pattern=dict(shape="/" if status == "failed" else "")),
            hovertext=_hover(lines), hoverinfo="text", width=0.6,
            text=[{"failed": "failed", "skipped": "skipped", "pending": "waiting", "running": "running…"}.get(status, "")],
            textposition="inside", insidetextanchor="middle"))
        if status not in ("skipped", "pending"):
            shown.add(expert)
    for up, down in graph.edges():
        ru, rd = nodes.get(up), nodes.get(down)
        if ru is None or rd is None or ru.end_s is None or rd.start_s is None or rd.status == "skipped":
            continue
        is_cp = (up, down) in critical
        fig.add_annotation(x=rd.start_s, y=labels[row[down]], ax=ru.end_s, ay=labels[row[up]],
                           xref="x", yref="y", axref="x", ayref="y", text="", showarrow=True, arrowhead=2,
                           arrowwidth=2.5 if is_cp else 1, arrowcolor="#24292f" if is_cp else "#8c959f")
    fig.update_layout(barmode="overlay", bargap=0.3)
    fig.update_xaxes(title="seconds since the run started", rangemode="tozero", showgrid=True, gridcolor="#eaeef2")
    fig.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=labels, title=None)
    return fig
