"""Figures about routers: the confusion matrix of a category router."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["confusion_figure"]


def confusion_figure(
    confusion: Any,
    labels: Sequence[str] | None = None,
    *,
    normalize: bool = True,
    title: str | None = None,
    height: int | None = None,
):
    """Heat map of a confusion matrix (rows: true category, columns: predicted).

    Parameters
    ----------
    confusion : pandas.DataFrame, ndarray, or RouterReport
        Counts; a DataFrame carries its labels, a :class:`~workbench.router.RouterReport` its
        ``confusion``.
    labels : sequence of str, optional
        Row/column labels when ``confusion`` is a bare array.
    normalize : bool, default True
        Show each row as shares of the true category (recall on the diagonal); hover shows counts.
    title : str, optional
    height : int, optional

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> fig = confusion_figure(np.array([[5, 1], [2, 8]]), ["law", "math"])  # doctest: +SKIP
    """
    import plotly.graph_objects as go

    from workbench.errors import RouterError

    if hasattr(confusion, "confusion") and hasattr(confusion, "accuracy"):
        accuracy = confusion.accuracy
        confusion = confusion.confusion
    else:
        accuracy = None
    if hasattr(confusion, "to_numpy"):
        counts = confusion.to_numpy()
        rows = [str(x) for x in confusion.index]
        cols = [str(x) for x in confusion.columns]
    else:
        counts = np.asarray(confusion)
        if labels is None:
            labels = [str(i) for i in range(counts.shape[0])] if counts.ndim == 2 else []
        rows = cols = [str(x) for x in labels]
    if counts.ndim != 2 or counts.shape != (len(rows), len(cols)):
        raise RouterError(
            f"confusion must be a square matrix with one label per row/column; got shape "
            f"{counts.shape} and {len(rows)} labels"
        )
    counts = counts.astype(float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    z = shares if normalize else counts
    text = [[f"{v:.2f}" if normalize else f"{int(v)}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=rows,
            text=text,
            texttemplate="%{text}",
            customdata=counts,
            colorscale="Blues",
            zmin=0,
            zmax=1 if normalize else None,
            hovertemplate="true %{y}<br>predicted %{x}<br>count %{customdata:.0f}<br>"
                          "share of row %{z:.3f}<extra></extra>",
            colorbar={"title": "share" if normalize else "count"},
        )
    )
    if title is None:
        title = "Router confusion (rows: true category)"
        if accuracy is not None:
            title += f" — accuracy {accuracy:.3f}"
    n = max(len(rows), 1)
    fig.update_layout(
        title=title,
        xaxis={"title": "predicted", "tickangle": -45},
        yaxis={"title": "true", "autorange": "reversed"},
        height=height or max(350, 28 * n + 150),
        margin={"l": 120, "b": 120},
    )
    return fig
