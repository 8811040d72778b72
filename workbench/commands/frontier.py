"""``coe-workbench frontier``: the MMLU-Pro evaluation protocol of a Composition of Experts."""
from __future__ import annotations

NAME = "frontier"
ORDER = 40
HELP = "evaluate router + budgeted category map on MMLU-Pro results (held-out half)"
DESCRIPTION = """\
Split the questions of a folder of MMLU-Pro eval-result files 50/50 (seeded, stratified by
category) into a calibration and a held-out half. On the calibration half fit the category router
(embeddings of the question text), its fallback threshold and, per budget, the category-to-expert
map that maximises accuracy under a budget on average active parameters. On the held-out half
report: router accuracy; for each budget the CoE accuracy with router-predicted categories and with
true categories, the measured average active parameters and the mapping; each model alone; and the
single-step DirectRouter at the same budgets.

--json prints one JSON object as the last line of stdout.

example:
  coe-workbench frontier --results ../shared/data/mmlu-pro --params data/mmlu_pro_params.yaml
  coe-workbench frontier --results ../shared/data/mmlu-pro --params data/mmlu_pro_params.yaml \\
      --budgets 8,13,30,50 --seed 0 --json
"""


def _budgets(text: str) -> list[float]:
    import argparse

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--budgets must be comma-separated numbers of billions, e.g. 8,13,30,50; got {text!r}"
        ) from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"--budgets needs positive numbers, got {text!r}")
    return values


def register(parser) -> None:
    parser.add_argument("--results", required=True, metavar="DIR",
                        help="folder of model_outputs_<model>_5shots.zip files")
    parser.add_argument("--params", default=None, metavar="FILE",
                        help="parameter counts (YAML/CSV: name,total_params_b,active_params_b); "
                             "default: the built-in counts of the 13 published models")
    parser.add_argument("--budgets", type=_budgets, default=[8.0, 13.0, 30.0, 50.0],
                        metavar="B1,B2,...", help="budgets on average active params (billions)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 50/50 split")
    parser.add_argument("--head", choices=["knn", "logreg", "knn+logreg", "mlp"], default=None,
                        help="router head (default: the protocol's tuned default)")
    parser.add_argument("--subjects", action="store_true",
                        help="train the router on the 91 src subjects, summed into categories")
    parser.add_argument("--model", default=None,
                        help="embedding model (HF id or folder; default all-MiniLM-L6-v2)")
    parser.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    from workbench.errors import UsageError

    results = Path(args.results)
    if not results.is_dir():
        raise UsageError(f"--results {str(results)!r} is not a folder of MMLU-Pro result files")
    if args.params is not None and not Path(args.params).is_file():
        raise UsageError(f"--params {args.params!r} does not exist; give a YAML/CSV of "
                             "name,total_params_b,active_params_b (e.g. data/mmlu_pro_params.yaml)")

    from workbench.embed import Embedder
    from workbench.evaluate import default_router, evaluate_mmlu_pro

    router = default_router()
    if args.head is not None and args.head != router.head:
        from workbench.router import CategoryRouter

        router = CategoryRouter(head=args.head)
    embedder = Embedder(args.model, progress=not args.quiet and sys.stderr.isatty())
    res = evaluate_mmlu_pro(results, args.params, budgets=args.budgets, seed=args.seed,
                            embedder=embedder, router=router, use_subjects=args.subjects)

    out = sys.stdout
    print(f"MMLU-Pro protocol: {res.n_calibration} calibration / {res.n_held_out} held-out "
          f"questions, seed {res.seed}, {len(res.models)} models, {len(res.categories)} categories",
          file=out)
    print(f"router (held-out): accuracy {res.router_accuracy:.4f}, macro-F1 "
          f"{res.router_macro_f1:.4f}  (calibration CV accuracy {res.router_cv_accuracy:.4f})",
          file=out)
    print(f"per-question oracle (best model on each question): {res.oracle_per_question:.4f}",
          file=out)
    print("", file=out)
    print(f"{'budget':>7} {'CoE acc':>8} {'avg act':>8} {'true-cat':>8} {'fallback':>8} "
          f"{'direct':>8} {'dir act':>8} {'best single ≤ budget':>32}", file=out)
    table = res.comparison_table()
    by_budget = {b.budget_b: b for b in res.budgets}
    for row in table.itertuples():
        b = by_budget[row.budget_b]
        best = f"{row.best_single_model} {row.best_single_accuracy:.4f}" if row.best_single_model \
            else "-"
        print(f"{row.budget_b:>6g}B {row.coe_accuracy:>8.4f} {row.coe_avg_active_b:>7.2f}B "
              f"{row.coe_true_category_accuracy:>8.4f} {b.fallback_rate:>8.3f} "
              f"{row.direct_accuracy:>8.4f} {row.direct_avg_active_b:>7.2f}B {best:>32}", file=out)
    print("", file=out)
    print("category -> expert at each budget (router-predicted categories):", file=out)
    print(res.mapping_table().to_string(), file=out)
    print("", file=out)
    print("each model alone (held-out accuracy, active params):", file=out)
    for name, acc in sorted(res.models.items(), key=lambda kv: res.model_active_b[kv[0]]):
        print(f"  {name:<32} {acc:.4f}  {res.model_active_b[name]:>6.1f}B", file=out)
    if args.json:
        print(json.dumps(res.to_dict(), sort_keys=False), file=out)
    return 0
