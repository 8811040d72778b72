"""What routing returns: :class:`Routing` (where a batch of prompts goes) and
:class:`RouterReport` (accuracy, macro-F1, confusion and calibration on labelled data)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RouterReport", "Routing", "router_report"]


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

