"""The OpenAI-compatible API: the official ``openai`` client against a real uvicorn server on
127.0.0.1 (non-streaming, streaming, 8 concurrent clients), plain HTTP for the error cases, the
conversation rule, cancellation and the fallback expert.

The CoE is real: MiniLM embedder, a router fitted on a few prompts, the map and an ExpertPool of
two tiny random-init Llama experts (``tiny_experts``), so answers are real (greedy) generations.
"""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from helpers_chat import CATEGORY_PROMPTS, make_coe, make_pool  # noqa: E402

MATH = "Solve for x: 3 x + 5 = 20."
LAW = "What did the court rule about the lease?"


@pytest.fixture(scope="module")
def served(tiny_experts):
    from workbench.serve.api import create_api, start_in_thread

    pool = make_pool(tiny_experts)
    coe = make_coe(pool)
    app = create_api(coe, max_concurrent=2)
    url, stop = start_in_thread(app)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
    yield SimpleNamespace(coe=coe, pool=pool, url=url, engine=app.state.engine, client=client)
    stop()
    pool.close()


def post(served, body, **kw):
    raw = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(f"{served.url}/v1/chat/completions", content=raw,
                      headers={"content-type": "application/json", **kw.pop("headers", {})},
                      timeout=60, **kw)


def user(text):
    return [{"role": "user", "content": text}]


def assert_idle(served):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if served.engine.metrics.in_flight == 0 and not any(r["in_use"] for r in served.pool.residency()):
            return
        time.sleep(0.05)
    raise AssertionError(f"still busy: {served.engine.metrics.in_flight} in flight, {served.pool.residency()}")


# ------------------------------------------------------------------------------- the openai client
def test_models_lists_the_coe_and_every_expert(served):
    ids = [m.id for m in served.client.models.list()]
    assert ids == ["coe", "tiny-a", "tiny-b"]
    card = served.client.models.retrieve("tiny-b")
    assert card.id == "tiny-b" and card.model_extra["coe"]["categories"] == ["law"]


def test_openai_client_gets_a_real_answer_with_trace_and_headers(served):
    raw = served.client.chat.completions.with_raw_response.create(
        model="coe", messages=user(MATH), max_tokens=8)
    completion = raw.parse()
    route = served.coe.route(MATH)
    assert raw.headers["x-coe-category"] == route.category == "math"
    assert raw.headers["x-coe-expert"] == route.expert == "tiny-a"
    assert abs(float(raw.headers["x-coe-confidence"]) - route.confidence) < 1e-3
    assert raw.headers["x-coe-fallback"] == "false" and raw.headers["x-coe-tier"] in ("cold", "disk", "cpu")
    text = completion.choices[0].message.content
    # the same greedy answer as the CoE gives in-process
    assert text and text == served.coe.generate(MATH, max_new_tokens=8).text
    trace = completion.model_extra["coe_trace"]
    assert trace["expert"] == "tiny-a" and trace["rule"] == "routed" and trace["new_tokens"] == 8
    assert trace["error"] is None and trace["prompt"] == MATH
    assert completion.choices[0].finish_reason == "length"
    usage = completion.usage
    assert usage.completion_tokens == 8 and usage.prompt_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + 8


def test_streaming_with_the_openai_client(served):
    stream = served.client.chat.completions.create(
        model="coe", messages=user(LAW), max_tokens=8, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(final) == 1 and final[0].choices[0].finish_reason == "length"
    trace = final[0].model_extra["coe_trace"]
    assert trace["category"] == "law" and trace["expert"] == "tiny-b"
    assert text == served.coe.generate(LAW, max_new_tokens=8).text
    assert chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices


def test_raw_stream_is_server_sent_events_ending_with_done(served):
    body = {"model": "coe", "messages": user(MATH), "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-coe-expert"] == "tiny-a" and r.headers["x-coe-category"] == "math"
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert "coe_trace" in events[-1] and events[-1]["choices"][0]["finish_reason"]


def test_an_expert_name_forces_that_expert(served):
    raw = served.client.chat.completions.with_raw_response.create(
        model="tiny-b", messages=user(MATH), max_tokens=4)
    trace = raw.parse().model_extra["coe_trace"]
    assert raw.headers["x-coe-expert"] == "tiny-b" and raw.headers["x-coe-rule"] == "forced"
    assert trace["category"] == "math" and trace["map_expert"] == "tiny-a" and trace["expert"] == "tiny-b"
    assert raw.parse().model == "tiny-b"


def test_stop_sequences_cut_the_answer(served):
    full = served.coe.generate(MATH, max_new_tokens=12).text
    words = full.split()
    assert len(words) > 3
    stop = " " + words[2]
    cut = full[:full.index(stop)]
    for stream in (False, True):
        out = served.client.chat.completions.create(model="coe", messages=user(MATH), max_tokens=12,
                                                    stop=[stop], stream=stream)
        if stream:
            chunks = list(out)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        else:
            text, finish = out.choices[0].message.content, [out.choices[0].finish_reason]
        assert text == cut and finish == ["stop"], (stream, text, cut)


def test_sampling_settings_are_accepted(served):
    def ask():
        return served.client.chat.completions.create(model="coe", messages=user(MATH), max_tokens=4,
                                                     temperature=0.8, top_p=0.9, seed=3)
    out = ask()
    assert out.choices[0].message.content and out.usage.completion_tokens <= 4
    assert ask().choices[0].message.content == out.choices[0].message.content  # seeded


# -------------------------------------------------------------------------- conversation routing
def test_conversation_keeps_or_switches_the_expert_by_the_rule(served):
    from workbench.conversation import decide_turn

    first = served.client.chat.completions.create(model="coe", messages=user(MATH), max_tokens=6)
    reply = first.choices[0].message.content
    assert first.model_extra["coe_trace"]["rule"] == "routed"
    for follow_up in ("and why?", LAW, "Compute 17 times 23."):
        messages = [*user(MATH), {"role": "assistant", "content": reply}, *user(follow_up)]
        trace = served.client.chat.completions.create(model="coe", messages=messages,
                                                      max_tokens=4).model_extra["coe_trace"]
        # the server remembered which expert wrote the previous answer
        assert trace["previous_expert"] == "tiny-a"
        expected = decide_turn(served.coe.route(follow_up), "tiny-a", threshold=trace["switch_confidence"])
        assert (trace["rule"], trace["expert"]) == (expected.rule, expected.expert), follow_up
        assert trace["category"] == served.coe.route(follow_up).category


def test_the_rule_keeps_the_expert_unless_confidently_different(served):
    from workbench.serve.engine import ServeEngine
    from workbench.serve.protocol import parse_chat_request

    history = [*user(MATH), {"role": "assistant", "content": "x is 5", "name": "tiny-a"}]
    route = served.coe.route(LAW)
    assert route.expert == "tiny-b"
    for threshold, rule, expert in ((0.0, "switched", "tiny-b"), (1.0, "kept", "tiny-a")):
        engine = ServeEngine(served.coe, switch_confidence=threshold)
        req = parse_chat_request(json.dumps({"model": "coe", "messages": [*history, *user(LAW)]}),
                                 engine.models)
        d = engine.prepare(req).decision
        assert (d.rule, d.expert, d.previous_expert, d.category) == (rule, expert, "tiny-a", "law")


def test_decide_turn_rules():
    from workbench.coe import Route
    from workbench.errors import UsageError
    from workbench.conversation import decide_turn

    assert decide_turn(Route("law", 0.9, False, "b")).rule == "routed"
    assert decide_turn(Route("law", 0.9, False, "b"), "b").rule == "same"
    kept = decide_turn(Route("law", 0.5, False, "b"), "a", threshold=0.6)
    assert (kept.rule, kept.expert, kept.routed_expert) == ("kept", "a", "b")
    assert decide_turn(Route("fallback", 0.95, True, "c"), "a").rule == "kept"
    assert decide_turn(Route("law", 0.6, False, "b"), "a", threshold=0.6).expert == "b"
    assert decide_turn(Route("law", 0.1, False, "b"), "a", forced="c").rule == "forced"
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        decide_turn(Route("law", 0.5, False, "b"), "a", threshold=1.5)


# ------------------------------------------------------------------------------------ bad requests
BAD = [
    (b"{not json", 400, None, "not valid JSON"),
    (b"", 400, None, "empty"),
    (b"[1, 2]", 400, None, "JSON object"),
    ({"messages": user("hi")}, 400, "model", "'model' is required"),
    ({"model": "coe"}, 400, "messages", "'messages' is required"),
    ({"model": "coe", "messages": []}, 400, "messages", "non-empty list"),
    ({"model": "gpt-9", "messages": user("hi")}, 404, "model", "does not exist"),
    ({"model": "coe", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", "must be a string"),
    ({"model": "coe", "messages": [{"role": "user", "content": {"a": 1}}]}, 400, "messages[0].content", "must be a string"),
    ({"model": "coe", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role", "one of"),
    ({"model": "coe", "messages": [{"role": "system", "content": "hi"}]}, 400, "messages", "no message with role 'user'"),
    ({"model": "coe", "messages": user("   ")}, 400, "messages[0].content", "empty"),
    ({"model": "coe", "messages": user("hi"), "max_tokens": 0}, 400, "max_tokens", "from 1 to"),
    ({"model": "coe", "messages": user("hi"), "max_tokens": 10**6}, 400, "max_tokens", "from 1 to"),
    ({"model": "coe", "messages": user("hi"), "max_tokens": "8"}, 400, "max_tokens", "integer"),
    ({"model": "coe", "messages": user("hi"), "max_completion_tokens": -1}, 400, "max_completion_tokens", "from 1 to"),
    ({"model": "coe", "messages": user("hi"), "temperature": 3}, 400, "temperature", "[0, 2]"),
    ({"model": "coe", "messages": user("hi"), "top_p": 0}, 400, "top_p", "(0, 1]"),
    ({"model": "coe", "messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "1 to 4"),
    ({"model": "coe", "messages": user("hi"), "n": 2}, 400, "n", "must be 1"),
    ({"model": "coe", "messages": user("hi"), "stream": "yes"}, 400, "stream", "true or false"),
    ({"model": "coe", "messages": user(MATH + " word" * 400)}, 400, "messages", "longer than the context"),
    ({"model": "coe", "messages": user(MATH), "max_tokens": 250}, 400, "max_tokens", "at most"),
]


@pytest.mark.parametrize("body,status,param,words", BAD, ids=[f"{b[1]}-{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_openai_style_errors(served, body, status, param, words):
    r = post(served, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    assert words in err["message"], err["message"]
    assert "Traceback" not in r.text and "File \"" not in r.text


def test_openai_client_raises_the_matching_exceptions(served):
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        served.client.chat.completions.create(model="nope", messages=user("hi"))
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        served.client.chat.completions.create(model="coe", messages=user("hi"), max_tokens=0)


def test_unknown_paths_and_methods_are_json_errors(served):
    r = httpx.get(f"{served.url}/v2/everything")
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]["message"]
    r = httpx.get(f"{served.url}/v1/chat/completions")
    assert r.status_code == 405 and "not allowed" in r.json()["error"]["message"]
    r = httpx.get(f"{served.url}/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_health_and_metrics(served):
    served.client.chat.completions.create(model="coe", messages=user(LAW), max_tokens=4)
    health = httpx.get(f"{served.url}/health").json()
    assert health["status"] == "ok" and health["models"] == ["coe", "tiny-a", "tiny-b"]
    text = httpx.get(f"{served.url}/metrics").text
    for name in ("coe_requests_total{", "coe_expert_tokens_per_second{expert=\"tiny-b\"}",
                 "coe_expert_switch_seconds_total{", "coe_request_errors_total{", "coe_in_flight 0"):
        assert name in text, name
    assert "# TYPE coe_requests_total counter" in text


def test_api_key_is_required_when_set(tiny_experts):
    from workbench.serve.api import create_api, start_in_thread

    pool = make_pool(tiny_experts)
    url, stop = start_in_thread(create_api(make_coe(pool), api_key="s3cret"))
    try:
        r = httpx.get(f"{url}/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/metrics", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert client.chat.completions.create(model="coe", messages=user(MATH), max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
    finally:
        stop()
        pool.close()


# ----------------------------------------------------------------------- concurrency and failures
def test_eight_concurrent_clients_five_requests_each(served):
    prompts = [p for ps in CATEGORY_PROMPTS.values() for p in ps]
    routes = {p: served.coe.route(p) for p in prompts}
    served.engine.metrics.peak_in_flight = 0
    results, errors = [], []

    def client_work(k):
        client = openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0, timeout=120)
        for j in range(5):
            prompt = prompts[(k * 5 + j) % len(prompts)]
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="coe", messages=user(prompt), max_tokens=6, stream=(j % 2 == 1))
                if j % 2:
                    chunks = list(raw.parse())
                    trace = [c for c in chunks if c.choices and c.choices[0].finish_reason][0].model_extra["coe_trace"]
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                else:
                    completion = raw.parse()
                    trace, text = completion.model_extra["coe_trace"], completion.choices[0].message.content
                results.append((prompt, raw.headers["x-coe-expert"], trace, text))
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(repr(exc))

    threads = [threading.Thread(target=client_work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert errors == [] and len(results) == 40
    for prompt, header_expert, trace, text in results:
        route = routes[prompt]
        assert (trace["category"], trace["expert"], trace["is_fallback"]) == \
            (route.category, route.expert, route.is_fallback), prompt
        assert header_expert == route.expert and trace["prompt"] == prompt and text
        assert abs(trace["confidence"] - route.confidence) < 1e-4
    assert 1 <= served.engine.metrics.peak_in_flight <= 2  # max_concurrent=2: the rest queued
    assert_idle(served)


def test_cancel_stops_the_generation_within_a_token(served):
    from workbench.serve.protocol import parse_chat_request

    engine = served.engine
    req = parse_chat_request(json.dumps({"model": "coe", "messages": user(MATH), "max_tokens": 200}),
                             engine.models)
    cancel = threading.Event()
    result = engine.run(engine.prepare(req), cancel, on_text=lambda text: cancel.set())
    assert result.cancelled and result.finish_reason == "cancelled"
    assert result.trace["new_tokens"] < 20
    assert_idle(served)


def test_client_disconnect_mid_stream_frees_the_slot(served):
    body = {"model": "coe", "messages": user(MATH), "max_tokens": 230, "stream": True}
    before = len(served.engine.recent)
    with httpx.stream("POST", f"{served.url}/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # one real chunk, then hang up
    deadline = time.monotonic() + 20
    while len(served.engine.recent) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    result = served.engine.recent[-1]
    assert result.cancelled and result.trace["new_tokens"] < 230  # stopped, not run to the end
    assert_idle(served)
    assert "status=\"499\"" in httpx.get(f"{served.url}/metrics").text
    # and the server still answers
    assert served.client.chat.completions.create(model="coe", messages=user(MATH), max_tokens=2).choices


def test_expert_failing_mid_generation_is_answered_by_the_fallback(served):
    class Boom(RuntimeError):
        pass

    def explode(module, args, output):
        raise Boom("simulated CUDA error in decode step")

    with served.pool.use("tiny-b") as loaded:
        handle = loaded.model.register_forward_hook(explode)
    try:
        raw = served.client.chat.completions.with_raw_response.create(
            model="coe", messages=user(LAW), max_tokens=4)
        trace = raw.parse().model_extra["coe_trace"]
        assert trace["used_fallback_expert"] and trace["expert"] == "tiny-a"
        assert trace["routed_expert"] == "tiny-b" and "simulated CUDA error" in trace["error"]
        assert raw.headers["x-coe-fallback-expert"] == "true" and raw.headers["x-coe-expert"] == "tiny-a"
        assert raw.parse().choices[0].message.content
        chunks = list(served.client.chat.completions.create(model="coe", messages=user(LAW),
                                                            max_tokens=4, stream=True))
        final = [c for c in chunks if c.choices and c.choices[0].finish_reason][0]
        assert final.model_extra["coe_trace"]["used_fallback_expert"]
        # forcing the broken expert: the fallback expert still answers, and the trace says so
        forced = post(served, {"model": "tiny-b", "messages": user(LAW), "max_tokens": 4})
        assert forced.status_code == 200 and forced.json()["coe_trace"]["used_fallback_expert"]
    finally:
        handle.remove()
    assert_idle(served)


def test_every_expert_failing_is_a_502_json_error(served):
    def explode(module, args, output):
        raise RuntimeError("simulated CUDA error in decode step")

    handles = []
    for name in ("tiny-a", "tiny-b"):
        with served.pool.use(name) as loaded:
            handles.append(loaded.model.register_forward_hook(explode))
    try:
        r = post(served, {"model": "coe", "messages": user(LAW), "max_tokens": 4})
        assert r.status_code == 502 and r.json()["error"]["code"] == "expert_failed"
        assert "simulated CUDA error" in r.json()["error"]["message"] and "Traceback" not in r.text
    finally:
        for handle in handles:
            handle.remove()
    assert_idle(served)
    assert served.client.chat.completions.create(model="coe", messages=user(LAW), max_tokens=2).choices


def test_import_workbench_does_not_import_fastapi():
    import subprocess
    import sys

    code = ("import sys, workbench, workbench.serve, workbench.coe, workbench.commands.serve_api; "
            "print(any(m in sys.modules for m in ('fastapi', 'uvicorn', 'openai', 'torch')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
