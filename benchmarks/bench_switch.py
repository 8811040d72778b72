"""bench_switch: how fast the ExpertPool switches experts in, side by side with the obvious alternatives.

Run: ``.venv/bin/python benchmarks/bench_switch.py`` (2-4 minutes on 2 shared CPU cores); add ``--demo``
to use the tiny trained demo experts of :mod:`workbench.demo.tiny` (their cached build, or it trains
them first), or ``--real`` for the real demo experts (SmolLM2-135M-Instruct + four LoRA specialists
sharing it; section 6 only).

Sections (one run, same checkpoints, same page-cache state):

1. CPU-tier switch: ``pool.use(name)`` on an expert already in RAM (target <= 5 ms).
2. Disk switch: ``pool.use(name)`` on an evicted expert vs ``safetensors.torch.load_file`` reading
   the same file (target ratio <= 1.5).
3. A 100-request trace with realistic locality (Zipf popularity, 70% follow-ups to the same expert),
   each request = get the expert ready + greedy generate, vs ``AutoModelForCausalLM.from_pretrained``
   per request (target >= 5x faster at getting experts ready; end-to-end speedup, which includes
   generation, is reported beside it; outputs must be identical).
4. A 1,000-request uniform random trace: the pool's tracked CPU bytes never exceed its budget by more
   than its largest module, and process RSS growth over a baseline stays within 10% of tracked bytes.
5. With CUDA: the same with GPU / CPU / disk tiers; host->device switch bandwidth vs a plain copy.
6. ``--real``: LoRA experts on one shared base. Adapter switch (merge into the resident base) and
   hit; the base's disk switch vs ``load_file``; a request trace vs ``from_pretrained`` +
   ``PeftModel.from_pretrained`` per request (the obvious way to serve fine-tunes) and vs peft's own
   ``set_adapter`` switching (all adapters loaded, unmerged: no switch cost, slower tokens).

By default the experts are tiny random-init Llama checkpoints written by ``tests/helpers_models.py``
(no downloads, no training). The last line of stdout is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # the GPU machine may lack psutil
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def mib(n: float) -> str:
    return f"{n / 2**20:8.1f} MiB"


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3 if values else float("nan")


def write_experts(root: Path, n: int, hidden: int, layers: int) -> list[Path]:
    from helpers_models import write_tiny_llama

    paths = []
    for i in range(n):
        path = root / f"expert{i}"
        if not (path / "model.safetensors").exists():
            write_tiny_llama(path, hidden_size=hidden, num_layers=layers, seed=i)
        paths.append(path)
    return paths


def locality_trace(names: list[str], n: int, seed: int, stay: float = 0.7) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(len(names))]  # Zipf popularity
    trace = [rng.choices(names, weights)[0]]
    while len(trace) < n:
        trace.append(trace[-1] if rng.random() < stay else rng.choices(names, weights)[0])
    return trace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--trace", type=int, default=100)
    parser.add_argument("--random-trace", type=int, default=1000)
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="rounds for the switch-time sections")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the checkpoints (default: temp)")
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--demo", action="store_true", help="use workbench.demo's trained experts (cached build)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--real", action="store_true",
                        help="the real demo experts: SmolLM2-135M-Instruct + LoRA specialists (section 6 only)")
    args = parser.parse_args(argv)
    if args.real:
        return real_section(args)

    import torch
    from safetensors.torch import load_file

    from workbench.experts import ExpertPool, ExpertSpec, release_memory
    from workbench.placement import plan_placement

    # one intra-op thread: on a shared, oversubscribed CPU more threads spin and run ~10x slower
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_switch-")
    root = args.dir or Path(tmp.name)
    t0 = time.perf_counter()
    if args.demo:
        from workbench.demo import train_demo_experts

        demo = train_demo_experts(progress=False)  # the cached build, or trains it (minutes)
        paths = [Path(demo.paths[n]) for n in demo.names][: args.experts]
        source = "demo experts (workbench.demo)"
    else:
        paths = write_experts(root, args.experts, args.hidden, args.layers)
        source = "tiny random-init Llama experts"
    names = [p.name for p in paths]
    specs = [ExpertSpec(p.name, p) for p in paths]
    files = {p.name: p / "model.safetensors" for p in paths}
    plans = {p.name: plan_placement(p, cpu_bytes="64GiB") for p in paths}
    sizes = sorted((pl.total_bytes for pl in plans.values()), reverse=True)
    plan = max(plans.values(), key=lambda pl: pl.total_bytes)
    largest_module = max(pl.largest_module_bytes for pl in plans.values())
    params = plan.total_bytes // 4
    # holds any 2 experts; with equal sizes, never 3
    budget = int(sizes[0] * 2.5) if sizes[0] == sizes[-1] else int((sizes[0] + sizes[1]) * 1.05)
    print(f"# bench_switch: {len(names)} {source}, largest {params / 1e6:.1f}M params ({mib(plan.total_bytes).strip()}), "
          f"sizes {[round(x / 2**20, 1) for x in sizes]} MiB, CPU budget {mib(budget).strip()} (holds 2), largest module "
          f"{mib(largest_module).strip()}; ready in {time.perf_counter() - t0:.1f}s; torch threads {torch.get_num_threads()}")
    print("# method: RSS baseline taken after imports and after each expert's config/tokenizer/meta skeleton is built "
          "(pool.prepare(), no weights); RSS growth = RSS - baseline after gc.collect() + glibc malloc_trim(0); "
          "ratio = RSS growth / pool.tracked_bytes('cpu'). Disk-switch reference = safetensors load_file(backend='pread'), "
          "which reads every byte (the default mmap backend maps the file lazily and is shown for context).")

    # ---- 4 first: the RSS-sensitive random trace, on a fresh heap -------------------------------
    pool = ExpertPool(specs, cpu_memory=budget, gpu_memory=None, prefetch=False)
    pool.prepare()
    release_memory()
    base_rss = rss_bytes()
    over = [0]
    pool.add_listener(lambda e: over.append(pool.tracked_bytes("cpu") - pool.cpu_budget))
    rng = random.Random(1)
    ids = torch.tensor([[4, 5, 6, 7]])
    ratios, t_trace = [], time.perf_counter()
    for i in range(args.random_trace):
        with pool.use(rng.choice(names)) as expert, torch.inference_mode():
            expert.model(input_ids=ids)
        over.append(pool.tracked_bytes("cpu") - pool.cpu_budget)
        if (i + 1) % max(1, args.random_trace // 10) == 0:
            release_memory()
            ratios.append((rss_bytes() - base_rss) / max(1, pool.tracked_bytes("cpu")))
    t_trace = time.perf_counter() - t_trace
    release_memory()
    tracked_end = pool.tracked_bytes("cpu")
    rss_growth = rss_bytes() - base_rss
    rss_ratio = rss_growth / max(1, tracked_end)
    events = pool.events()
    loads = sum(e.action == "load" for e in events)
    evicts = sum(e.action == "evict" for e in events)
    max_over = max(0, max(over))
    pool.evict_all() if hasattr(pool, "evict_all") else [pool.evict(n) for n in names]
    release_memory()
    rss_after_evict_all = rss_bytes() - base_rss
    pool.close()
    print(f"\n## {args.random_trace}-request uniform random trace (switch + one forward pass), CPU budget holds 2 of "
          f"{len(names)} experts: {t_trace:.1f}s, {loads} loads, {evicts} evictions")
    print(f"{'max tracked over budget':32s} {mib(max_over)}   (allowed: largest module {mib(largest_module).strip()})")
    print(f"{'tracked at end':32s} {mib(tracked_end)}")
    print(f"{'RSS growth at end':32s} {mib(rss_growth)}   ratio {rss_ratio:.3f} (target 0.9-1.1)")
    print(f"{'RSS/tracked at 10 checkpoints':32s} min {min(ratios):.3f} max {max(ratios):.3f}")
    print(f"{'RSS growth after evicting all':32s} {mib(rss_after_evict_all)}   (tracked 0)")

    # ---- 1 + 2: CPU-tier and disk switches, vs load_file -------------------------------------
    pool = ExpertPool(specs, cpu_memory=budget, gpu_memory=None, prefetch=False)
    pool.prepare()
    cpu_hits, load_file_mmap = [], []
    disk_loads = {n: [] for n in names}
    load_file_pread = {n: [] for n in names}
    load_file_fresh = {n: [] for n in names}
    for _ in range(args.repeats):
        for pair in (names[0:2], names[2:4]) if len(names) >= 4 else (names,):
            for rep in range(3):
                for name in pair:
                    with pool.use(name) as expert:
                        (cpu_hits if expert.tier_found == "cpu" else disk_loads[name]).append(expert.switch_s)
            for name in pair:  # the reference reads the same bytes, same page-cache state
                release_memory()
                s = time.perf_counter()
                state = load_file(files[name], backend="pread")  # into fresh pages (after a trim)
                load_file_fresh[name].append(time.perf_counter() - s)
                del state
                s = time.perf_counter()
                state = load_file(files[name], backend="pread")  # reusing the pages just freed, as the pool does
                load_file_pread[name].append(time.perf_counter() - s)
                del state
                s = time.perf_counter()
                state = load_file(files[name])
                load_file_mmap.append(time.perf_counter() - s)
                del state
                release_memory()
    disk_events = [e.seconds for e in pool.events() if e.action == "load"]
    pool.close()
    cpu_ms = median_ms(cpu_hits)
    per_expert = {n: median_ms(disk_loads[n]) / median_ms(load_file_pread[n]) for n in names if disk_loads[n]}
    disk_ms = median_ms([t for n in names for t in disk_loads[n]])
    pread_ms = median_ms([t for n in names for t in load_file_pread[n]])
    fresh_ms = median_ms([t for n in names for t in load_file_fresh[n]])
    ratio_fresh = statistics.median(median_ms(disk_loads[n]) / median_ms(load_file_fresh[n]) for n in names if disk_loads[n])
    ratio_disk = statistics.median(per_expert.values())
    n_disk = sum(len(v) for v in disk_loads.values())
    print(f"\n## switching, cycling {len(names)} experts in pairs under a CPU budget that holds 2 "
          f"({len(cpu_hits)} CPU hits, {n_disk} disk loads)")
    print(f"{'method':48s} {'median ms':>10s}")
    print(f"{'pool.use(): hit in the CPU tier':48s} {cpu_ms:10.3f}   (target <= 5 ms)")
    print(f"{'pool.use(): from disk (evict + read + assign)':48s} {disk_ms:10.2f}")
    print(f"{'   of which the load itself (event seconds)':48s} {median_ms(disk_events):10.2f}")
    print(f"{'load_file(backend=pread) into fresh pages':48s} {fresh_ms:10.2f}   ratio pool/this {ratio_fresh:.2f}")
    print(f"{'load_file(backend=pread) reusing freed pages':48s} {pread_ms:10.2f}   (the pool's case: eviction frees, the load reuses)")
    print(f"ratio pool disk switch / load_file, median over experts {ratio_disk:.2f} (target <= 1.5); per expert "
          + ", ".join(f"{n} {r:.2f}" for n, r in per_expert.items()))
    print(f"{'safetensors load_file() default mmap (lazy)':48s} {median_ms(load_file_mmap):10.2f}   (maps pages, reads nothing)")

    # ---- 3: trace with locality vs from_pretrained per request ------------------------------------
    from transformers import AutoModelForCausalLM, AutoTokenizer

    trace = locality_trace(names, args.trace, seed=7)
    prompts = ["what is the sea", "solve for x", "the court ruled", "write a short poem"]
    tokenizers = {name: AutoTokenizer.from_pretrained(path) for name, path in zip(names, paths)}  # generous to the baseline
    pool = ExpertPool(specs, cpu_memory=budget, gpu_memory=None, prefetch=False)
    s = time.perf_counter()
    pool.prepare()  # startup: configs, tokenizers, meta skeletons (no weights), like the baseline's cached tokenizers
    t_prepare = time.perf_counter() - s
    # interleaved (pool request i, then baseline request i) so both see the same machine load
    ours, same = [], 0
    t_pool = t_naive = t_naive_switch = 0.0
    for i, name in enumerate(trace):
        s = time.perf_counter()
        ours.append(pool.generate(name, prompts[i % 4], max_new_tokens=args.new_tokens))
        t_pool += time.perf_counter() - s
        s = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(paths[names.index(name)]).eval()
        t_naive_switch += time.perf_counter() - s
        tok = tokenizers[name]
        enc = tok.apply_chat_template([{"role": "user", "content": prompts[i % 4]}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        t_naive += time.perf_counter() - s
        same += out[0, enc["input_ids"].shape[1]:].tolist() == ours[i].token_ids
        del model
    t_pool_switch = sum(g.switch_s for g in ours)
    found = {k: sum(g.tier_found == k for g in ours) for k in ("cold", "disk", "cpu")}
    pool.close()
    speedup_switch = t_naive_switch / t_pool_switch
    speedup = t_naive / t_pool
    switches = sum(1 for a, b in zip(trace, trace[1:]) if a != b)
    print(f"\n## {args.trace}-request trace with locality (Zipf popularity, 70% follow-ups; {switches} expert changes; "
          f"pool found: {found}); each request = get the expert ready + greedy generate {args.new_tokens} tokens")
    print(f"(both sides start with tokenizers loaded; the pool's startup pool.prepare() took {t_prepare:.2f}s, not counted)")
    print(f"{'method':40s} {'ready s':>8s} {'total s':>8s} {'ms/request':>11s}")
    print(f"{'ExpertPool.generate':40s} {t_pool_switch:8.3f} {t_pool:8.2f} {t_pool / len(trace) * 1e3:11.1f}")
    print(f"{'from_pretrained per request + generate':40s} {t_naive_switch:8.3f} {t_naive:8.2f} {t_naive / len(trace) * 1e3:11.1f}")
    print(f"speedup getting the expert ready {speedup_switch:.1f}x (target >= 5x); end to end incl. generation "
          f"{speedup:.2f}x (these tiny models load in ~{t_naive_switch / len(trace) * 1e3:.0f} ms, so generation "
          f"dominates end to end); identical outputs {same}/{len(trace)}")

    summary = {
        "name": "bench_switch",
        "experts": len(names),
        "source": "demo" if args.demo else "tiny",
        "params_per_expert": params,
        "expert_bytes": plan.total_bytes,
        "cpu_budget_bytes": budget,
        "cpu_switch_ms": round(cpu_ms, 4),
        "disk_switch_ms": round(disk_ms, 3),
        "load_file_ms": round(pread_ms, 3),
        "load_file_fresh_pages_ms": round(fresh_ms, 3),
        "disk_vs_load_file_fresh_ratio": round(ratio_fresh, 3),
        "disk_vs_load_file_ratio": round(ratio_disk, 3),
        "trace_speedup_vs_from_pretrained": round(speedup_switch, 2),
        "trace_speedup_with_generate": round(speedup, 3),
        "pool_prepare_s": round(t_prepare, 3),
        "trace_identical_outputs": same,
        "max_over_budget_bytes": int(max_over),
        "largest_module_bytes": int(largest_module),
        "rss_vs_tracked_ratio": round(rss_ratio, 3),
        "rss_growth_after_evict_all_bytes": int(rss_after_evict_all),
    }

    # ---- 5: GPU tiers ------------------------------------------------------------------------------
    if torch.cuda.is_available() and not args.no_gpu:
        summary.update(gpu_section(specs, names, plan.total_bytes, args))
    else:
        print("\n## GPU tiers: skipped (no CUDA on this machine)")
    print(json.dumps(summary))
    tmp.cleanup()
    return 0


def real_section(args) -> int:
    """Section 6: LoRA specialists on one shared base (the real offline demo experts)."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.demo.real import load_real_demo_experts
    from workbench.experts import ExpertPool, release_memory

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    experts = load_real_demo_experts(progress=False)
    specs = experts.specs()
    names = [s.name for s in specs]
    adapters = [s.name for s in specs if s.adapter]
    base = Path(specs[0].model)
    base_file = base / "model.safetensors"
    print(f"# bench_switch --real: base {experts.config.base['name']} ({mib(base_file.stat().st_size).strip()}), "
          f"{len(adapters)} LoRA specialists; ready in {time.perf_counter() - t0:.1f}s; torch threads "
          f"{torch.get_num_threads()}")
    on_gpu = torch.cuda.is_available() and not args.no_gpu  # with CUDA the base and its merges live on the GPU
    pool = ExpertPool(specs, cpu_memory="2GiB", gpu_memory="auto" if on_gpu else None, prefetch=False)
    switch, hit, base_disk, ref_pread = [], [], [], []
    with pool.use(names[0]):
        pass
    for _ in range(args.repeats):
        for name in adapters + [names[0]]:
            with pool.use(name) as loaded:
                switch.append(loaded.adapter_s)
            with pool.use(name) as loaded:
                hit.append(loaded.switch_s)
        pool.evict(names[0])
        release_memory()
        with pool.use(names[0]) as loaded:
            base_disk.append(loaded.switch_s)
        release_memory()
        s = time.perf_counter()
        state = load_file(base_file, backend="pread")
        ref_pread.append(time.perf_counter() - s)
        del state
        release_memory()
    # peft's own switching: every adapter loaded into one PeftModel, set_adapter per request
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base).eval(),
                                           specs[1].adapter, adapter_name=adapters[0])
    for spec in specs[2:]:
        peft_model.load_adapter(spec.adapter, adapter_name=spec.name)
    set_ms = []
    for _ in range(args.repeats):
        for name in adapters:
            s = time.perf_counter()
            peft_model.set_adapter(name)
            set_ms.append(time.perf_counter() - s)
    tok = AutoTokenizer.from_pretrained(base)
    enc = tok.apply_chat_template([{"role": "user", "content": "Explain what a contract is."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    kw = {"max_new_tokens": args.new_tokens * 4, "do_sample": False, "min_new_tokens": args.new_tokens * 4,
          "pad_token_id": tok.pad_token_id}
    with pool.use(adapters[0]) as loaded, torch.inference_mode():
        s = time.perf_counter()
        loaded.model.generate(**{k: v.to(loaded.device) for k, v in enc.items()}, **kw)
        merged_tps = kw["max_new_tokens"] / (time.perf_counter() - s)
    peft_model.set_adapter(adapters[0])
    with torch.inference_mode():
        s = time.perf_counter()
        peft_model.generate(**enc, **kw)
        peft_tps = kw["max_new_tokens"] / (time.perf_counter() - s)
    del peft_model
    # a request trace: the pool vs from_pretrained + PeftModel.from_pretrained per request
    trace = locality_trace(names, min(args.trace, 24), seed=7)
    prompts = ["What is 12 * 7?", "Write a haiku about rain.", "Is a verbal contract binding?", "¿Qué hora es?"]
    t_pool = t_naive = 0.0
    same = 0
    for i, name in enumerate(trace):
        spec = specs[names.index(name)]
        s = time.perf_counter()
        with pool.use(name):
            pass
        t_pool += time.perf_counter() - s
        ours = pool.generate(name, prompts[i % 4], max_new_tokens=args.new_tokens)
        s = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(base).eval()
        if spec.adapter:
            model = PeftModel.from_pretrained(model, spec.adapter).eval()
        t_naive += time.perf_counter() - s
        e = tok.apply_chat_template([{"role": "user", "content": prompts[i % 4]}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(**e, max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                                 **{k: v for k, v in spec.generation.items() if k not in ("max_new_tokens", "do_sample")})
        same += out[0, e["input_ids"].shape[1]:].tolist() == ours.token_ids
        del model
    pool.close()
    adapter_ms, hit_ms = median_ms(switch), median_ms(hit)
    disk_ms, pread_ms = median_ms(base_disk), median_ms(ref_pread)
    print(f"\n## LoRA specialists on one shared base ({args.repeats} rounds over {len(adapters)} adapters + the base)")
    print(f"{'method':56s} {'median ms':>10s}")
    print(f"{'pool.use(): adapter switch (restore + merge into base)':56s} {adapter_ms:10.2f}")
    print(f"{'pool.use(): same adapter again (hit)':56s} {hit_ms:10.3f}")
    print(f"{'peft set_adapter (all adapters loaded, unmerged)':56s} {median_ms(set_ms):10.3f}")
    print(f"{'pool.use(): base from disk (evicted, read, assigned)':56s} {disk_ms:10.1f}")
    print(f"{'load_file(backend=pread) of the base checkpoint':56s} {pread_ms:10.1f}   ratio {disk_ms / pread_ms:.2f}")
    print(f"generation speed, {kw['max_new_tokens']} tokens: merged adapter {merged_tps:.1f} tok/s, peft unmerged "
          f"{peft_tps:.1f} tok/s (ratio {merged_tps / peft_tps:.2f})")
    print(f"{len(trace)}-request trace, getting the expert ready: pool {t_pool:.2f}s vs from_pretrained + "
          f"PeftModel.from_pretrained per request {t_naive:.2f}s ({t_naive / t_pool:.0f}x); identical outputs "
          f"{same}/{len(trace)}")
    print(json.dumps({
        "name": "bench_switch", "source": "real", "experts": len(names), "adapters": len(adapters),
        "device": "cuda" if on_gpu else "cpu",
        "adapter_switch_ms": round(adapter_ms, 3), "adapter_hit_ms": round(hit_ms, 4),
        "peft_set_adapter_ms": round(median_ms(set_ms), 4), "base_disk_switch_ms": round(disk_ms, 2),
        "load_file_ms": round(pread_ms, 2), "disk_vs_load_file_ratio": round(disk_ms / pread_ms, 3),
        "merged_vs_peft_tokens_per_s": round(merged_tps / peft_tps, 3),
        "trace_speedup_vs_from_pretrained": round(t_naive / t_pool, 1), "trace_identical_outputs": same,
        "trace_requests": len(trace)}))
    return 0


def gpu_section(specs, names, nbytes: int, args) -> dict:
    """GPU / CPU / disk: GPU holds 1, CPU holds 2; host->device switch bandwidth vs a plain copy."""
    import torch

    from workbench.experts import ExpertPool, release_memory

    pool = ExpertPool(specs, gpu_memory=int(nbytes * 1.5), cpu_memory=int(nbytes * 2.5), prefetch=False)
    pool.prepare()
    gpu_hits, cpu_to_gpu, disk_to_gpu = [], [], []
    ids = torch.tensor([[4, 5, 6, 7]], device="cuda")
    for _ in range(args.repeats):
        for pair in (names[0:2], names[2:4]):
            for rep in range(3):
                for name in pair:
                    for again in range(2):  # second use is a GPU hit
                        with pool.use(name) as expert, torch.inference_mode():
                            expert.model(input_ids=ids)
                            torch.cuda.synchronize()
                        {"gpu": gpu_hits, "cpu": cpu_to_gpu}.get(expert.tier_found, disk_to_gpu).append(expert.switch_s)
    h2d = [e for e in pool.events() if e.action == "switch" and e.from_tier == "cpu" and e.to_tier == "gpu"]
    pool_bw = statistics.median(e.bytes / e.seconds for e in h2d) if h2d else float("nan")
    pool.close()
    release_memory(cuda=True)
    host = torch.empty(nbytes, dtype=torch.uint8)
    pinned = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
    plain, plain_pinned = [], []
    for _ in range(10):
        torch.cuda.synchronize(); s = time.perf_counter(); host.to("cuda"); torch.cuda.synchronize()
        plain.append(time.perf_counter() - s)
        s = time.perf_counter(); pinned.to("cuda", non_blocking=True); torch.cuda.synchronize()
        plain_pinned.append(time.perf_counter() - s)
    plain_bw = nbytes / statistics.median(plain)
    pinned_bw = nbytes / statistics.median(plain_pinned)
    print(f"\n## GPU / CPU / disk tiers (GPU holds 1, CPU holds 2): {torch.cuda.get_device_name(0)}")
    print(f"{'switch':40s} {'median ms':>10s}")
    print(f"{'GPU hit':40s} {median_ms(gpu_hits):10.3f}")
    print(f"{'CPU -> GPU (host->device copy)':40s} {median_ms(cpu_to_gpu):10.2f}")
    print(f"{'disk -> CPU -> GPU':40s} {median_ms(disk_to_gpu):10.2f}")
    print(f"{'host->device bandwidth, pool switch':40s} {pool_bw / 1e9:10.2f} GB/s")
    print(f"{'host->device bandwidth, plain .to(cuda)':40s} {plain_bw / 1e9:10.2f} GB/s  (pinned: {pinned_bw / 1e9:.2f} GB/s)")
    return {
        "gpu_hit_ms": round(median_ms(gpu_hits), 4),
        "cpu_to_gpu_switch_ms": round(median_ms(cpu_to_gpu), 3),
        "disk_to_gpu_switch_ms": round(median_ms(disk_to_gpu), 3),
        "h2d_switch_gbps": round(pool_bw / 1e9, 3),
        "h2d_plain_copy_gbps": round(plain_bw / 1e9, 3),
        "h2d_pinned_copy_gbps": round(pinned_bw / 1e9, 3),
        "h2d_switch_vs_plain_ratio": round(pool_bw / plain_bw, 3),
    }


if __name__ == "__main__":
    sys.exit(main())
