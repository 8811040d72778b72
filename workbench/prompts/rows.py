"""Row-level rules shared by the prompt table and its file readers.

What counts as a missing cell (``None``, NaN, NA or blank text), the record of a row a loader
left out (:class:`SkippedRow`), and the ``on_error`` choice every loader takes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from workbench.errors import PromptSetError

__all__ = ["OnError", "SkippedRow", "category_or_none", "check_on_error", "format_rows",
           "is_missing", "none_for_missing"]

#: What a loader does with a bad row: stop with an error naming it, or leave it out and report it.
OnError = Literal["raise", "skip"]


@dataclass(frozen=True)
class SkippedRow:
    """A row left out by ``on_error="skip"``: where it was and why."""

    source: str
    row: int | str
    reason: str

    def __str__(self) -> str:
        return f"{self.source} row {self.row}: {self.reason}"


def check_on_error(on_error: str) -> None:
    """Raise :class:`PromptSetError` unless ``on_error`` is ``"raise"`` or ``"skip"``."""
    if on_error not in ("raise", "skip"):
        raise PromptSetError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def is_missing(value: Any) -> bool:
    """Whether a cell is missing: ``None``, NaN or a pandas NA (blank text is not)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


def category_or_none(value: Any, as_str: bool = False) -> Any:
    """A category value, or ``None`` when it is missing (None, NaN, NA) or blank text."""
    if is_missing(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return str(value) if as_str else value


def none_for_missing(col: pd.Series) -> pd.Series:
    """``col`` as an object column with ``None`` wherever a value is missing (NaN, NA, None) or blank."""
    col = col.astype(object)
    missing = col.isna().to_numpy() | np.fromiter(
        (isinstance(c, str) and not c.strip() for c in col), dtype=bool, count=len(col))
    values = col.to_numpy(dtype=object, copy=True)
    values[missing] = None
    return pd.Series(values, index=col.index, dtype=object)


def format_rows(rows: Sequence[int]) -> str:
    """Up to eight row numbers for a message, with the total when there are more."""
    shown = ", ".join(str(r) for r in rows[:8])
    return shown + (f" … ({len(rows)} in all)" if len(rows) > 8 else "")
