"""``coe-workbench chat``: the live CoE as a chat in the terminal (streams tokens, prints traces)."""
from __future__ import annotations

NAME = "chat"
ORDER = 20
HELP = "chat with the live CoE in the terminal (demo bundle, or your experts/map/router files)"
DESCRIPTION = """\
Chat with the live Composition of Experts in the terminal. Each line you type is embedded, routed
to a category, sent to the category's expert through the expert pool, and answered with streamed
tokens; a trace follows each answer (category and probability, fallback, expert, the tier it was
found in, switch/embed/route/generate times, tokens per second).

By default it runs over the offline demo bundle (SmolLM2-135M-Instruct and its LoRA specialists;
--tiny for the tiny from-scratch experts). Give --experts, --map and --router to chat with your own
CoE instead. Reads stdin until EOF or /quit, so it also works non-interactively.

A follow-up goes to the expert of the previous answer, with the conversation so far, unless its
category is confidently different (--switch-confidence); each trace says which rule decided.

commands inside the chat: /map (show the map), /new (forget the conversation), /help, /quit

example:
  coe-workbench chat
  echo "Solve 2x+3=11" | coe-workbench chat
  coe-workbench chat --budget 4M --max-new-tokens 48
  coe-workbench chat --experts experts.yaml --map mapping.yaml --router router.npz
"""


def register(parser) -> None:
    parser.add_argument("--budget", metavar="B", default=None,
                        help="re-optimise the demo map at this budget on average active parameters: "
                             "'135M', '0.135B' or a number in billions (default: the demo's optimised map)")
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                        help="tokens per answer (default: each expert's own setting)")
    parser.add_argument("--no-stream", action="store_true", help="print each answer when complete")
    parser.add_argument("--switch-confidence", type=float, default=None, metavar="P",
                        help="a follow-up moves to another expert only when its category is at "
                             "least this probable (default 0.6); the trace's 'turn' says why")
    parser.add_argument("--single-turn", action="store_true",
                        help="route every line on its own (no conversation history)")
    parser.add_argument("--seed", type=int, default=0, help="demo bundle seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars while building")
    from workbench.commands.serve import add_demo_arguments

    add_demo_arguments(parser)
    parser.add_argument("--experts", metavar="YAML", help="your ExpertSpec list (instead of the demo)")
    parser.add_argument("--map", metavar="FILE", dest="map_file",
                        help="your category-to-expert map (.json/.yaml); needs --experts and --router")
    parser.add_argument("--router", metavar="NPZ", help="your fitted CategoryRouter (.npz)")
    parser.add_argument("--embedder", metavar="MODEL", default=None,
                        help="embedding model for --router (default all-MiniLM-L6-v2)")


def parse_budget(value: str | None) -> float | None:
    """'4M' -> 0.004, '0.5B' -> 0.5, '0.004' -> 0.004 (billions); None stays None."""
    from workbench.errors import UsageError

    if value is None:
        return None
    text = str(value).strip().upper()
    scale = 1.0
    if text.endswith("M"):
        text, scale = text[:-1], 1e-3
    elif text.endswith("B"):
        text = text[:-1]
    try:
        budget = float(text) * scale
    except ValueError:
        raise UsageError(f"--budget {value!r} is not a number; use e.g. 4M, 0.004B or 0.004") from None
    if not budget > 0:
        raise UsageError(f"--budget {value!r} must be positive")
    return budget


def _user_coe(args):
    """A CoE from the user's experts/map/router files."""
    from workbench.coe import CoE
    from workbench.embed import Embedder
    from workbench.errors import UsageError
    from workbench.experts import ExpertPool, specs_from_file
    from workbench.mapping import CategoryExpertMap
    from workbench.router import CategoryRouter

    missing = [f"--{n}" for n, v in (("experts", args.experts), ("map", args.map_file),
                                      ("router", args.router)) if not v]
    if missing:
        raise UsageError(f"to chat with your own CoE give --experts, --map and --router; "
                             f"missing {', '.join(missing)}")
    pool = ExpertPool(specs_from_file(args.experts))
    mapping = CategoryExpertMap.load(args.map_file)
    router = CategoryRouter.load(args.router)
    return CoE(Embedder(args.embedder, progress=not args.quiet), router, mapping, pool), None


def _demo_coe(args):
    from workbench.commands.serve import apply_demo_kind
    from workbench.demo import build_demo_bundle

    apply_demo_kind(args)
    bundle = build_demo_bundle(seed=args.seed, progress=not args.quiet,
                               budget_b=parse_budget(args.budget))
    return bundle.coe, bundle


def _print_trace(trace, out) -> None:
    for line in trace.summary().split(" | "):
        print(f"  . {line}", file=out)


def run(args) -> int:
    import sys

    out = sys.stdout
    if args.experts or args.map_file or args.router:
        if args.budget is not None:
            from workbench.errors import UsageError

            raise UsageError("--budget re-optimises the demo map; with your own --map, edit the "
                                 "map file instead")
        coe, bundle = _user_coe(args)
    else:
        coe, bundle = _demo_coe(args)
    if bundle is not None:
        print(bundle.summary(), file=out)
    from workbench.conversation import ConversationRouter

    gen = {} if args.max_new_tokens is None else {"max_new_tokens": int(args.max_new_tokens)}
    turns = ConversationRouter(coe, threshold=args.switch_confidence)
    messages: list[dict] = []  # the conversation: follow-ups keep their expert (see --help)
    previous = None
    interactive = sys.stdin.isatty()
    print("type a prompt (/map shows the map, /quit or Ctrl-D ends)", file=out, flush=True)
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit", "/q"):
            break
        if text == "/new":
            messages, previous = [], None
            print("new conversation", file=out)
            continue
        if text == "/help":
            print("type a prompt; /map shows the category-to-expert map; /new starts a new "
                  "conversation; /quit ends", file=out)
            continue
        if text == "/map":
            for cat, expert in coe.mapping.items():
                print(f"  {cat:>18} -> {expert}", file=out)
            continue
        if not interactive:
            print(f"you> {text}", file=out)
        print("coe> ", end="", file=out, flush=True)
        messages.append({"role": "user", "content": text})
        prompt, extra, rule = text, {}, ""
        if previous is not None and not args.single_turn:
            decision = turns.decide(messages, previous=previous)
            prompt, extra, rule = list(messages), {"expert": decision.expert}, decision.rule
        if args.no_stream:
            answer = coe.generate(prompt, **gen, **extra)
            print(answer.text, file=out)
        else:
            answer = None
            for item in coe.stream(prompt, **gen, **extra):
                if isinstance(item, str):
                    print(item, end="", file=out, flush=True)
                else:
                    answer = item
            print(file=out)
        answer.trace.turn_rule = rule
        messages.append({"role": "assistant", "content": answer.text})
        previous = answer.trace.expert
        _print_trace(answer.trace, out)
        out.flush()
    return 0
