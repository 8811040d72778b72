"""The demo prompts as a table, their seeded held-out split and their fingerprint.

What :func:`split_held_out` and :func:`data_fingerprint` compute is part of every demo cache key
and of the shipped adapters' validation (``data/demo_adapters``): do not change it.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from workbench.errors import DemoError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def demo_frame(prompts) -> pd.DataFrame:
    """A DataFrame with id, text, category, answer from a PromptSet, DataFrame or records."""
    import pandas as pd

    df = getattr(prompts, "df", prompts)
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(list(df))
    missing = {"id", "text", "category", "answer"} - set(df.columns)
    if missing:
        raise DemoError(f"the demo prompts need columns id, text, category, answer; missing "
                        f"{sorted(missing)} (columns: {list(df.columns)})")
    return df.reset_index(drop=True)


def split_held_out(prompts, *, held_out: float = 0.25, seed: int = 0):
    """Seeded per-category split of the demo prompts into (train, held_out) id lists.

    Every category keeps ``round(held_out * n)`` prompts (at least one) out of training.
    """
    import numpy as np

    df = demo_frame(prompts)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cat in sorted(df["category"].astype(str).unique()):
        ids = df.loc[df["category"].astype(str) == cat, "id"].astype(str).tolist()
        order = rng.permutation(len(ids))
        k = max(1, int(round(held_out * len(ids)))) if len(ids) > 1 else 0
        test += [ids[i] for i in sorted(order[:k])]
        train += [ids[i] for i in sorted(order[k:])]
    return train, test


def data_fingerprint(prompts) -> str:
    """Hash of the demo prompts' ids, texts, categories and answers (part of the cache key)."""
    df = demo_frame(prompts)
    h = hashlib.sha256()
    for row in df[["id", "text", "category", "answer"]].astype(str).itertuples(index=False):
        h.update("\x1f".join(row).encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()[:16]
