"""Prompt files: reading JSONL / JSON / CSV / TSV / Parquet and benchmark files, and saving.

:class:`PromptFiles` holds :class:`~workbench.prompts.PromptSet`'s file constructors
(:meth:`~PromptFiles.read`, which tells the format from the suffix, and the MMLU-Pro, MT-Bench and
Arena-Hard readers) and :meth:`~PromptFiles.save`. Bad rows stop a read with a message naming
them, or with ``on_error="skip"`` are left out and reported; a file without prompts is an error
unless ``allow_empty=True``. Row validation itself is :meth:`PromptSet.from_dataframe`.
"""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from workbench import mmlu_pro
from workbench._paths import atomic_write_bytes
from workbench.errors import PromptSetError, UnknownFormatError
from workbench.prompts.rows import OnError, SkippedRow, check_on_error
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    from workbench.prompts.set import PromptSet

__all__ = ["FORMATS", "PromptFiles", "mmlu_pro_result_files", "read_mmlu_pro_records"]

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


class PromptFiles:
    """The file constructors and :meth:`save` of :class:`~workbench.prompts.PromptSet`.

    A mixin: its methods build sets with ``cls.from_records`` / ``cls.from_dataframe`` and read
    ``self.df``, which :class:`~workbench.prompts.PromptSet` defines.
    """

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
        check_on_error(on_error)
        path = Path(path)
        kind, table = _load(path, format, text=text, encoding=encoding, on_error=on_error)
        if kind is not None:  # a benchmark's own file layout
            readers = {"mmlu-pro": cls.from_mmlu_pro, "mt-bench": cls.from_mt_bench,
                       "arena-hard": cls.from_arena_hard}
            ps = readers[kind](path)
        else:
            df, rows, skipped = table
            ps = cls.from_dataframe(df, text=text, id=id, category=category, name=name,
                                    on_error=on_error, require_category=require_category,
                                    source=str(path), row_numbers=rows, skipped=skipped)
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
    def from_mmlu_pro(cls, path: str | os.PathLike, *, name: str | None = None) -> PromptSet:
        """MMLU-Pro questions from a per-question eval-result file (or a folder of them).

        Accepts a ``model_outputs_<model>_5shots.zip``, the JSON inside it, or a folder of such
        zips (the first file's questions are used; all files share the same questions). Keeps
        ``options``, ``answer``, ``answer_index`` and ``src`` as meta columns.
        """
        path = Path(path)
        if path.is_dir():
            path = next(iter(mmlu_pro.result_files(path, error=PromptSetError).values()))
        rows = mmlu_pro.question_rows(read_mmlu_pro_records(path))
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


def _load(path: Path, format: str | None, *, text: str, encoding: str, on_error: OnError):
    """``(benchmark kind, None)`` for a file a benchmark reader takes, else
    ``(None, (table, row numbers or None, skipped rows))``."""
    if not path.exists():
        raise PromptSetError(f"prompt file {str(path)!r} does not exist")
    if path.is_dir():
        if mmlu_pro.result_files(path, error=PromptSetError, required=False):
            return "mmlu-pro", None
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
    if fmt in ("mmlu-pro", "mt-bench", "arena-hard"):
        return fmt, None
    if fmt == "jsonl":
        records, rows, skipped = _read_jsonl(path, encoding, on_error)
        if records and text not in records[0]:
            for kind in ("mt-bench", "arena-hard"):
                if _looks_like(records[0], kind):
                    return kind, None
        df = pd.DataFrame.from_records(records) if records else pd.DataFrame({text: []})
        return None, (df, rows, skipped)
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
        if data and mmlu_pro.is_result_record(data[0]):
            return "mmlu-pro", None
        df = pd.DataFrame.from_records(data) if data else pd.DataFrame({text: []})
        return None, (df, None, ())
    if fmt in ("csv", "tsv"):
        return None, _read_csv(path, encoding, on_error, sep="\t" if fmt == "tsv" else ",")
    if fmt == "parquet":
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types
            raise PromptSetError(f"cannot read {path} as Parquet: {exc}") from None
        return None, (df, None, ())
    raise UnknownFormatError(f"unsupported format {fmt!r}")  # pragma: no cover


def mmlu_pro_result_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Model name -> result file for every ``model_outputs_<model>_5shots.zip`` in a folder.

    See :func:`workbench.mmlu_pro.result_files`; ``{}`` for a folder without result files.
    """
    return mmlu_pro.result_files(directory, error=PromptSetError, required=False)


def read_mmlu_pro_records(path: str | os.PathLike) -> list[dict]:
    """The raw JSON records of one MMLU-Pro result file (a ``.zip`` holding one JSON, or the JSON)."""
    return mmlu_pro.read_records(path, error=PromptSetError)


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
