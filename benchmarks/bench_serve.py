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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    raise SystemExit(main())
