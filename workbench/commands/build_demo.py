"""``coe-workbench build-demo``: build (or load) the offline demo bundle and print what it holds."""
from __future__ import annotations

NAME = "build-demo"
ORDER = 15
HELP = "pre-build the offline demo (train the tiny experts, score them, fit router and map)"
DESCRIPTION = """\
Build the offline demo bundle ahead of time, with progress bars: the demo prompt set, the
default embedder, tiny Llama experts trained on CPU (a generalist and smaller specialists, about
5 CPU-minutes, i.e. 2-3 minutes on 2 idle cores; cached by version and seed), their live scores
on held-out prompts, the category router and the budgeted category-to-expert map. Prints the
experts' sizes and training times, the per-category scores and the map. A second run loads
everything from the cache.

example:
  coe-workbench build-demo
  coe-workbench build-demo --seed 1 --force
"""


def register(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and training (default 0)")
    parser.add_argument("--force", action="store_true", help="retrain and rescore even if cached")
    parser.add_argument("--budget", metavar="B", default=None,
                        help="budget of the map: '4M', '0.004B' or a number in billions")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    import time

    import pandas as pd

    from workbench.commands.chat import parse_budget
    from workbench.demo import build_demo_bundle

    t0 = time.perf_counter()
    bundle = build_demo_bundle(seed=args.seed, progress=not args.quiet, force=args.force,
                               budget_b=parse_budget(args.budget))
    print(f"demo bundle ready in {time.perf_counter() - t0:.1f} s; experts in {bundle.experts.root}")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print("\nexperts:")
        print(bundle.experts.summary().to_string(index=False))
        print("\nheld-out score per category (per-token probability of the reference answer):")
        print(bundle.category_scores().round(4).to_string())
    print()
    print(bundle.summary())
    return 0
