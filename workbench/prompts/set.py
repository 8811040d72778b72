"""PromptSet: a validated table of prompts, its selections and its stratified split.

A :class:`PromptSet` wraps a :class:`pandas.DataFrame` with the columns ``id`` (unique strings),
``text`` (non-empty prompts), an optional ``category`` and any number of meta columns. Building
one from records or a table validates every row here; reading and saving files is
:class:`~workbench.prompts.files.PromptFiles`.

Examples
--------
>>> from workbench.prompts import PromptSet
>>> ps = PromptSet.from_records([{"text": "What is 2+2?", "category": "math"},
...                              {"text": "Bonjour !", "category": "chat"}])
>>> len(ps), ps.ids
(2, ['p-0', 'p-1'])
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.errors import PromptSetError
from workbench.prompts.files import PromptFiles
from workbench.prompts.rows import (
    OnError,
    SkippedRow,
    category_or_none,
    check_on_error,
    format_rows,
    is_missing,
    none_for_missing,
)

__all__ = ["PromptSet"]


class PromptSet(PromptFiles):
    """A validated table of prompts.

    Parameters
    ----------
    df : pandas.DataFrame
        Must hold ``id`` and ``text`` columns; ``category`` is optional; other columns are kept as
        meta data. Use the ``read``/``from_*`` constructors to map other column names.
    name : str, optional
        A label for the set (shown in reports and plots).
    skipped : list of SkippedRow, optional
        Rows a loader left out (``on_error="skip"``), kept for reporting.

    Examples
    --------
    >>> ps = PromptSet(pd.DataFrame({"id": ["a", "b"], "text": ["hi", "yo"]}))
    >>> ps.has_categories
    False
    """

    def __init__(
        self,
        df: pd.DataFrame,
        *,
        name: str | None = None,
        skipped: Sequence[SkippedRow] | None = None,
        source: str = "<table>",
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise PromptSetError(
                f"PromptSet needs a pandas DataFrame, got {type(df).__name__}; "
                "use PromptSet.from_records(...) for a list of dicts"
            )
        for col in ("id", "text"):
            if col not in df.columns:
                raise PromptSetError(
                    f"{source} has no {col!r} column (columns: {list(df.columns)}); "
                    f"rename the column or use PromptSet.from_dataframe(df, {col}='your_column')"
                )
        df = df.reset_index(drop=True).copy()
        df["id"] = df["id"].astype(str)
        bad = [i for i, t in enumerate(df["text"]) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise PromptSetError(
                f"{source} has empty or non-text prompts at rows {format_rows(bad)}; "
                "fix those rows or load with on_error='skip'"
            )
        dup = df["id"][df["id"].duplicated(keep=False)]
        if len(dup):
            first = dup.unique()[:5].tolist()
            raise PromptSetError(
                f"{source} has duplicate ids {first}; ids must be unique — fix them or load with "
                "on_error='skip' to keep the first occurrence"
            )
        if "category" in df.columns:
            # one representation of "no category": None (never NaN, never the string "nan" or "")
            df["category"] = none_for_missing(df["category"])
        cols = ["id", "text"] + [c for c in df.columns if c not in ("id", "text")]
        self.df = df[cols]
        self.name = name or "prompts"
        self.skipped = list(skipped or [])

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        cats = f", {self.df['category'].nunique()} categories" if self.has_categories else ""
        skipped = f", {len(self.skipped)} rows skipped" if self.skipped else ""
        return f"PromptSet({self.name!r}, {len(self)} prompts{cats}{skipped})"

    def __iter__(self) -> Iterator[dict]:
        return iter(self.df.to_dict("records"))

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.df.iloc[int(index)].to_dict()
        return self.subset(index)

    @property
    def texts(self) -> list[str]:
        return self.df["text"].tolist()

    @property
    def ids(self) -> list[str]:
        return self.df["id"].tolist()

    @property
    def has_categories(self) -> bool:
        return "category" in self.df.columns and not self.df["category"].isna().all()

    @property
    def categories(self) -> np.ndarray | None:
        """Per-prompt category as an object array (``None`` when the set has no category column).

        A prompt without a category (a NaN, ``null`` or empty cell in the file) holds ``None``.
        """
        if "category" not in self.df.columns:
            return None
        return self.df["category"].to_numpy(dtype=object)

    @property
    def category_names(self) -> list[str]:
        """Sorted distinct categories."""
        if not self.has_categories:
            return []
        return sorted(self.df["category"].dropna().astype(str).unique().tolist())

    @property
    def columns(self) -> list[str]:
        return list(self.df.columns)

    def column(self, name: str) -> np.ndarray:
        """One column as an array; a clear error names the available ones."""
        if name not in self.df.columns:
            raise PromptSetError(f"no column {name!r} in {self.name}; columns: {self.columns}")
        return self.df[name].to_numpy()

    def counts(self) -> pd.Series:
        """Prompts per category."""
        self.require_categories()
        return self.df["category"].value_counts().sort_index()

    def subset(self, index) -> PromptSet:
        """Rows by positions, a boolean mask, a slice, or a list of ids (in that order)."""
        if isinstance(index, slice):
            df = self.df.iloc[index]
        else:
            arr = np.asarray(index)
            if arr.dtype == bool:
                if arr.shape != (len(self),):
                    raise PromptSetError(
                        f"boolean mask has shape {arr.shape}, expected ({len(self)},)"
                    )
                df = self.df[arr]
            elif arr.dtype.kind in "iu":
                df = self.df.iloc[arr]
            else:
                pos = pd.Index(self.df["id"])
                locs = pos.get_indexer(arr.astype(str))
                if (locs < 0).any():
                    missing = arr[locs < 0][:5].tolist()
                    raise PromptSetError(f"ids {missing} are not in {self.name}")
                df = self.df.iloc[locs]
        return PromptSet(df, name=self.name, skipped=self.skipped)

    def with_column(self, name: str, values: Sequence[Any]) -> PromptSet:
        """A copy with a column added or replaced (e.g. discovered categories)."""
        if len(values) != len(self):
            raise PromptSetError(f"column {name!r} has {len(values)} values for {len(self)} prompts")
        df = self.df.copy()
        df[name] = list(values)
        return PromptSet(df, name=self.name, skipped=self.skipped)

    def require_categories(self) -> PromptSet:
        """Raise a clear error unless every prompt has a category; returns ``self``."""
        if "category" not in self.df.columns:
            raise PromptSetError(
                f"{self.name} has no 'category' column; load it with category='your_column', or "
                "discover categories with workbench.discover_categories(...)"
            )
        missing = [i for i, c in enumerate(self.df["category"]) if is_missing(c) or str(c).strip() == ""]
        if missing:
            ids = self.df["id"].iloc[missing[:5]].tolist()
            raise PromptSetError(
                f"{self.name}: {len(missing)} prompts have no category (rows {format_rows(missing)}, "
                f"ids {ids}); fill them in, drop them, or load with on_error='skip'"
            )
        return self

    # ----------------------------------------------------------------- splits
    def split(
        self, test_size: float = 0.5, *, seed: int = 0, stratify: bool = True
    ) -> tuple[PromptSet, PromptSet]:
        """Seeded train / held-out split, stratified by category when the set has one.

        Each category contributes ``round(n_c * test_size)`` prompts to the held-out part
        (Python's ``round``: halves go to the even number, so 5 × 0.5 holds out 2; a category with
        a single prompt stays in train). Order inside each part follows the original.

        >>> ps = PromptSet.from_records([{"text": f"q{i}", "category": "ab"[i % 2]} for i in range(10)])
        >>> a, b = ps.split(0.5, seed=0)
        >>> len(a), len(b), sorted(b.counts().tolist())
        (6, 4, [2, 2])
        """
        if not 0.0 < float(test_size) < 1.0:
            raise PromptSetError(f"test_size must be between 0 and 1 (exclusive), got {test_size}")
        rng = np.random.default_rng(seed)
        n = len(self)
        held = np.zeros(n, dtype=bool)
        if stratify and self.has_categories:
            self.require_categories()
            cats = self.df["category"].astype(str).to_numpy()
            for cat in sorted(set(cats)):
                idx = np.flatnonzero(cats == cat)
                k = int(round(len(idx) * test_size)) if len(idx) > 1 else 0
                held[rng.permutation(idx)[:k]] = True
        else:
            held[rng.permutation(n)[: int(round(n * test_size))]] = True
        return self.subset(~held), self.subset(held)

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        text: str = "text",
        id: str = "id",
        category: str | None = "category",
        name: str | None = None,
        on_error: OnError = "raise",
        require_category: bool = False,
        source: str = "<records>",
    ) -> PromptSet:
        """Build from dicts, mapping ``text``/``id``/``category`` from the given keys."""
        rows = list(records)
        df = pd.DataFrame.from_records(rows) if rows else pd.DataFrame({"id": [], "text": []})
        return cls.from_dataframe(
            df, text=text, id=id, category=category, name=name, on_error=on_error,
            require_category=require_category, source=source,
        )

    @classmethod
    def from_dataframe(
        cls,
        df: pd.DataFrame,
        *,
        text: str = "text",
        id: str = "id",
        category: str | None = "category",
        name: str | None = None,
        on_error: OnError = "raise",
        require_category: bool = False,
        source: str = "<table>",
        row_numbers: Sequence[int | str] | None = None,
        skipped: Sequence[SkippedRow] = (),
    ) -> PromptSet:
        """Build from a DataFrame, validating every row.

        ``row_numbers`` gives each row's position in the source file for error messages (line
        numbers for JSONL, data-row numbers for CSV); by default rows count from 1.
        """
        check_on_error(on_error)
        if text not in df.columns:
            raise PromptSetError(
                f"{source} has no text column {text!r} (columns: {list(df.columns)}); "
                f"pass text='<column with the prompts>'"
            )
        if require_category and (category is None or category not in df.columns):
            raise PromptSetError(
                f"{source} has no category column {category!r} (columns: {list(df.columns)}); "
                "pass category='<column>' or load without require_category"
            )
        df = df.reset_index(drop=True)
        rows = list(row_numbers) if row_numbers is not None else list(range(1, len(df) + 1))
        out = pd.DataFrame(index=df.index)
        if id in df.columns:
            ids = df[id]
        else:
            stem = "p" if source.startswith("<") else (Path(source).stem or "p")
            ids = pd.Series([f"{stem}-{i}" for i in range(len(df))])
        out["id"] = [None if is_missing(v) else str(v) for v in ids]
        out["text"] = df[text].tolist()
        if category is not None and category in df.columns:
            out["category"] = pd.Series([category_or_none(v, as_str=True) for v in df[category]],
                                        index=out.index, dtype=object)
        for col in df.columns:
            if col not in (text, id, category) and col not in out.columns:
                out[col] = df[col].tolist()

        problems: dict[int, str] = {}
        for i, t in enumerate(out["text"]):
            if is_missing(t):
                problems[i] = f"missing prompt in column {text!r}"
            elif not isinstance(t, str):
                problems[i] = f"prompt in column {text!r} is a {type(t).__name__}, not text"
            elif not t.strip():
                problems[i] = f"empty or whitespace-only prompt in column {text!r}"
        for i, v in enumerate(out["id"]):
            if i not in problems and is_missing(v):
                problems[i] = f"missing id in column {id!r}"
        if require_category:
            for i, c in enumerate(out["category"]):
                if i not in problems and (is_missing(c) or not str(c).strip()):
                    problems[i] = f"missing category in column {category!r}"
        seen: dict[str, int] = {}
        for i, v in enumerate(out["id"]):
            if i in problems or is_missing(v):
                continue
            if v in seen:
                problems[i] = f"duplicate id {v!r} (first at row {rows[seen[v]]})"
            else:
                seen[v] = i

        skipped = list(skipped)
        if problems:
            if on_error == "raise":
                items = sorted(problems.items())
                shown = "; ".join(f"row {rows[i]}: {why}" for i, why in items[:5])
                more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
                raise PromptSetError(
                    f"{source}: {len(items)} bad rows — {shown}{more}. Fix the file, map the right "
                    "columns (text=, id=, category=), or load with on_error='skip' to leave bad "
                    "rows out and get a report"
                )
            skipped += [SkippedRow(source, rows[i], why) for i, why in sorted(problems.items())]
            out = out.drop(index=list(problems)).reset_index(drop=True)
        if skipped:
            warnings.warn(
                f"{source}: skipped {len(skipped)} bad rows (see PromptSet.skipped); first: "
                f"{skipped[0]}",
                stacklevel=3,
            )
        return cls(out, name=name or _default_name(source), skipped=skipped, source=source)


def _default_name(source: str) -> str:
    return Path(source).stem if not source.startswith("<") else "prompts"
