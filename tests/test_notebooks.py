"""Every notebook runs top to bottom through nbclient.

The default tier runs ``01_explore_clusters`` with small settings (demo set, 600 MMLU-Pro questions,
no UMAP); the slow tier runs every notebook with its own defaults. Notebooks read ``COE_NB_*``
environment variables for their parameters and ``COE_NB_FAST=1`` for small defaults.
"""
from __future__ import annotations

import pytest
from helpers_notebooks import NOTEBOOKS, outputs_text, run_notebook  # noqa: F401


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
