"""The workbench's own demo prompt set (``data/demo/*.jsonl``)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from workbench._paths import data_dir
from workbench.errors import PromptSetError
from workbench.prompts.set import PromptSet

__all__ = ["load_demo_prompts"]


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
