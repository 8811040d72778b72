"""Comp-LLM executor: parallel graph execution vs one-by-one vs the critical path, on the demo experts.

For synthetic query graphs of width 1-8 and depth 1-4 (each node a real demo prompt sent to one of
the demo experts, each dependent node carrying its upstream answers through ``{{id}}``
placeholders), run the same graph

* with :class:`~workbench.compose.GraphExecutor` (ready nodes in parallel, up to the width), and
* one by one in dependency order (``max_parallel=1``: the obvious alternative),

and compare the parallel wall time with the sequential wall time and with the graph's critical
path. The critical path is computed from each node's *measured* duration in the parallel run, so
the ratio measures the scheduler (idle gaps, admission, thread start-up), not the hardware; the
critical path at the one-by-one durations (uncontended) is reported beside it to show how much
the hardware lets parallel generations overlap. A last set of rows runs wide graphs with the pool
capacity cut to two experts, to show memory-bounded admission (excluded from the target).

Run: ``.venv/bin/python benchmarks/bench_compose.py [--quick]``. The last stdout line is JSON with
``max_ratio_to_critical_path`` and ``mean_speedup_vs_sequential``.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

from _common import summary, table  # noqa: E402  (sets sys.path and offline env)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="1,2,4,8")
    p.add_argument("--depths", default="1,2,3,4")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--repeats", type=int, default=2, help="runs per graph and mode (the fastest is kept)")
    p.add_argument("--quick", action="store_true", help="widths 1,2,4 and depths 1,2 only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes for the ProcessPoolRunner column (default: usable cores; 0 skips it)")
    p.add_argument("--threads", default="1",
                   help="torch threads per generation in both modes: an int, or 'auto' (cores // concurrency). "
                        "Default 1: the tiny demo experts gain nothing from intra-op threads, and 2 OpenMP threads "
                        "thrash when other processes load the cores")
    return p.parse_args()


def demo_experts():
    """The demo experts (trained once, then loaded from the cache) and their ExpertSpecs."""
    from workbench.demo import train_demo_experts

    t0 = time.perf_counter()
    experts = train_demo_experts(progress=False)
    return experts, experts.specs(), time.perf_counter() - t0


def prompts_by_expert(experts):
    from workbench.prompts import load_demo_prompts

    prompts = load_demo_prompts()
    df = prompts.df
    held = set(map(str, experts.held_out_ids))
    out = {}
    for name in experts.names:
        cats = experts.info[name]["categories"] or sorted(df["category"].astype(str).unique())
        rows = df[df["category"].astype(str).isin(cats) & df["id"].astype(str).isin(held)]
        out[name] = [t for t in rows["text"].astype(str) if len(t) < 240] or list(rows["text"].astype(str))
    return out


def synthetic_graph(width: int, depth: int, experts: list[str], texts: dict[str, list[str]], rng: random.Random):
    """``depth`` levels of ``width`` nodes; node (k, i) needs (k-1, i) and, for i > 0, (k-1, i-1)."""
    from workbench.compose import QueryGraph, SubQuery

    nodes = []
    for k in range(depth):
        for i in range(width):
            expert = experts[(i + k) % len(experts)]
            text = rng.choice(texts[expert])
            deps = [] if k == 0 else [f"n{k - 1}_{i}"] + ([f"n{k - 1}_{i - 1}"] if i > 0 else [])
            text += "".join(f"\nEarlier answer: {{{{{d}}}}}" for d in deps)
            nodes.append(SubQuery(f"n{k}_{i}", text, [], expert))
    return QueryGraph(nodes, query=f"synthetic width {width} depth {depth}")


class CappedRunner:
    """A PoolRunner whose capacity is cut to ``capacity`` bytes (memory-bounded admission)."""

    def __init__(self, runner, capacity: int):
        self.runner, self.capacity = runner, capacity

    def __call__(self, expert, prompt):
        return self.runner(expert, prompt)

    def capacity_bytes(self):
        return self.capacity

    def expert_bytes(self, expert):
        return self.runner.expert_bytes(expert)


def peak_resident(result, sizes: dict) -> tuple[int, int]:
    """(most distinct experts running at once, their bytes) from the measured node intervals."""
    events = sorted((t, kind, r.expert) for r in result.nodes.values() if r.start_s is not None
                    for t, kind in ((r.start_s, 1), (r.end_s, -1)))
    running: dict[str, int] = {}
    best = (0, 0)
    for _t, kind, expert in sorted(events, key=lambda e: (e[0], e[1])):
        running[expert] = running.get(expert, 0) + kind
        active = [e for e, n in running.items() if n > 0]
        best = max(best, (len(active), sum(sizes[e] for e in active)), key=lambda b: b[1])
    return best


class ReplayRunner:
    """Replays a recorded one-by-one run: each call sleeps for that node's measured duration and
    returns its recorded answer, as if every expert had a device of its own (no CPU contention).
    Used only to show what the scheduler achieves when the hardware is not the bottleneck."""

    def __init__(self, recorded):
        self.table = {(r.expert, r.prompt): (r.duration_s, r.text) for r in recorded.nodes.values()}

    def __call__(self, expert, prompt):
        seconds, text = self.table[(expert, prompt)]
        time.sleep(seconds)
        return text


def best_of(fn, repeats: int):
    runs = [fn() for _ in range(max(1, repeats))]
    return min(runs, key=lambda r: r.wall_s)


def main() -> int:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from workbench.compose import GraphExecutor, PoolRunner, ProcessPoolRunner
    from workbench.experts import ExpertPool

    widths = [1, 2, 4] if args.quick else [int(x) for x in args.widths.split(",")]
    depths = [1, 2] if args.quick else [int(x) for x in args.depths.split(",")]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = os.getloadavg()[0]
    experts, specs, build_s = demo_experts()
    pool = ExpertPool(specs, gpu_memory=None, cpu_memory="4GiB", prefetch=False)
    runner = PoolRunner(pool, max_new_tokens=args.max_new_tokens)
    names = [s.name for s in specs]
    t0 = time.perf_counter()
    for name in names:  # warm: every expert resident in the CPU tier, so switching is not measured
        pool.generate(name, "Hello", max_new_tokens=2)
    warm_s = time.perf_counter() - t0
    sizes = {n: runner.expert_bytes(n) for n in names}
    capacity = runner.capacity_bytes()
    texts = prompts_by_expert(experts)
    rng = random.Random(args.seed)
    threads_default = torch.get_num_threads()
    print(f"demo experts: {', '.join(f'{n} ({sizes[n] / 2**20:.0f} MiB)' for n in names)}; loaded in {build_s:.1f}s, "
          f"warmed in {warm_s:.1f}s")
    print(f"hardware: {cores} usable CPU cores, torch {torch.__version__} with {threads_default} threads by default, "
          f"CUDA {'available' if torch.cuda.is_available() else 'not available'}; load average {load_before:.1f} "
          f"(other processes share these cores)")
    print(f"torch threads per generation: {args.threads} in both modes (see --threads)")
    print(f"greedy decoding, max_new_tokens={args.max_new_tokens}; pool capacity {capacity / 2**30:.1f} GiB "
          f"(holds all {len(names)} experts at once)")

    # warm-up (first-call allocations, thread pools) on a small graph, not timed
    warm = synthetic_graph(2, 2, names, texts, random.Random(args.seed + 1))
    threads = args.threads if args.threads == "auto" else int(args.threads)
    GraphExecutor(runner, torch_threads=threads).run(warm.copy())
    GraphExecutor(runner, max_parallel=1, torch_threads=threads).run(warm.copy())

    workers = cores if args.workers is None else args.workers
    procs = None
    if workers > 0:
        t0 = time.perf_counter()
        procs = ProcessPoolRunner(specs, workers=workers, threads_per_worker=1, max_new_tokens=args.max_new_tokens)
        procs.warm()
        GraphExecutor(procs).run(warm.copy())
        print(f"worker processes: {workers}, each with its own pool of the demo experts (started and warmed in "
              f"{time.perf_counter() - t0:.1f}s)")

    rows, capped_rows, replay_rows = [], [], []
    for depth in depths:
        for width in widths:
            graph = synthetic_graph(width, depth, names, texts, rng)
            par_ex = GraphExecutor(runner, max_parallel=None, capacity_bytes="auto", torch_threads=threads)
            seq_ex = GraphExecutor(runner, max_parallel=1, capacity_bytes="auto", torch_threads=threads)
            # alternate which mode goes first, so slow drifts on the shared machine hit both
            if (width + depth) % 2:
                par = best_of(lambda: par_ex.run(graph.copy()), args.repeats)
                seq = best_of(lambda: seq_ex.run(graph.copy()), args.repeats)
            else:
                seq = best_of(lambda: seq_ex.run(graph.copy()), args.repeats)
                par = best_of(lambda: par_ex.run(graph.copy()), args.repeats)
            for res in (par, seq):
                if res.missing:
                    raise SystemExit(f"bench graph w={width} d={depth} failed: {res.missing_report()}")
            cp_s, _ = par.critical_path
            cp_seq, _ = seq.critical_path
            proc = best_of(lambda: GraphExecutor(procs).run(graph.copy()), args.repeats) if procs is not None else None
            if proc is not None and proc.missing:
                raise SystemExit(f"bench graph w={width} d={depth} failed in the workers: {proc.missing_report()}")
            same = sum(par.answers[n] == seq.answers[n] for n in graph.ids)
            rows.append({
                "width": width, "depth": depth, "nodes": len(graph), "threads": par.torch_threads,
                "parallel_s": par.wall_s, "sequential_s": seq.wall_s, "speedup": seq.wall_s / par.wall_s,
                "crit_path_s": cp_s, "ratio_to_cp": par.wall_s / cp_s if cp_s else float("nan"),
                "cp_uncontended_s": cp_seq, "ratio_to_uncontended_cp": par.wall_s / cp_seq if cp_seq else float("nan"),
                "node_s_par": statistics.mean(par.durations.values()),
                "node_s_seq": statistics.mean(seq.durations.values()),
                "peak": par.peak_parallel, "same_answers": f"{same}/{len(graph)}",
            })
            if proc is not None:
                rows[-1].update({"procs_s": proc.wall_s, "speedup_procs": seq.wall_s / proc.wall_s,
                                 "node_s_procs": statistics.mean(proc.durations.values()),
                                 "procs_same": f"{sum(proc.answers[n] == seq.answers[n] for n in graph.ids)}/{len(graph)}"})
            rep = best_of(lambda: GraphExecutor(ReplayRunner(seq), torch_threads=None).run(graph.copy()), args.repeats)
            replay_rows.append({"width": width, "depth": depth, "parallel_s": rep.wall_s,
                                "sequential_s": seq.sequential_s, "speedup": seq.sequential_s / rep.wall_s,
                                "crit_path_s": cp_seq, "ratio_to_cp": rep.wall_s / cp_seq if cp_seq else float("nan"),
                                "peak": rep.peak_parallel})
            print(f"  w={width} d={depth}: parallel {par.wall_s:.2f}s, one by one {seq.wall_s:.2f}s, "
                  f"critical path {cp_s:.2f}s", file=sys.stderr, flush=True)
    # memory-bounded admission: capacity for the two largest experts only
    two = sum(sorted(sizes.values())[-2:])
    capped = CappedRunner(runner, two)
    for width in [w for w in widths if w >= 4]:
        graph = synthetic_graph(width, 2, names, texts, rng)
        res = GraphExecutor(capped, capacity_bytes="auto", torch_threads=threads).run(graph)
        cp_s, _ = res.critical_path
        n_experts, peak_bytes = peak_resident(res, sizes)
        capped_rows.append({"width": width, "depth": 2, "capacity_MiB": round(two / 2**20, 1),
                            "parallel_s": res.wall_s, "crit_path_s": cp_s, "ratio_to_cp": res.wall_s / cp_s,
                            "peak_nodes": res.peak_parallel, "peak_experts": n_experts,
                            "peak_running_MiB": round(peak_bytes / 2**20, 1),
                            "experts_in_graph": len(set(graph.experts().values()))})
    load_after = os.getloadavg()[0]
    pool.close()
    if procs is not None:
        procs.close()

    table(rows, "parallel GraphExecutor vs one by one (same nodes, same greedy outputs expected)")
    table(replay_rows, "replay of the one-by-one run (each node sleeps its measured duration, returns its recorded "
                       "answer): the scheduler when every expert has its own device")
    table(capped_rows, "pool capacity cut to the bytes of the two largest experts (admission keeps running experts within it)")
    ratios = [r["ratio_to_cp"] for r in rows]
    speedups = [r["speedup"] for r in rows]
    wide = [r["speedup"] for r in rows if r["width"] > 1]
    print(f"""
notes:
- ratio_to_cp = parallel wall / critical path computed from each node's measured duration in the
  parallel run (the longest chain of dependent nodes; no schedule can beat it). Values near 1.0
  mean the executor leaves no idle gaps: a node starts as soon as its inputs are ready.
- cp_uncontended_s is the critical path at the one-by-one node durations. On {cores} CPU cores,
  {max(widths)} concurrent generations cannot each run at full speed (node_s_par vs node_s_seq):
  torch ops share the cores (torch.set_num_threads is process-wide, so the executor sets it once
  per run: --threads, or cores // concurrency with 'auto') and HF generate's per-token Python work
  holds the GIL. With 2 OpenMP threads on a loaded machine one 24-token generation of the 7M
  expert was measured at 12.1 s vs 0.56 s with 1 thread (thread thrashing), hence --threads 1.
  So the speed-up over one by one is bounded by the cores and by the GIL, not by the scheduler;
  on a GPU or a many-core machine the uncontended ratio approaches ratio_to_cp.
- procs_s: the same graphs through ProcessPoolRunner ({workers} worker processes, one interpreter
  each, so no shared GIL; at most {workers} nodes at once). If it is no faster than the threads
  either, the cores (shared with other jobs) are the limit, not the GIL.
- the replay table shows the same graphs when node durations do not inflate under parallelism
  (what separate GPUs or remote experts give): wall stays within a few percent of the critical
  path and the speed-up over one by one grows with the width, as in the Comp-LLM paper.
- width-1 graphs are chains: parallel and one by one do the same work (speed-up ~1).
- load average before/after: {load_before:.1f}/{load_after:.1f}; other engineers' jobs share
  this machine, so absolute seconds are noisy; the ratios come from the same run.""")
    summary("bench_compose",
            max_ratio_to_critical_path=round(max(ratios), 4),
            mean_ratio_to_critical_path=round(statistics.mean(ratios), 4),
            mean_speedup_vs_sequential=round(statistics.mean(speedups), 4),
            mean_speedup_vs_sequential_width_gt1=round(statistics.mean(wide), 4) if wide else None,
            max_speedup_vs_sequential=round(max(speedups), 4),
            mean_ratio_to_uncontended_critical_path=round(statistics.mean(r["ratio_to_uncontended_cp"] for r in rows), 4),
            mean_speedup_vs_sequential_processes=(round(statistics.mean(r["speedup_procs"] for r in rows), 4)
                                                  if procs is not None else None),
            workers=workers,
            replay_max_ratio_to_critical_path=round(max(r["ratio_to_cp"] for r in replay_rows), 4),
            replay_mean_speedup_vs_sequential=round(statistics.mean(r["speedup"] for r in replay_rows), 4),
            target_ratio=1.15, meets_target=max(ratios) <= 1.15, graphs=len(rows), cores=cores,
            max_new_tokens=args.max_new_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
