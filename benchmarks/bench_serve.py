"""bench_serve: what the OpenAI-compatible API adds to a CoE generation, beside ``coe.generate``.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_serve.py`` (3-5 minutes on 2 CPU cores).
Uses the real offline demo (SmolLM2-135M-Instruct and its LoRA specialists); ``--tiny`` uses the
tiny from-scratch demo experts instead. The API runs in uvicorn on 127.0.0.1 in this process; the
client is the official ``openai`` package.

Sequential, per prompt, interleaved so both sides see the same machine load (the expert is switched
in before both, so neither pays a switch the other does not):

* in-process: ``coe.generate(prompt, max_new_tokens=N)``, and ``coe.stream`` for time to first token;
* API: ``client.chat.completions.create(model="coe", ...)`` with ``max_tokens=N``, and with
  ``stream=True`` for time to first token.

Both produce the same greedy tokens (the texts are compared). ``api_overhead_ratio`` is the median
over prompts of (API wall time - the CoE's own time for that request, ``coe_trace.total_s``) / that
time: what HTTP, JSON, validation, the conversation rule and token counting add (target <= 0.05 at
64 new tokens). ``paired_ratio`` is the median of API time / in-process time - 1 over the paired
runs; on a shared machine its noise is larger than the overhead.

Concurrent: ``--clients`` threads, each with its own openai client, send the prompts at once
(the server runs ``--max-concurrent`` generations at a time); the in-process side is the same load
through ``coe.generate`` in as many threads under the same limit of concurrent generations.
Reported: p50 / p95 latency, tokens/s, errors. The last line of stdout is a JSON summary.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import summary, table  # noqa: E402

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROMPTS = [
    "Write a Python function that reverses a string.",
    "What is the derivative of x^3 + 2x?",
    "What were the main causes of the First World War?",
    "Write a short poem about autumn rain.",
    "Is a verbal contract legally binding?",
    "Explain how vaccines train the immune system.",
]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def api_call(client, prompt: str, n: int):
    s = time.perf_counter()
    out = client.chat.completions.create(model="coe", messages=[{"role": "user", "content": prompt}],
                                         max_tokens=n)
    seconds = time.perf_counter() - s
    served = float(out.model_extra["coe_trace"]["total_s"])  # embed + route + switch + generate
    return seconds, out.choices[0].message.content, out.usage.completion_tokens, served


def api_ttft(client, prompt: str, n: int) -> float:
    s = time.perf_counter()
    first = None
    for chunk in client.chat.completions.create(model="coe", messages=[{"role": "user", "content": prompt}],
                                                max_tokens=n, stream=True):
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - s
    return first if first is not None else float("nan")


def coe_ttft(coe, prompt: str, n: int) -> float:
    s = time.perf_counter()
    first = None
    for chunk in coe.stream(prompt, max_new_tokens=n):
        if first is None and isinstance(chunk, str) and chunk:
            first = time.perf_counter() - s
    return first if first is not None else float("nan")


def run_concurrent(work, clients: int, prompts: list[str]) -> tuple[list[float], int, int, float]:
    """``work(k, prompt) -> (seconds, tokens)`` from ``clients`` threads; latencies, tokens, errors, wall."""
    latencies, errors, tokens = [], [0], [0]
    lock = threading.Lock()

    def client(k: int) -> None:
        for j, prompt in enumerate(prompts):
            try:
                seconds, new = work(k, prompts[(j + k) % len(prompts)])
                with lock:
                    latencies.append(seconds)
                    tokens[0] += new
            except Exception as exc:  # noqa: BLE001 - counted and shown
                with lock:
                    errors[0] += 1
                print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)

    s = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, tokens[0], errors[0], time.perf_counter() - s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny from-scratch demo experts")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--per-client", type=int, default=3, help="requests per concurrent client")
    parser.add_argument("--max-concurrent", type=int, default=2, help="the server's generation slots")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--backend", choices=("inprocess", "ray"), default="inprocess",
                        help="ray: the same workload on the in-process server and on Ray Serve")
    parser.add_argument("--switches", type=int, default=6, help="--backend ray: expert switches timed")
    args = parser.parse_args(argv)
    if args.backend == "ray":
        return main_ray(args)

    import openai
    import torch

    from workbench.demo import build_demo_bundle
    from workbench.serve.api import create_api, start_in_thread

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bundle = build_demo_bundle(kind="tiny" if args.tiny else "real", progress=False, gpu_memory=None)
    coe, pool, n = bundle.coe, bundle.pool, args.new_tokens
    app = create_api(coe, max_concurrent=args.max_concurrent)
    url, stop = start_in_thread(app)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
    print(f"# bench_serve: {bundle.kind} demo, {len(pool.names)} experts, {n} new tokens, greedy, "
          f"torch threads {torch.get_num_threads()}, API at {url}; ready in {time.perf_counter() - t0:.1f}s")
    for prompt in PROMPTS:  # warm: every routed expert resident, the API's tokenizers read
        coe.generate(prompt, max_new_tokens=2)
        api_call(client, prompt, 2)

    rows, ratios, paired, same = [], [], [], 0
    api_s, ttft_api, ttft_coe = [], [], []
    for i, prompt in enumerate(PROMPTS):
        coe.generate(prompt, max_new_tokens=1)  # switch the expert in, untimed
        order = ("coe", "api") if i % 2 == 0 else ("api", "coe")
        result = {}
        for side in order:
            if side == "coe":
                s = time.perf_counter()
                answer = coe.generate(prompt, max_new_tokens=n)
                result["coe"] = (time.perf_counter() - s, answer.text, answer.trace.new_tokens)
            else:
                result["api"] = api_call(client, prompt, n)
        (t_coe, text_coe, tok_coe), (t_api, text_api, tok_api, t_served) = result["coe"], result["api"]
        same += text_coe == text_api
        paired.append((t_api - t_coe) / t_coe)
        ratios.append((t_api - t_served) / t_served)
        api_s.append(t_api)
        ttft_coe.append(coe_ttft(coe, prompt, n))
        ttft_api.append(api_ttft(client, prompt, n))
        rows.append({"prompt": prompt[:34], "expert": answer.trace.expert, "tokens": tok_api,
                     "coe_s": t_coe, "api_s": t_api, "served_s": t_served,
                     "overhead_ms": (t_api - t_served) * 1e3, "paired_diff_ms": (t_api - t_coe) * 1e3,
                     "ttft_coe_ms": ttft_coe[-1] * 1e3, "ttft_api_ms": ttft_api[-1] * 1e3})
    table(rows, "## sequential, per request (in-process coe.generate vs the API through the openai client)")

    load = [PROMPTS[j % len(PROMPTS)] for j in range(args.per_client)]

    def through_api(k: int, prompt: str):
        own = clients[k]
        seconds, _, tokens, _ = api_call(own, prompt, n)
        return seconds, tokens

    slots = threading.Semaphore(args.max_concurrent)  # the server's limit, for a like-for-like load

    def in_process(k: int, prompt: str):
        s = time.perf_counter()
        with slots:
            answer = coe.generate(prompt, max_new_tokens=n)
        return time.perf_counter() - s, answer.trace.new_tokens

    clients = [openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=600)
               for _ in range(args.clients)]
    lat_api, tok_api, err_api, wall_api = run_concurrent(through_api, args.clients, load)
    lat_coe, tok_coe, err_coe, wall_coe = run_concurrent(in_process, args.clients, load)
    conc = [{"side": "API", "requests": len(lat_api), "errors": err_api,
             "p50_ms": percentile(lat_api, 0.5) * 1e3, "p95_ms": percentile(lat_api, 0.95) * 1e3,
             "tokens_per_s": tok_api / wall_api, "wall_s": wall_api},
            {"side": "in-process", "requests": len(lat_coe), "errors": err_coe,
             "p50_ms": percentile(lat_coe, 0.5) * 1e3, "p95_ms": percentile(lat_coe, 0.95) * 1e3,
             "tokens_per_s": tok_coe / wall_coe, "wall_s": wall_coe}]
    table(conc, f"## {args.clients} concurrent clients x {args.per_client} requests (server: "
                f"{args.max_concurrent} generations at a time; in-process: {args.clients} threads, the same limit)")

    ratio, paired_ratio = statistics.median(ratios), statistics.median(paired)
    overhead_ms = statistics.median([r["overhead_ms"] for r in rows])
    print(f"\nAPI overhead per request (client wall time - the CoE's own time for the request, "
          f"measured in the server): median {ratio * 100:.2f}% ({overhead_ms:.1f} ms; target <= 5%)")
    print(f"paired API / in-process wall time - 1: median {paired_ratio * 100:.2f}% (machine noise "
          f"included); identical texts {same}/{len(rows)}")
    print(f"time to first token: API stream {statistics.median(ttft_api) * 1e3:.0f} ms, coe.stream "
          f"{statistics.median(ttft_coe) * 1e3:.0f} ms")
    print(f"concurrent throughput API / in-process: {conc[0]['tokens_per_s'] / conc[1]['tokens_per_s']:.3f}")
    stop()
    summary("bench_serve", demo=bundle.kind, new_tokens=n, requests=len(rows),
            api_overhead_ratio=round(ratio, 4), overhead_ms=round(overhead_ms, 1),
            paired_ratio=round(paired_ratio, 4),
            p50_ms=round(percentile(api_s, 0.5) * 1e3, 1), p95_ms=round(percentile(api_s, 0.95) * 1e3, 1),
            ttft_ms=round(statistics.median(ttft_api) * 1e3, 1),
            coe_ttft_ms=round(statistics.median(ttft_coe) * 1e3, 1),
            tokens_per_s=round(sum(r["tokens"] for r in rows) / sum(api_s), 2),
            concurrent_clients=args.clients, concurrent_p50_ms=round(conc[0]["p50_ms"], 1),
            concurrent_p95_ms=round(conc[0]["p95_ms"], 1),
            concurrent_tokens_per_s=round(conc[0]["tokens_per_s"], 2),
            concurrent_vs_in_process=round(conc[0]["tokens_per_s"] / conc[1]["tokens_per_s"], 4),
            errors=err_api, identical_texts=same, threads=torch.get_num_threads())
    pool.close()
    return 0


PLAIN_LOADER: list = []  # the plain-from_pretrained deployment, built once


def plain_deployment():
    """Ray's multiplexed loader doing what a user without the workbench would: from_pretrained."""
    if PLAIN_LOADER:
        return PLAIN_LOADER[0]
    from ray import serve

    @serve.deployment(name="PlainExperts")
    class PlainExperts:
        def __init__(self, paths: dict) -> None:
            self.paths = paths
            self.load_s: list[float] = []

        @serve.multiplexed(max_num_models_per_replica=1)
        async def model(self, name: str):
            import asyncio

            def load():
                from transformers import AutoModelForCausalLM, AutoTokenizer

                s = time.perf_counter()
                model = AutoModelForCausalLM.from_pretrained(self.paths[name]["model"])
                if self.paths[name].get("adapter"):
                    from peft import PeftModel

                    model = PeftModel.from_pretrained(model, self.paths[name]["adapter"])
                AutoTokenizer.from_pretrained(self.paths[name]["model"])
                self.load_s.append(time.perf_counter() - s)
                return model

            return await asyncio.to_thread(load)

        async def __call__(self, _=None):
            await self.model(serve.get_multiplexed_model_id())
            return self.load_s[-1] if self.load_s else 0.0

    PLAIN_LOADER.append(PlainExperts)
    return PlainExperts


def main_ray(args) -> int:
    """``--backend ray``: the sequential workload through the in-process API and through Ray Serve
    (1 expert replica, K=1), then expert switch latency inside a replica: the workbench's pool
    behind ``@serve.multiplexed`` vs a plain ``from_pretrained`` in Ray's multiplexed loader."""
    import shutil
    import socket
    import tempfile

    import openai
    import ray
    import torch
    from ray import serve

    from workbench.demo import build_demo_bundle
    from workbench.placement import resolve_model_path
    from workbench.serve.api import create_api, start_in_thread
    from workbench.serve.ray_backend import APP_NAME, EXPERTS, start_ray_app

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    demo = build_demo_bundle(kind="tiny" if args.tiny else "real", progress=False, gpu_memory=None)
    coe, pool, n = demo.coe, demo.pool, args.new_tokens
    work = Path(tempfile.mkdtemp(prefix="rayb", dir="/tmp"))  # short: Ray's socket paths
    bundle = coe.save(work / "bundle")
    os.environ.update(HOME=str(work / "home"), RAY_TMPDIR=str(work / "ray"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url_local, stop = start_in_thread(create_api(coe, max_concurrent=args.max_concurrent))
    errors = 0
    try:
        url_ray = start_ray_app(bundle, port=port, num_cpus=2, temp_dir=str(work / "ray"), replicas=1,
                                experts_per_replica=1, expert_cpus=0.5, ingress_cpus=0.25,
                                max_concurrent=args.max_concurrent)
        local = openai.OpenAI(base_url=f"{url_local}/v1", api_key="b", max_retries=0, timeout=600)
        remote = openai.OpenAI(base_url=f"{url_ray}/v1", api_key="b", max_retries=0, timeout=600)
        print(f"# bench_serve --backend ray: {demo.kind} demo, {len(pool.names)} experts, {n} new tokens, "
              f"greedy; in-process API {url_local}, Ray Serve {url_ray} (1 expert replica, K=1); "
              f"ready in {time.perf_counter() - t0:.1f}s")
        for prompt in PROMPTS:  # warm both
            api_call(local, prompt, 2)
            api_call(remote, prompt, 2)
        rows, ratios, served_ratios, same = [], [], [], 0
        for i, prompt in enumerate(PROMPTS):
            api_call(local, prompt, 1)
            api_call(remote, prompt, 1)  # the expert is switched in on both sides, untimed
            result = {}
            for side in (("local", "ray") if i % 2 == 0 else ("ray", "local")):
                try:
                    result[side] = api_call(local if side == "local" else remote, prompt, n)
                except Exception as exc:  # noqa: BLE001 - counted and shown
                    errors += 1
                    print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            if len(result) < 2:
                continue
            (t_l, text_l, _, _), (t_r, text_r, tok_r, served_r) = result["local"], result["ray"]
            same += text_l == text_r
            ratios.append(t_r / t_l - 1)
            served_ratios.append((t_r - served_r) / served_r)
            rows.append({"prompt": prompt[:34], "tokens": tok_r, "inprocess_s": t_l, "ray_s": t_r,
                         "ray_served_s": served_r, "ray_minus_inprocess_ms": (t_r - t_l) * 1e3})
        table(rows, "## sequential, per request: the in-process API vs the Ray Serve backend (openai client)")

        # expert switches inside a replica (K=1: every other request loads an expert)
        handle = serve.get_deployment_handle(EXPERTS, app_name=APP_NAME)
        before = len(handle.status.remote().result()["load_seconds"])
        experts = list(pool.names)[:2]
        for j in range(args.switches):
            try:
                remote.chat.completions.create(model=experts[j % 2], max_tokens=1,
                                               messages=[{"role": "user", "content": PROMPTS[0]}])
            except Exception as exc:  # noqa: BLE001
                errors += 1
                print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        pool_loads = handle.status.remote().result()["load_seconds"][before:]
        paths = {name: {"model": str(resolve_model_path(spec.model, expert=name)),
                        "adapter": str(spec.adapter) if spec.adapter else None}
                 for name, spec in pool.specs.items()}
        plain = plain_deployment().options(ray_actor_options={"num_cpus": 0.25}).bind(paths)
        plain_handle = serve.run(plain, name="plain", route_prefix="/plain")
        plain_handle.options(multiplexed_model_id=experts[0]).remote().result()  # warm the imports
        plain_loads = [plain_handle.options(multiplexed_model_id=experts[(j + 1) % 2]).remote().result()
                       for j in range(args.switches)]
        switch_pool, switch_plain = statistics.median(pool_loads) * 1e3, statistics.median(plain_loads) * 1e3
        table([{"loader": "workbench ExpertPool in @serve.multiplexed", "switches": len(pool_loads),
                "median_ms": switch_pool},
               {"loader": "plain from_pretrained in @serve.multiplexed", "switches": len(plain_loads),
                "median_ms": switch_plain}], "## expert switch inside a replica (K=1)")
        ratio = statistics.median(ratios)
        print(f"\nRay / in-process API wall time - 1: median {ratio * 100:.1f}%; Ray client time over the "
              f"CoE's own time: median {statistics.median(served_ratios) * 100:.1f}%; identical texts "
              f"{same}/{len(rows)}; switch: pool {switch_pool:.0f} ms, plain {switch_plain:.0f} ms")
        final = dict(demo=demo.kind, new_tokens=n, requests=len(rows),
                ray_overhead_ratio=round(ratio, 4),
                ray_served_overhead_ratio=round(statistics.median(served_ratios), 4),
                ray_minus_inprocess_ms=round(statistics.median(r["ray_minus_inprocess_ms"] for r in rows), 1),
                switch_ms_pool=round(switch_pool, 1), switch_ms_plain=round(switch_plain, 1),
                switch_ratio=round(switch_pool / switch_plain, 4) if switch_plain else None,
                identical_texts=same, errors=errors, replicas=1, experts_per_replica=1)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            stop()
            pool.close()
            shutil.rmtree(work, ignore_errors=True)
    summary("bench_serve_ray", **final)  # after Ray's shutdown messages: the last line of stdout
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
