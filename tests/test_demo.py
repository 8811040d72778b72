"""Offline demo experts: spec validation, seeded split, deterministic training, HF checkpoints that
the expert pool and live scoring load like any other model, caching; the full bundle is slow."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from workbench.errors import WorkbenchError

TINY_ARCH = {"hidden_size": 32, "num_hidden_layers": 1, "intermediate_size": 64,
             "num_attention_heads": 2}


def tiny_spec(steps=3, **extra):
    return copy.deepcopy({
        "version": 1,
        "tokenizer": {"vocab_size": 400, "min_frequency": 2},
        "training": {"held_out": 0.25, "max_length": 64, "batch_size": 4, "learning_rate": 3e-3,
                     "warmup_steps": 1},
        "generation": {"max_new_tokens": 8},
        "experts": [
            {"name": "gen", "description": "everything", "categories": "all",
             "architecture": dict(TINY_ARCH, hidden_size=48), "steps": steps},
            {"name": "numbers", "description": "maths and code", "categories": ["math", "code"],
             "architecture": TINY_ARCH, "steps": steps},
        ],
        **extra,
    })


@pytest.fixture(scope="module")
def prompts():
    from workbench.prompts import load_demo_prompts

    ps = load_demo_prompts()
    keep = [i for i, c in zip(ps.ids, ps.categories) if c in ("math", "code", "law")]
    keep = [i for k, i in enumerate(keep) if k % 4 == 0]        # 16 per category
    return ps.subset(keep)


@pytest.fixture(scope="module")
def built(prompts, tmp_path_factory):
    from workbench.demo import train_demo_experts

    root = tmp_path_factory.mktemp("demo") / "a"
    return train_demo_experts(prompts, spec_file=tiny_spec(), seed=0, root=root, progress=False)


def weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def test_spec_file_in_the_repo_is_valid():
    from workbench.demo import load_demo_config

    cfg = load_demo_config()
    sizes = {e.name: e.architecture["hidden_size"] for e in cfg.experts}
    assert cfg.generalist in sizes and 3 <= len(cfg.experts) - 1 <= 5
    gen = next(e for e in cfg.experts if e.is_generalist)
    covered = {c for e in cfg.experts for c in (e.categories or [])}
    assert covered == {"math", "code", "physics", "medicine", "law", "finance", "history",
                       "creative_writing", "chat", "spanish", "german", "chinese"}
    assert all(sizes[gen.name] > s for n, s in sizes.items() if n != gen.name)


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s["experts"][1].update(categories=["astrology"]), r"categories \['astrology'\]"),
    (lambda s: s["experts"][1].update(steps=0), "steps must be a positive integer"),
    (lambda s: s["experts"][1]["architecture"].pop("hidden_size"), "architecture lacks"),
    (lambda s: s["experts"][1]["architecture"].update(num_attention_heads=5), "not divisible"),
    (lambda s: s["experts"][0].update(categories=["math"]), "one expert must be the generalist"),
    (lambda s: s["experts"][1].update(name="gen"), "must be unique"),
])
def test_bad_spec_is_a_clear_error(prompts, tmp_path, mutate, message):
    from workbench.demo import DemoError, train_demo_experts

    spec = tiny_spec()
    mutate(spec)
    with pytest.raises(DemoError, match=message):
        train_demo_experts(prompts, spec_file=spec, root=tmp_path / "x", progress=False)
    with pytest.raises(WorkbenchError, match="does not exist"):
        train_demo_experts(prompts, spec_file=tmp_path / "nope.yaml", progress=False)


def test_held_out_split_is_seeded_stratified_and_disjoint(prompts):
    from workbench.demo import split_held_out

    train, held = split_held_out(prompts, held_out=0.25, seed=0)
    assert not set(train) & set(held) and len(train) + len(held) == len(prompts)
    cats = dict(zip(prompts.ids, prompts.categories))
    assert sorted(cats[i] for i in held) == ["code"] * 4 + ["law"] * 4 + ["math"] * 4
    assert split_held_out(prompts, held_out=0.25, seed=0) == (train, held)
    assert split_held_out(prompts, held_out=0.25, seed=1)[1] != held


def test_training_is_deterministic_by_seed(prompts, built, tmp_path):
    from workbench.demo import train_demo_experts

    again = train_demo_experts(prompts, spec_file=tiny_spec(), seed=0, root=tmp_path / "b",
                               progress=False)
    other = train_demo_experts(prompts, spec_file=tiny_spec(), seed=1, root=tmp_path / "c",
                               progress=False)
    for name in ("gen", "numbers"):
        a, b, c = weights(built.paths[name]), weights(again.paths[name]), weights(other.paths[name])
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        assert any(not np.array_equal(a[k], c[k]) for k in a)
    assert again.held_out_ids == built.held_out_ids != other.held_out_ids
    info = built.info["numbers"]
    assert info["steps"] == 3 and info["final_loss"] < info["first_loss"] + 1.0
    assert built.info["gen"]["n_params"] > info["n_params"] > 0
    # training data: the specialist saw only its categories' training prompts
    assert info["n_train_sequences"] == 24 and built.info["gen"]["n_train_sequences"] == 36


def test_cache_is_reused_unless_forced(prompts, built):
    from workbench.demo import train_demo_experts

    manifest = built.root / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = train_demo_experts(prompts, spec_file=tiny_spec(), seed=0, root=built.root, progress=False)
    assert manifest.stat().st_mtime_ns == stamp and again.paths == built.paths
    (built.paths["numbers"] / "model.safetensors").unlink()    # a damaged cache is rebuilt
    rebuilt = train_demo_experts(prompts, spec_file=tiny_spec(), seed=0, root=built.root,
                                 progress=False)
    assert (rebuilt.paths["numbers"] / "model.safetensors").exists()
    assert json.loads(manifest.read_text())["experts"] == ["gen", "numbers"]


def test_cache_key_follows_data_spec_and_seed(prompts):
    from workbench.demo import demo_cache_key, load_demo_config

    cfg = load_demo_config(tiny_spec())
    key = demo_cache_key(cfg, prompts, 0)
    assert key.startswith("v1-seed0-") and key == demo_cache_key(cfg, prompts, 0)
    assert key != demo_cache_key(cfg, prompts, 1)
    assert key != demo_cache_key(load_demo_config(tiny_spec(steps=4)), prompts, 0)
    assert key != demo_cache_key(cfg, prompts.subset(prompts.ids[:-1]), 0)


def test_checkpoints_are_ordinary_hf_models_for_pool_and_scoring(prompts, built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.experts import ExpertPool
    from workbench.livescore import score_models

    path = built.paths["numbers"]
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= \
        {p.name for p in path.iterdir()}
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template and tok.eos_token == "<|end|>" and tok.pad_token == "<pad>"
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|user|>\nhi<|end|>\n<|assistant|>\n"
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings

    specs = built.specs()
    assert [s.name for s in specs] == ["gen", "numbers"]
    assert specs[1].total_params_b == pytest.approx(built.n_params("numbers") / 1e9)
    pool = ExpertPool(specs, gpu_memory=None, cpu_memory="64MiB", prefetch=False)
    out = pool.generate("numbers", "Solve 2x + 3 = 11")
    assert isinstance(out.text, str) and 0 < out.new_tokens <= 8
    held = prompts.subset(built.held_out_ids)
    scores = score_models(pool, held)
    assert scores.values.shape == (len(held), 2) and np.isfinite(scores.values).all()
    assert set(scores.category_means().index) == {"math", "code", "law"}
    summary = built.summary()
    assert summary["expert"].tolist() == ["gen", "numbers"] and (summary["steps"] == 3).all()
    pool.close()


@pytest.mark.slow
def test_full_demo_bundle(tmp_path):
    """The full tiny build: every expert of data/demo_experts.yaml, scored, mapped, answering."""
    from workbench.demo import build_demo_bundle

    bundle = build_demo_bundle(kind="tiny", progress=False)
    means = bundle.category_scores()
    assert means.shape == (12, len(bundle.specs))
    # every specialist beats the generalist on at least one of its own categories
    gen = bundle.experts.generalist
    for name, info in bundle.experts.info.items():
        if info["categories"]:
            assert (means.loc[info["categories"], name] > means.loc[info["categories"], gen]).any(), name
    assert bundle.router_accuracy > 0.8
    answer = bundle.coe.generate("Solve 2x+3=11")
    assert answer.text and answer.trace.category == "math" and answer.trace.error is None
    again = build_demo_bundle(kind="tiny", progress=False)
    assert again.mapping.assignments == bundle.mapping.assignments


class HashEmbedder:
    """Deterministic bag-of-character-trigrams embedding (a fast stand-in for the sentence encoder)."""

    dim = 128

    def encode(self, texts):
        import zlib

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            t = t.lower()
            for j in range(len(t) - 2):
                out[i, zlib.crc32(t[j:j + 3].encode()) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed(self, prompts):
        return self.encode(prompts.texts)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from workbench.demo import build_demo_bundle

    root = tmp_path_factory.mktemp("bundle") / "experts"
    return lambda **kw: build_demo_bundle(spec_file=tiny_spec(), cache_dir=root, progress=False,
                                          embedder=HashEmbedder(), gpu_memory=None, **kw)


def test_build_demo_bundle_wires_everything(tiny_bundle):
    from workbench.mapping import pareto_frontier

    bundle = tiny_bundle()
    cats = sorted(set(bundle.prompts.categories))
    assert len(cats) == 12 and bundle.embeddings.shape == (len(bundle.prompts), 128)
    assert set(bundle.mapping.categories) == set(cats) and bundle.mapping.fallback_expert == "gen"
    assert bundle.scores.values.shape == (len(bundle.held_out_ids), 2)
    assert set(bundle.scores.prompt_ids) == set(bundle.held_out_ids)
    assert not set(bundle.held_out_ids) & set(bundle.train_ids)
    assert 0 < bundle.router.threshold < 1 and 0 <= bundle.router_accuracy <= 1
    assert set(bundle.live_scores.columns) >= {"prompt_id", "expert", "token_prob", "mean_loglik"}
    # the default budget binds: between the cheapest feasible map and the best one
    frontier = pareto_frontier(bundle.scores.category_means(), bundle.scores.category_weights(),
                               bundle.registry, fallback_expert="gen")
    assert frontier[0].budget_b <= bundle.budget_b <= frontier[-1].average_active_params_b
    assert bundle.registry.active("gen") == pytest.approx(bundle.experts.n_params("gen") / 1e9)
    answer = bundle.coe.generate("Solve 2x+3=11")
    t = answer.trace
    assert t.routed_expert == bundle.mapping.expert_for(t.category)
    if t.error is None:
        assert t.expert == t.routed_expert and t.new_tokens > 0 and answer.text.strip()
    else:  # experts trained 3 steps may say nothing: an empty answer is a failure, the fallback answers
        assert "returned an empty answer" in t.error and t.used_fallback_expert and t.expert == "gen"
    assert "demo prompts: 768 in 12 categories" in bundle.summary()
    # second call: from the cache (same scores file, same map)
    stamp = next(bundle.experts.root.glob("live_scores-*.csv")).stat().st_mtime_ns
    again = tiny_bundle()
    assert again.mapping.assignments == bundle.mapping.assignments
    assert next(again.experts.root.glob("live_scores-*.csv")).stat().st_mtime_ns == stamp
    cheap = tiny_bundle(budget_b=frontier[0].budget_b)
    assert cheap.budget_b == frontier[0].budget_b
    from workbench.errors import InfeasibleBudgetError

    with pytest.raises(InfeasibleBudgetError, match="raise the budget to at least"):
        tiny_bundle(budget_b=frontier[0].budget_b / 10)
    for b in (bundle, again, cheap):
        b.pool.close()


def test_build_demo_command_prints_sizes_scores_and_map(tiny_bundle, monkeypatch, capsys):
    import workbench.demo
    from workbench.cli import main

    monkeypatch.setattr(workbench.demo, "build_demo_bundle",
                        lambda **kw: tiny_bundle(budget_b=kw.get("budget_b")))
    assert main(["build-demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "experts:" in out and "n_params" in out and "numbers" in out
    assert "held-out score per category" in out and "creative_writing" in out
    assert "map (budget" in out and "fallback -> gen" in out
