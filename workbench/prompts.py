"""Prompt sets: a table of prompts with loaders, validation, save/load and stratified splits.

A :class:`PromptSet` wraps a :class:`pandas.DataFrame` with the columns ``id`` (unique strings),
``text`` (non-empty prompts), an optional ``category`` and any number of meta columns.

Examples
--------
>>> from workbench.prompts import PromptSet
>>> ps = PromptSet.from_records([{"text": "What is 2+2?", "category": "math"},
...                              {"text": "Bonjour !", "category": "chat"}])
>>> len(ps), ps.ids
(2, ['p-0', 'p-1'])
"""
from __future__ import annotations

import io
import json
import math
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from workbench._paths import atomic_write_bytes, data_dir
from workbench.errors import PromptSetError, UnknownFormatError
from workbench.safeio import short

OnError = Literal["raise", "skip"]

#: File formats :meth:`PromptSet.read` understands, by suffix.
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".zip": "mmlu-pro",
}
_FORMAT_NAMES = sorted(set(FORMATS.values()) | {"mt-bench", "arena-hard"})


@dataclass(frozen=True)
class SkippedRow:
    """A row left out by ``on_error="skip"``: where it was and why."""

    source: str
    row: int | str
    reason: str

    def __str__(self) -> str:
        return f"{self.source} row {self.row}: {self.reason}"


def _category_or_none(value: Any, as_str: bool = False) -> Any:
    """A category value, or ``None`` when it is missing (None, NaN, NA) or blank text."""
    if _is_missing(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return str(value) if as_str else value


def _none_for_missing(col: pd.Series) -> pd.Series:
    """``col`` as an object column with ``None`` wherever a value is missing (NaN, NA, None) or blank."""
    col = col.astype(object)
    missing = col.isna().to_numpy() | np.fromiter(
        (isinstance(c, str) and not c.strip() for c in col), dtype=bool, count=len(col))
    values = col.to_numpy(dtype=object, copy=True)
    values[missing] = None
    return pd.Series(values, index=col.index, dtype=object)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


class PromptSet:
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
                f"{source} has empty or non-text prompts at rows {_fmt_rows(bad)}; "
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
            df["category"] = _none_for_missing(df["category"])
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
        missing = [i for i, c in enumerate(self.df["category"]) if _is_missing(c) or str(c).strip() == ""]
        if missing:
            ids = self.df["id"].iloc[missing[:5]].tolist()
            raise PromptSetError(
                f"{self.name}: {len(missing)} prompts have no category (rows {_fmt_rows(missing)}, "
                f"ids {ids}); fill them in, drop them, or load with on_error='skip'"
            )
        return self

    # ----------------------------------------------------------------- splits
    def split(
        self, test_size: float = 0.5, *, seed: int = 0, stratify: bool = True
    ) -> tuple[PromptSet, PromptSet]:
        """Seeded train / held-out split, stratified by category when the set has one.

        Each category contributes ``round(n_c * test_size)`` prompts to the held-out part (a
        category with a single prompt stays in train). Order inside each part follows the original.

        >>> ps = PromptSet.from_records([{"text": f"q{i}", "category": "ab"[i % 2]} for i in range(10)])
        >>> a, b = ps.split(0.5, seed=0)
        >>> len(a), len(b), sorted(b.counts().tolist())
        (5, 5, [2, 3])
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
        _check_on_error(on_error)
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
        out["id"] = [None if _is_missing(v) else str(v) for v in ids]
        out["text"] = df[text].tolist()
        if category is not None and category in df.columns:
            out["category"] = pd.Series([_category_or_none(v, as_str=True) for v in df[category]],
                                        index=out.index, dtype=object)
        for col in df.columns:
            if col not in (text, id, category) and col not in out.columns:
                out[col] = df[col].tolist()

        problems: dict[int, str] = {}
        for i, t in enumerate(out["text"]):
            if _is_missing(t):
                problems[i] = f"missing prompt in column {text!r}"
            elif not isinstance(t, str):
                problems[i] = f"prompt in column {text!r} is a {type(t).__name__}, not text"
            elif not t.strip():
                problems[i] = f"empty or whitespace-only prompt in column {text!r}"
        for i, v in enumerate(out["id"]):
            if i not in problems and _is_missing(v):
                problems[i] = f"missing id in column {id!r}"
        if require_category:
            for i, c in enumerate(out["category"]):
                if i not in problems and (_is_missing(c) or not str(c).strip()):
                    problems[i] = f"missing category in column {category!r}"
        seen: dict[str, int] = {}
        for i, v in enumerate(out["id"]):
            if i in problems or _is_missing(v):
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

    @classmethod
    def read(
        cls,
        path: str | os.PathLike,
        format: str | None = None,
        *,
        text: str = "text",
        id: str = "id",
        category: str | None = "category",
        on_error: OnError = "raise",
        require_category: bool = False,
        encoding: str = "utf-8",
        name: str | None = None,
        allow_empty: bool = False,
    ) -> PromptSet:
        """Read a prompt file: JSONL, JSON (list of records), CSV/TSV or Parquet.

        MMLU-Pro result zips, MT-Bench and Arena-Hard question files are recognised too (or use
        their ``from_*`` constructors). Column names map with ``text=``, ``id=``, ``category=``.

        Parameters
        ----------
        on_error : {"raise", "skip"}
            ``"raise"`` (default) stops at bad rows with a message naming them; ``"skip"`` leaves
            them out, records them in :attr:`skipped` and warns.
        allow_empty : bool
            Accept a file that holds no prompts (an empty ``.jsonl``, a CSV with only its header,
            or every row skipped) and return an empty set; by default that is a
            :class:`PromptSetError`.
        """
        ps = cls._read(path, format, text=text, id=id, category=category, on_error=on_error,
                       require_category=require_category, encoding=encoding, name=name)
        if len(ps) == 0 and not allow_empty:
            if ps.skipped:
                raise PromptSetError(
                    f"{path} holds no usable prompts: all {len(ps.skipped)} rows were left out "
                    f"(first: row {ps.skipped[0].row}: {short(ps.skipped[0].reason, 120)[1:-1]}); fix the file, or pass "
                    "allow_empty=True to accept an empty set"
                )
            raise PromptSetError(
                f"{path} holds no prompts; add at least one (JSONL: one {{\"text\": ...}} object per "
                "line; CSV: rows under the header), check that it is the right file, or pass "
                "allow_empty=True to accept an empty set"
            )
        return ps

    @classmethod
    def _read(
        cls,
        path: str | os.PathLike,
        format: str | None = None,
        *,
        text: str = "text",
        id: str = "id",
        category: str | None = "category",
        on_error: OnError = "raise",
        require_category: bool = False,
        encoding: str = "utf-8",
        name: str | None = None,
    ) -> PromptSet:
        _check_on_error(on_error)
        path = Path(path)
        if not path.exists():
            raise PromptSetError(f"prompt file {str(path)!r} does not exist")
        if path.is_dir():
            if any(path.glob("model_outputs_*")):
                return cls.from_mmlu_pro(path)
            raise PromptSetError(
                f"{str(path)!r} is a folder; pass a file ({', '.join(sorted(FORMATS))}) or a "
                "folder of MMLU-Pro model_outputs_*.zip files"
            )
        fmt = (format or FORMATS.get(path.suffix.lower()) or "").lower()
        if fmt not in _FORMAT_NAMES:
            raise UnknownFormatError(
                f"cannot tell the format of {str(path)!r} (suffix {path.suffix!r}); known formats: "
                f"{', '.join(_FORMAT_NAMES)} — rename the file or pass format='jsonl' etc."
            )
        kwargs = dict(text=text, id=id, category=category, on_error=on_error,
                      require_category=require_category, name=name)
        if fmt == "mmlu-pro":
            return cls.from_mmlu_pro(path)
        if fmt == "mt-bench":
            return cls.from_mt_bench(path)
        if fmt == "arena-hard":
            return cls.from_arena_hard(path)
        if fmt == "jsonl":
            records, rows, skipped = _read_jsonl(path, encoding, on_error)
            if records and text not in records[0] and _looks_like(records[0], "mt-bench"):
                return cls.from_mt_bench(path)
            if records and text not in records[0] and _looks_like(records[0], "arena-hard"):
                return cls.from_arena_hard(path)
            df = pd.DataFrame.from_records(records) if records else pd.DataFrame({text: []})
            return cls.from_dataframe(df, source=str(path), row_numbers=rows, skipped=skipped, **kwargs)
        if fmt == "json":
            raw = _decode(path.read_bytes(), path, encoding)
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise PromptSetError(
                    f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                    "a JSON file must hold a list of records — use .jsonl for one record per line"
                ) from None
            if isinstance(data, dict):
                data = data.get("data") or data.get("records") or data.get("prompts") or data
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise PromptSetError(f"{path} must hold a JSON list of objects (records)")
            if data and "question_id" in data[0] and "pred" in data[0]:
                return cls.from_mmlu_pro(path)
            df = pd.DataFrame.from_records(data) if data else pd.DataFrame({text: []})
            return cls.from_dataframe(df, source=str(path), **kwargs)
        if fmt in ("csv", "tsv"):
            df, rows, skipped = _read_csv(path, encoding, on_error, sep="\t" if fmt == "tsv" else ",")
            return cls.from_dataframe(df, source=str(path), row_numbers=rows, skipped=skipped, **kwargs)
        if fmt == "parquet":
            try:
                df = pd.read_parquet(path)
            except Exception as exc:  # pyarrow raises several types
                raise PromptSetError(f"cannot read {path} as Parquet: {exc}") from None
            return cls.from_dataframe(df, source=str(path), **kwargs)
        raise UnknownFormatError(f"unsupported format {fmt!r}")  # pragma: no cover

    @classmethod
    def from_mmlu_pro(cls, path: str | os.PathLike, *, name: str | None = None) -> PromptSet:
        """MMLU-Pro questions from a per-question eval-result file (or a folder of them).

        Accepts a ``model_outputs_<model>_5shots.zip``, the JSON inside it, or a folder of such
        zips (the first file's questions are used; all files share the same questions). Keeps
        ``options``, ``answer``, ``answer_index`` and ``src`` as meta columns.
        """
        path = Path(path)
        if path.is_dir():
            files = mmlu_pro_result_files(path)
            if not files:
                raise PromptSetError(f"no model_outputs_*_5shots.zip files in {path}")
            path = next(iter(files.values()))
        records = read_mmlu_pro_records(path)
        keep = ("question_id", "question", "category", "options", "answer", "answer_index", "src")
        rows = [{k: r.get(k) for k in keep} for r in records]
        return cls.from_records(
            rows, text="question", id="question_id", category="category",
            name=name or "mmlu-pro", require_category=True, source=str(path),
        )

    @classmethod
    def from_mt_bench(cls, path: str | os.PathLike, *, name: str | None = None) -> PromptSet:
        """MT-Bench ``question.jsonl`` (``question_id, category, turns``); text is the first turn."""
        path = Path(path)
        records, rows, skipped = _read_jsonl(path, "utf-8", "raise")
        out = []
        for r, line in zip(records, rows):
            turns = r.get("turns")
            if not isinstance(turns, list) or not turns:
                raise PromptSetError(f"{path} line {line}: 'turns' must be a non-empty list of strings")
            out.append({"id": r.get("question_id"), "text": turns[0], "category": r.get("category"),
                        "turns": turns, "n_turns": len(turns)})
        return cls.from_records(out, name=name or "mt-bench", source=str(path), require_category=True)

    @classmethod
    def from_arena_hard(
        cls, path: str | os.PathLike, *, category: str = "subcategory", name: str | None = None
    ) -> PromptSet:
        """Arena-Hard ``question.jsonl`` (``uid, category, subcategory, prompt``).

        The category defaults to the finer ``subcategory`` (coding, math, creative_writing); the
        coarse one is kept as ``arena_category``.
        """
        path = Path(path)
        records, rows, _ = _read_jsonl(path, "utf-8", "raise")
        out = [{"id": r.get("uid"), "text": r.get("prompt"), "category": r.get(category),
                "arena_category": r.get("category"), "subcategory": r.get("subcategory")}
               for r in records]
        return cls.from_dataframe(
            pd.DataFrame.from_records(out), name=name or "arena-hard", source=str(path),
            row_numbers=rows, require_category=True,
        )

    # -------------------------------------------------------------------- save
    def save(self, path: str | os.PathLike) -> Path:
        """Write the set atomically as ``.jsonl``, ``.csv`` or ``.parquet`` (by suffix).

        JSONL and Parquet round-trip every column; CSV writes list/dict meta values as JSON text.
        """
        path = Path(path)
        fmt = FORMATS.get(path.suffix.lower())
        if fmt == "jsonl":
            lines = [json.dumps(_jsonable(r), ensure_ascii=False) for r in self.df.to_dict("records")]
            atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        elif fmt in ("csv", "tsv"):
            df = self.df.copy()
            for col in df.columns:
                if df[col].map(lambda v: isinstance(v, (list, dict, tuple, np.ndarray))).any():
                    df[col] = df[col].map(lambda v: json.dumps(_jsonable(v), ensure_ascii=False))
            atomic_write_bytes(path, df.to_csv(index=False, sep="\t" if fmt == "tsv" else ",").encode("utf-8"))
        elif fmt == "parquet":
            buf = io.BytesIO()
            self.df.to_parquet(buf, index=False)
            atomic_write_bytes(path, buf.getvalue())
        else:
            raise UnknownFormatError(
                f"cannot save to {str(path)!r}: use a .jsonl, .csv, .tsv or .parquet suffix"
            )
        return path


# ---------------------------------------------------------------------- loaders
def load_demo_prompts(directory: str | os.PathLike | None = None) -> PromptSet:
    """The workbench's own demo prompt set (``data/demo/*.jsonl``: id, text, category, answer).

    >>> ps = load_demo_prompts()          # doctest: +SKIP
    >>> ps.counts().min() >= 60           # doctest: +SKIP
    True
    """
    folder = Path(directory) if directory else data_dir() / "demo"
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise PromptSetError(
            f"no demo prompt files (*.jsonl) in {folder}; run from a checkout of coe-workbench "
            "or set COE_WORKBENCH_DATA to the project's data/ folder"
        )
    parts = [PromptSet.read(f, require_category=True) for f in files]
    df = pd.concat([p.df for p in parts], ignore_index=True)
    return PromptSet(df, name="demo", source=str(folder))


def mmlu_pro_result_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Model name -> result file for every ``model_outputs_<model>_5shots.zip`` in a folder."""
    directory = Path(directory)
    if not directory.is_dir():
        raise PromptSetError(f"MMLU-Pro results folder {str(directory)!r} does not exist")
    out = {}
    for f in sorted(directory.glob("model_outputs_*")):
        stem = f.name[len("model_outputs_"):]
        for suffix in (".zip", ".json"):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
        if stem.endswith("_5shots"):
            stem = stem[: -len("_5shots")]
        out[stem] = f
    return out


def read_mmlu_pro_records(path: str | os.PathLike) -> list[dict]:
    """The raw JSON records of one MMLU-Pro result file (a ``.zip`` holding one JSON, or the JSON)."""
    path = Path(path)
    if not path.exists():
        raise PromptSetError(f"MMLU-Pro result file {str(path)!r} does not exist")
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.lower().endswith(".json")]
                if not names:
                    raise PromptSetError(f"{path} holds no .json file (found {zf.namelist()[:5]})")
                raw = zf.read(names[0])
        else:
            raw = path.read_bytes()
    except zipfile.BadZipFile:
        raise PromptSetError(f"{path} is not a valid zip file (truncated download?)") from None
    try:
        data = json.loads(_decode(raw, path, "utf-8"))
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(data, list):
        raise PromptSetError(f"{path}: expected a JSON list of question records")
    required = {"question_id", "question", "category"}
    if data and not required <= set(data[0]):
        raise PromptSetError(
            f"{path}: records lack {sorted(required - set(data[0]))}; is this an MMLU-Pro "
            "per-question result file (model_outputs_<model>_5shots)?"
        )
    return data


# --------------------------------------------------------------------- helpers
def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise PromptSetError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def _default_name(source: str) -> str:
    return Path(source).stem if not source.startswith("<") else "prompts"


def _fmt_rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:8])
    return shown + (f" … ({len(rows)} in all)" if len(rows) > 8 else "")


def _looks_like(record: Mapping, kind: str) -> bool:
    if kind == "mt-bench":
        return "turns" in record and "question_id" in record
    return "uid" in record and "prompt" in record


def _decode(raw: bytes, path: Path, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PromptSetError(
            f"{path} line {line}: bytes {raw[exc.start:exc.end]!r} at offset {exc.start} are not "
            f"valid {encoding}; re-save the file as UTF-8, pass encoding='latin-1' (or the file's "
            "encoding), or load with on_error='skip' to leave such rows out"
        ) from None


def _read_jsonl(path: Path, encoding: str, on_error: OnError):
    records, rows, skipped = [], [], []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                msg = (f"bytes {raw[exc.start:exc.end]!r} are not valid {encoding}")
                if on_error == "skip":
                    skipped.append(SkippedRow(str(path), lineno, msg))
                    continue
                raise PromptSetError(
                    f"{path} line {lineno}: {msg}; re-save the file as UTF-8, pass "
                    "encoding=..., or load with on_error='skip'"
                ) from None
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if on_error == "skip":
                    skipped.append(SkippedRow(str(path), lineno, f"invalid JSON: {exc.msg}"))
                    continue
                raise PromptSetError(
                    f"{path} line {lineno} is not valid JSON ({exc.msg} at column {exc.colno}); "
                    "fix the line or load with on_error='skip'"
                ) from None
            if not isinstance(obj, dict):
                if on_error == "skip":
                    skipped.append(SkippedRow(str(path), lineno, "not a JSON object"))
                    continue
                raise PromptSetError(f"{path} line {lineno} is a JSON {type(obj).__name__}, not an object")
            records.append(obj)
            rows.append(lineno)
    return records, rows, skipped


def _read_csv(path: Path, encoding: str, on_error: OnError, sep: str):
    raw = path.read_bytes()
    skipped: list[SkippedRow] = []
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        if on_error == "raise":
            _decode(raw, path, encoding)
        kept = []
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            try:
                kept.append(line.decode(encoding))
            except UnicodeDecodeError as exc:
                skipped.append(SkippedRow(str(path), f"line {lineno}",
                                          f"bytes {line[exc.start:exc.end]!r} are not valid {encoding}"))
        text = "\n".join(kept)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                         na_values=[""])
    except pd.errors.EmptyDataError:
        raise PromptSetError(f"{path} is empty; a CSV prompt file needs a header row") from None
    except pd.errors.ParserError as exc:
        raise PromptSetError(f"{path} is not valid CSV: {exc}") from None
    # rows are counted as data rows (1 = the first row after the header)
    return df, list(range(1, len(df) + 1)), skipped


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# relabels: new categories for some prompts, kept apart from the prompt file
# ---------------------------------------------------------------------------------------------
#: Columns of a labels file (``.jsonl`` records or a ``.csv`` header).
LABEL_COLUMNS = ("id", "category", "previous_category")


class Relabels:
    """New categories for some prompts of a :class:`PromptSet` (``id -> category``), and their
    labels-file format.

    A labels file is ``.jsonl`` (one ``{"id", "category", "previous_category"}`` record a line)
    or ``.csv`` with exactly those columns. It is written atomically and never over the prompt
    file or over any file that is not a labels file.

    Examples
    --------
    >>> ps = PromptSet.from_records([{"text": "2+2?", "category": "chat"}])
    >>> rl = Relabels()
    >>> rl.set("p-0", "math", previous="chat")
    >>> rl.apply(ps).categories.tolist(), dict(rl)
    (['math'], {'p-0': 'math'})
    """

    def __init__(self, new: Mapping[str, str] | None = None) -> None:
        self._new: dict[str, str] = {str(k): str(v) for k, v in (new or {}).items()}

    def __len__(self) -> int:
        return len(self._new)

    def __iter__(self) -> Iterator[str]:
        return iter(self._new)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._new

    def __getitem__(self, prompt_id: str) -> str:
        return self._new[prompt_id]

    def keys(self):
        return self._new.keys()

    def items(self):
        return self._new.items()

    def to_dict(self) -> dict[str, str]:
        return dict(self._new)

    def __repr__(self) -> str:
        return f"Relabels({len(self._new)} prompt(s))"

    def set(self, prompt_id: str, category: str, previous: Any = None) -> None:
        """Give ``prompt_id`` the category ``category``; back to ``previous`` (the prompt file's
        own category) forgets the relabel."""
        if not isinstance(category, str) or not category.strip():
            raise PromptSetError(f"the new category must be a non-empty name, got {short(category)}")
        if previous is not None and str(previous) == category.strip():
            self._new.pop(str(prompt_id), None)
        else:
            self._new[str(prompt_id)] = category.strip()

    def update(self, other: Mapping[str, str]) -> None:
        self._new.update({str(k): str(v) for k, v in other.items()})

    def labels(self, prompts: PromptSet, missing: str = "(none)") -> np.ndarray:
        """Each prompt's category with the relabels applied (``missing`` where it has none)."""
        df = prompts.df
        if "category" in df.columns:
            out = np.array([missing if _is_missing(v) else str(v) for v in df["category"]],
                           dtype=object)
        else:
            out = np.full(len(df), missing, dtype=object)
        if self._new:
            for i, pid in enumerate(df["id"].astype(str)):
                if pid in self._new:
                    out[i] = self._new[pid]
        return out

    def apply(self, prompts: PromptSet) -> PromptSet:
        """``prompts`` with the relabels applied to its ``category`` column."""
        if not self._new:
            return prompts
        return prompts.with_column("category", [None if v == "(none)" else v
                                                for v in self.labels(prompts)])

    def records(self, prompts: PromptSet) -> list[dict[str, Any]]:
        """The labels-file records: ``id, category, previous_category`` (``None`` when none)."""
        df = prompts.df
        prev = (dict(zip(df["id"].astype(str), df["category"])) if "category" in df.columns
                else {})
        return [{"id": pid, "category": cat,
                 "previous_category": None if _is_missing(prev.get(pid)) else str(prev[pid])}
                for pid, cat in self._new.items()]

    def save(self, path: str | os.PathLike, prompts: PromptSet, *,
             source_path: str | os.PathLike | None = None) -> Path:
        """Write the relabels atomically to ``path`` (``.jsonl`` or ``.csv``).

        Refuses the prompt file itself (``source_path``) and any existing file that is not a
        labels file.
        """
        import csv

        from workbench._paths import atomic_write_text

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise PromptSetError(f"labels are saved as .jsonl or .csv, got {short(path.name)}")
        if source_path is not None and path.resolve() == Path(source_path).resolve():
            raise PromptSetError(f"{path} is the prompt file itself; labels go to a separate "
                                 "file (e.g. prompts-labels.jsonl), the source is never overwritten")
        if path.exists():
            try:
                read_labels_file(path)
            except PromptSetError as exc:
                raise PromptSetError(f"refusing to overwrite {path}: it is not a labels file "
                                     f"({exc}); choose another file name") from None
        records = self.records(prompts)
        if suffix == ".jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(LABEL_COLUMNS))
            writer.writeheader()
            for r in records:
                writer.writerow({k: "" if v is None else v for k, v in r.items()})
            text = buf.getvalue()
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, prompts: PromptSet | None = None) -> Relabels:
        """Read a labels file; with ``prompts``, every id must be one of its prompts."""
        records = read_labels_file(path)
        if prompts is not None:
            ids = set(prompts.df["id"].astype(str))
            unknown = [(n, r["id"]) for n, r in records if r["id"] not in ids]
            if unknown:
                where = ", ".join(f"{short(i)} (line {n})" for n, i in unknown[:5])
                raise PromptSetError(f"{path}: ids not in the prompt set: {where}; was it saved "
                                     "for another prompt set?")
        return cls({r["id"]: r["category"] for _, r in records})


def read_labels_file(path: str | os.PathLike) -> list[tuple[int, dict[str, str]]]:
    """The ``(line number, {"id", "category"})`` records of a labels file (see :class:`Relabels`).

    Raises :class:`~workbench.errors.PromptSetError` naming the file and line for anything that
    is not a labels file.
    """
    import csv

    path = Path(path)
    if not path.exists():
        raise PromptSetError(f"labels file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise PromptSetError(f"labels files are .jsonl or .csv, got {short(path.name)}")
    text = path.read_text(encoding="utf-8")
    keys = set(LABEL_COLUMNS)
    rows: list[tuple[int, Any]] = []
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except ValueError as exc:
                raise PromptSetError(f"{path} line {n} is not JSON: {exc}") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(n, dict(r)) for n, r in enumerate(reader, start=2)]
        if reader.fieldnames and set(reader.fieldnames) - keys:
            raise PromptSetError(f"{path} has columns {reader.fieldnames}; a labels file has "
                                 "only id, category, previous_category")
    out: list[tuple[int, dict[str, str]]] = []
    for n, rec in rows:
        if not isinstance(rec, dict) or set(rec) - keys or not {"id", "category"} <= set(rec):
            found = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise PromptSetError(f"{path} line {n} has keys {found}; a labels file has only "
                                 "id, category, previous_category")
        if not str(rec["category"] or "").strip():
            raise PromptSetError(f"{path} line {n}: empty category for id {short(rec['id'])}")
        out.append((n, {"id": str(rec["id"]), "category": str(rec["category"])}))
    return out
