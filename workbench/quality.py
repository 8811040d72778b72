"""How well labels (categories) cluster in embedding space: kNN purity and silhouette.

Both work in the original embedding space, not on a 2-D map, so they measure what a router can
learn from the embeddings rather than how a picture looks.

scikit-learn is imported inside the functions.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import MapError

__all__ = ["knn_purity", "knn_purity_by_label", "silhouette", "neighbour_agreement"]


def _labels(labels: Any, n: int) -> np.ndarray:
    """Labels as an (n,) array of strings; reject missing values with the row numbers."""
    if hasattr(labels, "require_categories") and hasattr(labels, "categories"):
        labels = labels.require_categories().categories  # a PromptSet
    import pandas as pd

    if isinstance(labels, str) or not hasattr(labels, "__len__"):
        raise MapError(f"labels must be a sequence with one label per row, got "
                       f"{type(labels).__name__}")
    arr = pd.Series(np.asarray(list(labels), dtype=object).ravel(), dtype=object)
    if len(arr) != n:
        raise MapError(f"got {len(arr)} labels for {n} embeddings; pass one label per row")
    missing = arr.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise MapError(f"{missing.sum()} label(s) are missing (None/NaN) at row(s) "
                       f"{rows[:5].tolist()}; drop those rows or fill them in (e.g. with "
                       "discover_categories) first")
    return arr.astype(str).to_numpy()


def _embeddings(embeddings: Any) -> np.ndarray:
    X = np.asarray(embeddings, dtype=np.float32)
    if X.ndim != 2:
        raise MapError(f"embeddings must be a 2-D array (n, d), got shape {X.shape}")
    if not np.isfinite(X).all():
        raise MapError("embeddings contain NaN or inf; re-embed or drop those rows")
    return X


def neighbour_agreement(embeddings: Any, labels: Any, k: int = 10,
                        metric: str = "cosine") -> np.ndarray:
    """Per point, the share of its ``k`` nearest neighbours (itself excluded) with its label.

    Returns
    -------
    numpy.ndarray of shape (n,), values in [0, 1]
    """
    X = _embeddings(embeddings)
    y = _labels(labels, len(X))
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise MapError(f"k must be a positive integer, got {k!r}")
    if k >= len(X):
        raise MapError(f"k={k} needs more than {k} points, got {len(X)}; pass a smaller k")
    from sklearn.neighbors import NearestNeighbors

    try:
        nn = NearestNeighbors(n_neighbors=k, metric=metric).fit(X)
    except ValueError as exc:
        raise MapError(f"bad metric {metric!r}: {exc}") from None
    # kneighbors() without X leaves each point out of its own neighbour list
    idx = nn.kneighbors(return_distance=False)
    return (y[idx] == y[:, None]).mean(axis=1)


def knn_purity(embeddings: Any, labels: Any, k: int = 10, metric: str = "cosine") -> float:
    """Mean share of each point's ``k`` nearest neighbours (itself excluded) with the same label.

    1.0 means every neighbourhood is pure; random labels give about the sum of squared label
    shares (1/C for C balanced labels).

    Parameters
    ----------
    embeddings : array of shape (n, d)
    labels : sequence of length n, or a PromptSet (its categories)
    k : int
    metric : str
        Any scikit-learn NearestNeighbors metric; ``"cosine"`` by default.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.r_[np.zeros((20, 2)) + [1, 0], np.zeros((20, 2)) + [0, 1]]
    >>> X = X + np.random.default_rng(0).normal(scale=0.01, size=X.shape)
    >>> knn_purity(X, ["a"] * 20 + ["b"] * 20, k=5)
    1.0
    """
    return float(neighbour_agreement(embeddings, labels, k=k, metric=metric).mean())


def knn_purity_by_label(embeddings: Any, labels: Any, k: int = 10, metric: str = "cosine"):
    """kNN purity per label, worst first.

    Returns
    -------
    pandas.DataFrame
        Columns ``label``, ``n`` (points with that label), ``purity`` (mean neighbour
        agreement of those points) and ``chance`` (the label's share of all points, the purity
        expected from random neighbours).
    """
    import pandas as pd

    X = _embeddings(embeddings)
    y = _labels(labels, len(X))
    agree = neighbour_agreement(X, y, k=k, metric=metric)
    df = pd.DataFrame({"label": y, "agree": agree})
    out = df.groupby("label", sort=True).agg(n=("agree", "size"), purity=("agree", "mean"))
    out["chance"] = out["n"] / len(y)
    return out.reset_index().sort_values(["purity", "label"]).reset_index(drop=True)


def silhouette(embeddings: Any, labels: Any, metric: str = "cosine", sample_size: int | None = 5000,
               seed: int = 0) -> float:
    """Mean silhouette coefficient of the labels in embedding space (in [-1, 1]).

    Computed on a seeded random sample of ``sample_size`` points when there are more (the exact
    value is quadratic in n); ``sample_size=None`` uses all points.
    """
    X = _embeddings(embeddings)
    y = _labels(labels, len(X))
    n_labels = len(np.unique(y))
    if not 2 <= n_labels <= len(X) - 1:
        raise MapError(f"silhouette needs between 2 and n-1={len(X) - 1} distinct labels, got "
                       f"{n_labels}")
    from sklearn.metrics import silhouette_score

    sample = None if sample_size is None or sample_size >= len(X) else int(sample_size)
    try:
        return float(silhouette_score(X, y, metric=metric, sample_size=sample, random_state=seed))
    except ValueError as exc:
        raise MapError(f"silhouette failed: {exc}") from None
