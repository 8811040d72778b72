"""Results table files: read one as it is (CSV, TSV, JSONL, Parquet), write one atomically, and
turn a MMLU-Pro folder into a long table."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import MissingDependencyError, ScoresError, UsageError
from workbench.results.table import long_frame
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["FORMATS", "mmlu_pro_results", "read_raw_table", "write_results"]

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


def read_raw_table(path: str | os.PathLike) -> tuple["pd.DataFrame", list[int], str]:
    """The table in ``path`` as read (CSV cells as strings), each row's number, and ``"row"``/``"line"``."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ScoresError(f"results table {str(path)!r} does not exist")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ScoresError(f"cannot tell the format of {path} (suffix {path.suffix!r}); a results "
                          "table is .csv, .tsv, .jsonl or .parquet: rename the file")
    if fmt in ("csv", "tsv"):
        try:
            df = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                             keep_default_na=False, na_values=[""], encoding="utf-8")
        except pd.errors.EmptyDataError:
            raise ScoresError(f"{path} is empty; a results table needs a header row") from None
        except pd.errors.ParserError as exc:
            raise ScoresError(f"{path} is not valid CSV: {short(str(exc), 200)}") from None
        except UnicodeDecodeError as exc:
            raise ScoresError(f"{path}: byte {exc.start} is not UTF-8; re-save the file as UTF-8") from None
        return df, list(range(1, len(df) + 1)), "row"
    if fmt == "jsonl":
        records, rows = [], []
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise ScoresError(f"{path} line {lineno} is not UTF-8; re-save the file as UTF-8") from None
                except json.JSONDecodeError as exc:
                    raise ScoresError(f"{path} line {lineno} is not valid JSON ({exc.msg}); fix the "
                                      "line (one JSON object per line)") from None
                if not isinstance(obj, dict):
                    raise ScoresError(f"{path} line {lineno} is a JSON {type(obj).__name__}, not an "
                                      "object; write one {\"prompt_id\": ..., ...} object per line")
                records.append(obj)
                rows.append(lineno)
        return pd.DataFrame.from_records(records), rows, "line"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"reading the Parquet table {path} needs the package 'pyarrow', which is not installed. "
            "Install it with: pip install pyarrow (or save the table as .csv or .jsonl)") from None
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
        raise ScoresError(f"cannot read {path} as Parquet: {short(str(exc), 200)}") from None
    return df.reset_index(drop=True), list(range(1, len(df) + 1)), "row"


def write_results(df: "pd.DataFrame", path: str | os.PathLike) -> Path:
    """Write a table atomically in the format of ``path``'s suffix (CSV, TSV, JSONL, Parquet)."""
    import io

    from workbench._paths import atomic_write_bytes

    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot write a results table to {str(path)!r}: use a .csv, .tsv, "
                         ".jsonl or .parquet file name")
    if fmt in ("csv", "tsv"):
        data = df.to_csv(index=False, sep="\t" if fmt == "tsv" else ",").encode("utf-8")
    elif fmt == "jsonl":
        data = df.to_json(orient="records", lines=True, force_ascii=False).encode("utf-8")
    else:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def mmlu_pro_results(results_dir: str | os.PathLike) -> "pd.DataFrame":
    """A folder of MMLU-Pro result files as one long results table (:data:`LONG_COLUMNS`).

    Rows are prompt-major in the order :func:`~workbench.evaluate.load_mmlu_pro` uses, so the
    protocol on the table gives the same numbers as on the folder.

    Examples
    --------
    >>> write_results(mmlu_pro_results("../shared/data/mmlu-pro"), "mmlu_pro_long.csv")  # doctest: +SKIP
    """
    from workbench.prompts import PromptSet
    from workbench.scores import ExpertScores

    scores = ExpertScores.from_mmlu_pro(results_dir)
    prompts = PromptSet.from_mmlu_pro(results_dir)
    text = dict(zip((str(i) for i in prompts.ids), prompts.texts))
    missing = [p for p in scores.prompt_ids if p not in text]
    if missing:
        raise ScoresError(f"{len(missing)} scored questions have no text in {results_dir}, e.g. "
                          f"{missing[:3]}")
    return long_frame(scores, [text[p] for p in scores.prompt_ids])
