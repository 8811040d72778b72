"""Prompt sets: a table of prompts with loaders, validation, save/load, splits and relabels.

A :class:`PromptSet` wraps a :class:`pandas.DataFrame` with the columns ``id`` (unique strings),
``text`` (non-empty prompts), an optional ``category`` and any number of meta columns.

Modules: :mod:`~workbench.prompts.set` (the object, validation, selections, split),
:mod:`~workbench.prompts.files` (reading and saving prompt files), :mod:`~workbench.prompts.rows`
(missing cells, skipped rows, ``on_error``), :mod:`~workbench.prompts.relabels` (relabels and the
labels file), :mod:`~workbench.prompts.demo` (the demo set). MMLU-Pro files are read by
:mod:`workbench.mmlu_pro`.

Examples are in :mod:`workbench.prompts.set` and :mod:`workbench.prompts.files`.
"""
from __future__ import annotations

from workbench.prompts.demo import load_demo_prompts
from workbench.prompts.files import FORMATS, mmlu_pro_result_files, read_mmlu_pro_records
from workbench.prompts.relabels import LABEL_COLUMNS, Relabels, read_labels_file
from workbench.prompts.rows import OnError, SkippedRow
from workbench.prompts.set import PromptSet

__all__ = ["FORMATS", "LABEL_COLUMNS", "OnError", "PromptSet", "Relabels", "SkippedRow",
           "load_demo_prompts", "mmlu_pro_result_files", "read_labels_file",
           "read_mmlu_pro_records"]
