"""The heads of :class:`~workbench.router.CategoryRouter` as plain functions over arrays.

Fitting a head returns its inference state as a dict of plain arrays (what the router saves);
the ``*_proba`` functions turn a state and preprocessed embeddings into label probabilities.
scikit-learn is imported only by the fitting functions that use it.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

from workbench.router.common import nearest, softmax

__all__ = [
    "constant_state",
    "fit_logreg_state",
    "fit_mlp_state",
    "fit_temperature",
    "knn_proba",
    "linear_proba",
    "mlp_proba",
    "temper",
]


def constant_state(present: np.ndarray, n_labels: int, d: int) -> dict[str, np.ndarray]:
    """A linear state that always predicts the one label in ``present`` (a fold with one label)."""
    logits_b = np.full(n_labels, -50.0)
    logits_b[present[0]] = 0.0
    return {"coef": np.zeros((n_labels, d)), "intercept": logits_b}


def _fit_on_present(model, Z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fit the sklearn ``model`` on the labels present in ``labels`` (as 0..k-1), convergence
    warnings silenced; returns the present labels (their positions in the full label list)."""
    from sklearn.exceptions import ConvergenceWarning

    present = np.unique(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(Z, np.searchsorted(present, labels))
    return present


def fit_logreg_state(Z: np.ndarray, labels: np.ndarray, n_labels: int, *, C: float,
                     max_iter: int) -> dict[str, np.ndarray]:
    """Multinomial logistic regression; ``coef``/``intercept`` over all ``n_labels`` (absent
    labels get a logit of -50) and ``n_iter``."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(labels)) == 1:
        return constant_state(np.unique(labels), n_labels, Z.shape[1])
    model = LogisticRegression(C=float(C), max_iter=int(max_iter))
    present = _fit_on_present(model, Z, labels)
    coef, intercept = model.coef_, model.intercept_
    if coef.shape[0] == 1:  # binary: logit of class 1 against class 0
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([[0.0], intercept])
    full_coef = np.zeros((n_labels, Z.shape[1]))
    full_int = np.full(n_labels, -50.0)
    full_coef[present] = coef
    full_int[present] = intercept
    return {"coef": full_coef, "intercept": full_int,
            "n_iter": np.asarray(int(np.max(model.n_iter_)))}


def fit_mlp_state(Z: np.ndarray, labels: np.ndarray, n_labels: int, *, hidden_layer_sizes,
                  alpha: float, max_iter: int, random_state: int | None) -> dict[str, np.ndarray]:
    """A small ReLU perceptron; ``n_layers``, ``W{i}``/``b{i}`` (last layer over all
    ``n_labels``) and ``n_iter``."""
    from sklearn.neural_network import MLPClassifier

    if len(np.unique(labels)) == 1:
        return constant_state(np.unique(labels), n_labels, Z.shape[1])
    model = MLPClassifier(
        hidden_layer_sizes=(hidden_layer_sizes,)
        if isinstance(hidden_layer_sizes, (int, np.integer))
        else tuple(hidden_layer_sizes),
        alpha=float(alpha),
        max_iter=int(max_iter),
        early_stopping=len(Z) >= 200,
        n_iter_no_change=10,
        random_state=random_state,
    )
    present = _fit_on_present(model, Z, labels)
    state: dict[str, np.ndarray] = {"n_layers": np.asarray(len(model.coefs_)),
                                    "n_iter": np.asarray(int(model.n_iter_))}
    for i, (W, b) in enumerate(zip(model.coefs_, model.intercepts_)):
        state[f"W{i}"], state[f"b{i}"] = W, b
    last = len(model.coefs_) - 1
    W, b = state[f"W{last}"], state[f"b{last}"]
    if W.shape[1] == 1:  # binary: one logistic output -> two logits
        W = np.hstack([np.zeros_like(W), W])
        b = np.concatenate([[0.0], b])
    fullW = np.zeros((W.shape[0], n_labels))
    fullb = np.full(n_labels, -50.0)
    fullW[:, present], fullb[present] = W, b
    state[f"W{last}"], state[f"b{last}"] = fullW, fullb
    return state


def knn_proba(train: np.ndarray, labels: np.ndarray, Z: np.ndarray, n_labels: int, *,
              n_neighbors: int, weights: str, temperature: float) -> np.ndarray:
    """Label probabilities of ``Z`` from the votes of its nearest ``train`` rows.

    ``weights``: ``"softmax"`` (``exp((s - s_max) / temperature)`` of ``s = -|x - x'|^2 / 2``),
    ``"distance"`` (inverse distance; an exact match wins alone, as in scikit-learn) or
    ``"uniform"``.
    """
    train = train.astype(np.float64)
    k = min(int(n_neighbors), len(train))
    idx, dist = nearest(train, Z, k)
    if weights == "softmax":
        half_sq = 0.5 * dist ** 2
        w = np.exp(-(half_sq - half_sq[:, :1]) / float(temperature))
    elif weights == "distance":
        w = 1.0 / np.maximum(dist, 1e-6)
        exact = dist <= 1e-6
        rows = exact.any(axis=1)
        w[rows] = exact[rows].astype(float)
    else:
        w = np.ones_like(dist)
    P = np.zeros((len(Z), n_labels))
    np.add.at(P, (np.repeat(np.arange(len(Z)), k), labels[idx].ravel()), w.ravel())
    P /= P.sum(axis=1, keepdims=True)
    return P


def linear_proba(state: Mapping[str, np.ndarray], Z: np.ndarray) -> np.ndarray:
    """Softmax of a linear state's logits."""
    return softmax(Z @ state["coef"].T + state["intercept"])


def mlp_proba(state: Mapping[str, np.ndarray], Z: np.ndarray) -> np.ndarray:
    """Softmax of the perceptron's output (ReLU between layers)."""
    H = Z
    n_layers = int(state["n_layers"])
    for i in range(n_layers):
        H = H @ state[f"W{i}"] + state[f"b{i}"]
        if i < n_layers - 1:
            np.maximum(H, 0.0, out=H)
    return softmax(H)


def temper(P: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities ``P`` re-sharpened (``temperature < 1``) or softened (``> 1``)."""
    if temperature == 1.0:
        return P
    logp = np.log(np.clip(P, 1e-300, None)) / temperature
    return softmax(logp)


def fit_temperature(P: np.ndarray, y_idx: np.ndarray) -> float:
    """The temperature in [0.05, 20] that minimises the negative log-likelihood of the true
    classes ``y_idx`` under (out-of-fold) probabilities ``P``."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(P, 1e-12, None))

    def nll(log_t: float) -> float:
        L = logp / np.exp(log_t)
        L = L - L.max(axis=1, keepdims=True)
        lse = np.log(np.exp(L).sum(axis=1))
        return float(np.mean(lse - L[np.arange(len(L)), y_idx]))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))
