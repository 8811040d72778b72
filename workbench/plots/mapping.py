"""Figures for the category-to-expert map: the quality/cost frontier and the score heatmap.

Pure functions: data in, a :class:`plotly.graph_objects.Figure` out.

Examples
--------
>>> from workbench.plots.mapping import frontier_figure          # doctest: +SKIP
>>> fig = frontier_figure(pareto_frontier(means, weights, registry),
...                       baselines={e: (p.average_active_params_b, p.expected_score)
...                                  for e, p in monolithic_baselines(means, weights, registry).items()},
...                       current=(m.average_active_params_b, m.expected_score))  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

__all__ = ["frontier_figure", "category_expert_heatmap"]


def _xy(point: Any) -> tuple[float, float]:
    """(average active params, score) from a FrontierPoint, MapMetrics, or a 2-tuple."""
    if hasattr(point, "average_active_params_b") and hasattr(point, "expected_score"):
        return float(point.average_active_params_b), float(point.expected_score)
    x, y = point
    return float(x), float(y)


def _hover_map(point: Any) -> str:
    mapping = getattr(point, "mapping", None)
    if mapping is None:
        return ""
    lines = [f"{c}: {e}" for c, e in mapping.assignments.items()]
    return "<br>".join(lines)


def frontier_figure(
    points: Sequence[Any],
    *,
    baselines: Mapping[str, Any] | None = None,
    current: Any | None = None,
    title: str | None = "Expected score vs average active parameters",
) -> go.Figure:
    """The Pareto frontier as a step line, monolithic experts as labelled points, the current map
    as a distinct marker.

    Parameters
    ----------
    points : sequence of FrontierPoint (or (avg_active_b, score) pairs)
        The frontier, e.g. ``pareto_frontier(means, weights, registry)``.
    baselines : mapping name -> (avg_active_b, score) or FrontierPoint, optional
        Single experts serving everything (``monolithic_baselines(...)``).
    current : (avg_active_b, score), FrontierPoint or MapMetrics, optional
        The map being edited.

    The x axis is in billions, or in millions when every point is below 1B (the demo's experts).

    Returns
    -------
    plotly.graph_objects.Figure
    """
    fig = go.Figure()
    pts = sorted((_xy(p) + (_hover_map(p),) for p in points), key=lambda t: t[0])
    # the unit that fits: millions when every point is below 1B (the demo), else billions
    xs_all = [t[0] for t in pts] + [_xy(b)[0] for b in (baselines or {}).values()] + \
        ([_xy(current)[0]] if current is not None else [])
    scale, unit, word = (1e3, "M", "millions") if xs_all and max(xs_all) < 1 else (1.0, "B", "billions")
    pts = [(x * scale, y, h) for x, y, h in pts]
    if pts:
        xs, ys, hover = zip(*pts)
        has_maps = any(hover)
        fig.add_trace(go.Scatter(
            x=list(xs), y=list(ys), mode="lines+markers", name="optimal maps (frontier)",
            line={"shape": "hv", "width": 2}, marker={"size": 5},
            text=list(hover) if has_maps else None,
            hovertemplate=(f"avg active %{{x:.4g}}{unit}<br>score %{{y:.4f}}"
                           + ("<br><br>%{text}" if has_maps else "") + "<extra></extra>"),
        ))
    if baselines:
        names = list(baselines)
        bxy = [(_xy(baselines[n])[0] * scale, _xy(baselines[n])[1]) for n in names]
        fig.add_trace(go.Scatter(
            x=[p[0] for p in bxy], y=[p[1] for p in bxy], mode="markers", name="single experts (hover for names)",
            text=names,
            marker={"symbol": "diamond", "size": 8, "color": "gray"},
            hovertemplate=f"%{{text}}<br>active %{{x:.4g}}{unit}<br>score %{{y:.4f}}<extra></extra>",
        ))
    if current is not None:
        cx, cy = _xy(current)
        cx *= scale
        fig.add_trace(go.Scatter(
            x=[cx], y=[cy], mode="markers", name="current map",
            marker={"symbol": "star", "size": 16, "color": "crimson", "line": {"width": 1, "color": "black"}},
            hovertemplate=f"current map<br>avg active %{{x:.4g}}{unit}<br>score %{{y:.4f}}<extra></extra>",
        ))
    fig.update_layout(
        title=title, xaxis_title=f"average active parameters ({word})", yaxis_title="expected score",
        template="plotly_white", legend={"orientation": "h", "y": -0.2},
    )
    return fig


def category_expert_heatmap(
    category_means: Any,
    mapping: Any | None = None,
    *,
    title: str | None = "Mean score per category and expert",
) -> go.Figure:
    """Heatmap of per-category mean scores, with the map's chosen expert outlined per row.

    Parameters
    ----------
    category_means : pandas.DataFrame or ExpertScores
        Index categories, columns experts (``scores.category_means()``).
    mapping : CategoryExpertMap or mapping category -> expert, optional
        Cells of the chosen experts get a marker.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    if hasattr(category_means, "category_means"):
        category_means = category_means.category_means()
    cats = [str(c) for c in category_means.index]
    experts = [str(e) for e in category_means.columns]
    z = category_means.to_numpy(dtype=float)
    fig = go.Figure(go.Heatmap(
        z=z, x=experts, y=cats, colorscale="Viridis", colorbar={"title": "mean"},
        text=[[f"{v:.3f}" for v in row] for row in z], texttemplate="%{text}", textfont={"size": 9},
        hovertemplate="%{y} / %{x}: %{z:.4f}<extra></extra>",
    ))
    if mapping is not None:
        assign = mapping.assignments if hasattr(mapping, "assignments") else dict(mapping)
        chosen = [(assign[c], c) for c in cats if c in assign and assign[c] in experts]
        if chosen:
            fig.add_trace(go.Scatter(
                x=[e for e, _ in chosen], y=[c for _, c in chosen], mode="markers", name="mapped expert",
                marker={"symbol": "square-open", "size": 22, "color": "red", "line": {"width": 3}},
                hovertemplate="%{y} -> %{x}<extra></extra>",
            ))
    fig.update_layout(
        title=title, xaxis_title="expert", yaxis_title="category", template="plotly_white",
        yaxis={"autorange": "reversed"}, xaxis={"tickangle": -35},
    )
    return fig
