"""Reading and checking a results table: layouts, column mapping, numbers, gaps and duplicates.

Every problem is a :class:`~workbench.errors.ScoresError` that names the file, the row (CSV and
Parquet: data rows from 1 after the header; JSONL: the line) and the fix in command-line terms.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from workbench.errors import ScoresError, UsageError
from workbench.results.files import read_raw_table
from workbench.results.table import LONG_COLUMNS, MISSING_CHOICES, ResultsTable, parse_columns
from workbench.safeio import short, short_list

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["read_results", "results_from_frame"]

_ALIASES = {"model": ("expert",)}
_MISSING_WORDS = {"", "nan", "na", "n/a", "null", "none"}
_TRUE, _FALSE = {"true", "yes"}, {"false", "no"}
_PLURAL = {"category": "categories", "prompt text": "prompt texts"}


def read_results(path: str | os.PathLike, *, columns: str | Mapping[str, str] | None = None,
                 models: Sequence[str] | None = None, prefix: str | None = None,
                 missing: str = "error") -> ResultsTable:
    """Read and check a long or wide results table (CSV, TSV, JSONL or Parquet).

    Parameters
    ----------
    path : path
        The table.
    columns : str or mapping, optional
        Canonical name -> the file's column (``"prompt=question,category=task"``).
    models : sequence of str, optional
        Wide table: its score columns (each one model). Long table: keep only these models.
    prefix : str, optional
        Wide table: every column whose name starts with ``prefix`` is a model's scores.
    missing : {"error", "drop"}
        A (prompt, model) pair without a score raises, or drops the prompt for every model.

    Returns
    -------
    ResultsTable

    Examples
    --------
    >>> t = read_results("my_results.csv", columns="prompt=question", missing="drop")  # doctest: +SKIP
    >>> t.scores.category_means()                                                       # doctest: +SKIP
    """
    df, rows, word = read_raw_table(path)
    return results_from_frame(df, source=str(path), rows=rows, row_word=word, columns=columns,
                              models=models, prefix=prefix, missing=missing)


def results_from_frame(df: "pd.DataFrame", *, source: str = "<table>", rows: Sequence[int] | None = None,
                       row_word: str = "row", columns: str | Mapping[str, str] | None = None,
                       models: Sequence[str] | None = None, prefix: str | None = None,
                       missing: str = "error") -> ResultsTable:
    """Check a results table already in a DataFrame (see :func:`read_results`)."""
    if missing not in MISSING_CHOICES:
        raise UsageError(f"--missing must be one of {', '.join(MISSING_CHOICES)}, got {short(missing)}")
    rows = list(range(1, len(df) + 1)) if rows is None else list(rows)
    if len(df) == 0:
        raise ScoresError(f"{source} has no rows; a results table needs one row per scored "
                          "(prompt, model) pair (long) or per prompt (wide)")
    col = _resolve_columns(df, parse_columns(columns), source)
    is_long = col.get("model") is not None and col.get("score") is not None
    ctx = _Ctx(source, rows, row_word)
    if col.get("model") is not None and col.get("score") is None and models is None and prefix is None:
        raise ScoresError(
            f"{source} has a model column {short(col['model'])} but no score column; its columns "
            f"are {short_list(df.columns, quote=True)}. Name the score column with --columns "
            "score=<column>"
        )
    if is_long and prefix is None:
        return _read_long(df, col, ctx, models, missing)
    if models is None and prefix is None:
        raise ScoresError(
            f"{source} is not a long results table (no model and score columns) and no --models "
            f"or --prefix names the score columns of a wide table; its columns are "
            f"{short_list(df.columns, quote=True)}. Map a long table's columns with --columns "
            "model=<column>,score=<column>, or name a wide table's score columns with --models "
            "a,b or --prefix score_"
        )
    return _read_wide(df, col, ctx, models, prefix, missing)


@dataclass
class _Ctx:
    source: str
    rows: list[int]
    word: str

    def at(self, i: int) -> str:
        return f"{self.source} {self.word} {self.rows[i]}"


def _resolve_columns(df, mapped: dict[str, str], source: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key in LONG_COLUMNS:
        if key in mapped:
            if mapped[key] not in df.columns:
                raise ScoresError(
                    f"{source} has no column {short(mapped[key])} (from --columns {key}="
                    f"{mapped[key]}); its columns are {short_list(df.columns, quote=True)}"
                )
            out[key] = mapped[key]
            continue
        names = (key, *_ALIASES.get(key, ()))
        out[key] = next((n for n in names if n in df.columns), None)
    if out["prompt_id"] is None:
        raise ScoresError(
            f"{source} has no prompt_id column; its columns are {short_list(df.columns, quote=True)}"
            ". Name the column that identifies each prompt with --columns prompt_id=<column>"
        )
    return out


def _blank(values: np.ndarray, *, words: bool = False) -> np.ndarray:
    """True where a cell is empty: None, NaN, blank text (and, for scores, "nan", "null" ...)."""
    out = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out[i] = True
        elif isinstance(v, str) and (not v.strip() or (words and v.strip().lower() in _MISSING_WORDS)):
            out[i] = True
    return out


def _numbers(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(floats with NaN where blank, blank mask, not-a-number mask) of one column's cells."""
    import pandas as pd

    values = np.asarray(values, dtype=object)
    blank = _blank(values, words=True)
    out = np.full(len(values), np.nan)
    bad = np.zeros(len(values), dtype=bool)
    conv = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    for i, v in enumerate(values):
        if blank[i]:
            continue
        if isinstance(v, (bool, np.bool_)):
            out[i] = float(v)
        elif isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
            out[i] = 1.0 if v.strip().lower() in _TRUE else 0.0
        elif np.isfinite(conv[i]):
            out[i] = conv[i]
        else:
            bad[i] = True
    return out, blank, bad


def _not_a_number(ctx: _Ctx, bad: np.ndarray, values, what) -> ScoresError:
    i = int(np.flatnonzero(bad)[0])
    more = int(bad.sum()) - 1
    return ScoresError(
        f"{ctx.at(i)}: score {short(values[i])} {what(i)} is not a number"
        + (f" ({more} more such rows)" if more else "")
        + "; scores must be finite numbers, higher is better (0/1 correctness, a judge grade, a "
        "reward). Fix the value, or leave the cell empty to mark the pair as missing (then "
        "--missing drop leaves that prompt out)"
    )


def _strings(df, column: str | None) -> np.ndarray | None:
    if column is None:
        return None
    values = df[column].to_numpy(dtype=object)
    blank = _blank(values)
    out = np.array([None if b else str(v) for v, b in zip(values, blank)], dtype=object)
    return out


def _per_prompt(codes: np.ndarray, n: int, values: np.ndarray | None, ctx: _Ctx, what: str,
                ids, fix: str) -> list[str] | None:
    """One value per prompt from its rows (blank rows ignored); conflicts and gaps raise."""
    if values is None:
        return None
    filled = np.array([v is not None for v in values])
    if not filled.any():
        return None
    out: list[str | None] = [None] * n
    first: list[int] = [-1] * n
    for i in np.flatnonzero(filled):
        p = int(codes[i])
        if out[p] is None:
            out[p], first[p] = values[i], i
        elif out[p] != values[i]:
            raise ScoresError(
                f"{ctx.source} {ctx.word}s {ctx.rows[first[p]]} and {ctx.rows[i]} give prompt "
                f"{short(ids[p])} two {_PLURAL.get(what, what + 's')} ({short(out[p])} and "
                f"{short(values[i])}); give each "
                f"prompt one {what} on every row, or different prompt ids"
            )
    gaps = [p for p in range(n) if out[p] is None]
    if gaps:
        i = int(np.flatnonzero(codes == gaps[0])[0])
        raise ScoresError(
            f"{ctx.at(i)}: prompt {short(ids[gaps[0]])} has no {what} ({len(gaps)} prompts have "
            f"none); {fix}"
        )
    return out  # type: ignore[return-value]


def _read_long(df, col, ctx: _Ctx, models, missing: str) -> ResultsTable:
    import pandas as pd

    pid = _strings(df, col["prompt_id"])
    model = _strings(df, col["model"])
    for name, values in (("prompt_id", pid), ("model", model)):
        empty = np.array([v is None for v in values])
        if empty.any():
            i = int(np.flatnonzero(empty)[0])
            raise ScoresError(f"{ctx.at(i)} has an empty {col[name]!r} ({int(empty.sum())} such "
                              f"rows); every row of a long table names its prompt and its model")
    p_codes, p_ids = pd.factorize(pd.Series(pid), sort=False)
    m_codes, m_names = pd.factorize(pd.Series(model), sort=False)
    p_ids, m_names = [str(x) for x in p_ids], [str(x) for x in m_names]
    score, _, bad = _numbers(df[col["score"]].to_numpy(dtype=object))
    raw_scores = df[col["score"]].to_numpy(dtype=object)
    if bad.any():
        raise _not_a_number(ctx, bad, raw_scores,
                            lambda i: f"(prompt {short(pid[i])}, model {short(model[i])})")
    key = p_codes.astype(np.int64) * len(m_names) + m_codes
    dup = pd.Series(key).duplicated(keep=False).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        j = int(np.flatnonzero(key == key[i])[1])
        n_pairs = len(set(key[dup].tolist()))
        raise ScoresError(
            f"{ctx.source} {ctx.word}s {ctx.rows[i]} and {ctx.rows[j]} both score prompt "
            f"{short(pid[i])} for model {short(model[i])} ({n_pairs} repeated (prompt, model) pairs "
            "in all); keep one row per pair: average repeated runs into one score, or give each "
            "run its own model name"
        )
    values = np.full((len(p_ids), len(m_names)), np.nan)
    values[p_codes, m_codes] = score
    prompt_rows = {p: ctx.rows[int(i)] for p, i in zip(p_ids, _first_index(p_codes, len(p_ids)))}
    model_rows = {m: ctx.rows[int(i)] for m, i in zip(m_names, _first_index(m_codes, len(m_names)))}
    texts = _per_prompt(p_codes, len(p_ids), _strings(df, col["prompt"]), ctx, "prompt text", p_ids,
                        "fill it on one of its rows, or leave the whole prompt column empty to "
                        "run without a router")
    cats = _per_prompt(p_codes, len(p_ids), _strings(df, col["category"]), ctx, "category", p_ids,
                       "fill it on one of its rows (the protocol splits and maps by category)")
    if models is not None:
        wanted = [str(m) for m in models]
        unknown = [m for m in wanted if m not in m_names]
        if unknown:
            raise ScoresError(f"--models: {ctx.source} has no rows of model(s) "
                              f"{short_list(unknown, quote=True)}; its models are "
                              f"{short_list(m_names, quote=True)}")
        values = values[:, [m_names.index(m) for m in wanted]]
        m_names = wanted
    return _finish(values, p_ids, m_names, texts, cats, ctx, "long", missing, prompt_rows,
                   {m: model_rows[m] for m in m_names})


def _first_index(codes: np.ndarray, n: int) -> np.ndarray:
    first = np.full(n, -1, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    for i, c in enumerate(codes):
        if not seen[c]:
            seen[c] = True
            first[c] = i
    return first


def _read_wide(df, col, ctx: _Ctx, models, prefix, missing: str) -> ResultsTable:
    taken = {c for c in (col["prompt_id"], col["prompt"], col["category"]) if c is not None}
    if models is not None:
        score_cols = [str(m) for m in models]
        absent = [c for c in score_cols if c not in df.columns]
        if absent:
            raise ScoresError(f"--models: {ctx.source} has no column(s) {short_list(absent, quote=True)}"
                              f"; its columns are {short_list(df.columns, quote=True)}")
        names = score_cols
    else:
        prefix = str(prefix)
        score_cols = [str(c) for c in df.columns if str(c).startswith(prefix) and c not in taken]
        names = [c[len(prefix):] for c in score_cols]
        if not score_cols or not all(names):
            raise ScoresError(
                f"--prefix {prefix!r}: {ctx.source} has no column named {prefix}<model>; its "
                f"columns are {short_list(df.columns, quote=True)}"
            )
    if len(set(names)) != len(names):
        raise ScoresError(f"--models names a column twice: {short_list(names, quote=True)}")
    pid = _strings(df, col["prompt_id"])
    empty = np.array([v is None for v in pid])
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise ScoresError(f"{ctx.at(i)} has an empty {col['prompt_id']!r}; every row of a wide "
                          "table names its prompt")
    seen: dict[str, int] = {}
    for i, p in enumerate(pid):
        if p in seen:
            raise ScoresError(
                f"{ctx.source} {ctx.word}s {ctx.rows[seen[p]]} and {ctx.rows[i]} both hold prompt "
                f"{short(p)}; a wide table has one row per prompt: merge the rows (average "
                "repeated runs), or give them different prompt ids"
            )
        seen[p] = i
    values = np.empty((len(pid), len(names)))
    for j, c in enumerate(score_cols):
        raw = df[c].to_numpy(dtype=object)
        values[:, j], _, bad = _numbers(raw)
        if bad.any():
            raise _not_a_number(ctx, bad, raw,
                                lambda i, c=c, n=names[j]: f"(prompt {short(pid[i])}, model "
                                                           f"{short(n)}, column {short(c)})")
    codes = np.arange(len(pid))
    ids = [str(p) for p in pid]
    texts = _per_prompt(codes, len(ids), _strings(df, col["prompt"]), ctx, "prompt text", ids,
                        "fill it, or leave the whole prompt column empty to run without a router")
    cats = _per_prompt(codes, len(ids), _strings(df, col["category"]), ctx, "category", ids,
                       "fill it (the protocol splits and maps by category)")
    first = int(ctx.rows[0])
    return _finish(values, ids, names, texts, cats, ctx, "wide", missing,
                   {p: ctx.rows[i] for i, p in enumerate(ids)}, {m: first for m in names})


def _finish(values, ids, models, texts, cats, ctx: _Ctx, layout, missing, prompt_rows, model_rows):
    from workbench.scores import ExpertScores

    holes = np.isnan(values)
    lacking = {m: int(n) for m, n in zip(models, holes.sum(axis=0))}
    incomplete = holes.any(axis=1)
    dropped: list[str] = []
    if incomplete.any():
        detail = []
        for j, m in enumerate(models):
            if lacking[m]:
                p = int(np.flatnonzero(holes[:, j])[0])
                detail.append(f"model {short(m)} lacks {lacking[m]} of {len(ids)} prompts (e.g. "
                              f"{short(ids[p])}, {ctx.word} {prompt_rows[ids[p]]})")
        kept = int((~incomplete).sum())
        if missing == "error":
            raise ScoresError(
                f"{ctx.source}: {int(holes.sum())} (prompt, model) pairs have no score: "
                f"{short_list(detail, limit=5, sep='; ')}. Score them (coe-workbench score appends "
                f"a model's rows to a long table), or pass --missing drop to leave out every "
                f"prompt some model lacks, for all models alike ({kept} of {len(ids)} prompts "
                "would stay)"
            )
        if kept == 0:
            raise ScoresError(f"{ctx.source}: no prompt has a score from every model, so --missing "
                              f"drop leaves nothing ({short_list(detail, limit=5, sep='; ')}); "
                              "score the missing pairs or leave out the model that lacks most "
                              "(--models)")
        dropped = [ids[i] for i in np.flatnonzero(incomplete)]
        keep = np.flatnonzero(~incomplete)
        values = values[keep]
        ids = [ids[i] for i in keep]
        texts = None if texts is None else [texts[i] for i in keep]
        cats = None if cats is None else [cats[i] for i in keep]
    scores = ExpertScores(values, ids, models, cats)
    return ResultsTable(scores, texts, ctx.source, layout, lacking, dropped,
                        {p: prompt_rows[p] for p in ids}, dict(model_rows), ctx.word)
