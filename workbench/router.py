"""Routers on prompt embeddings: the two-step :class:`CategoryRouter` and the single-step
:class:`DirectRouter`.

The CoE paper (arXiv 2412.01868) routes in two steps: a classifier predicts a prompt's *category*
from its embedding, then a category-to-expert map (:mod:`workbench.mapping`) picks the expert.
Prompts the classifier is unsure about go to a fallback category served by a strong generalist
("Robust-CoE"). :class:`DirectRouter` is the single-step alternative the paper compares against:
estimate every expert's quality on a prompt from its nearest calibration neighbours and pick the
best quality per cost.

Both routers are saved without pickle (one ``.npz`` of numeric/string arrays plus a JSON header), so
a router file from elsewhere can never run code when loaded.

This module's whole purpose is a scikit-learn estimator, so it imports scikit-learn at top level;
``import workbench`` does not import it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import InfeasibleBudgetError, RouterError
from workbench.safeio import short

__all__ = [
    "CategoryRouter",
    "DirectRouter",
    "Routing",
    "RouterNotFittedError",
    "RouterReport",
    "cross_val_proba",
    "router_report",
]

HEADS = ("knn", "logreg", "knn+logreg", "mlp")
CONFIDENCES = ("max_proba", "entropy")
CALIBRATIONS = (None, "temperature")
_FORMAT = "coe-workbench/category-router"
_DIRECT_FORMAT = "coe-workbench/direct-router"
_VERSION = 1


# --------------------------------------------------------------------------------------- helpers
class RouterNotFittedError(RouterError, NotFittedError):
    """A router was used before ``fit`` (or ``load``).

    Defined here rather than in :mod:`workbench.errors` because it also derives from
    scikit-learn's ``NotFittedError`` (so sklearn's own checks recognise it), and importing
    scikit-learn from ``workbench.errors`` would make ``import workbench`` slow.
    """


def _require_fitted(est, attribute: str, how: str) -> None:
    try:
        check_is_fitted(est, attribute)
    except NotFittedError:
        name = type(est).__name__
        raise RouterNotFittedError(
            f"This {name} is not fitted yet: call {how} or {name}.load(path) before using it"
            if name == "CategoryRouter" else
            f"This {name} is not fitted yet: call {how} before using it"
        ) from None


def _l2_normalize(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return X / norms


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _nearest(train: np.ndarray, query: np.ndarray, k: int, *, exclude_self: bool = False,
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


def _json_labels(labels: np.ndarray) -> list:
    out = labels.tolist()
    for value in out:
        if not isinstance(value, (str, int, float, bool)):
            raise RouterError(
                f"cannot save a router whose labels are of type {type(value).__name__} ({short(value)}); "
                "use str or int labels"
            )
    return out


def _read_npz(path: Path, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Open a router ``.npz`` without pickle; return (header dict, arrays)."""
    if not path.is_file():
        raise RouterError(f"{what} file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (object arrays), OSError, ...
        raise RouterError(
            f"{str(path)!r} is not a {what} file (.npz of plain arrays, no pickle): {exc}. "
            f"Save one with {what}.save(path)."
        ) from None
    if "__meta__" not in arrays:
        raise RouterError(
            f"{str(path)!r} has no '__meta__' header, so it was not written by {what}.save(); "
            f"arrays found: {sorted(arrays)}"
        )
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise RouterError(f"{str(path)!r}: the '__meta__' header is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise RouterError(f"{str(path)!r}: the '__meta__' header must be a JSON object")
    return meta, arrays


def _check_arrays(path: Path, arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple]) -> None:
    """Every named array exists, is numeric and finite, and has the expected shape (None = any)."""
    for name, shape in shapes.items():
        if name not in arrays:
            raise RouterError(f"{str(path)!r} is missing the array {name!r}; the file is incomplete or "
                              "not a router file")
        arr = arrays[name]
        if arr.dtype.kind not in "fiub":
            raise RouterError(f"{str(path)!r}: array {name!r} has dtype {arr.dtype}, expected numbers")
        if len(shape) != arr.ndim or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise RouterError(
                f"{str(path)!r}: array {name!r} has shape {arr.shape}, expected "
                f"{tuple('any' if s is None else s for s in shape)}; the file was edited or is corrupt"
            )
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise RouterError(f"{str(path)!r}: array {name!r} contains NaN or infinite values")


# --------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Routing:
    """Where a batch of prompts goes.

    Attributes
    ----------
    category : ndarray of object, shape (n,)
        The routed category after the uncertainty rule (``fallback_category`` where unsure).
    predicted : ndarray, shape (n,)
        The classifier's most probable category (before the rule).
    confidence : ndarray of float, shape (n,)
        The confidence the rule compares with the threshold (max probability or 1 - entropy).
    proba : ndarray of float, shape (n, n_classes)
        Class probabilities, columns follow ``classes``.
    is_fallback : ndarray of bool, shape (n,)
        True where the prompt was sent to the fallback category.
    classes : ndarray
        The router's ``classes_``.
    """

    category: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    proba: np.ndarray
    is_fallback: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.category)

    @property
    def fallback_rate(self) -> float:
        """Share of prompts sent to the fallback category."""
        return float(self.is_fallback.mean()) if len(self.is_fallback) else 0.0


@dataclass(frozen=True)
class RouterReport:
    """Accuracy, macro-F1, confusion matrix and calibration error of a router on labelled data.

    ``confusion`` is a :class:`pandas.DataFrame` (rows: true, columns: predicted) of counts.
    """

    accuracy: float
    macro_f1: float
    confusion: Any
    expected_calibration_error: float
    n: int

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "expected_calibration_error": self.expected_calibration_error,
            "n": self.n,
            "labels": [str(c) for c in self.confusion.index],
            "confusion": self.confusion.to_numpy().tolist(),
        }


def _ece(proba: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    conf = proba.max(axis=1)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return float(total / max(len(conf), 1))


def router_report(y_true: Sequence, proba: np.ndarray, classes: Sequence) -> RouterReport:
    """Score class probabilities against true labels (accuracy, macro-F1, confusion, ECE)."""
    import pandas as pd
    from sklearn.metrics import confusion_matrix, f1_score

    classes = np.asarray(classes)
    y_true = np.asarray(y_true)
    pred = classes[np.argmax(proba, axis=1)]
    labels = list(classes) + sorted(set(y_true.tolist()) - set(classes.tolist()))
    cm = confusion_matrix(y_true, pred, labels=labels)
    correct = pred == y_true
    return RouterReport(
        accuracy=float(correct.mean()),
        macro_f1=float(f1_score(y_true, pred, labels=list(classes), average="macro", zero_division=0)),
        confusion=pd.DataFrame(cm, index=pd.Index(labels, name="true"),
                               columns=pd.Index(labels, name="predicted")),
        expected_calibration_error=_ece(proba, correct),
        n=len(y_true),
    )


# --------------------------------------------------------------------------------- CategoryRouter
class CategoryRouter(ClassifierMixin, BaseEstimator):
    """Predict a prompt's category from its embedding; send unsure prompts to a fallback category.

    A scikit-learn classifier (``fit``/``predict``/``predict_proba``/``score``/``classes_``) with
    a choice of head, optional temperature calibration and an uncertainty rule used by
    :meth:`route`. Learned state is plain arrays, so :meth:`save`/:meth:`load` need no pickle.

    Parameters
    ----------
    head : {"knn", "logreg", "knn+logreg", "mlp"}, default "knn"
        k-nearest neighbours (SambaNova's production choice), multinomial logistic regression,
        their blend (``(1 - blend) * knn + blend * logreg`` probabilities; the best head on
        MMLU-Pro by cross-validation, but the logistic regression takes minutes to fit on 6,000
        prompts), or a small multi-layer perceptron.
    C : float, default 10.0
        Inverse L2 regularisation strength of the logistic-regression head.
    n_neighbors : int, default 20
        Neighbours of the kNN head.
    knn_weights : {"softmax", "distance", "uniform"}, default "softmax"
        Vote weighting of the kNN head: ``exp((s - s_max) / knn_temperature)`` of the similarity
        ``s = -|x - x'|^2 / 2`` (cosine similarity minus one for unit vectors), inverse distance,
        or equal votes.
    knn_temperature : float, default 0.07
        Temperature of the ``"softmax"`` vote weights (smaller trusts the nearest more).
    blend : float, default 0.35
        Weight of the logistic-regression probabilities in the ``"knn+logreg"`` head.
    hidden_layer_sizes : tuple of int, default (256,)
        Hidden layers of the MLP head.
    alpha : float, default 1e-3
        L2 penalty of the MLP head.
    max_iter : int, default 1000
        Iteration cap of the logistic-regression and MLP solvers.
    normalize : bool, default True
        L2-normalise each embedding before the head.
    standardize : bool, default False
        Then centre and scale each feature (statistics learned in ``fit``).
    calibration : {None, "temperature"}, default None
        ``"temperature"`` fits one temperature on out-of-fold probabilities (``calibration_cv``
        folds) so that confidences match accuracies.
    calibration_cv : int, default 5
        Folds used for temperature calibration.
    confidence : {"max_proba", "entropy"}, default "max_proba"
        Confidence measure of the uncertainty rule: the largest probability, or
        ``1 - H(p) / log(n_classes)``.
    threshold : float or None, default None
        Prompts whose confidence is below it are routed to ``fallback_category`` by :meth:`route`.
        ``None`` never falls back. :meth:`choose_threshold` sets it from a target.
    fallback_category : str, default "fallback"
        Category name of unsure prompts (must not be one of the classes).
    random_state : int or None, default 0
        Seed of the MLP head and of the calibration folds.

    Attributes
    ----------
    classes_ : ndarray
        Category labels; ``predict_proba`` columns follow this order.
    n_features_in_ : int
        Embedding dimension seen in ``fit``.
    fine_classes_ : ndarray of str
        Labels the head was trained on (``classes_`` unless ``fine_labels`` was given to ``fit``).
    temperature_ : float
        Fitted temperature (1.0 without calibration).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(m, 0.3, (20, 4)) for m in (-1, 0, 1)])
    >>> y = np.repeat(["law", "math", "chat"], 20)
    >>> router = CategoryRouter(head="knn", n_neighbors=5, normalize=False).fit(X, y)
    >>> router.predict(X[:2]).tolist()
    ['law', 'law']
    >>> r = router.set_params(threshold=0.99).route(X[:1]); r.category.shape
    (1,)
    """

    def __init__(
        self,
        head: str = "knn",
        *,
        C: float = 10.0,
        n_neighbors: int = 20,
        knn_weights: str = "softmax",
        knn_temperature: float = 0.07,
        blend: float = 0.35,
        hidden_layer_sizes: tuple = (256,),
        alpha: float = 1e-3,
        max_iter: int = 1000,
        normalize: bool = True,
        standardize: bool = False,
        calibration: str | None = None,
        calibration_cv: int = 5,
        confidence: str = "max_proba",
        threshold: float | None = None,
        fallback_category: str = FALLBACK_CATEGORY,
        random_state: int | None = 0,
    ):
        self.head = head
        self.C = C
        self.n_neighbors = n_neighbors
        self.knn_weights = knn_weights
        self.knn_temperature = knn_temperature
        self.blend = blend
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.max_iter = max_iter
        self.normalize = normalize
        self.standardize = standardize
        self.calibration = calibration
        self.calibration_cv = calibration_cv
        self.confidence = confidence
        self.threshold = threshold
        self.fallback_category = fallback_category
        self.random_state = random_state

    # -------------------------------------------------------------------------------- checks
    def _validate_params(self) -> None:  # noqa: D401 - sklearn-style private check
        if self.head not in HEADS:
            raise RouterError(f"head={short(self.head)} is not one of {list(HEADS)}")
        if self.confidence not in CONFIDENCES:
            raise RouterError(f"confidence={short(self.confidence)} is not one of {list(CONFIDENCES)}")
        if self.calibration not in CALIBRATIONS:
            raise RouterError(f"calibration={short(self.calibration)} is not one of {list(CALIBRATIONS)}")
        if self.knn_weights not in ("softmax", "distance", "uniform"):
            raise RouterError(f"knn_weights={short(self.knn_weights)} must be 'softmax', 'distance' or "
                              "'uniform'")
        if not (np.isscalar(self.blend) and 0.0 <= float(self.blend) <= 1.0):
            raise RouterError(f"blend={short(self.blend)} must be a number in [0, 1]")
        if not (np.isscalar(self.knn_temperature) and float(self.knn_temperature) > 0):
            raise RouterError(f"knn_temperature={short(self.knn_temperature)} must be a positive number")
        if not (isinstance(self.n_neighbors, (int, np.integer)) and self.n_neighbors >= 1):
            raise RouterError(f"n_neighbors={short(self.n_neighbors)} must be a positive integer")
        if not (np.isscalar(self.C) and float(self.C) > 0):
            raise RouterError(f"C={short(self.C)} must be a positive number")
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise RouterError(f"max_iter={short(self.max_iter)} must be a positive integer")
        if not (np.isscalar(self.alpha) and float(self.alpha) >= 0):
            raise RouterError(f"alpha={short(self.alpha)} must be a number >= 0")
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, (int, np.integer)):
            sizes = (sizes,)
        if not (len(tuple(sizes)) >= 1 and all(isinstance(h, (int, np.integer)) and h >= 1
                                               for h in sizes)):
            raise RouterError(f"hidden_layer_sizes={short(self.hidden_layer_sizes)} must be positive "
                              "integers, e.g. (256,)")
        if self.threshold is not None and not (np.isscalar(self.threshold)
                                               and 0.0 <= float(self.threshold) <= 1.0):
            raise RouterError(f"threshold={short(self.threshold)} must be None or a number in [0, 1]")

    def _preprocess(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.normalize:
            X = _l2_normalize(X)
        if self.standardize:
            X = (X - self.mean_) / self.scale_
        return X

    def _require_fitted(self) -> None:
        _require_fitted(self, "head_state_", "fit(X, y)")

    def _check_X(self, X) -> np.ndarray:
        self._require_fitted()
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] != self.n_features_in_:
            raise RouterError(
                f"X has {shape[1]} features, but CategoryRouter is expecting "
                f"{self.n_features_in_} features as input: embed the prompts with the same "
                "embedder (and dimension) the router was trained with"
            )
        X = validate_data(self, X, reset=False)
        return self._preprocess(X)

    # --------------------------------------------------------------------------------- fitting
    def fit(self, X, y, *, fine_labels: Sequence | None = None) -> "CategoryRouter":
        """Fit the head on embeddings ``X`` (n, d) and categories ``y`` (n,).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        fine_labels : array-like of shape (n_samples,), optional
            Finer labels (e.g. MMLU-Pro's 91 ``src`` subjects) to train the head on; their
            probabilities are summed back into ``y``'s categories. Each (category, fine label)
            pair is a head class, so a fine label may appear under several categories.

        Returns
        -------
        self
        """
        self._validate_params()
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise RouterError(
                f"CategoryRouter needs at least 2 categories to fit, but y has only 1 class: "
                f"{short(classes.tolist())}"
            )
        if len(X) < 2:
            raise RouterError("CategoryRouter needs more than 1 sample (n_samples = 1) to fit")
        if any(str(c) == self.fallback_category for c in classes):
            raise RouterError(
                f"the fallback category {short(self.fallback_category)} is also a training category; "
                "rename it or pass another fallback_category"
            )
        self.classes_ = classes
        if fine_labels is None:
            fine_idx, fine_to_class = y_idx, np.arange(len(classes))
            self.fine_classes_ = np.asarray([str(c) for c in classes])
        else:
            fine = np.asarray(fine_labels).astype(str)
            if fine.shape != (len(y),):
                raise RouterError(
                    f"fine_labels has shape {fine.shape}, expected ({len(y)},) like y"
                )
            pairs = np.char.add(np.char.add(np.asarray([str(c) for c in classes])[y_idx], "/"), fine)
            self.fine_classes_, fine_idx = np.unique(pairs, return_inverse=True)
            fine_to_class = np.zeros(len(self.fine_classes_), dtype=np.int64)
            fine_to_class[fine_idx] = y_idx
        self.fine_to_class_ = fine_to_class

        X64 = np.asarray(X, dtype=np.float64)
        if self.normalize:
            X64 = _l2_normalize(X64)
        self.mean_ = X64.mean(axis=0)
        scale = X64.std(axis=0)
        scale[scale == 0] = 1.0
        self.scale_ = scale
        if self.standardize:
            X64 = (X64 - self.mean_) / self.scale_

        state = self._fit_head(X64, fine_idx, len(self.fine_classes_))
        if "n_iter" in state:  # solver iterations (logreg, mlp); kNN has none
            self.n_iter_ = int(state.pop("n_iter"))
        self.head_state_ = state
        self.temperature_ = 1.0
        if self.calibration == "temperature":
            self.temperature_ = self._fit_temperature(X64, fine_idx, y_idx)
        return self

    def _fit_head(self, Z: np.ndarray, labels: np.ndarray, n_labels: int) -> dict[str, np.ndarray]:
        """Train the head on preprocessed ``Z``; return its inference state as plain arrays."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        present = np.unique(labels)
        knn_state = {"train": Z.astype(np.float32), "labels": labels.astype(np.int64)}
        if self.head == "knn":
            return knn_state
        if self.head == "knn+logreg":
            state = self._fit_logreg_state(Z, labels, n_labels)
            state.update(knn_state)
            return state
        local = np.searchsorted(present, labels)
        if len(present) == 1:  # a fold with one label: constant prediction
            logits_b = np.full(n_labels, -50.0)
            logits_b[present[0]] = 0.0
            return {"coef": np.zeros((n_labels, Z.shape[1])), "intercept": logits_b}
        if self.head == "logreg":
            return self._fit_logreg_state(Z, labels, n_labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            from sklearn.neural_network import MLPClassifier

            model = MLPClassifier(
                hidden_layer_sizes=(self.hidden_layer_sizes,)
                if isinstance(self.hidden_layer_sizes, (int, np.integer))
                else tuple(self.hidden_layer_sizes),
                alpha=float(self.alpha),
                max_iter=int(self.max_iter),
                early_stopping=len(Z) >= 200,
                n_iter_no_change=10,
                random_state=self.random_state,
            )
            model.fit(Z, local)
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

    def _fit_logreg_state(self, Z: np.ndarray, labels: np.ndarray, n_labels: int) -> dict:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        present = np.unique(labels)
        if len(present) == 1:  # a fold with one label: constant prediction
            logits_b = np.full(n_labels, -50.0)
            logits_b[present[0]] = 0.0
            return {"coef": np.zeros((n_labels, Z.shape[1])), "intercept": logits_b}
        local = np.searchsorted(present, labels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=float(self.C), max_iter=int(self.max_iter))
            model.fit(Z, local)
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

    def _head_proba(self, Z: np.ndarray, state: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Fine-label probabilities of preprocessed ``Z`` from a head state."""
        state = self.head_state_ if state is None else state
        if "train" in state and "coef" in state:  # knn+logreg
            b = float(self.blend)
            P_knn = self._head_proba(Z, {"train": state["train"], "labels": state["labels"]})
            P_lr = _softmax(Z @ state["coef"].T + state["intercept"])
            return (1.0 - b) * P_knn + b * P_lr
        n_fine = len(self.fine_classes_)
        if "train" in state:
            train, labels = state["train"].astype(np.float64), state["labels"]
            k = min(int(self.n_neighbors), len(train))
            idx, dist = _nearest(train, Z, k)
            if self.knn_weights == "softmax":
                half_sq = 0.5 * dist ** 2
                w = np.exp(-(half_sq - half_sq[:, :1]) / float(self.knn_temperature))
            elif self.knn_weights == "distance":
                w = 1.0 / np.maximum(dist, 1e-6)
                exact = dist <= 1e-6  # an exact match wins alone, as in scikit-learn
                rows = exact.any(axis=1)
                w[rows] = exact[rows].astype(float)
            else:
                w = np.ones_like(dist)
            P = np.zeros((len(Z), n_fine))
            np.add.at(P, (np.repeat(np.arange(len(Z)), k), labels[idx].ravel()), w.ravel())
            P /= P.sum(axis=1, keepdims=True)
            return P
        if "coef" in state:
            return _softmax(Z @ state["coef"].T + state["intercept"])
        H = Z
        n_layers = int(state["n_layers"])
        for i in range(n_layers):
            H = H @ state[f"W{i}"] + state[f"b{i}"]
            if i < n_layers - 1:
                np.maximum(H, 0.0, out=H)
        return _softmax(H)

    def _to_classes(self, P_fine: np.ndarray) -> np.ndarray:
        P = np.zeros((len(P_fine), len(self.classes_)))
        np.add.at(P.T, self.fine_to_class_, P_fine.T)
        return P

    @staticmethod
    def _temper(P: np.ndarray, temperature: float) -> np.ndarray:
        if temperature == 1.0:
            return P
        logp = np.log(np.clip(P, 1e-300, None)) / temperature
        return _softmax(logp)

    def _oof_proba(self, Z: np.ndarray, fine_idx: np.ndarray, y_idx: np.ndarray) -> np.ndarray | None:
        from sklearn.model_selection import StratifiedKFold

        counts = np.bincount(y_idx)
        folds = int(min(self.calibration_cv, counts.min()))
        if folds < 2:
            return None
        P = np.zeros((len(Z), len(self.classes_)))
        skf = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        for tr, te in skf.split(Z, y_idx):
            state = self._fit_head(Z[tr], fine_idx[tr], len(self.fine_classes_))
            state.pop("n_iter", None)
            P[te] = self._to_classes(self._head_proba(Z[te], state))
        return P

    def _fit_temperature(self, Z: np.ndarray, fine_idx: np.ndarray, y_idx: np.ndarray) -> float:
        from scipy.optimize import minimize_scalar

        P = self._oof_proba(Z, fine_idx, y_idx)
        if P is None:
            return 1.0
        logp = np.log(np.clip(P, 1e-12, None))

        def nll(log_t: float) -> float:
            L = logp / np.exp(log_t)
            L = L - L.max(axis=1, keepdims=True)
            lse = np.log(np.exp(L).sum(axis=1))
            return float(np.mean(lse - L[np.arange(len(L)), y_idx]))

        res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
        return float(np.exp(res.x))

    # ------------------------------------------------------------------------------ prediction
    def predict_proba(self, X) -> np.ndarray:
        """Category probabilities, shape (n_samples, n_classes), columns follow ``classes_``."""
        Z = self._check_X(X)
        return self._temper(self._to_classes(self._head_proba(Z)), self.temperature_)

    def predict(self, X) -> np.ndarray:
        """Most probable category of each row (no fallback; see :meth:`route`)."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def confidence_scores(self, proba: np.ndarray) -> np.ndarray:
        """Confidence of each row of ``proba`` under the ``confidence`` rule, in [0, 1]."""
        proba = np.asarray(proba, dtype=np.float64)
        if self.confidence == "max_proba":
            return proba.max(axis=1)
        if self.confidence == "entropy":
            k = proba.shape[1]
            with np.errstate(divide="ignore", invalid="ignore"):
                h = -np.nansum(np.where(proba > 0, proba * np.log(proba), 0.0), axis=1)
            return 1.0 - h / np.log(k) if k > 1 else np.ones(len(proba))
        raise RouterError(f"confidence={short(self.confidence)} is not one of {list(CONFIDENCES)}")

    def route(self, X) -> Routing:
        """Route prompts: predicted category, or ``fallback_category`` where confidence < threshold.

        Returns
        -------
        Routing
        """
        self._validate_params()
        proba = self.predict_proba(X)
        predicted = self.classes_[np.argmax(proba, axis=1)]
        confidence = self.confidence_scores(proba)
        if self.threshold is None:
            is_fallback = np.zeros(len(proba), dtype=bool)
        else:
            is_fallback = confidence < float(self.threshold)
        category = np.asarray(predicted, dtype=object).copy()
        category[is_fallback] = self.fallback_category
        return Routing(category=category, predicted=predicted, confidence=confidence, proba=proba,
                       is_fallback=is_fallback, classes=self.classes_)

    def choose_threshold(
        self,
        X,
        y,
        *,
        target_fallback_rate: float | None = None,
        target_accuracy: float | None = None,
        proba: np.ndarray | None = None,
    ) -> float:
        """Pick the uncertainty threshold from a target, set ``self.threshold`` and return it.

        Use data the router was *not* fitted on (a held-out split, or out-of-fold probabilities
        from :func:`cross_val_proba` passed as ``proba``), otherwise confidences are optimistic.

        Parameters
        ----------
        X : array-like of shape (n, d)
            Embeddings (ignored when ``proba`` is given).
        y : array-like of shape (n,)
            True categories.
        target_fallback_rate : float in [0, 1), optional
            Send at most this share of prompts to the fallback category (the largest such
            threshold is chosen).
        target_accuracy : float in (0, 1], optional
            Accuracy the routed (non-fallback) prompts must reach, with as few fallbacks as
            possible. Raises :class:`RouterError` when no threshold reaches it.
        proba : ndarray of shape (n, n_classes), optional
            Precomputed probabilities for ``X`` (e.g. out-of-fold).

        Returns
        -------
        float
            The threshold; prompts with confidence below it fall back.
        """
        if (target_fallback_rate is None) == (target_accuracy is None):
            raise RouterError("give exactly one of target_fallback_rate= or target_accuracy=")
        self._require_fitted()
        if proba is None:
            proba = self.predict_proba(X)
        proba = np.asarray(proba, dtype=np.float64)
        y = np.asarray(y)
        if proba.shape != (len(y), len(self.classes_)):
            raise RouterError(
                f"proba has shape {proba.shape}, expected ({len(y)}, {len(self.classes_)}) for "
                f"{len(y)} labels and the router's {len(self.classes_)} classes"
            )
        if len(y) == 0:
            raise RouterError("choose_threshold needs at least one labelled prompt")
        conf = self.confidence_scores(proba)
        n = len(conf)
        if target_fallback_rate is not None:
            rate = float(target_fallback_rate)
            if not 0.0 <= rate < 1.0:
                raise RouterError(f"target_fallback_rate={short(rate)} must be in [0, 1)")
            ordered = np.sort(conf)
            threshold = float(ordered[int(np.floor(rate * n + 1e-9))])
        else:
            target = float(target_accuracy)
            if not 0.0 < target <= 1.0:
                raise RouterError(f"target_accuracy={short(target)} must be in (0, 1]")
            correct = self.classes_[np.argmax(proba, axis=1)] == y
            order = np.argsort(-conf, kind="stable")
            c_sorted, ok_sorted = conf[order], correct[order]
            cum_acc = np.cumsum(ok_sorted) / np.arange(1, n + 1)
            # positions that end a run of equal confidences are the only reachable cut points
            ends = np.r_[c_sorted[1:] != c_sorted[:-1], True]
            good = np.flatnonzero(ends & (cum_acc >= target - 1e-12))
            if len(good) == 0:
                best = float(cum_acc[ends].max())
                raise RouterError(
                    f"no threshold reaches target_accuracy={target}: the best accuracy on the "
                    f"routed prompts is {best:.3f} (keeping only the most confident ones); lower "
                    "the target or improve the router"
                )
            threshold = float(c_sorted[good[-1]])
        self.threshold = threshold
        return threshold

    def report(self, X, y) -> RouterReport:
        """Accuracy, macro-F1, confusion matrix and calibration error on labelled data."""
        return router_report(y, self.predict_proba(X), self.classes_)

    def cross_validate(self, X, y, *, cv: int = 5, fine_labels: Sequence | None = None) -> RouterReport:
        """Cross-validated accuracy, macro-F1, confusion matrix and calibration error.

        Fits clones of this (unfitted or fitted) router on ``cv`` stratified folds and scores the
        out-of-fold probabilities; ``self`` is left unchanged.
        """
        P = cross_val_proba(self, X, y, cv=cv, fine_labels=fine_labels,
                            random_state=self.random_state)
        return router_report(y, P, np.unique(np.asarray(y)))

    # ----------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted router to one ``.npz`` (plain arrays + a JSON header; no pickle)."""
        from workbench._paths import atomic_write_bytes
        import io

        self._require_fitted()
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        params = self.get_params()
        hls = params["hidden_layer_sizes"]
        params["hidden_layer_sizes"] = [int(hls)] if np.isscalar(hls) else [int(h) for h in hls]
        meta = {
            "format": _FORMAT,
            "version": _VERSION,
            "params": params,
            "classes": _json_labels(self.classes_),
            "fine_classes": self.fine_classes_.tolist(),
            "n_features_in": int(self.n_features_in_),
            "temperature": float(self.temperature_),
            "head_arrays": sorted(self.head_state_),
        }
        arrays = {f"head_{k}": np.asarray(v) for k, v in self.head_state_.items()}
        arrays.update(fine_to_class=self.fine_to_class_, mean=self.mean_, scale=self.scale_)
        buf = io.BytesIO()
        np.savez_compressed(buf, __meta__=np.asarray(json.dumps(meta)), **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CategoryRouter":
        """Load a router written by :meth:`save`, validating every array; never unpickles."""
        path = Path(path)
        meta, arrays = _read_npz(path, "CategoryRouter")
        if meta.get("format") != _FORMAT:
            raise RouterError(
                f"{str(path)!r} is a {short(meta.get('format'))} file, not a CategoryRouter "
                f"({_FORMAT!r})"
            )
        if meta.get("version") != _VERSION:
            raise RouterError(f"{str(path)!r} has router format version {short(meta.get('version'))}; "
                              f"this workbench reads version {_VERSION}")
        try:
            params = dict(meta["params"])
            params["hidden_layer_sizes"] = tuple(params.get("hidden_layer_sizes", (256,)))
            router = cls(**params)
            classes = np.asarray(meta["classes"])
            fine = np.asarray(meta["fine_classes"], dtype=str)
            d = int(meta["n_features_in"])
            temperature = float(meta["temperature"])
            head_names = list(meta["head_arrays"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterError(f"{str(path)!r}: malformed router header ({type(exc).__name__}: {short(str(exc), 200)[1:-1]})") \
                from None
        router._validate_params()
        if classes.ndim != 1 or len(classes) < 2 or len(set(classes.tolist())) != len(classes):
            raise RouterError(f"{str(path)!r}: 'classes' must be at least 2 distinct labels")
        if not (d >= 1 and np.isfinite(temperature) and temperature > 0):
            raise RouterError(f"{str(path)!r}: bad n_features_in={d} or temperature={temperature}")
        n_fine = len(fine)
        _check_arrays(path, arrays, {"fine_to_class": (n_fine,), "mean": (d,), "scale": (d,)})
        f2c = arrays["fine_to_class"].astype(np.int64)
        if f2c.size and (f2c.min() < 0 or f2c.max() >= len(classes)):
            raise RouterError(f"{str(path)!r}: 'fine_to_class' points outside the classes")
        del head_names  # the head type decides which arrays are read
        if router.head in ("knn", "logreg", "knn+logreg"):
            state = {}
            if router.head in ("knn", "knn+logreg"):
                _check_arrays(path, arrays, {"head_train": (None, d), "head_labels": (None,)})
                state.update(train=arrays["head_train"],
                             labels=arrays["head_labels"].astype(np.int64))
                if len(state["labels"]) != len(state["train"]) or len(state["labels"]) == 0 or \
                        state["labels"].min() < 0 or state["labels"].max() >= n_fine:
                    raise RouterError(f"{str(path)!r}: kNN labels do not match its training rows")
            if router.head in ("logreg", "knn+logreg"):
                _check_arrays(path, arrays, {"head_coef": (n_fine, d), "head_intercept": (n_fine,)})
                state.update(coef=arrays["head_coef"], intercept=arrays["head_intercept"])
        else:
            _check_arrays(path, arrays, {"head_n_layers": ()})
            n_layers = int(arrays["head_n_layers"])
            if not 1 <= n_layers <= 64:
                raise RouterError(f"{str(path)!r}: implausible MLP depth {n_layers}")
            state = {"n_layers": np.asarray(n_layers)}
            width = d
            for i in range(n_layers):
                out = n_fine if i == n_layers - 1 else None
                _check_arrays(path, arrays, {f"head_W{i}": (width, out), f"head_b{i}": (None,)})
                W, b = arrays[f"head_W{i}"], arrays[f"head_b{i}"]
                if b.shape != (W.shape[1],):
                    raise RouterError(f"{str(path)!r}: MLP layer {i} bias does not match its weights")
                state[f"W{i}"], state[f"b{i}"] = W, b
                width = W.shape[1]
        router.classes_ = classes
        router.fine_classes_ = fine
        router.fine_to_class_ = f2c
        router.n_features_in_ = d
        router.mean_ = arrays["mean"].astype(np.float64)
        router.scale_ = arrays["scale"].astype(np.float64)
        router.temperature_ = temperature
        router.head_state_ = state
        return router


def cross_val_proba(router: CategoryRouter, X, y, *, cv: int = 5, fine_labels: Sequence | None = None,
                    random_state: int | None = 0) -> np.ndarray:
    """Out-of-fold category probabilities of ``router`` on ``(X, y)`` (stratified ``cv`` folds).

    Columns follow ``np.unique(y)`` (the ``classes_`` a fit on all of ``y`` would have). Use them to
    score heads by cross-validation, to choose a threshold, or to weight a category map by the
    categories the router will actually predict.
    """
    from sklearn.model_selection import StratifiedKFold

    X = np.asarray(X)
    y = np.asarray(y)
    classes = np.unique(y)
    P = np.zeros((len(y), len(classes)))
    skf = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    for tr, te in skf.split(X, y):
        model = clone(router).fit(X[tr], y[tr], fine_labels=None if fine_labels is None
                                  else np.asarray(fine_labels)[tr])
        cols = np.searchsorted(classes, model.classes_)
        P[np.ix_(te, cols)] = model.predict_proba(X[te])
    return P


# ----------------------------------------------------------------------------------- DirectRouter
class DirectRouter(BaseEstimator):
    """Single-step routing: estimate each expert's quality on a prompt from its calibration
    neighbours and pick the best quality per cost.

    The estimated quality of expert ``e`` on a prompt is the (shrunk) mean score of ``e`` on the
    prompt's ``n_neighbors`` nearest calibration prompts. The chosen expert maximises
    ``quality - cost_weight * cost`` (ties go to the cheaper expert). :meth:`cost_weight_for_budget`
    finds the smallest ``cost_weight`` whose leave-one-out average cost on the calibration prompts
    fits a budget of average active parameters.

    Parameters
    ----------
    n_neighbors : int, default 50
    normalize : bool, default True
        L2-normalise embeddings (neighbours by cosine similarity).
    shrinkage : float, default 5.0
        Pseudo-count pulling each neighbourhood mean towards the expert's overall mean.
    cost_weight : float, default 0.0
        Price of one unit of cost (billions of active parameters) in score units.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.eye(4)[[0, 0, 1, 1, 2, 2, 3, 3]] + 0.01
    >>> S = np.array([[1, 0], [1, 0], [0, 1], [0, 1]] * 2, dtype=float)
    >>> r = DirectRouter(n_neighbors=2, shrinkage=0).fit(X, S, experts=["a", "b"], costs=[1, 2])
    >>> r.predict(X[:3]).tolist()
    ['a', 'a', 'b']
    """

    def __init__(self, n_neighbors: int = 50, *, normalize: bool = True, shrinkage: float = 5.0,
                 cost_weight: float = 0.0):
        self.n_neighbors = n_neighbors
        self.normalize = normalize
        self.shrinkage = shrinkage
        self.cost_weight = cost_weight

    def fit(self, X, scores, *, experts: Sequence[str] | None = None,
            costs: Mapping[str, float] | Sequence[float] | None = None) -> "DirectRouter":
        """Store calibration embeddings ``X`` (n, d) and expert scores (n, n_experts).

        ``scores`` may be an :class:`~workbench.scores.ExpertScores` (its experts are used) or an
        array; ``costs`` (e.g. active parameters in billions) is a mapping by expert name or a
        sequence in expert order (default: all 1).
        """
        if not (isinstance(self.n_neighbors, (int, np.integer)) and self.n_neighbors >= 1):
            raise RouterError(f"n_neighbors={short(self.n_neighbors)} must be a positive integer")
        if hasattr(scores, "values") and hasattr(scores, "experts") and not hasattr(scores, "iloc"):
            experts = list(scores.experts) if experts is None else list(experts)
            S = np.asarray(scores.values, dtype=np.float64)
        else:
            S = np.asarray(scores, dtype=np.float64)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or S.ndim != 2 or len(X) != len(S):
            raise RouterError(
                f"X must be (n, d) and scores (n, n_experts) with the same n; got X {X.shape} and "
                f"scores {S.shape}"
            )
        if len(X) < 2:
            raise RouterError("DirectRouter needs at least 2 calibration prompts")
        if not np.all(np.isfinite(S)) or not np.all(np.isfinite(X)):
            raise RouterError("X and scores must be finite (no NaN); drop prompts missing a score")
        experts = [f"expert_{i}" for i in range(S.shape[1])] if experts is None else list(experts)
        if len(experts) != S.shape[1]:
            raise RouterError(f"{len(experts)} expert names for {S.shape[1]} score columns")
        if costs is None:
            cost = np.ones(len(experts))
        elif isinstance(costs, Mapping) or hasattr(costs, "active"):
            missing = [e for e in experts if e not in costs]
            if missing:
                raise RouterError(f"costs has no entry for experts {missing}; add them")
            cost = np.asarray([costs.active(e) if hasattr(costs, "active") else costs[e]
                               for e in experts], dtype=np.float64)
        else:
            cost = np.asarray(costs, dtype=np.float64)
            if cost.shape != (len(experts),):
                raise RouterError(f"costs has shape {cost.shape}, expected ({len(experts)},)")
        self.experts_ = np.asarray(experts)
        self.costs_ = cost
        self.n_features_in_ = X.shape[1]
        self.train_ = _l2_normalize(X) if self.normalize else X
        self.scores_ = S
        self.prior_ = S.mean(axis=0)
        self.loo_quality_ = self._quality(self.train_, exclude_self=True)
        return self

    def _quality(self, Z: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
        k = min(int(self.n_neighbors), len(self.train_) - (1 if exclude_self else 0))
        idx, _ = _nearest(self.train_, Z, k, exclude_self=exclude_self)
        m = float(self.shrinkage)
        return (self.scores_[idx].sum(axis=1) + m * self.prior_) / (k + m)

    def quality(self, X) -> np.ndarray:
        """Estimated score of every expert on each prompt, shape (n, n_experts)."""
        _require_fitted(self, "train_", "fit(X, scores)")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise RouterError(
                f"X has shape {X.shape}; this router expects (n, {self.n_features_in_}) embeddings "
                "from the embedder it was fitted with"
            )
        return self._quality(_l2_normalize(X) if self.normalize else X)

    def _choose(self, Q: np.ndarray, cost_weight: float) -> np.ndarray:
        value = Q - cost_weight * self.costs_[None, :]
        # ties -> cheaper expert: subtract a tiny cost-proportional epsilon
        value = value - 1e-9 * self.costs_[None, :] / max(self.costs_.max(), 1e-12)
        return np.argmax(value, axis=1)

    def cost_weight_for_budget(self, budget: float) -> float:
        """Smallest ``cost_weight`` whose leave-one-out average cost is within ``budget``."""
        _require_fitted(self, "train_", "fit(X, scores)")
        Q = self.loo_quality_
        if self.costs_[self._choose(Q, 0.0)].mean() <= budget:
            return 0.0
        if self.costs_.min() > budget:
            raise InfeasibleBudgetError(
                f"budget {budget} is below the cheapest expert's cost {self.costs_.min():g} "
                f"({self.experts_[np.argmin(self.costs_)]}); the smallest feasible budget is "
                f"{self.costs_.min():g}"
            )
        lo, hi = 0.0, 1e-3
        while self.costs_[self._choose(Q, hi)].mean() > budget:
            hi *= 2.0
            if hi > 1e6:
                break
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.costs_[self._choose(Q, mid)].mean() > budget:
                lo = mid
            else:
                hi = mid
        return hi

    def predict(self, X, *, budget: float | None = None) -> np.ndarray:
        """Chosen expert per prompt; with ``budget``, the cost weight that fits it on calibration."""
        Q = self.quality(X)
        weight = self.cost_weight if budget is None else self.cost_weight_for_budget(budget)
        return self.experts_[self._choose(Q, float(weight))]
