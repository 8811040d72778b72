"""Per-prompt results tables of your own models: read, check, write and append.

A *results table* holds one score per (prompt, model): correctness 0/1, a judge grade, a reward,
higher is better. Two layouts are read, from CSV (or TSV), JSONL or Parquet:

long
    One row per (prompt, model): columns ``prompt_id, prompt, category, model, score``
    (:data:`LONG_COLUMNS`; ``prompt`` and ``category`` optional; ``expert`` is accepted for
    ``model``). This is what ``coe-workbench score`` writes and appends to.
wide
    One row per prompt, one score column per model: the columns are named by ``models`` (the
    command line's ``--models a,b``) or picked by a name ``prefix`` (``--prefix score_``: column
    ``score_a`` is model ``a``).

``columns`` maps the canonical names to the file's (``--columns prompt=question,category=task``).
Every problem is a :class:`~workbench.errors.ScoresError` naming the file, the row (CSV and
Parquet: data rows counted from 1 after the header; JSONL: the line) and the fix, in the command
line's terms: a duplicate (prompt, model) pair, a score that is not a number, a prompt with two
categories or two texts, and (unless ``missing="drop"``, ``--missing drop``) a (prompt, model)
pair without a score. Dropping removes each prompt some model lacks, for every model alike, so
all models are compared on the same prompts.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"prompt_id": ["a", "a", "b", "b"], "model": ["x", "y", "x", "y"],
...                    "score": [1, 0, 0, 1], "category": ["law", "law", "math", "math"]})
>>> t = results_from_frame(df)
>>> t.scores.values.tolist(), t.has_text
([[1.0, 0.0], [0.0, 1.0]], False)
"""
from __future__ import annotations

from workbench.results.check import read_results, results_from_frame
from workbench.results.files import FORMATS, mmlu_pro_results, read_raw_table, write_results
from workbench.results.table import (
    LONG_COLUMNS,
    MISSING_CHOICES,
    ResultsTable,
    long_frame,
    parse_columns,
)

__all__ = ["FORMATS", "LONG_COLUMNS", "MISSING_CHOICES", "ResultsTable", "long_frame",
           "mmlu_pro_results", "parse_columns", "read_raw_table", "read_results",
           "results_from_frame", "write_results"]
