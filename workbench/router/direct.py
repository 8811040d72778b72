"""The single-step router the CoE paper compares against: :class:`DirectRouter` estimates every
expert's quality on a prompt from its nearest calibration neighbours and picks the best quality per
cost."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import validate_data

from workbench.errors import InfeasibleBudgetError, RouterError
from workbench.router.common import l2_normalize, nearest, require_fitted
from workbench.safeio import short

__all__ = ["DirectRouter"]


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

    def fit(self, X, y, *, experts: Sequence[str] | None = None,
            costs: Mapping[str, float] | Sequence[float] | None = None) -> "DirectRouter":
        """Store calibration embeddings ``X`` (n, d) and expert scores ``y`` (n, n_experts).

        ``y`` (the per-prompt scores, one column per expert; a 1-D array is one expert) may be an
        :class:`~workbench.scores.ExpertScores` (its experts are used) or an array; ``costs``
        (e.g. active parameters in billions) is a mapping by expert name or a sequence in expert
        order (default: all 1).
        """
        scores = y
        if not (isinstance(self.n_neighbors, (int, np.integer)) and self.n_neighbors >= 1):
            raise RouterError(f"n_neighbors={short(self.n_neighbors)} must be a positive integer")
        if hasattr(scores, "values") and hasattr(scores, "experts") and not hasattr(scores, "iloc"):
            experts = list(scores.experts) if experts is None else list(experts)
            S = np.asarray(scores.values, dtype=np.float64)
        else:
            S = np.asarray(scores)
        x_shape = tuple(getattr(X, "shape", np.shape(X)))
        if len(x_shape) == 2 and S.ndim in (1, 2) and x_shape[0] != len(S):
            raise RouterError(
                f"X must be (n, d) and scores (n, n_experts) with the same n; got X {x_shape} "
                f"and scores {S.shape}"
            )
        if S.ndim == 2 and not np.all(np.isfinite(S.astype(np.float64, copy=False))):
            raise RouterError("scores must be finite (no NaN); drop prompts missing a score")
        # scikit-learn's own input checks (shape, dtype, NaN/inf, sparse, complex, n_features_in_);
        # one score column per expert, a 1-D ``scores`` is one expert
        X, S = validate_data(self, X, S, multi_output=True, y_numeric=True, dtype=np.float64,
                             ensure_min_samples=2)
        S = np.asarray(S, dtype=np.float64)
        if S.ndim == 1:
            S = S[:, None]
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
        self.train_ = l2_normalize(X) if self.normalize else X
        self.scores_ = S
        self.prior_ = S.mean(axis=0)
        self.loo_quality_ = self._quality(self.train_, exclude_self=True)
        return self

    def _quality(self, Z: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
        k = min(int(self.n_neighbors), len(self.train_) - (1 if exclude_self else 0))
        idx, _ = nearest(self.train_, Z, k, exclude_self=exclude_self)
        m = float(self.shrinkage)
        return (self.scores_[idx].sum(axis=1) + m * self.prior_) / (k + m)

    def quality(self, X) -> np.ndarray:
        """Estimated score of every expert on each prompt, shape (n, n_experts)."""
        require_fitted(self, "train_", "fit(X, scores)")
        shape = tuple(getattr(X, "shape", np.shape(X)))
        if len(shape) == 2 and shape[1] != self.n_features_in_:
            raise RouterError(
                f"X has {shape[1]} features, but DirectRouter is expecting {self.n_features_in_} "
                "features as input: give it embeddings from the embedder it was fitted with"
            )
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return self._quality(l2_normalize(X) if self.normalize else X)

    def choose(self, Q: np.ndarray, cost_weight: float) -> np.ndarray:
        """Index of the chosen expert per row of estimated qualities ``Q`` (n, n_experts): the
        best ``quality - cost_weight * cost``, ties to the cheaper expert."""
        value = Q - cost_weight * self.costs_[None, :]
        # ties -> cheaper expert: subtract a tiny cost-proportional epsilon
        value = value - 1e-9 * self.costs_[None, :] / max(self.costs_.max(), 1e-12)
        return np.argmax(value, axis=1)

    def cost_weight_for_budget(self, budget: float) -> float:
        """Smallest ``cost_weight`` whose leave-one-out average cost is within ``budget``."""
        require_fitted(self, "train_", "fit(X, scores)")
        Q = self.loo_quality_
        if self.costs_[self.choose(Q, 0.0)].mean() <= budget:
            return 0.0
        if self.costs_.min() > budget:
            raise InfeasibleBudgetError(
                f"budget {budget} is below the cheapest expert's cost {self.costs_.min():g} "
                f"({self.experts_[np.argmin(self.costs_)]}); the smallest feasible budget is "
                f"{self.costs_.min():g}"
            )
        lo, hi = 0.0, 1e-3
        while self.costs_[self.choose(Q, hi)].mean() > budget:
            hi *= 2.0
            if hi > 1e6:
                break
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if self.costs_[self.choose(Q, mid)].mean() > budget:
                lo = mid
            else:
                hi = mid
        return hi

    def predict(self, X, *, budget: float | None = None) -> np.ndarray:
        """Chosen expert per prompt; with ``budget``, the cost weight that fits it on calibration."""
        Q = self.quality(X)
        weight = self.cost_weight if budget is None else self.cost_weight_for_budget(budget)
        return self.experts_[self.choose(Q, float(weight))]
