"""Small helpers shared by the benchmarks (table printing, the JSON summary line, data)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(width[c]) for c in cols))


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summary(name: str, **values) -> None:
    """Print the one-line JSON summary; must be the last line of stdout."""
    print(json.dumps({"name": name, **values}), flush=True)


def real_prompts(n: int):
    """``n`` real MMLU-Pro questions when ../shared/data is present, else the demo set (said so)."""
    from workbench._paths import shared_data_dir
    from workbench.prompts import PromptSet, load_demo_prompts

    root = shared_data_dir()
    if root is not None and (root / "mmlu-pro").is_dir():
        ps = PromptSet.from_mmlu_pro(root / "mmlu-pro")
        return ps.subset(list(range(min(n, len(ps))))), "mmlu-pro"
    print("note: ../shared/data is absent; using the demo prompt set instead")
    ps = load_demo_prompts()
    return ps.subset(list(range(min(n, len(ps))))), "demo"
