"""What both routers share: the head and confidence names, the not-fitted error, and the
row-normalisation, softmax and nearest-neighbour kernels."""
from __future__ import annotations

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from workbench.errors import RouterNotFittedError

__all__ = [
    "CALIBRATIONS",
    "CONFIDENCES",
    "HEADS",
    "RouterNotFittedError",
    "l2_normalize",
    "nearest",
    "require_fitted",
    "softmax",
]

HEADS = ("knn", "logreg", "knn+logreg", "mlp")
CONFIDENCES = ("max_proba", "entropy")
CALIBRATIONS = (None, "temperature")


def require_fitted(est, attribute: str, how: str) -> None:
    """Raise :class:`RouterNotFittedError` (saying to call ``how``) unless ``est`` has ``attribute``."""
    try:
        check_is_fitted(est, attribute)
    except NotFittedError:
        name = type(est).__name__
        raise RouterNotFittedError(
            f"This {name} is not fitted yet: call {how} or {name}.load(path) before using it"
            if name == "CategoryRouter" else
            f"This {name} is not fitted yet: call {how} before using it"
        ) from None


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit length (all-zero rows stay zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


def softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits ``Z`` (computed in place on a shifted copy)."""
    Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def nearest(train: np.ndarray, query: np.ndarray, k: int, *, exclude_self: bool = False,
            chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the ``k`` nearest rows of ``train`` for each query row."""
    train_sq = np.einsum("ij,ij->i", train, train)
    idx_out = np.empty((len(query), k), dtype=np.int64)
    dist_out = np.empty((len(query), k), dtype=np.float64)
    for start in range(0, len(query), chunk):
        q = query[start:start + chunk]
        d2 = np.einsum("ij,ij->i", q, q)[:, None] - 2.0 * (q @ train.T) + train_sq[None, :]
        if exclude_self:
            rows = np.arange(len(q))
            d2[rows, start + rows] = np.inf
        np.maximum(d2, 0.0, out=d2)
        kk = min(k, d2.shape[1])
        part = np.argpartition(d2, kk - 1, axis=1)[:, :kk]
        pd = np.take_along_axis(d2, part, axis=1)
        order = np.lexsort((part, pd), axis=1)
        part = np.take_along_axis(part, order, axis=1)
        pd = np.take_along_axis(pd, order, axis=1)
        idx_out[start:start + len(q)] = part
        dist_out[start:start + len(q)] = np.sqrt(pd)
    return idx_out, dist_out
