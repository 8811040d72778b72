"""The two-step router: :class:`CategoryRouter` predicts a prompt's category from its embedding and
sends prompts it is unsure about to a fallback category ("Robust-CoE", arXiv 2412.01868).

A scikit-learn classifier whose learned state is plain arrays; the head maths lives in
:mod:`workbench.router.heads`, the pickle-free file format in :mod:`workbench.router.io`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import RouterError
from workbench.router import heads
from workbench.router.common import (
    CALIBRATIONS,
    CONFIDENCES,
    HEADS,
    l2_normalize,
    require_fitted,
)
from workbench.router.io import (
    CATEGORY_ROUTER_FORMAT,
    FORMAT_VERSION,
    check_arrays,
    json_labels,
    npz_path,
    read_head_state,
    read_npz,
    write_npz,
)
from workbench.router.report import RouterReport, Routing, router_report
from workbench.safeio import short

__all__ = ["CategoryRouter", "cross_val_proba"]


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
            X = l2_normalize(X)
        if self.standardize:
            X = (X - self.mean_) / self.scale_
        return X

    def _require_fitted(self) -> None:
        require_fitted(self, "head_state_", "fit(X, y)")

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
            X64 = l2_normalize(X64)
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
        knn_state = {"train": Z.astype(np.float32), "labels": labels.astype(np.int64)}
        if self.head == "knn":
            return knn_state
        if self.head in ("logreg", "knn+logreg"):
            state = heads.fit_logreg_state(Z, labels, n_labels, C=self.C, max_iter=self.max_iter)
            if self.head == "knn+logreg":
                state.update(knn_state)
            return state
        return heads.fit_mlp_state(Z, labels, n_labels, hidden_layer_sizes=self.hidden_layer_sizes,
                                   alpha=self.alpha, max_iter=self.max_iter,
                                   random_state=self.random_state)

    def _head_proba(self, Z: np.ndarray, state: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Fine-label probabilities of preprocessed ``Z`` from a head state."""
        state = self.head_state_ if state is None else state
        n_fine = len(self.fine_classes_)
        P_knn = None
        if "train" in state:
            P_knn = heads.knn_proba(state["train"], state["labels"], Z, n_fine,
                                    n_neighbors=self.n_neighbors, weights=self.knn_weights,
                                    temperature=self.knn_temperature)
        if "coef" in state:
            P_lr = heads.linear_proba(state, Z)
            if P_knn is None:
                return P_lr
            b = float(self.blend)  # knn+logreg
            return (1.0 - b) * P_knn + b * P_lr
        return P_knn if P_knn is not None else heads.mlp_proba(state, Z)

    def _to_classes(self, P_fine: np.ndarray) -> np.ndarray:
        P = np.zeros((len(P_fine), len(self.classes_)))
        np.add.at(P.T, self.fine_to_class_, P_fine.T)
        return P

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
        P = self._oof_proba(Z, fine_idx, y_idx)
        return 1.0 if P is None else heads.fit_temperature(P, y_idx)

    # ------------------------------------------------------------------------------ prediction
    def predict_proba(self, X) -> np.ndarray:
        """Category probabilities, shape (n_samples, n_classes), columns follow ``classes_``."""
        Z = self._check_X(X)
        return heads.temper(self._to_classes(self._head_proba(Z)), self.temperature_)

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

    # ----------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted router to one ``.npz`` (plain arrays + a JSON header; no pickle)."""
        self._require_fitted()
        path = npz_path(path)
        params = self.get_params()
        hls = params["hidden_layer_sizes"]
        params["hidden_layer_sizes"] = [int(hls)] if np.isscalar(hls) else [int(h) for h in hls]
        meta = {
            "format": CATEGORY_ROUTER_FORMAT,
            "version": FORMAT_VERSION,
            "params": params,
            "classes": json_labels(self.classes_),
            "fine_classes": self.fine_classes_.tolist(),
            "n_features_in": int(self.n_features_in_),
            "temperature": float(self.temperature_),
            "head_arrays": sorted(self.head_state_),
        }
        arrays = {f"head_{k}": np.asarray(v) for k, v in self.head_state_.items()}
        arrays.update(fine_to_class=self.fine_to_class_, mean=self.mean_, scale=self.scale_)
        return write_npz(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CategoryRouter":
        """Load a router written by :meth:`save`, validating every array; never unpickles."""
        path = Path(path)
        meta, arrays = read_npz(path, "CategoryRouter")
        if meta.get("format") != CATEGORY_ROUTER_FORMAT:
            raise RouterError(
                f"{str(path)!r} is a {short(meta.get('format'))} file, not a CategoryRouter "
                f"({CATEGORY_ROUTER_FORMAT!r})"
            )
        if meta.get("version") != FORMAT_VERSION:
            raise RouterError(f"{str(path)!r} has router format version {short(meta.get('version'))}; "
                              f"this workbench reads version {FORMAT_VERSION}")
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
        check_arrays(path, arrays, {"fine_to_class": (n_fine,), "mean": (d,), "scale": (d,)})
        f2c = arrays["fine_to_class"].astype(np.int64)
        if f2c.size and (f2c.min() < 0 or f2c.max() >= len(classes)):
            raise RouterError(f"{str(path)!r}: 'fine_to_class' points outside the classes")
        del head_names  # the head type decides which arrays are read
        state = read_head_state(path, arrays, router.head, d, n_fine)
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


