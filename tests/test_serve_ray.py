"""The Ray Serve backend on a local Ray instance (127.0.0.1, isolated HOME and temp dir, shut down
after): the openai client against it, the same greedy answers, routing and errors as the
in-process server, multiplexing with K=1 < 2 experts (evictions happen, answers stay right) and a
replica killed mid-answer (a clear error, not a hang; Ray restarts it and later requests succeed).

Opt-in (``slow``): ``pytest -m slow tests/test_serve_ray.py``; skipped without ``ray``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from helpers_chat import make_coe, make_pool

try:
    import ray
    from ray import serve as _serve  # noqa: F401
except ImportError:
    ray = None


def needs_ray(test):
    """A test that starts Ray: opt-in (slow), skipped without ray."""
    marks = (pytest.mark.slow, pytest.mark.timeout(900),
             pytest.mark.skipif(ray is None, reason="ray[serve] is not installed (pip install 'coe-workbench[ray]')"))
    for mark in marks:
        test = mark(test)
    return test

MATH = "Solve for x: 3 x + 5 = 20."
LAW = "What did the court rule about the lease?"
PROMPTS = [MATH, LAW, "Compute 17 times 23.", "Can a landlord keep the deposit?", MATH, LAW]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------ without starting Ray
def test_a_missing_ray_names_the_extra(monkeypatch):
    import sys

    from workbench.errors import MissingDependencyError
    from workbench.serve.ray_backend import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match=r"coe-workbench\[ray\]"):
        require_ray()


def test_import_workbench_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, workbench, workbench.serve.ray_backend; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def bundle(tiny_experts, tmp_path_factory):
    pool = make_pool(tiny_experts)
    try:
        yield make_coe(pool).save(tmp_path_factory.mktemp("ray-cfg") / "coe")
    finally:
        pool.close()


def test_export_writes_a_serve_config(bundle, tmp_path):
    import yaml

    from workbench.serve.ray_backend import write_ray_config

    path = write_ray_config(bundle, tmp_path / "serve.yaml", replicas=3, experts_per_replica=1)
    config = yaml.safe_load(path.read_text())
    app = config["applications"][0]
    assert app["import_path"] == "workbench.serve.ray_backend:build_app"
    assert app["args"]["bundle"] == str(bundle) and app["args"]["experts_per_replica"] == 1
    experts = {d["name"]: d for d in app["deployments"]}["CoEExperts"]
    assert experts["num_replicas"] == 3 and experts["ray_actor_options"]["memory"] > 1 << 30
    assert "num_gpus" not in experts["ray_actor_options"]  # the bundle has no GPU budget
    if ray is not None:  # Ray's own schema of `serve deploy` files accepts it
        from ray.serve.schema import ServeDeploySchema

        getattr(ServeDeploySchema, "model_validate", ServeDeploySchema.parse_obj)(config)


def test_cli_options_reach_the_ray_backend(bundle, tmp_path, monkeypatch):
    import workbench.serve.ray_backend as rb
    from workbench.cli import main

    seen = {}
    monkeypatch.setattr(rb, "require_ray", lambda: None)
    monkeypatch.setattr(rb, "serve_ray", lambda b, **kw: seen.update(kw, bundle=b))
    assert main(["serve-api", str(bundle), "--backend", "ray", "--replicas", "2",
                 "--experts-per-replica", "1", "--port", "8123"]) == 0
    assert seen["replicas"] == 2 and seen["experts_per_replica"] == 1 and seen["port"] == 8123
    assert main(["export", str(tmp_path / "again"), "--from", str(bundle), "--quiet",
                 "--ray-config", str(tmp_path / "s.yaml"), "--replicas", "2"]) == 0
    assert "CoEExperts" in (tmp_path / "s.yaml").read_text()


def test_an_answer_cut_short_at_the_ingress_counts_tokens_not_chunks():
    """A stop sequence (or a departing client) cancels the replica's stream, so its own token
    count never arrives: the ingress counts the text it got with the expert's tokenizer."""
    from workbench.serve.ray_experts import RemotePool, RemoteStream

    class Response:  # Ray's streaming response: an iterator of items with cancel()
        def __init__(self, items):
            self.items, self.cancelled = iter(items), False

        def __iter__(self):
            return self.items

        def cancel(self):
            self.cancelled = True

    halt = threading.Event()
    chunks = ["The answer is x equals five", " because three x is fifteen", " and more"]
    pool = RemotePool(handle=None, specs={})
    counted = []
    pool.count_tokens = lambda name, text: counted.append((name, text)) or len(text.split())

    def read(stream):
        out = []
        for chunk in stream:
            out.append(chunk)
            if len(out) == 2:
                halt.set()  # the engine saw a stop sequence in the second chunk
        return out

    response = Response(chunks)
    stream = RemoteStream(pool, "tiny-a", response, [halt])
    assert read(stream) == chunks[:2] and response.cancelled
    assert counted == [("tiny-a", "".join(chunks[:2]))]
    assert stream.generation.new_tokens == 11  # words of the two chunks here, not 2 chunks
    halt.clear()
    pool.count_tokens = None  # no tokenizer: the chunks are what is known
    stream = RemoteStream(pool, "tiny-a", Response(chunks), [halt])
    read(stream)
    assert stream.generation.new_tokens == 2


# ------------------------------------------------------------------------------- on a local Ray
@pytest.fixture(scope="module")
def both(tiny_experts, tmp_path_factory):
    """The same bundle served in-process and on Ray (1 expert replica holding K=1 expert)."""
    if ray is None:
        pytest.skip("ray[serve] is not installed")
    from ray import serve

    from workbench.serve.api import create_api, start_in_thread
    from workbench.serve.ray_backend import start_ray_app

    pool = make_pool(tiny_experts)
    coe = make_coe(pool)
    bundle = coe.save(tmp_path_factory.mktemp("ray-bundle") / "coe")
    local = create_api(coe, max_concurrent=2)
    local_url, stop_local = start_in_thread(local)

    saved = {k: os.environ.get(k) for k in ("HOME", "RAY_TMPDIR", "OMP_NUM_THREADS")}
    home = tempfile.mkdtemp(prefix="rayhome")
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a length limit
    os.environ.update(HOME=home, RAY_TMPDIR=tmp, OMP_NUM_THREADS="1")
    port = free_port()
    try:
        url = start_ray_app(bundle, host="127.0.0.1", port=port, num_cpus=2, temp_dir=tmp,
                            replicas=1, experts_per_replica=1, expert_cpus=0.5, ingress_cpus=0.25,
                            max_concurrent=2)
        yield SimpleNamespace(
            coe=coe, bundle=bundle, url=url, local_url=local_url,
            ray=openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120),
            local=openai.OpenAI(base_url=f"{local_url}/v1", api_key="unused", max_retries=0, timeout=120))
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            stop_local()
            pool.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)


def user(text):
    return [{"role": "user", "content": text}]


def experts_status():
    from ray import serve

    from workbench.serve.ray_backend import APP_NAME, EXPERTS

    return serve.get_deployment_handle(EXPERTS, app_name=APP_NAME).status.remote().result(timeout_s=60)


def ask(client, prompt, model="coe", n=8):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=user(prompt), max_tokens=n)
    return raw, raw.parse()


ROUTING_KEYS = ("category", "expert", "is_fallback", "rule", "map_expert", "new_tokens", "finish_reason",
                "used_fallback_expert", "error", "prompt")


@needs_ray
# ------------------------------------------------------------------------------------------ tests
def test_the_openai_client_gets_answers_with_traces_and_the_replica(both):
    assert [m.id for m in both.ray.models.list()] == ["coe", "tiny-a", "tiny-b"]
    raw, out = ask(both.ray, MATH)
    trace = out.model_extra["coe_trace"]
    assert raw.headers["x-coe-expert"] == "tiny-a" and raw.headers["x-coe-category"] == "math"
    assert trace["expert"] == "tiny-a" and trace["new_tokens"] == 8 and trace["replica"]
    assert out.usage.completion_tokens == 8 and out.choices[0].finish_reason == "length"
    assert httpx.get(f"{both.url}/health", timeout=30).json()["status"] == "ok"


@needs_ray
def test_same_greedy_answers_routing_and_headers_as_in_process(both):
    for prompt in PROMPTS:
        for model in ("coe", "tiny-b"):
            raw_r, ray_out = ask(both.ray, prompt, model)
            raw_l, local_out = ask(both.local, prompt, model)
            assert ray_out.choices[0].message.content == local_out.choices[0].message.content, (prompt, model)
            tr, tl = ray_out.model_extra["coe_trace"], local_out.model_extra["coe_trace"]
            assert {k: tr.get(k) for k in ROUTING_KEYS} == {k: tl.get(k) for k in ROUTING_KEYS}
            assert abs(tr["confidence"] - tl["confidence"]) < 1e-6
            assert ray_out.usage == local_out.usage
            for h in ("x-coe-category", "x-coe-expert", "x-coe-confidence", "x-coe-fallback", "x-coe-rule"):
                assert raw_r.headers.get(h) == raw_l.headers.get(h), h


@needs_ray
def test_multiplexing_with_k_below_the_experts_evicts_and_stays_right(both):
    before = experts_status()
    for prompt in (MATH, LAW, MATH, LAW):
        _, out = ask(both.ray, prompt)
        assert out.choices[0].message.content == both.coe.generate(prompt, max_new_tokens=8).text
    after = experts_status()
    assert after["loads"] - before["loads"] >= 4 and after["unloads"] - before["unloads"] >= 3
    loaded = [r for r in after["residency"] if r.get("tier") not in (None, "", "disk", "cold")]
    assert len(loaded) <= 1, after["residency"]  # K=1: one expert held at a time


@needs_ray
def test_streaming_through_serve_matches_in_process(both):
    def collect(client):
        chunks = list(client.chat.completions.create(model="coe", messages=user(LAW), max_tokens=8,
                                                     stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        final = [c for c in chunks if c.choices and c.choices[0].finish_reason]
        return text, final[0].model_extra["coe_trace"], chunks[-1].usage

    (t_ray, tr, u_ray), (t_local, tl, u_local) = collect(both.ray), collect(both.local)
    assert t_ray == t_local and tr["expert"] == tl["expert"] == "tiny-b" and tr["replica"]
    assert u_ray.completion_tokens == u_local.completion_tokens == 8


@needs_ray
def test_stop_sequences_cut_the_answer_the_same_way(both):
    full = both.coe.generate(MATH, max_new_tokens=12).text
    stop = " " + full.split()[2]
    for stream in (False, True):
        outs = []
        for client in (both.ray, both.local):
            out = client.chat.completions.create(model="coe", messages=user(MATH), max_tokens=12,
                                                 stop=[stop], stream=stream)
            if stream:
                out = "".join(c.choices[0].delta.content or "" for c in out if c.choices)
            else:
                out = out.choices[0].message.content
            outs.append(out)
        assert outs[0] == outs[1] == full[:full.index(stop)], stream
    # the ingress counts what it received in tokens, as in-process (not in chunks)
    raw = [c.chat.completions.create(model="coe", messages=user(MATH), max_tokens=12, stop=[stop])
           for c in (both.ray, both.local)]
    t_ray, t_local = (r.model_extra["coe_trace"] for r in raw)
    assert raw[0].usage == raw[1].usage
    assert abs(t_ray["new_tokens"] - t_local["new_tokens"]) <= 2, (t_ray["new_tokens"], t_local["new_tokens"])


@needs_ray
@pytest.mark.parametrize("body", [
    {"model": "nope", "messages": [{"role": "user", "content": "hi"}]},
    {"model": "coe", "messages": []},
    {"model": "coe", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
    "{not json",
])
def test_the_same_errors_as_in_process(both, body):
    raw = body if isinstance(body, str) else json.dumps(body)
    got = [httpx.post(f"{u}/v1/chat/completions", content=raw, timeout=60,
                      headers={"content-type": "application/json"}) for u in (both.url, both.local_url)]
    assert got[0].status_code == got[1].status_code and got[0].status_code in (400, 404)
    assert got[0].json() == got[1].json()


@needs_ray
def test_a_replica_killed_mid_answer_fails_clearly_and_ray_restarts_it(both):
    ask(both.ray, MATH, "tiny-a", 2)  # the fallback expert: no second try elsewhere
    victim = experts_status()
    outcome = {}

    def consume():
        try:
            text = ""
            for c in both.ray.chat.completions.create(model="tiny-a", messages=user(MATH), max_tokens=240,
                                                      stream=True, timeout=90):
                if c.choices and c.choices[0].delta.content:
                    text += c.choices[0].delta.content
                    outcome.setdefault("first", time.monotonic())
            outcome["text"] = text
        except Exception as exc:  # noqa: BLE001 - what the test checks
            outcome["error"] = exc

    t = threading.Thread(target=consume)
    t.start()
    deadline = time.monotonic() + 60
    while "first" not in outcome and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert "first" in outcome, outcome
    ray.kill(ray.get_actor(victim["actor_name"], namespace="serve"), no_restart=False)
    t.join(timeout=120)
    assert not t.is_alive(), "the in-flight request hung"
    err = outcome.get("error")
    assert err is not None, f"the answer finished before the kill ({len(outcome.get('text', ''))} chars)"
    assert isinstance(err, openai.APIError) and "replica" in str(err) and "tiny-a" in str(err), err

    deadline, last = time.monotonic() + 180, None
    while time.monotonic() < deadline:  # Ray replaces the replica; later requests succeed
        try:
            _, out = ask(both.ray, LAW)
            assert out.choices[0].message.content == both.coe.generate(LAW, max_new_tokens=8).text
            break
        except openai.APIError as exc:
            last = exc
            time.sleep(1)
    else:
        raise AssertionError(f"no request succeeded after the kill: {last}")
    assert experts_status()["replica"] != victim["replica"]  # a new replica answers
