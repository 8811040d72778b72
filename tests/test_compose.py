"""Comp-LLM: query graphs, decomposers, per-node routing, the parallel executor, aggregation."""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from workbench.compose import (
    CoENodeRouter,
    Composer,
    DecomposeError,
    GraphExecutor,
    LLMAggregator,
    LLMDecomposer,
    QueryGraph,
    RuleDecomposer,
    SimilarityNodeRouter,
    SubQuery,
    TemplateAggregator,
    assign_experts,
    critical_path,
    parse_graph_json,
    routing_text,
)
from workbench.errors import ExpertError, GraphError

# ----------------------------------------------------------------------------------------------
# fakes (tests only)


class Recorder:
    """A runner that records calls and answers ``<expert>(<first line of prompt>)`` after a delay."""

    def __init__(self, delay: float = 0.0, fail: set[str] = frozenset(), delays: dict | None = None):
        self.delay = delay
        self.fail = set(fail)
        self.delays = delays or {}
        self.calls: list[tuple[str, str]] = []
        self.active = 0
        self.peak = 0
        self.peak_experts: set[str] = set()
        self.max_distinct = 0
        self._running: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, expert: str, prompt: str) -> str:
        with self._lock:
            self.calls.append((expert, prompt))
            self.active += 1
            self.peak = max(self.peak, self.active)
            self._running.append(expert)
            self.max_distinct = max(self.max_distinct, len(set(self._running)))
        try:
            time.sleep(self.delays.get(prompt.splitlines()[0], self.delay))
            if expert in self.fail:
                raise ExpertError(f"expert {expert!r}: weights are truncated")
            return f"{expert}({prompt.splitlines()[0]})"
        finally:
            with self._lock:
                self.active -= 1
                self._running.remove(expert)


class WordEmbedder:
    """Bag-of-words hashing embedder (deterministic)."""

    def encode(self, texts):
        out = np.zeros((len(texts), 64), dtype="float32")
        for i, t in enumerate(texts):
            for w in t.lower().replace("?", " ").replace(",", " ").replace(".", " ").split():
                out[i, sum(map(ord, w)) % 64] += 1.0
        return out


def graph(*nodes, query="q"):
    return QueryGraph([SubQuery(*n) if isinstance(n, tuple) else n for n in nodes], query=query)


# ----------------------------------------------------------------------------------------------
# QueryGraph


def test_graph_validates_cycles_with_the_path():
    with pytest.raises(GraphError, match=r"cycle: a needs c needs b needs a; a sub-query cannot"):
        graph(("a", "x {{c}}"), ("b", "y", ["a"]), ("c", "z", ["b"]))
    with pytest.raises(GraphError, match="depends on itself"):
        graph(("a", "x", ["a"]))


def test_graph_rejects_dangling_references_and_empty_sub_queries():
    with pytest.raises(GraphError, match="node 'b' depends on unknown node 'zz'; known nodes: a, b"):
        graph(("a", "x"), ("b", "y", ["zz"]))
    with pytest.raises(GraphError, match=r"placeholder \{\{nope\}\} but there is no node 'nope'"):
        graph(("a", "x"), ("b", "use {{nope}}"))
    with pytest.raises(GraphError, match="node 'b' has an empty sub-query"):
        graph(("a", "x"), ("b", "   "))
    with pytest.raises(GraphError, match="two nodes have the id 'a'"):
        graph(("a", "x"), ("a", "y"))
    with pytest.raises(GraphError, match="no nodes"):
        QueryGraph([])
    with pytest.raises(GraphError, match="node 'b' .* has no 'text'"):
        QueryGraph.from_dict({"nodes": [{"id": "a", "text": "x"}, {"id": "b"}]})
    with pytest.raises(GraphError, match="not valid JSON"):
        QueryGraph.from_json("{nodes: [")


def test_graph_json_round_trip_keeps_experts_meta_and_structure():
    g = graph(("a", "What is 2+2?", [], "math", "math", {"note": 1}), ("b", "Double {{a}}.", [], "math"),
              ("c", "Say hi", []), ("d", "Combine {{b}} and {{c}}", ["a"]), query="compound")
    again = QueryGraph.from_json(g.to_json())
    assert again.to_dict() == g.to_dict()
    assert again["a"].meta == {"note": 1} and again["a"].expert == "math"
    assert again.dependencies() == {"a": [], "b": ["a"], "c": [], "d": ["a", "b", "c"]}
    assert (again.depth, again.width) == (3, 2)
    assert again.levels() == [["a", "c"], ["b"], ["d"]]
    assert again.sinks() == ["d"]
    assert json.loads(g.to_json())["query"] == "compound"


def test_fill_needs_upstream_answers():
    g = graph(("a", "x"), ("b", "use {{a}} and {{ a }}"))
    assert g.fill("b", {"a": " 42 "}) == "use 42 and 42"
    with pytest.raises(GraphError, match="needs the answer of 'a', which is not available yet"):
        g.fill("b", {})


def test_critical_path_is_the_longest_weighted_chain():
    deps = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}
    assert critical_path(deps, {"a": 1, "b": 5, "c": 2, "d": 1}) == (7.0, ["a", "b", "d"])
    assert critical_path(deps, {"a": 1, "b": 1, "c": 3, "d": 1}) == (5.0, ["a", "c", "d"])


# ----------------------------------------------------------------------------------------------
# decomposers


@pytest.mark.parametrize("query, parts, deps", [
    ("What is 12 * 7? Then translate the result into Spanish.",
     ["What is 12 * 7?", "Translate the result into Spanish."], {"q2": ["q1"]}),
    ("What is the boiling point of water and why is it lower at altitude?",
     ["What is the boiling point of water?", "Why is it lower at altitude?"], {"q2": ["q1"]}),
    ("Explain recursion, and write a haiku about autumn",
     ["Explain recursion", "Write a haiku about autumn"], {"q2": []}),
    ("Who wrote Hamlet? When was it first performed? Compare both answers with Macbeth.",
     ["Who wrote Hamlet?", "When was it first performed?", "Compare both answers with Macbeth."],
     {"q2": ["q1"], "q3": ["q1", "q2"]}),
    ("Name a fruit; name a vegetable; then use the first one in a recipe.",
     ["Name a fruit", "Name a vegetable", "Use the first one in a recipe."], {"q2": [], "q3": ["q2"]}),
    ("Give me salt and pepper tips", ["Give me salt and pepper tips"], {}),
    ("什么是光合作用？它为什么重要？", ["什么是光合作用？", "它为什么重要？"], {"q2": ["q1"]}),
])
def test_rule_decomposer_splits_and_links(query, parts, deps):
    g = RuleDecomposer()(query)
    assert [routing_text(n.text) for n in g] == parts
    for nid, expected in deps.items():
        assert g[nid].dependencies == expected
        for d in expected:  # the upstream answer is injected by a placeholder
            assert f"{{{{{d}}}}}" in g[nid].text
    assert g.query == query


def test_rule_decomposer_ordinal_reference_wins_over_previous():
    g = RuleDecomposer()("Name a fruit. Name a vegetable. Put the first one in a smoothie.")
    assert g["q3"].dependencies == ["q1"]


def test_rule_decomposer_rejects_empty_query():
    with pytest.raises(GraphError, match="the query is empty"):
        RuleDecomposer()("  ")


def test_parse_graph_json_tolerates_fences_and_prose():
    g = parse_graph_json('Here you go:\n```json\n{"nodes": [{"id": "q1", "text": "A?"}, '
                         '{"id": "q2", "text": "B {{q1}}", "depends_on": ["q1"]}]}\n```', "A and B")
    assert g.ids == ["q1", "q2"] and g.query == "A and B"
    with pytest.raises(GraphError, match="no JSON object with a 'nodes' list"):
        parse_graph_json("q1: what is x? q2: what is y?")
    with pytest.raises(GraphError, match="cycle"):
        parse_graph_json('{"nodes": [{"id": "q1", "text": "{{q2}}"}, {"id": "q2", "text": "{{q1}}"}]}')


def test_llm_decomposer_retries_malformed_output_then_fails_clearly():
    replies = iter(["the the the {", '{"nodes": [{"id": "q1", "text": ""}]}', "```json\n[1, 2"])
    prompts = []

    def runner(expert, prompt):
        prompts.append((expert, prompt))
        return next(replies)

    dec = LLMDecomposer(runner, "generalist", max_attempts=3)
    with pytest.raises(DecomposeError, match=r"no valid query graph in 3 attempt\(s\); last error: .*last reply: '```json \[1, 2'") as info:
        dec("What is 2+2 and what is it squared?")
    assert len(prompts) == 3 and all(e == "generalist" for e, _ in prompts)
    assert "What is 2+2 and what is it squared?" in prompts[0][1]
    # each retry feeds the previous error back
    assert "could not be used" not in prompts[0][1]
    assert "empty sub-query" in prompts[2][1]
    assert [a["attempt"] for a in info.value.attempts] == [1, 2, 3]
    assert isinstance(info.value, GraphError)


def test_llm_decomposer_recovers_after_a_bad_reply():
    replies = iter(["I think: q1, q2", '{"nodes": [{"id": "q1", "text": "2+2?"}, '
                    '{"id": "q2", "text": "Square {{q1}}"}]}'])
    dec = LLMDecomposer(lambda e, p: next(replies), "g", max_attempts=2)
    g = dec("What is 2+2 and what is it squared?")
    assert g.dependencies() == {"q1": [], "q2": ["q1"]}
    assert [a["error"] is None for a in dec.attempts] == [False, True]
    assert g["q1"].meta["source"] == "llm:g"


def test_llm_decomposer_counts_expert_failures_as_attempts():
    def runner(expert, prompt):
        raise ExpertError("out of memory")

    with pytest.raises(DecomposeError, match="expert 'g' failed: out of memory"):
        LLMDecomposer(runner, "g", max_attempts=2)("x?")


# ----------------------------------------------------------------------------------------------
# per-node routing


def test_similarity_router_picks_the_closest_description():
    router = SimilarityNodeRouter(WordEmbedder(), {
        "math": "maths equations algebra solve numbers",
        "lang": "translate spanish german language",
    })
    g = graph(("a", "Solve the equations"), ("b", "Translate {{a}} into Spanish\nEarlier answer: {{a}}"))
    assign_experts(g, router)
    assert g.experts() == {"a": "math", "b": "lang"}
    assert g["b"].meta["routing"]["method"] == "similarity"
    assert g["b"].meta["routing"]["scores"]["lang"] > g["b"].meta["routing"]["scores"]["math"]
    # a hand-set expert is kept unless overwrite
    g["a"].expert = "lang"
    assign_experts(g, router)
    assert g["a"].expert == "lang"
    assign_experts(g, router, overwrite=True)
    assert g["a"].expert == "math"


def test_similarity_router_needs_descriptions():
    with pytest.raises(ExpertError, match=r"experts \['b'\] have no description"):
        SimilarityNodeRouter(WordEmbedder(), {"a": "maths", "b": ""})


def test_coe_router_uses_route_and_records_category():
    class FakeCoE:
        def __init__(self):
            self.seen = []

        def route(self, prompt):
            self.seen.append(prompt)
            return ("math", 0.9, False, "stem") if "solve" in prompt.lower() else ("fallback", 0.2, True, "generalist")

    coe = FakeCoE()
    g = graph(("a", "Solve x"), ("b", "Poem about {{a}}"))
    assign_experts(g, CoENodeRouter(coe))
    assert g.experts() == {"a": "stem", "b": "generalist"}
    assert g["a"].category == "math" and g["b"].meta["routing"]["is_fallback"] is True
    assert coe.seen == ["Solve x", "Poem about"]  # placeholders are not routed


# ----------------------------------------------------------------------------------------------
# executor


def diamond(expert=lambda n: "e"):
    return graph(("a", "root", [], expert("a")), ("b", "left {{a}}", [], expert("b")),
                 ("c", "right {{a}}", [], expert("c")), ("d", "join {{b}} {{c}}", [], expert("d")))


def test_placeholders_are_filled_in_dependency_order():
    rec = Recorder()
    res = GraphExecutor(rec, max_parallel=4).run(diamond())
    order = [p.splitlines()[0] for _, p in rec.calls]
    assert order[0] == "root" and order[-1].startswith("join")
    assert res.nodes["b"].prompt == "left e(root)"
    assert res.nodes["d"].prompt == "join e(left e(root)) e(right e(root))"
    assert res.answers["d"] == "e(join e(left e(root)) e(right e(root)))"
    assert res.complete and res.failed == []


def test_ready_nodes_run_in_parallel_and_wall_tracks_the_critical_path():
    g = graph(*[(f"n{i}", f"task {i}", [], f"e{i}") for i in range(6)], ("z", "sum " + " ".join(f"{{{{n{i}}}}}" for i in range(6)), [], "e0"))
    rec = Recorder(delay=0.15)
    res = GraphExecutor(rec, max_parallel=8).run(g)
    assert rec.peak == 6 and res.peak_parallel == 6
    cp_s, cp = res.critical_path
    assert cp[-1] == "z" and len(cp) == 2
    # the six ready nodes ran at the same time (their intervals overlap); how close the wall time
    # gets to the critical path is measured by benchmarks/bench_compose.py, not asserted here
    starts = [res.nodes[f"n{i}"].start_s for i in range(6)]
    ends = [res.nodes[f"n{i}"].end_s for i in range(6)]
    assert max(starts) < min(ends)
    seq = GraphExecutor(Recorder(delay=0.15), max_parallel=1).run(g)
    assert seq.peak_parallel == 1


def test_max_parallel_and_pool_capacity_bound_concurrency():
    g = graph(*[(f"n{i}", f"task {i}", [], f"e{i % 3}") for i in range(6)])
    rec = Recorder(delay=0.05)
    GraphExecutor(rec, max_parallel=2).run(g)
    assert rec.peak == 2

    class SizedRunner(Recorder):
        def capacity_bytes(self):
            return 200

        def expert_bytes(self, expert):
            return 100

    rec = SizedRunner(delay=0.05)
    res = GraphExecutor(rec, max_parallel=6).run(g)
    # at most two distinct experts at once; nodes of a running expert share its slot
    assert rec.max_distinct == 2 and rec.peak >= 3
    assert res.capacity_bytes == 200 and res.complete


def test_failing_expert_is_reported_and_independent_nodes_finish():
    g = graph(("a", "ok root", [], "good"), ("b", "bad", [], "broken"), ("c", "after {{b}}", [], "good"),
              ("d", "after {{c}}", [], "good"), ("e", "after {{a}}", [], "good"))
    res = GraphExecutor(Recorder(fail={"broken"}), max_parallel=4).run(g)
    assert res.failed == ["b"] and res.skipped == ["c", "d"] and res.missing == ["b", "c", "d"]
    assert not res.complete
    assert "weights are truncated" in res.nodes["b"].error and "ExpertError" in res.nodes["b"].error
    assert res.nodes["c"].error == "needs the answer of b, which is missing"
    assert res.nodes["d"].error == "needs the answer of c, which is missing"
    assert set(res.answers) == {"a", "e"}
    assert "b (failed, expert 'broken')" in res.summary()
    frame = res.to_frame()
    assert list(frame.sort_values("id")["status"]) == ["ok", "failed", "skipped", "skipped", "ok"]
    with pytest.raises(ExpertError, match="node 'b' .* failed: .*missing: b, c, d"):
        GraphExecutor(Recorder(fail={"broken"}), on_error="raise").run(g)


def test_executor_needs_an_expert_per_node():
    with pytest.raises(GraphError, match="node 'a' has no expert; route the graph first"):
        GraphExecutor(Recorder()).run(graph(("a", "x")))
    res = GraphExecutor(Recorder(), default_expert="g").run(graph(("a", "x")))
    assert res.answers == {"a": "g(x)"}


def test_executor_restores_torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    seen = []
    g = graph(*[(f"n{i}", f"t{i}", [], "e") for i in range(4)])
    res = GraphExecutor(lambda e, p: seen.append(torch.get_num_threads()) or "ok", torch_threads=1).run(g)
    assert set(seen) == {1} and res.torch_threads == 1
    assert torch.get_num_threads() == before


def test_auto_torch_threads_follow_concurrency_and_load(monkeypatch):
    pytest.importorskip("torch")
    import os

    import workbench.compose.execute as ex

    monkeypatch.setattr(ex, "usable_cores", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert [ex.resolve_torch_threads("auto", c) for c in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setattr(os, "getloadavg", lambda: (9.5, 9.0, 9.0))   # oversubscribed: one thread
    assert ex.resolve_torch_threads("auto", 1) == 1
    assert ex.resolve_torch_threads(3, 2) == 3 and ex.resolve_torch_threads(None, 2) is None
    with pytest.raises(GraphError, match="torch_threads must be 'auto', a positive int or None, got 'many'"):
        ex.resolve_torch_threads("many", 1)
    with pytest.raises(GraphError, match="at least 1"):
        ex.resolve_torch_threads(0, 1)


# ----------------------------------------------------------------------------------------------
# aggregation and the pipeline


def test_llm_aggregator_synthesises_and_falls_back_to_template():
    g = graph(("a", "What is 2+2?", [], "m"), ("b", "Translate {{a}}\nEarlier answer: {{a}}", [], "l"))
    res = GraphExecutor(Recorder()).run(g)
    seen = []
    agg = LLMAggregator(lambda e, p: seen.append(p) or "Four; cuatro.", "gen")("2+2 in Spanish?", res)
    assert agg.method == "llm" and agg.text == "Four; cuatro." and agg.expert == "gen"
    assert "Question: 2+2 in Spanish?" in seen[0] and "Answer 2: l(Translate m(What is 2+2?))" in seen[0]

    empty = LLMAggregator(lambda e, p: "   ", "gen")("2+2 in Spanish?", res)
    assert empty.method == "template" and "returned 0 characters" in empty.note
    assert "1. What is 2+2?\n   m(What is 2+2?)" in empty.text

    def broken(e, p):
        raise ExpertError("boom")

    fell = LLMAggregator(broken, "gen")("q", res)
    assert fell.method == "template" and "failed (ExpertError: boom)" in fell.note

    short = LLMAggregator(lambda e, p: "ok", "gen", max_part_chars=5)
    assert "Answer 1: m(Wh…\n" in short.prompt("q", res)


def test_template_aggregator_lists_what_is_missing():
    g = graph(("a", "ok", [], "good"), ("b", "bad", [], "broken"), ("c", "x {{b}}", [], "good"))
    res = GraphExecutor(Recorder(fail={"broken"})).run(g)
    agg = TemplateAggregator()("q", res)
    assert "Incomplete: 2 of 3 sub-questions have no answer (b, c)" in agg.text
    assert "[missing: skipped - needs the answer of b, which is missing]" in agg.text
    single = TemplateAggregator()("q", GraphExecutor(Recorder()).run(graph(("a", "hi", [], "e"))))
    assert single.text == "e(hi)"


def test_composer_end_to_end_with_similarity_routing():
    router = SimilarityNodeRouter(WordEmbedder(), {"math": "maths solve numbers multiply", "lang": "translate spanish"})
    rec = Recorder()
    composer = Composer(rec, node_router=router, decomposer="rule", aggregator="llm", llm_expert="lang")
    stages = []
    result = composer.run("Multiply 12 by 7. Then translate the result into Spanish.",
                          on_stage=lambda name, payload: stages.append(name))
    assert stages == ["graph", "routed", "executed", "answer"]
    assert result.graph.experts() == {"q1": "math", "q2": "lang"}
    assert result.execution.nodes["q2"].prompt.endswith("Earlier answer: math(Multiply 12 by 7.)")
    assert result.aggregation.method == "llm" and result.answer.startswith("lang(Answer the question")
    assert set(result.timings) == {"decompose", "route", "execute", "aggregate", "total"}
    assert json.loads(json.dumps(result.to_dict()))["execution"]["critical_path"] == ["q1", "q2"]
    assert "routing: similarity" in result.summary()


def test_composer_llm_decomposer_error_is_clear():
    composer = Composer(lambda e, p: "not json", decomposer="llm", aggregator="template", llm_expert="g",
                        decompose_attempts=2)
    with pytest.raises(DecomposeError, match=r"in 2 attempt\(s\).*decomposer='rule'"):
        composer.run("a and b?")
    with pytest.raises(GraphError, match="decomposer='llm' needs a runner and an expert"):
        Composer(lambda e, p: "x", decomposer="llm")
    with pytest.raises(GraphError, match="unknown decomposer 'magic'"):
        Composer(lambda e, p: "x", decomposer="magic")


# ----------------------------------------------------------------------------------------------
# the real pool (tiny random-init checkpoints)


def test_pool_runner_reports_a_broken_expert_and_finishes_the_rest(tmp_path):
    pytest.importorskip("transformers")
    from tests.helpers_models import write_tiny_llama
    from workbench.compose import PoolRunner
    from workbench.experts import ExpertPool, ExpertSpec

    good = write_tiny_llama(tmp_path / "good", hidden_size=32, num_layers=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((good / "config.json").read_text())
    (broken / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:100])
    pool = ExpertPool([ExpertSpec("good", good), ExpertSpec("broken", broken)], gpu_memory=None, cpu_memory="64MiB")
    try:
        runner = PoolRunner(pool, max_new_tokens=4)
        assert runner.capacity_bytes() == 64 * 2**20 and runner.expert_bytes("good") > 0
        g = graph(("a", "Hello, how are you", [], "good"), ("b", "What is x", [], "broken"),
                  ("c", "Write a poem {{a}}", [], "good"), ("d", "Solve {{b}}", [], "good"))
        res = GraphExecutor(runner, max_parallel=3).run(g)
        assert res.failed == ["b"] and res.skipped == ["d"] and set(res.answers) == {"a", "c"}
        assert "broken" in res.nodes["b"].error
        assert res.nodes["a"].new_tokens is not None and res.nodes["a"].new_tokens <= 4
        assert res.nodes["c"].prompt.startswith("Write a poem ")
    finally:
        pool.close()


def test_pool_runner_survives_concurrent_cold_loads(tmp_path):
    """Several experts switched in at once from disk: every node must get its weights."""
    pytest.importorskip("transformers")
    from tests.helpers_models import write_tiny_llama
    from workbench.compose import PoolRunner
    from workbench.experts import ExpertPool, ExpertSpec

    specs = [ExpertSpec(f"e{i}", write_tiny_llama(tmp_path / f"e{i}", hidden_size=32, num_layers=1, seed=i))
             for i in range(4)]
    pool = ExpertPool(specs, gpu_memory=None, cpu_memory="64MiB")
    try:
        g = graph(*[(f"n{i}", "Hello, how are you", [], f"e{i % 4}") for i in range(8)])
        res = GraphExecutor(PoolRunner(pool, max_new_tokens=3), max_parallel=8).run(g)
        assert res.complete, res.missing_report()
        assert res.peak_parallel == 8
        assert {res.nodes[f"n{i}"].tier_found for i in range(4)} <= {"cold", "disk", "cpu"}
    finally:
        pool.close()


# ----------------------------------------------------------------------------------------------
# figure, view model, command


def test_graph_figure_before_and_after_execution():
    pytest.importorskip("plotly")
    from workbench.plots.compose import expert_colors, graph_figure

    g = graph(("a", "root", [], "x"), ("b", "left {{a}}", [], "y"), ("c", "right {{a}}", [], "broken"),
              ("d", "join {{b}} {{c}}", [], "x"))
    before = graph_figure(g)
    assert len(before.layout.annotations) == len(g.edges()) == 4
    assert {t.name for t in before.data if t.showlegend is not False} == {"x", "y", "broken"}
    assert "depth 3, width 2" in before.layout.title.text

    res = GraphExecutor(Recorder(delay=0.02, fail={"broken"})).run(g)
    after = graph_figure(res)
    bars = {t.y[0].split(":")[0]: t for t in after.data}
    assert set(bars) == {"a", "b", "c", "d"}
    assert bars["c"].marker.line.color == "#cf222e" and bars["c"].text[0] == "failed"
    assert bars["d"].text[0] == "skipped" and bars["d"].marker.color == "#d0d7de"
    assert abs(bars["b"].base[0] - res.nodes["b"].start_s) < 1e-9
    assert after.layout.xaxis.title.text == "seconds since the run started"
    assert "missing: c, d" in after.layout.title.text
    # arrows only between nodes that ran (b after a; c after a)
    assert len(after.layout.annotations) == 2
    colors = expert_colors(["y", "x", "x", None])
    assert list(colors) == ["x", "y"] and colors["x"] != colors["y"]


def _fake_model():
    pytest.importorskip("panel")
    from workbench.ui.compose_view import ComposeModel

    router = SimilarityNodeRouter(WordEmbedder(), {"math": "maths solve numbers multiply", "lang": "translate spanish"})

    def make(*, decomposer, routing, aggregator, max_parallel, max_new_tokens):
        return Composer(Recorder(), node_router=router, decomposer=decomposer, aggregator=aggregator,
                        llm_expert="lang", max_parallel=max_parallel or None)

    return ComposeModel(make)


def test_compose_model_runs_previews_and_reports_errors():
    model = _fake_model()
    model.query = "Multiply 12 by 7. Then translate the result into <b>Spanish</b>."
    graph = model.preview()
    assert graph.experts() == {"q1": "math", "q2": "lang"} and model.result is None
    assert list(model.nodes_frame()["status"]) == ["waiting", "waiting"]
    result = model.run()
    assert result.complete and model.result is result and not model.running
    assert model.status.startswith("2/2 answered") and "aggregation: llm" in model.status
    frame = model.nodes_frame()
    assert list(frame["status"]) == ["ok", "ok"] and frame.loc[1, "needs"] == "q1"
    assert model.figure() is not None and model.version >= 4  # start + end per node
    model.decomposer = "llm"
    with pytest.raises(DecomposeError):
        model.run()
    assert "no valid query graph" in model.error and model.status == "error"
    model.query = "  "
    with pytest.raises(GraphError, match="the query is empty"):
        model.run()


def test_compose_panel_escapes_model_text():
    from workbench.ui.compose_view import ComposePanel

    model = _fake_model()
    model.query = "Say <script>alert(1)</script> please"
    model.aggregator = "template"
    panel = ComposePanel(model)
    model.run()
    panel.refresh()
    assert "<script>" not in panel._answer.object and "&lt;script&gt;" in panel._answer.object
    assert panel._figure.object is not None and len(panel._table.value) == len(model.graph)


def test_compose_command_errors_are_clear(tmp_path, capsys):
    from workbench.cli import main

    assert main(["compose"]) == 2
    assert "give a QUERY" in capsys.readouterr().err
    bad = tmp_path / "g.json"
    bad.write_text('{"nodes": [{"id": "a", "text": "x", "depends_on": ["b"]}]}')
    assert main(["compose", "--graph", str(bad)]) == 2
    assert "depends on unknown node 'b'" in capsys.readouterr().err
    assert main(["compose", "--graph", str(tmp_path / "missing.json")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_process_pool_runner_runs_nodes_in_worker_processes(tmp_path):
    pytest.importorskip("transformers")
    from tests.helpers_models import write_tiny_llama
    from workbench.compose import PoolRunner, ProcessPoolRunner
    from workbench.experts import ExpertPool, ExpertSpec

    specs = [ExpertSpec(f"e{i}", write_tiny_llama(tmp_path / f"e{i}", hidden_size=32, num_layers=1, seed=i))
             for i in range(2)]
    g = graph(("a", "Hello, how are you", [], "e0"), ("b", "What is x", [], "e1"),
              ("c", "Write a poem {{a}} {{b}}", [], "e0"))
    with ProcessPoolRunner(specs, workers=2, max_new_tokens=3) as procs:
        assert procs.max_concurrency == 2 and procs.expert_bytes("e0") > 0
        res = GraphExecutor(procs, max_parallel=8).run(g.copy())
        with pytest.raises(ExpertError, match="unknown expert 'nope'"):
            procs("nope", "x")
    assert res.complete and res.max_parallel == 2 and res.nodes["a"].new_tokens <= 3
    pool = ExpertPool(specs, gpu_memory=None)
    try:
        local = GraphExecutor(PoolRunner(pool, max_new_tokens=3)).run(g.copy())
    finally:
        pool.close()
    assert local.answers == res.answers  # same greedy outputs in the workers and in-process


@pytest.mark.slow
def test_compose_on_the_demo_bundle():
    """End to end on the real demo experts (trains them when the cache is cold)."""
    from workbench.compose import CoENodeRouter
    from workbench.demo import build_demo_bundle

    bundle = build_demo_bundle(progress=False)
    names = {s.name for s in bundle.specs}
    query = "Solve 2x + 3 = 11. Then explain the answer in Spanish, and write a short poem about the sea."
    for routing in ("similarity", "coe"):
        composer = Composer.from_bundle(bundle, routing=routing, gen={"max_new_tokens": 8})
        result = composer.run(query)
        assert result.complete and len(result.graph) == 3
        assert set(result.graph.experts().values()) <= names
        assert result.graph["q2"].dependencies == ["q1"]
        assert result.execution.nodes["q2"].prompt.endswith(result.execution.nodes["q1"].text.strip())
        assert result.aggregation.method in ("llm", "template") and result.answer.strip()
        assert all(r.new_tokens is not None and r.new_tokens <= 8 for r in result.execution.nodes.values())
    coe_graph = assign_experts(RuleDecomposer()(query), CoENodeRouter(bundle.coe))
    assert all(n.category for n in coe_graph)
    # the real generalist, decoding constrained to the graph schema: always a valid graph
    dec = LLMDecomposer(_pool_runner(bundle), bundle.mapping.fallback_expert, max_attempts=2)
    graph = dec(query)
    assert 1 <= len(graph) <= 4 and graph.validate() is graph
    # unconstrained, a small model may still fail: then retries and a clear error
    free = LLMDecomposer(_pool_runner(bundle), bundle.mapping.fallback_expert, max_attempts=1, constrained=False)
    try:
        free(query)
    except DecomposeError as exc:
        assert "no valid query graph in 1 attempt(s)" in str(exc) and len(exc.attempts) == 1


def _pool_runner(bundle):
    from workbench.compose import PoolRunner

    return PoolRunner(bundle.pool, max_new_tokens=24)


# ----------------------------------------------------------------------------------------------
# the LLM decomposer's constrained decoding: the schema admits valid graphs only


def _schema_accepts(schema, text):
    """Whether lm-format-enforcer's parser for ``schema`` accepts ``text`` whole, char by char."""
    from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser

    parser = JsonSchemaParser(schema, config=CharacterLevelParserConfig(force_json_field_order=True))
    for ch in text:
        if ch not in parser.get_allowed_characters():
            return False
        parser = parser.add_character(ch)
    return parser.can_end()


@pytest.mark.parametrize("reply, ok", [
    ('{"q1": {"text": "What is 12 * 7?"}}', True),
    ('{"q1": {"text": "What is 12 * 7?"}, "q2": {"text": "Translate it.", "depends_on": ["q1"]}}', True),
    ('{"q1": {"text": "abc"}, "q2": {"text": "def", "depends_on": []}, "q3": {"text": "ghi", "depends_on": ["q1", "q2"]}}', True),
    ('{"q1": {"text": "abc", "depends_on": ["q1"]}}', False),                                   # self-dependency
    ('{"q1": {"text": "abc"}, "q2": {"text": "def", "depends_on": ["q2"]}}', False),             # self-dependency
    ('{"q1": {"text": "abc"}, "q2": {"text": "def", "depends_on": ["q3"]}}', False),             # forward / dangling
    ('{"q1": {"text": "abc"}, "q3": {"text": "def", "depends_on": ["q1"]}}', False),             # skipped id
    ('{"q2": {"text": "abc"}}', False),
    ('{"q1": {"text": "abc"}', False),                                                          # not closed
])
def test_graph_schema_admits_only_valid_graphs(reply, ok):
    from workbench.compose.decompose import GRAPH_SCHEMA, parse_graph_json

    assert _schema_accepts(GRAPH_SCHEMA, reply) is ok
    if ok:
        graph = parse_graph_json(reply)
        graph.validate()


def test_span_schema_texts_come_from_the_query():
    from workbench.compose.decompose import LLMDecomposer

    dec = LLMDecomposer(lambda expert, prompt: "", "any")
    schema = dec.generation("What is 12 * 7? Then translate the result into Spanish.")["json_schema"]
    good = '{"q1": {"text": "What is 12 * 7?"}, "q2": {"text": "Translate the result into Spanish.", "depends_on": ["q1"]}}'
    assert _schema_accepts(schema, good)
    assert not _schema_accepts(schema, '{"q1": {"text": "12 * 7 = 84"}}')                   # an answer, not a part
    assert LLMDecomposer(lambda e, p: "", "any", constrained=False).generation("x y") == {}


def test_keyed_reply_dedupes_repeated_parts_and_inserts_answers():
    from workbench.compose.decompose import parse_graph_json

    g = parse_graph_json('{"q1": {"text": "A {{q9}}?"}, "q2": {"text": "A {{q9}}?", "depends_on": ["q1"]}, '
                         '"q3": {"text": "B", "depends_on": ["q2"]}}')
    assert g.ids == ["q1", "q3"] and g.dependencies()["q3"] == ["q1"]
    assert "{{q9}}" not in g["q1"].text and g["q3"].text.endswith("{{q1}}")
