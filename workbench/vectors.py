"""Small numeric helpers shared by the embedding, routing, map and discovery code (numpy only)."""
from __future__ import annotations

import numpy as np

__all__ = ["l2_normalize"]


def l2_normalize(X, *, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 length; all-zero rows stay zero.

    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    X = np.asarray(X)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, eps)
