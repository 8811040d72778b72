"""Scatter figures of 2-D prompt maps (plotly).

Pure functions: a map (or coordinates) and the prompts in, a ``plotly.graph_objects.Figure``
out. Hover text shows the prompt id, the colour value and the prompt text, HTML-escaped (prompt
text is untrusted input) and truncated with an ellipsis. Every point carries its row index in
the prompt set in ``customdata`` so selections made in the browser map back to Python rows.
"""
from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from workbench.errors import MapError

__all__ = ["scatter_map", "mark_points", "hover_text", "truncate"]

#: above this many points the figure uses WebGL (``Scattergl``)
WEBGL_THRESHOLD = 5000
#: opacity of unselected points when ``selected`` is given
DIM_OPACITY = 0.12

_PALETTE = (
    "#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D",
    "#BAB0AC", "#EECA3B", "#1F77B4", "#D62728", "#2CA02C", "#9467BD", "#8C564B", "#17BECF",
    "#BCBD22", "#7F7F7F", "#E377C2", "#FF7F0E",
)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in an ellipsis when cut.

    >>> truncate("abcdefgh", 5)
    'abcd…'
    """
    text = " ".join(str(text).split())  # newlines/tabs would break the hover layout
    if limit <= 0 or len(text) <= limit:
        return text
    return text[: max(1, limit - 1)].rstrip() + "…"


def hover_text(text: str, *, ident: Any = None, color_name: str | None = None,
               color_value: Any = None, limit: int = 200, width: int = 60) -> str:
    """The HTML hover label of one point: id, colour value and escaped, wrapped prompt text."""
    lines = []
    if ident is not None:
        lines.append(f"<b>{html.escape(str(ident))}</b>")
    if color_name is not None:
        lines.append(f"{html.escape(str(color_name))}: {html.escape(str(color_value))}")
    body = truncate(text, limit)
    lines.extend(html.escape(part) for part in textwrap.wrap(body, width=width) or [""])
    return "<br>".join(lines)


def _coords(map_or_coords: Any) -> np.ndarray:
    coords = getattr(map_or_coords, "coords", map_or_coords)
    xy = np.asarray(coords, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise MapError(f"scatter_map needs a Map or (n, 2) coordinates, got shape {xy.shape}")
    return xy


def _table(prompts: Any, n: int):
    """Prompts as a DataFrame (PromptSet, DataFrame, dict of columns, or None)."""
    import pandas as pd

    if prompts is None:
        return pd.DataFrame(index=range(n))
    df = getattr(prompts, "df", prompts)
    if isinstance(df, dict):
        df = pd.DataFrame(df)
    if not isinstance(df, pd.DataFrame):
        raise MapError(f"prompts must be a PromptSet, a DataFrame or None, got "
                       f"{type(prompts).__name__}")
    if len(df) != n:
        raise MapError(f"the map has {n} points but the prompts have {len(df)} rows; pass the "
                       "prompts the map was made from, in the same order")
    return df.reset_index(drop=True)


def _selected_rows(selected: Any, df, n: int) -> np.ndarray:
    if isinstance(selected, str):
        selected = [selected]
    arr = np.asarray(list(selected) if not hasattr(selected, "__array__") else selected)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise MapError(f"selected mask has shape {arr.shape}, expected ({n},)")
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=int)
    if arr.dtype.kind in "iu":
        if arr.min() < 0 or arr.max() >= n:
            raise MapError(f"selected row numbers must be in 0..{n - 1}")
        return arr.astype(int)
    if "id" not in df.columns:
        raise MapError("selected ids need prompts with an 'id' column; pass row numbers instead")
    pos = {str(v): i for i, v in enumerate(df["id"])}
    missing = [s for s in arr.astype(str) if s not in pos]
    if missing:
        raise MapError(f"selected ids {missing[:5]} are not among the prompts")
    return np.array([pos[s] for s in arr.astype(str)], dtype=int)


def scatter_map(map_or_coords: Any, prompts: Any = None, *, color: Any = "category",
                hover_chars: int = 200, selected: Any = None, title: str | None = None,
                webgl: bool | None = None, marker_size: float = 5.0,
                height: int = 600) -> go.Figure:
    """Scatter plot of a 2-D map, coloured by any prompt column.

    Parameters
    ----------
    map_or_coords : Map or array of shape (n, 2)
    prompts : PromptSet, pandas.DataFrame or None
        Rows in the same order as the map; its ``text`` and ``id`` columns feed the hover.
    color : str, array-like or None
        A column of ``prompts`` (default ``"category"``; ignored when absent), or one value per
        point. Text-like values give one legend entry per value; numbers give a colour scale.
    hover_chars : int
        Prompt text in the hover is cut to this many characters (with "…").
    selected : row numbers, boolean mask or ids, optional
        Highlighted points; the others stay visible, dimmed.
    title : str, optional
    webgl : bool, optional
        Use ``Scattergl``; by default when there are more than 5,000 points.

    Returns
    -------
    plotly.graph_objects.Figure
        Each point's ``customdata`` is its row index in ``prompts``.

    Examples
    --------
    >>> fig = scatter_map(m, prompts, color="category")            # doctest: +SKIP
    >>> fig = mark_points(fig, m.place(x_new), ["your prompt"])    # doctest: +SKIP
    """
    xy = _coords(map_or_coords)
    n = len(xy)
    df = _table(prompts, n)
    texts = df["text"].astype(str).tolist() if "text" in df.columns else [""] * n
    ids = df["id"].astype(str).tolist() if "id" in df.columns else [str(i) for i in range(n)]

    color_name: str | None
    if color is None:
        values, color_name = None, None
    elif isinstance(color, str):
        if color in df.columns:
            values, color_name = df[color].to_numpy(), color
        elif color == "category":
            values, color_name = None, None  # the default column is optional
        else:
            raise MapError(f"no column {color!r} to colour by; columns: {list(df.columns)}")
    else:
        values = np.asarray(color)
        color_name = getattr(color, "name", None) or "value"
        if values.shape != (n,):
            raise MapError(f"color has {values.size} values for {n} points")

    hovers = np.array([
        hover_text(t, ident=i, color_name=color_name,
                   color_value=None if values is None else values[k], limit=hover_chars)
        for k, (t, i) in enumerate(zip(texts, ids))
    ], dtype=object)
    rows = np.arange(n)
    use_gl = n > WEBGL_THRESHOLD if webgl is None else bool(webgl)
    Trace = go.Scattergl if use_gl else go.Scatter
    sel = None if selected is None else set(_selected_rows(selected, df, n).tolist())

    def trace(mask: np.ndarray, name: str | None, marker: dict[str, Any]) -> Any:
        idx = rows[mask]
        kw: dict[str, Any] = {}
        if sel is not None:
            kw["selectedpoints"] = [j for j, r in enumerate(idx) if r in sel]
            kw["unselected"] = {"marker": {"opacity": DIM_OPACITY}}
            kw["selected"] = {"marker": {"opacity": 1.0}}
        return Trace(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=name, showlegend=name is not None,
            marker={"size": marker_size, **marker}, customdata=idx, text=hovers[idx],
            hovertemplate="%{text}<extra></extra>", **kw,
        )

    fig = go.Figure()
    numeric = values is not None and values.dtype.kind in "iuf" and len(np.unique(values)) > 20
    if values is None:
        fig.add_trace(trace(np.ones(n, dtype=bool), None, {"color": _PALETTE[0]}))
    elif numeric:
        fig.add_trace(trace(np.ones(n, dtype=bool), None, {
            "color": values.astype(float), "colorscale": "Viridis", "showscale": True,
            "colorbar": {"title": {"text": html.escape(str(color_name))}}}))
    else:
        labels = np.array(["(missing)" if _missing(v) else str(v) for v in values], dtype=object)
        for j, label in enumerate(sorted(set(labels.tolist()))):
            fig.add_trace(trace(labels == label, html.escape(label),
                                {"color": _PALETTE[j % len(_PALETTE)]}))
    method = getattr(map_or_coords, "method", None)
    fig.update_layout(
        title=html.escape(title) if title else (f"{method} map" if method else None),
        template="plotly_white", height=height, hovermode="closest", dragmode="lasso",
        legend={"itemsizing": "constant", "title": {"text": html.escape(str(color_name))
                                                    if color_name else ""}},
        margin={"l": 20, "r": 20, "t": 50, "b": 20},
    )
    fig.update_xaxes(showticklabels=False, title=None, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, zeroline=False)
    return fig


def _missing(v: Any) -> bool:
    if v is None:
        return True
    try:
        return bool(np.isnan(v))
    except (TypeError, ValueError):
        return False


def mark_points(fig: go.Figure, xy: Any, labels: str | Sequence[str] = "your prompt", *,
                color: str = "black", size: float = 16.0, symbol: str = "star",
                texts: Sequence[str] | None = None, hover_chars: int = 200) -> go.Figure:
    """Add highlighted markers (e.g. "your prompt", placed with ``Map.place``) on top.

    Parameters
    ----------
    fig : Figure from :func:`scatter_map`
    xy : array of shape (m, 2) or (2,)
    labels : str or sequence of m str
        Shown next to the markers and in the hover (escaped).
    texts : sequence of m str, optional
        Prompt texts for the hover.

    Returns
    -------
    The same figure (modified in place) for chaining.
    """
    pts = np.asarray(xy, dtype=float)
    if pts.ndim == 1:
        pts = pts[None, :]
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise MapError(f"mark_points needs (m, 2) coordinates, got shape {pts.shape}")
    labs = [labels] * len(pts) if isinstance(labels, str) else [str(v) for v in labels]
    if len(labs) != len(pts):
        raise MapError(f"got {len(labs)} labels for {len(pts)} points")
    if texts is not None and len(texts) != len(pts):
        raise MapError(f"got {len(texts)} texts for {len(pts)} points")
    hovers = [hover_text(texts[i] if texts is not None else "", ident=labs[i], limit=hover_chars)
              for i in range(len(pts))]
    fig.add_trace(go.Scatter(
        x=pts[:, 0], y=pts[:, 1], mode="markers+text", name=html.escape(labs[0]) if
        len(set(labs)) == 1 else "marked", text=[html.escape(s) for s in labs],
        textposition="top center", hovertext=hovers, hovertemplate="%{hovertext}<extra></extra>",
        marker={"symbol": symbol, "size": size, "color": color,
                "line": {"width": 1.5, "color": "white"}},
        showlegend=True,
    ))
    return fig
