"""LoRA adapters as experts: one shared base, exact merges, the same logits as peft, clear errors."""
from __future__ import annotations

import json
import threading

import pytest

from tests.helpers_models import write_tiny_llama
from workbench.errors import ExpertError

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")


def write_lora(base, out, *, seed, targets=("q_proj", "v_proj"), r=4, **extra):
    """A peft LoRA adapter with random A and B (init_lora_weights=False), saved as safetensors."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)
    cfg = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False,
                          task_type="CAUSAL_LM", **extra)
    pm = peft.get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    pm.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base = write_tiny_llama(root / "base", hidden_size=64, num_layers=2, seed=0)
    other = write_tiny_llama(root / "other", hidden_size=48, num_layers=2, seed=1)
    a = write_lora(base, root / "a", seed=1)
    b = write_lora(base, root / "b", seed=2, targets=("q_proj", "o_proj", "down_proj"))
    return {"base": base, "other": other, "a": a, "b": b, "root": root}


def make_pool(models, **kw):
    from workbench.experts import ExpertPool, ExpertSpec

    specs = [ExpertSpec("gen", models["base"]), ExpertSpec("a", models["base"], adapter=models["a"]),
             ExpertSpec("b", models["base"], adapter=models["b"])]
    return ExpertPool(specs, gpu_memory=None, cpu_memory=kw.pop("cpu_memory", "64MiB"), **kw)


IDS = torch.tensor([[1, 5, 9, 12, 7, 20, 3]])


def logits(pool, name):
    with pool.use(name) as loaded, torch.no_grad():
        return loaded.model(IDS).logits.clone(), loaded


def peft_logits(models, adapter):
    from transformers import AutoModelForCausalLM

    model = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["base"]), adapter)
    with torch.no_grad():
        return model(IDS).logits


def test_merged_adapter_gives_peft_logits_and_the_base_comes_back_bit_exact(models):
    with make_pool(models) as pool:
        plain, _ = logits(pool, "gen")
        la, loaded_a = logits(pool, "a")
        lb, loaded_b = logits(pool, "b")        # other target modules: restore, snapshot, merge
        la2, _ = logits(pool, "a")
        plain2, loaded = logits(pool, "gen")
        assert torch.allclose(la, peft_logits(models, models["a"]), atol=1e-5)
        assert torch.allclose(lb, peft_logits(models, models["b"]), atol=1e-5)
        assert not torch.allclose(la, plain, atol=1e-3) and not torch.allclose(la, lb, atol=1e-3)
        assert torch.equal(plain, plain2) and torch.equal(la, la2)
        assert loaded_a.adapter_s > 0 and loaded.adapter_s > 0
        actions = pool.events_frame().query("action == 'adapter'")
        assert list(actions["expert"]) == ["a", "b", "a", "gen"]
        assert "replacing b" in actions.iloc[2]["detail"] and "unmerged a" in actions.iloc[3]["detail"]


def test_one_base_copy_for_every_adapter_expert(models):
    with make_pool(models) as pool:
        for name in ("a", "b", "gen", "a"):
            logits(pool, name)
        rows = {r["expert"]: r for r in pool.residency()}
        base_bytes = rows["gen"]["size_bytes"]
        assert pool.tracked_bytes("cpu") < 1.5 * base_bytes       # not three copies
        assert rows["a"]["base"] == "gen" and rows["a"]["tier"] == "cpu" and rows["a"]["adapter_merged"]
        assert not rows["b"]["adapter_merged"] and rows["gen"]["base"] is None
        loads = pool.events_frame().query("action == 'load' and to_tier == 'cpu'")
        assert (loads["expert"] == "gen").sum() == 1               # the base was read once


def test_adapter_only_pool_gets_a_hidden_base(models):
    from workbench.experts import ExpertPool, ExpertSpec

    with ExpertPool([ExpertSpec("a", models["base"], adapter=models["a"])], gpu_memory=None,
                    cpu_memory="64MiB") as pool:
        got, _ = logits(pool, "a")
        assert pool.names == ["a"]
        hidden = [r for r in pool.residency() if r["hidden"]]
        assert len(hidden) == 1 and hidden[0]["tier"] == "cpu"
        assert torch.allclose(got, peft_logits(models, models["a"]), atol=1e-5)


def test_generations_match_sequential_ones_under_concurrency(models):
    prompts = {"gen": "What is the derivative", "a": "Write a short poem", "b": "The court ruled"}
    with make_pool(models) as pool:
        expected = {n: pool.generate(n, p, max_new_tokens=6).token_ids for n, p in prompts.items()}
        got, errors = [], []

        def work(name):
            try:
                for _ in range(3):
                    got.append((name, pool.generate(name, prompts[name], max_new_tokens=6).token_ids))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in ("gen", "a", "b", "a")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(got) == 12
        assert all(ids == expected[name] for name, ids in got)


def test_evicting_an_adapter_restores_the_base(models):
    with make_pool(models) as pool:
        plain, _ = logits(pool, "gen")
        logits(pool, "a")
        pool.evict("a")
        assert not any(r["adapter_merged"] for r in pool.residency())
        with pool._entries["gen"].adapter_lock, torch.no_grad():   # the resident base, unmerged
            assert torch.equal(pool._entries["gen"].cpu_model(IDS).logits, plain)


def test_adapter_parameters_are_counted(models):
    from workbench.adapters import LoraAdapter

    adapter = LoraAdapter.load(models["a"])
    # 2 layers x (q: 4x64 + 64x4, v: 4x64 + 64x4)
    assert adapter.n_params == 2 * 2 * (4 * 64 + 64 * 4)
    assert adapter.target_modules == {"q_proj", "v_proj"}


@pytest.mark.parametrize("break_it, message", [
    (lambda d: (d / "adapter_config.json").unlink(), "no adapter_config.json"),
    (lambda d: (d / "adapter_model.safetensors").rename(d / "adapter_model.bin"), "a pickle"),
    (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "IA3"}'), "IA3 adapter"),
    (lambda d: (d / "adapter_config.json").write_text(json.dumps(
        {**json.loads((d / "adapter_config.json").read_text()), "use_dora": True})), "use_dora"),
    (lambda d: (d / "adapter_config.json").write_text("{not json"), "not valid JSON"),
])
def test_bad_adapter_folders_are_clear_errors(models, tmp_path, break_it, message):
    import shutil

    from workbench.experts import ExpertPool, ExpertSpec

    bad = tmp_path / "bad"
    shutil.copytree(models["a"], bad)
    break_it(bad)
    with ExpertPool([ExpertSpec("gen", models["base"]), ExpertSpec("bad", models["base"], adapter=bad)],
                    gpu_memory=None, cpu_memory="64MiB") as pool:
        with pytest.raises(ExpertError, match=message):
            pool.generate("bad", "hello", max_new_tokens=2)
        assert pool.generate("gen", "hello", max_new_tokens=2).text is not None   # the pool still serves


def test_adapter_for_another_base_names_the_mismatch(models):
    from workbench.experts import ExpertPool, ExpertSpec

    with ExpertPool([ExpertSpec("x", models["other"], adapter=models["a"])], gpu_memory=None,
                    cpu_memory="64MiB") as pool:
        with pytest.raises(ExpertError, match="trained for a different base"):
            pool.generate("x", "hello", max_new_tokens=2)
        assert all(r["in_use"] == 0 for r in pool.residency())


def test_spec_adapter_round_trips_and_resolves_relative_paths(models, tmp_path):
    from workbench.experts import ExpertSpec, specs_from_file

    file = models["root"] / "experts.yaml"
    file.write_text("- {name: a, model: base, adapter: a}\n")
    (spec,) = specs_from_file(file)
    assert spec.adapter == str(models["a"]) and spec.to_dict()["adapter"] == str(models["a"])
    with pytest.raises(ExpertError, match="adapter must be"):
        ExpertSpec("x", models["base"], adapter=3)


def test_json_schema_constrains_decoding(tmp_path):
    """A random tiny model still writes JSON that validates against the schema."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from workbench.demo.tiny import train_demo_tokenizer
    from workbench.experts import ExpertPool, ExpertSpec

    tok = train_demo_tokenizer(["the quick brown fox {\"a\": [1, 2]} jumps"] * 3, vocab_size=300)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2,
                                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    schema = {"type": "object", "properties": {"pick": {"type": "string", "enum": ["left", "right"]},
                                               "ok": {"type": "boolean"}}, "required": ["pick", "ok"]}
    with ExpertPool([ExpertSpec("m", tmp_path / "m")], gpu_memory=None, cpu_memory="64MiB") as pool:
        free = pool.generate("m", "choose", max_new_tokens=12).text
        out = pool.generate("m", "choose", max_new_tokens=120, json_schema=schema).text
    data = json.loads(out)
    assert data["pick"] in ("left", "right") and isinstance(data["ok"], bool)
    with pytest.raises(ValueError):
        json.loads(free)      # unconstrained, the random model writes no JSON


def test_live_scoring_an_adapter_spec_scores_the_merged_expert(models):
    from workbench.experts import ExpertSpec
    from workbench.livescore import load_scoring_model

    scorer = load_scoring_model(ExpertSpec("a", models["base"], adapter=models["a"]), device="cpu")
    with torch.no_grad():
        assert torch.allclose(scorer.model(IDS).logits, peft_logits(models, models["a"]), atol=1e-5)


def test_tier_view_shows_adapter_experts_on_their_base(models):
    pytest.importorskip("panel")
    from workbench.ui.tiers import TierModel, tiers_html

    with make_pool(models) as pool:
        logits(pool, "a")
        view = TierModel(pool, expert_notes={"a": "0.1M params · held-out score 0.123"})
        html = tiers_html(view)
        assert html.count("LoRA on gen, merged") == 1 and html.count("LoRA on gen") == 2   # a merged, b not
        assert "held-out score 0.123" in html
        cpu = {i["expert"] for i in view.by_tier()["cpu"]}
        assert {"gen", "a"} <= cpu


def test_registry_for_adapters_on_a_hidden_base_counts_the_base_from_its_checkpoint(models):
    """Adapters whose base is no expert of its own: the base's size comes from the checkpoint's
    safetensors headers, so the map's resident parameters hold it once, as the pool does."""
    from transformers import AutoModelForCausalLM

    from workbench.experts import ExpertSpec, registry_for

    base_n = AutoModelForCausalLM.from_pretrained(models["base"]).num_parameters()

    def adapter_n(folder):
        from safetensors.torch import load_file

        return sum(t.numel() for t in load_file(folder / "adapter_model.safetensors").values())

    totals = {k: (base_n + adapter_n(models[k])) / 1e9 for k in ("a", "b")}
    reg = registry_for([ExpertSpec(k, models["base"], adapter=models[k], total_params_b=totals[k])
                        for k in ("a", "b")])
    assert reg["a"].base == str(models["base"]) and reg["a"].base_params_b * 1e9 == pytest.approx(base_n)
    assert reg.resident(["a", "b"]) * 1e9 == pytest.approx(base_n + adapter_n(models["a"]) + adapter_n(models["b"]))
    # a base that is not on this machine: no size to share, each adapter counted whole
    missing = registry_for([ExpertSpec("a", models["root"] / "nowhere", adapter=models["a"], total_params_b=1.0)])
    assert missing["a"].base is None
