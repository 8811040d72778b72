"""Exact budgeted frontier vs scipy's ``milp`` solved once per budget.

Problem: 14 categories x 13 experts (MMLU-Pro per-category accuracy of the 13 models in
``../shared/data/mmlu-pro`` with their model-card sizes; seeded random scores and sizes when that
folder is absent), category weights = question shares, 100 budgets on average active parameters
spanning the smallest to the largest feasible one.

* ours: one ``pareto_frontier(..., budgets=those 100)`` call (the exact Pareto programme, maps
  included);
* alternative: ``scipy.optimize.milp`` (HiGHS, ``mip_rel_gap=0``) once per budget on the
  multiple-choice knapsack (one binary per category x expert).

Both optima are compared per budget (tolerance 1e-9) -> ``same_optimum``.

Run: ``.venv/bin/python benchmarks/bench_optimizer.py [--repeats 3]``. The last line of stdout is a
JSON summary.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workbench._paths import shared_data_dir  # noqa: E402
from workbench.mapping import pareto_frontier  # noqa: E402
from workbench.registry import ModelRegistry, mmlu_pro_registry  # noqa: E402


def load_problem(seed: int = 0):
    """(category means, weights, registry, source description)."""
    shared = shared_data_dir()
    mmlu = shared / "mmlu-pro" if shared is not None else None
    if mmlu is not None and any(mmlu.glob("model_outputs_*_5shots.zip")):
        from workbench.scores import ExpertScores

        scores = ExpertScores.from_mmlu_pro(mmlu)
        reg = mmlu_pro_registry().subset(scores.experts)
        return scores.category_means(), scores.category_weights(), reg, f"MMLU-Pro ({mmlu})"
    rng = np.random.default_rng(seed)
    cats = [f"category_{i:02d}" for i in range(14)]
    experts = [f"expert_{j:02d}" for j in range(13)]
    sizes = np.sort(rng.choice([3.8, 6.1, 7.2, 7.7, 8.0, 8.5, 12.9, 34.4, 35.0, 70.6, 72.3, 111.2], 13))
    quality = 0.25 + 0.1 * np.log(sizes)  # bigger is better on average, with per-category noise
    means = pd.DataFrame(np.clip(quality[None, :] + rng.normal(0, 0.08, (14, 13)), 0, 1),
                         index=cats, columns=experts)
    w = rng.integers(300, 1400, 14).astype(float)
    return means, dict(zip(cats, w / w.sum())), ModelRegistry(dict(zip(experts, sizes))), \
        f"seeded random 14x13 (seed {seed}; ../shared/data absent)"


def milp_optimum(means: pd.DataFrame, weights: dict, reg: ModelRegistry, budget: float) -> float:
    """Best expected score within ``budget`` by one scipy ``milp`` call."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    C, E = means.shape
    w = np.array([weights[c] for c in means.index], dtype=float)
    w = w / w.sum()
    active = np.array([reg.active(e) for e in means.columns])
    n = C * E
    objective = -(w[:, None] * means.to_numpy()).ravel()
    A = np.zeros((C + 1, n))
    for c in range(C):
        A[c, c * E:(c + 1) * E] = 1.0
    A[C] = (w[:, None] * active[None, :]).ravel()
    lb = np.r_[np.ones(C), -np.inf]
    ub = np.r_[np.ones(C), budget]
    res = milp(objective, constraints=LinearConstraint(A, lb, ub), integrality=np.ones(n),
               bounds=Bounds(0, 1), options={"mip_rel_gap": 0.0})
    if not res.success:
        raise RuntimeError(f"milp failed at budget {budget}: {res.message}")
    return float(-res.fun)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budgets", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (best of)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    means, weights, reg, source = load_problem(args.seed)
    w = np.array([weights[c] for c in means.index], dtype=float)
    w = w / w.sum()
    active = np.array([reg.active(e) for e in means.columns])
    lo = float(w @ active[np.argmin(np.broadcast_to(active, means.shape), axis=1)])  # all cheapest
    hi = float(active.max())
    budgets = np.linspace(lo, hi, args.budgets).tolist()
    print(f"problem: {means.shape[0]} categories x {means.shape[1]} experts from {source}")
    print(f"budgets: {len(budgets)} from {lo:.3f}B to {hi:.3f}B average active parameters\n")

    ours_times, points = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        points = pareto_frontier(means, weights, reg, budgets=budgets)
        ours_times.append(time.perf_counter() - t0)
    milp_times, milp_values = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        milp_values = [milp_optimum(means, weights, reg, b) for b in budgets]
        milp_times.append(time.perf_counter() - t0)
    ours_s, milp_s = min(ours_times), min(milp_times)
    ours_values = np.array([p.expected_score for p in points])
    milp_values = np.array(milp_values)
    diff = np.abs(ours_values - milp_values)
    same = bool((diff <= 1e-9).all())
    within = bool(all(p.average_active_params_b <= b * (1 + 1e-9) for p, b in zip(points, budgets)))
    breakpoints = len(pareto_frontier(means, weights, reg))

    print(f"{'method':<44}{'total s':>10}{'ms/budget':>12}")
    print(f"{'ours: pareto_frontier (1 call, 100 budgets)':<44}{ours_s:>10.4f}{1000 * ours_s / len(budgets):>12.3f}")
    print(f"{'scipy milp (HiGHS), once per budget':<44}{milp_s:>10.4f}{1000 * milp_s / len(budgets):>12.3f}")
    print()
    print(f"{'budget B':>10}{'ours score':>12}{'milp score':>12}{'|diff|':>10}{'avg active':>12}{'resident':>10}  experts")
    for i in list(range(0, len(budgets), max(1, len(budgets) // 10))) + [len(budgets) - 1]:
        p = points[i]
        print(f"{budgets[i]:>10.3f}{ours_values[i]:>12.6f}{milp_values[i]:>12.6f}{diff[i]:>10.1e}"
              f"{p.average_active_params_b:>12.3f}{p.resident_params_b:>10.1f}  {len(p.mapping.experts_used)}")
    print(f"\nfrontier breakpoints: {breakpoints}; max |ours - milp| = {diff.max():.2e}; "
          f"all maps within budget: {within}; speedup {milp_s / ours_s:.1f}x (target >= 20x)")
    summary = {
        "name": "bench_optimizer",
        "source": "mmlu-pro" if source.startswith("MMLU") else "seeded-random",
        "categories": int(means.shape[0]),
        "experts": int(means.shape[1]),
        "budgets": len(budgets),
        "ours_s": round(ours_s, 5),
        "milp_s": round(milp_s, 5),
        "speedup_vs_milp": round(milp_s / ours_s, 2),
        "ratio": round(milp_s / ours_s, 2),
        "same_optimum": same,
        "max_abs_diff": float(diff.max()),
        "within_budget": within,
        "frontier_breakpoints": breakpoints,
    }
    print(json.dumps(summary))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
