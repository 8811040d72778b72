"""Every notebook runs top to bottom through nbclient.

The default tier runs ``01_explore_clusters`` with small settings (demo set, 600 MMLU-Pro questions,
no UMAP); the slow tier runs every notebook with its own defaults. Notebooks read ``COE_NB_*``
environment variables for their parameters and ``COE_NB_FAST=1`` for small defaults.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, env: dict[str, str], timeout: int = 900):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def outputs_text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            chunks.append(out.get("text", ""))
            data = out.get("data", {})
            chunks.append(data.get("text/plain", ""))
            if out.get("output_type") == "error":
                chunks.append("ERROR " + out.get("ename", ""))
    return "\n".join(chunks)


def test_explore_clusters_notebook_fast():
    path = next(p for p in NOTEBOOKS if p.name.startswith("01_"))
    nb = run_notebook(path, {"COE_NB_FAST": "1", "COE_NB_UMAP": "0", "COE_NB_MMLU_PRO_LIMIT": "600"})
    text = outputs_text(nb)
    assert "knn_purity" in text and "ERROR" not in text
    assert "PromptSet('demo', 768 prompts, 12 categories)" in text


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_runs(path):
    nb = run_notebook(path, {"COE_NB_FAST": "1"}, timeout=1800)
    assert "ERROR" not in outputs_text(nb)
