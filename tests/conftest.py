"""Shared fixtures and tiering for the test suite.

Markers (see pyproject.toml): ``slow``, ``browser``, ``gpu``, ``shared_data``. The default run
(``pytest``) runs everything that can run here; GPU tests skip without CUDA, shared-data tests skip
when ``../shared/data`` is absent, browser tests skip when Chromium is missing.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Point the workbench cache at a per-session folder unless the caller set one."""
    if "COE_WORKBENCH_CACHE" not in os.environ:
        os.environ["COE_WORKBENCH_CACHE"] = str(tmp_path_factory.mktemp("coe-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test cleanly when it is absent."""
    from workbench._paths import shared_data_dir

    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is absent (set COE_SHARED_DATA to its location)")
    return path


@pytest.fixture(scope="session")
def mmlu_pro_dir(shared_data) -> Path:
    path = shared_data / "mmlu-pro"
    if not any(path.glob("model_outputs_*_5shots.zip")):
        pytest.skip(f"no MMLU-Pro result zips in {path}")
    return path


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: GPU tests cannot run
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


#: categories and experts of the small map-editor bundle below
EDITOR_CATS = ["math", "law", "code", "chat"]
EDITOR_EXPERTS = ["small", "mid", "big"]


@pytest.fixture
def map_editor_bundle():
    """A small bundle for the mapping editor: seeded scores where expert quality differs by
    category (so the optimum is a real mix), a registry and a map of four categories."""
    from types import SimpleNamespace

    import numpy as np

    from workbench.mapping import CategoryExpertMap
    from workbench.registry import ModelRegistry
    from workbench.scores import ExpertScores

    rng = np.random.default_rng(0)
    cats = np.repeat(EDITOR_CATS, 25)
    p = {"math": [0.2, 0.5, 0.9], "law": [0.5, 0.55, 0.6], "code": [0.3, 0.8, 0.85],
         "chat": [0.7, 0.7, 0.75]}
    vals = np.vstack([(rng.random(3) < np.array(p[c])).astype(float) for c in cats])
    scores = ExpertScores(vals, [f"p{i}" for i in range(len(cats))], EDITOR_EXPERTS, cats)
    registry = ModelRegistry({"small": 1.0, "mid": 3.0, "big": 10.0})
    mapping = CategoryExpertMap({**{c: "small" for c in EDITOR_CATS}, "fallback": "big"},
                                experts=registry, categories=EDITOR_CATS)
    return SimpleNamespace(mapping=mapping, scores=scores, registry=registry)


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory):
    """Two tiny random-init Llama experts (tiny-a, tiny-b) on disk, shared by the session."""
    from helpers_models import write_tiny_llama

    root = tmp_path_factory.mktemp("tiny-experts")
    return {name: write_tiny_llama(root / name, hidden_size=64, num_layers=2, seed=seed)
            for name, seed in (("tiny-a", 1), ("tiny-b", 2))}
