"""``coe-workbench frontier``: the evaluation protocol of a Composition of Experts on per-prompt
results (a MMLU-Pro folder, or a long or wide results table of your own)."""
from __future__ import annotations

NAME = "frontier"
ORDER = 40
HELP = "evaluate router + budgeted category map on per-prompt results (held-out half)"
DESCRIPTION = """\
Split the prompts of a results source 50/50 (seeded, stratified by category) into a calibration
and a held-out half. On the calibration half fit the category router (embeddings of the prompt
text), its fallback threshold and, per budget, the category-to-expert map that maximises the mean
score under a budget on average active parameters. On the held-out half report: router accuracy;
for each budget the CoE accuracy with router-predicted categories and with true categories, the
measured average active parameters and the mapping; each model alone; the single-step
DirectRouter at the same budgets; and RouterBench's AIQ of each cost/quality curve.

--results takes a folder of MMLU-Pro eval-result files, or a results table (.csv, .tsv, .jsonl,
.parquet):
  long  one row per (prompt, model): columns prompt_id, prompt, category, model, score
        (prompt optional; score a number, higher is better: 0/1, a judge grade, a reward)
  wide  one row per prompt, one score column per model: --models a,b or --prefix score_
Rename columns with --columns prompt=question,category=task. A table without prompt text runs
the map and the frontier on each prompt's true category (no router, no DirectRouter).

--json prints one JSON object as the last line of stdout.

example:
  coe-workbench frontier --results ../shared/data/mmlu-pro --params data/mmlu_pro_params.yaml
  coe-workbench frontier --results ../shared/data/mmlu-pro --params data/mmlu_pro_params.yaml \\
      --budgets 8,13,30,50 --seed 0 --json
  coe-workbench frontier --results my_results.csv --params my_params.yaml --missing drop
  coe-workbench frontier --results grades.parquet --params my_params.yaml \\
      --columns prompt_id=uid,category=task --prefix grade_
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
    parser.add_argument("--results", required=True, metavar="PATH",
                        help="folder of model_outputs_<model>_5shots.zip files, or a long or wide "
                             "results table (.csv, .tsv, .jsonl, .parquet)")
    parser.add_argument("--params", default=None, metavar="FILE",
                        help="parameter counts (YAML/CSV: name,total_params_b,active_params_b); "
                             "default: the built-in counts of the 13 published models")
    parser.add_argument("--columns", default=None, metavar="NAME=COL,...",
                        help="results table: your column names for prompt_id, prompt, category, "
                             "model, score, e.g. prompt=question,category=task")
    parser.add_argument("--models", default=None, metavar="A,B,...",
                        help="wide table: the score columns (one per model); long table: keep "
                             "only these models")
    parser.add_argument("--prefix", default=None, metavar="TEXT",
                        help="wide table: every column named TEXT<model> holds a model's scores")
    parser.add_argument("--missing", choices=["error", "drop"], default="error",
                        help="(prompt, model) pairs without a score: stop with an error "
                             "(default), or drop those prompts for every model")
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


def _table_flags_used(args) -> list[str]:
    return [flag for flag, value in (("--columns", args.columns), ("--models", args.models),
                                     ("--prefix", args.prefix))
            if value is not None] + (["--missing drop"] if args.missing == "drop" else [])


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    from workbench.errors import UsageError

    results = Path(args.results)
    if not results.exists():
        raise UsageError(f"--results {str(results)!r} is not a folder of MMLU-Pro result files "
                         "nor a results table; give a folder of model_outputs_<model>_5shots.zip "
                         "files or a .csv, .tsv, .jsonl or .parquet table")
    if args.params is not None and not Path(args.params).is_file():
        raise UsageError(f"--params {args.params!r} does not exist; give a YAML/CSV of "
                             "name,total_params_b,active_params_b (e.g. data/mmlu_pro_params.yaml)")
    table = None
    if results.is_dir():
        used = _table_flags_used(args)
        if used:
            raise UsageError(f"{' and '.join(used)} only apply to a results table; --results "
                             f"{str(results)!r} is a folder of MMLU-Pro result files")
    else:
        if args.subjects:
            raise UsageError("--subjects needs a folder of MMLU-Pro result files (their src "
                             "subjects); a results table has none")
        from workbench.results import parse_columns, read_results

        models = None if args.models is None else [m.strip() for m in args.models.split(",")
                                                  if m.strip()]
        table = read_results(results, columns=parse_columns(args.columns), models=models,
                             prefix=args.prefix, missing=args.missing)

    from workbench.evaluate import default_router

    router = default_router()
    if args.head is not None and args.head != router.head:
        from workbench.router import CategoryRouter

        router = CategoryRouter(head=args.head)
    # progress on stderr also when it is a log, not a terminal (periodic lines; workbench.progress)
    progress = None if not args.quiet else False

    def stage(text: str) -> None:
        if not args.quiet:
            print(f"frontier: {text}", file=sys.stderr, flush=True)

    def _embedder():
        from workbench.embed import Embedder

        return Embedder(args.model, progress=progress)

    out = sys.stdout
    if table is None:
        from workbench.evaluate import evaluate_mmlu_pro

        stage(f"reading {results} and embedding its questions (cached after the first run), then "
              f"fitting the router and the maps at {len(args.budgets)} budgets")
        res = evaluate_mmlu_pro(results, args.params, budgets=args.budgets, seed=args.seed,
                                embedder=_embedder(), router=router, use_subjects=args.subjects)
        kind, unit = "MMLU-Pro", "questions"
    else:
        from workbench.evaluate_results import evaluate_results

        print(table.summary(), file=out)
        stage(("embedding the prompts (cached after the first run), then " if table.has_text else "")
              + f"fitting the maps at {len(args.budgets)} budgets")
        res = evaluate_results(table, args.params, budgets=args.budgets, seed=args.seed,
                               embedder=_embedder() if table.has_text else None, router=router)
        kind, unit = "results-table", "prompts"
    print(f"{kind} protocol: {res.n_calibration} calibration / {res.n_held_out} held-out "
          f"{unit}, seed {res.seed}, {len(res.models)} models, {len(res.categories)} categories",
          file=out)
    if res.routing == "true_categories":
        print("no prompt text: no router and no DirectRouter; the map and the frontier use each "
              "prompt's true category (routing: true_categories)", file=out)
    else:
        print(f"router (held-out): accuracy {res.router_accuracy:.4f}, macro-F1 "
              f"{res.router_macro_f1:.4f}  (calibration CV accuracy {res.router_cv_accuracy:.4f})",
              file=out)
    print(f"per-question oracle (best model on each question): {res.oracle_per_question:.4f}",
          file=out)
    print("", file=out)
    print(f"{'budget':>7} {'CoE acc':>8} {'avg act':>8} {'true-cat':>8} {'fallback':>8} "
          f"{'direct':>8} {'dir act':>8} {'best single ≤ budget':>32}", file=out)
    comparison = res.comparison_table()
    by_budget = {b.budget_b: b for b in res.budgets}
    for row in comparison.itertuples():
        b = by_budget[row.budget_b]
        best = f"{row.best_single_model} {row.best_single_accuracy:.4f}" if row.best_single_model \
            else "-"
        print(f"{row.budget_b:>6g}B {row.coe_accuracy:>8.4f} {row.coe_avg_active_b:>7.2f}B "
              f"{row.coe_true_category_accuracy:>8.4f} {b.fallback_rate:>8.3f} "
              f"{row.direct_accuracy:>8.4f} {row.direct_avg_active_b:>7.2f}B {best:>32}", file=out)
    print("", file=out)
    print("category -> expert at each budget "
          f"({'true' if res.routing == 'true_categories' else 'router-predicted'} categories):",
          file=out)
    print(res.mapping_table().to_string(), file=out)
    print("", file=out)
    print("each model alone (held-out accuracy, active params):", file=out)
    for name, acc in sorted(res.models.items(), key=lambda kv: res.model_active_b[kv[0]]):
        print(f"  {name:<32} {acc:.4f}  {res.model_active_b[name]:>6.1f}B", file=out)
    aiq = res.aiq()
    parts = [f"{label} {aiq[key]:.4f}" for key, label in (
        ("coe", "CoE"), ("coe_true_categories", "CoE true categories"),
        ("direct", "DirectRouter"), ("models", "single models")) if aiq[key] is not None
        and not (key == "coe_true_categories" and res.routing == "true_categories")]
    print("", file=out)
    print(f"AIQ (held-out; non-decreasing convex hull, flat to {aiq['max_cost_b']:g}B, area / "
          f"{aiq['max_cost_b']:g}B): " + ", ".join(parts), file=out)
    if args.json:
        data = res.to_dict()
        if table is not None:
            data["table"] = {"path": table.source, "layout": table.layout,
                             "prompts": table.scores.n_prompts,
                             "missing_pairs": table.missing_pairs,
                             "dropped_prompts": len(table.dropped)}
        print(json.dumps(data, sort_keys=False), file=out)
    return 0
