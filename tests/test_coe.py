"""The CoE runtime: routing, traces, streaming, batch grouping and failing experts.

Real ExpertPool + real CategoryRouter + real CategoryExpertMap over tiny random-init Llama
checkpoints; the embedder is a keyword stand-in (fast), and batch grouping is also checked against
a switch-counting stand-in pool.
"""
from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ExpertError, MappingError, WorkbenchError

MATH = ["Solve for x: 3 x + 5 = 20", "What is the derivative of x squared?", "Solve 2x + 3 = 11"]
LAW = ["The court ruled that the contract was valid", "Is the contract valid under state law?",
       "What did the court rule?"]
KEYWORDS = {"math": ("solve", "derivative", "x"), "law": ("court", "contract", "law")}


class KeywordEmbedder:
    """Deterministic 2-d embedding from keyword counts (a stand-in for the sentence encoder)."""

    def __init__(self):
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = []
        for t in texts:
            words = t.lower().replace("?", " ").replace(":", " ").split()
            v = [sum(w in KEYWORDS[c] for w in words) for c in ("math", "law")]
            out.append(np.asarray(v, dtype=np.float32) + 0.05)
        return np.vstack(out)


@pytest.fixture(scope="module")
def router():
    from workbench.router import CategoryRouter

    emb = KeywordEmbedder()
    X = emb.encode(MATH + LAW)
    y = np.array(["math"] * len(MATH) + ["law"] * len(LAW))
    return CategoryRouter(head="logreg", C=100.0).fit(X, y)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from helpers_models import write_tiny_llama

    root = tmp_path_factory.mktemp("coe-experts")
    return {name: write_tiny_llama(root / name, hidden_size=64, num_layers=2, seed=seed)
            for name, seed in (("alpha", 1), ("beta", 2), ("gamma", 3))}


def make_pool(checkpoints, extra=()):
    from workbench.experts import ExpertPool, ExpertSpec

    specs = [ExpertSpec(name=n, model=p, generation={"max_new_tokens": 8})
             for n, p in checkpoints.items()]
    return ExpertPool([*specs, *extra], gpu_memory=None, cpu_memory="256MiB", prefetch=False)


def make_map(law="beta", math="alpha", fallback="gamma"):
    from workbench.mapping import CategoryExpertMap

    return CategoryExpertMap({"math": math, "law": law, "fallback": fallback})


def make_coe(pool, router, mapping=None, **kw):
    from workbench.coe import CoE

    return CoE(KeywordEmbedder(), router, mapping or make_map(), pool, **kw)


def assert_pool_idle(pool):
    rows = pool.residency()
    assert rows and all(not r["in_use"] for r in rows), rows


# ---------------------------------------------------------------------------------- construction
def test_unknown_expert_in_map_is_a_clear_error_at_construction(checkpoints, router):
    pool = make_pool(checkpoints)
    with pytest.raises(MappingError, match=r"'delta' \(for law\).*pool holds: alpha, beta, gamma"):
        make_coe(pool, router, make_map(law="delta"))
    with pytest.raises(MappingError, match="'omega'"):
        make_coe(pool, router, fallback_expert="omega")
    pool.close()


def test_router_category_missing_from_map_is_a_clear_error(checkpoints, router):
    from workbench.mapping import CategoryExpertMap

    pool = make_pool(checkpoints)
    with pytest.raises(MappingError, match="does not cover: law"):
        make_coe(pool, router, CategoryExpertMap({"math": "alpha", "fallback": "gamma"}))
    with pytest.raises(WorkbenchError, match="on_error='ignore'"):
        make_coe(pool, router, on_error="ignore")
    pool.close()


# ------------------------------------------------------------------------------------ happy path
def test_route_and_generate_fill_the_trace(checkpoints, router):
    pool = make_pool(checkpoints)
    coe = make_coe(pool, router)
    category, confidence, is_fallback, expert = coe.route("Solve 2x + 3 = 11")
    assert (category, is_fallback, expert) == ("math", False, "alpha") and confidence > 0.5

    answer = coe.generate("Is the contract valid under state law?")
    t = answer.trace
    assert (t.category, t.predicted, t.expert, t.routed_expert) == ("law", "law", "beta", "beta")
    assert t.error is None and not t.used_fallback_expert
    assert t.tier_found in ("cold", "disk") and t.new_tokens > 0 and t.tokens_per_s > 0
    assert t.embed_s > 0 and t.route_s > 0 and t.generate_s > 0 and t.total_s >= t.generate_s
    # the same expert answers the same prompt identically (greedy), now found in the CPU tier
    direct = pool.generate("beta", "Is the contract valid under state law?")
    assert answer.text == direct.text and direct.tier_found == "cpu"
    again = coe.generate("Is the contract valid under state law?")
    assert again.trace.tier_found == "cpu" and again.text == answer.text
    d = again.trace.to_dict()
    assert d["expert"] == "beta" and set(d) >= {"prompt", "category", "confidence", "is_fallback",
                                                "switch_s", "embed_s", "route_s", "generate_s",
                                                "new_tokens", "tokens_per_s", "error",
                                                "used_fallback_expert"}
    assert "beta" in again.trace.summary()
    with pytest.raises(WorkbenchError, match="non-empty text"):
        coe.generate("   ")
    pool.close()


def test_low_confidence_prompt_goes_to_the_fallback_expert(checkpoints, router):
    from sklearn.base import clone

    strict = clone(router).set_params(threshold=0.999).fit(
        KeywordEmbedder().encode(MATH + LAW), np.array(["math"] * 3 + ["law"] * 3))
    pool = make_pool(checkpoints)
    coe = make_coe(pool, strict)
    answer = coe.generate("hello there")     # no keyword: a coin toss for the router
    t = answer.trace
    assert t.is_fallback and t.category == "fallback" and t.expert == "gamma"
    assert t.predicted in ("math", "law") and not t.used_fallback_expert and t.error is None
    pool.close()


def test_stream_yields_chunks_then_the_answer(checkpoints, router):
    pool = make_pool(checkpoints)
    coe = make_coe(pool, router)
    items = list(coe.stream("Solve 2x + 3 = 11", max_new_tokens=6))
    *chunks, final = items
    from workbench.coe import Answer

    assert isinstance(final, Answer) and all(isinstance(c, str) for c in chunks) and chunks
    assert "".join(chunks).strip() == final.text.strip()
    assert final.trace.expert == "alpha" and 0 < final.trace.new_tokens <= 6
    assert final.text == pool.generate("alpha", "Solve 2x + 3 = 11", max_new_tokens=6).text
    assert_pool_idle(pool)
    pool.close()


# ------------------------------------------------------------------------------- failing experts
def test_expert_that_fails_to_load_falls_back_and_leaves_the_pool_usable(checkpoints, router, tmp_path):
    from workbench.experts import ExpertSpec

    broken = ExpertSpec(name="broken", model=tmp_path / "no-such-checkpoint")
    pool = make_pool(checkpoints, extra=[broken])
    prompt = "Is the contract valid under state law?"
    coe = make_coe(pool, router, make_map(law="broken"))
    answer = coe.generate(prompt)
    t = answer.trace
    assert t.error and "broken" in t.error and "no-such-checkpoint" in t.error
    assert t.used_fallback_expert and t.expert == "gamma" and t.routed_expert == "broken"
    assert answer.text == pool.generate("gamma", prompt).text and t.new_tokens > 0

    with pytest.raises(ExpertError, match="broken"):
        make_coe(pool, router, make_map(law="broken"), on_error="raise").generate(prompt)
    reported = make_coe(pool, router, make_map(law="broken"), on_error="report").generate(prompt)
    assert reported.text == "" and "broken" in reported.trace.error
    assert not reported.trace.used_fallback_expert

    # the pool stayed consistent: nothing held, errors recorded, other experts still work
    assert_pool_idle(pool)
    assert any(e.action == "error" and e.expert == "broken" for e in pool.events())
    assert coe.generate("Solve 2x + 3 = 11").trace.error is None
    # the fallback expert itself failing: an empty answer with both errors, no crash
    both = make_coe(pool, router, make_map(law="broken", fallback="broken")).generate(prompt)
    assert both.text == "" and "broken" in both.trace.error and not both.trace.used_fallback_expert
    pool.close()


class Boom(RuntimeError):
    pass


def _explode_after(model, calls: int):
    """Make ``model`` raise on its ``calls``-th forward pass (i.e. mid-generation)."""
    seen = {"n": 0}

    def hook(module, args, output):
        seen["n"] += 1
        if seen["n"] >= calls:
            raise Boom("simulated CUDA error in decode step")

    return model.register_forward_hook(hook), seen


def test_expert_raising_mid_generation_falls_back(checkpoints, router):
    pool = make_pool(checkpoints)
    coe = make_coe(pool, router)
    prompt = "Is the contract valid under state law?"
    with pool.use("beta") as loaded:          # load it, then sabotage its decode steps
        handle, seen = _explode_after(loaded.model, 3)
    try:
        answer = coe.generate(prompt)
        t = answer.trace
        assert seen["n"] >= 3, "the expert was not run"
        assert "simulated CUDA error" in t.error and "beta" in t.error
        assert t.used_fallback_expert and t.expert == "gamma"
        assert answer.text == pool.generate("gamma", prompt).text
        assert_pool_idle(pool)

        seen["n"] = 0
        with pytest.raises(ExpertError, match="simulated CUDA error"):
            make_coe(pool, router, on_error="raise").generate(prompt)
        assert_pool_idle(pool)

        # streaming: the fallback's chunks follow, the final Answer holds the fallback's text
        seen["n"] = 0
        items = list(coe.stream(prompt))
        final = items[-1]
        assert final.trace.used_fallback_expert and "simulated CUDA error" in final.trace.error
        assert final.text == pool.generate("gamma", prompt).text
        assert all(isinstance(c, str) for c in items[:-1])
        assert_pool_idle(pool)
    finally:
        handle.remove()
    # repaired: the same expert answers again, the pool never lost track of it
    fixed = coe.generate(prompt)
    assert fixed.trace.error is None and fixed.trace.expert == "beta"
    assert fixed.trace.tier_found == "cpu"
    pool.close()


# -------------------------------------------------------------------------------- batch grouping
class CountingPool:
    """Stand-in pool that records the order experts are used in."""

    def __init__(self, names, fail=()):
        self.names, self.fail, self.calls, self.prefetched = list(names), set(fail), [], []

    def __contains__(self, name):
        return name in self.names

    def generate(self, name, prompt, **gen):
        from workbench.experts import Generation

        self.calls.append(name)
        if name in self.fail:
            raise ExpertError(f"expert {name!r} exploded")
        return Generation(f"{name} says: {prompt}", 3, 0.01, 300.0, "cpu", 0.0, name)

    def prefetch(self, name):
        self.prefetched.append(name)

    def residency(self):
        return [{"expert": n, "tier": "cpu" if n == "beta" else "disk"} for n in self.names]

    @property
    def switches(self):
        return sum(a != b for a, b in zip(self.calls, self.calls[1:]))


def test_generate_batch_groups_by_expert_and_keeps_input_order(router):
    from workbench.coe import CoE

    prompts = [MATH[0], LAW[0], MATH[1], LAW[1], MATH[2], LAW[2], "Solve for x"]
    seq_pool = CountingPool(["alpha", "beta", "gamma"])
    seq = CoE(KeywordEmbedder(), router, make_map(), seq_pool)
    sequential = [seq.generate(p) for p in prompts]

    pool = CountingPool(["alpha", "beta", "gamma"])
    embedder = KeywordEmbedder()
    coe = CoE(embedder, router, make_map(), pool)
    batch = coe.generate_batch(prompts)
    assert [a.text for a in batch] == [a.text for a in sequential]
    assert [a.trace.prompt for a in batch] == prompts
    assert pool.switches == 1 < seq_pool.switches == len(prompts) - 1
    assert pool.calls[0] == "beta"           # the expert already resident goes first
    assert pool.prefetched == ["alpha"]       # the next group is prefetched
    assert embedder.calls == 1                # one embedding call for the whole batch
    assert coe.generate_batch([]) == []


def test_generate_batch_reports_a_failing_group_without_losing_the_others(router):
    from workbench.coe import CoE

    pool = CountingPool(["alpha", "beta", "gamma"], fail={"beta"})
    coe = CoE(KeywordEmbedder(), router, make_map(), pool)
    out = coe.generate_batch([LAW[0], MATH[0], LAW[1]])
    assert [a.trace.used_fallback_expert for a in out] == [True, False, True]
    assert out[0].text == f"gamma says: {LAW[0]}" and out[1].text == f"alpha says: {MATH[0]}"
    assert "exploded" in out[2].trace.error
    with pytest.raises(ExpertError, match="exploded"):
        CoE(KeywordEmbedder(), router, make_map(), pool, on_error="raise").generate_batch([LAW[0]])


def test_map_edits_take_effect_and_a_bad_edit_is_reported(router):
    from workbench.coe import CoE

    pool = CountingPool(["alpha", "beta", "gamma"])
    mapping = make_map()
    coe = CoE(KeywordEmbedder(), router, mapping, pool)
    mapping.assign("law", "alpha")
    assert coe.generate(LAW[0]).trace.expert == "alpha"
    mapping.assign("law", "nobody")           # the map editor allowed it; the pool does not know it
    pool.fail.add("nobody")
    answer = coe.generate(LAW[0])
    assert answer.trace.error and "nobody" in answer.trace.error and answer.trace.expert == "gamma"


# ------------------------------------------------------------------------------ terminal chat
def test_chat_command_reads_stdin_streams_and_prints_traces(checkpoints, router, monkeypatch, capsys):
    import io
    import types

    import workbench.demo
    from workbench.cli import main

    pool = make_pool(checkpoints)
    coe = make_coe(pool, router)
    seen = {}

    def fake_bundle(**kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(coe=coe, summary=lambda: "tiny bundle")

    monkeypatch.setattr(workbench.demo, "build_demo_bundle", fake_bundle)
    monkeypatch.setattr("sys.stdin", io.StringIO("Solve 2x + 3 = 11\n\n/map\n/quit\nnever read\n"))
    assert main(["chat", "--budget", "4M", "--max-new-tokens", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert seen["budget_b"] == pytest.approx(0.004) and seen["progress"] is False
    expected = pool.generate("alpha", "Solve 2x + 3 = 11", max_new_tokens=5).text
    assert "tiny bundle" in out and "you> Solve 2x + 3 = 11" in out
    assert f"coe> {expected}" in out
    assert "route: math" in out and "expert: alpha [" in out and "tok/s" in out
    assert "fallback -> gamma" in out and "never read" not in out
    pool.close()


def test_chat_command_follows_the_conversation_rule(checkpoints, router, monkeypatch, capsys):
    import io
    import types

    import workbench.demo
    from workbench.cli import main
    from workbench.conversation import decide_turn

    pool = make_pool(checkpoints)
    coe = make_coe(pool, router)
    monkeypatch.setattr(workbench.demo, "build_demo_bundle",
                        lambda **kw: types.SimpleNamespace(coe=coe, summary=lambda: "tiny"))
    follow_up = LAW[0]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"Solve 2x + 3 = 11\n{follow_up}\n/new\n{follow_up}\n"))
    assert main(["chat", "--max-new-tokens", "3", "--switch-confidence", "0.99"]) == 0
    out = capsys.readouterr().out
    traces = [block for block in out.split("coe> ")[1:]]
    assert len(traces) == 3
    first_expert = coe.route("Solve 2x + 3 = 11").expert
    want = decide_turn(coe.route(follow_up), first_expert, threshold=0.99)
    assert f"expert: {want.expert} [" in traces[1] and f"turn: {want.rule}" in traces[1]
    assert "turn:" not in traces[0] and "turn:" not in traces[2]  # /new: a single prompt again
    assert f"expert: {coe.route(follow_up).expert} [" in traces[2]
    pool.close()


def test_chat_budget_parsing_and_bad_arguments(capsys):
    from workbench.cli import main
    from workbench.commands.chat import parse_budget

    assert parse_budget("4M") == pytest.approx(0.004) and parse_budget("0.5b") == 0.5
    assert parse_budget("0.002") == 0.002 and parse_budget(None) is None
    with pytest.raises(WorkbenchError, match="not a number"):
        parse_budget("lots")
    assert main(["chat", "--budget", "-1"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert main(["chat", "--map", "m.yaml"]) == 2
    assert "missing --experts, --router" in capsys.readouterr().err


def test_with_mapping_shares_the_heavy_objects_and_routes_with_its_own_map(checkpoints, router):
    pool = make_pool(checkpoints)
    coe = make_coe(pool, router)
    other = coe.with_mapping(make_map(math="beta"))
    assert other.pool is coe.pool and other.router is coe.router and other.embedder is coe.embedder
    assert other.route("Solve 2x + 3 = 11").expert == "beta"
    assert coe.route("Solve 2x + 3 = 11").expert == "alpha"  # the original map is untouched
    with pytest.raises(MappingError, match="does not hold"):
        coe.with_mapping(make_map(math="nobody"))
    pool.close()
