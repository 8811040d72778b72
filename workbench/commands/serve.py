"""``coe-workbench serve``: serve the Panel app (Explore, Mapping, Chat, Tiers, Compose)."""
from __future__ import annotations

NAME = "serve"
ORDER = 90
HELP = "serve the workbench app in the browser (127.0.0.1 by default, offline assets)"
DESCRIPTION = """\
Serve the CoE Workbench app: a tab per panel (Explore: embed a prompt and browse the cluster map;
Mapping: edit the category-to-expert map and watch the metrics and frontier; Chat: the live CoE
with a trace per answer; Tiers: which experts sit in GPU / CPU / disk; Compose: Comp-LLM).

Every browser session gets its own app (its own edits and chat history) over one shared expert
pool. All assets are served locally, so the app works offline. The offline demo bundle is built on
first use (SmolLM2-135M-Instruct converted once, about 20 s, plus the shipped LoRA specialists; or
the tiny from-scratch experts with --tiny) and loaded from the cache afterwards.

example:
  coe-workbench serve
  coe-workbench serve --port 5007 --show
"""


def add_server_arguments(parser) -> None:
    parser.add_argument("--port", type=int, default=5006, help="TCP port (default 5006)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--show", action="store_true", help="open a browser tab")
    parser.add_argument("--quiet", action="store_true", help="no progress output while building")
    add_demo_arguments(parser)


def add_demo_arguments(parser) -> None:
    """``--tiny``: the tiny from-scratch demo experts instead of SmolLM2 + LoRA (fast, not fluent)."""
    parser.add_argument("--tiny", action="store_true",
                        help="use the tiny from-scratch demo experts (fast to build, word-salad "
                             "answers) instead of SmolLM2-135M-Instruct + LoRA specialists")


def apply_demo_kind(args) -> None:
    """Make ``--tiny`` the process's demo kind (``COE_DEMO_KIND``), so every bundle builder sees it."""
    import os

    if getattr(args, "tiny", False):
        os.environ["COE_DEMO_KIND"] = "tiny"


def register(parser) -> None:
    add_server_arguments(parser)


def serve_bundle(bundle, args) -> int:
    from workbench.app import serve

    url = f"http://{args.address}:{args.port}/"
    if args.address not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.address}: anyone who can reach this machine can use the app")
    print(f"CoE Workbench at {url}  (Ctrl-C to stop)", flush=True)
    serve(port=args.port, address=args.address, show=args.show, bundle=bundle)
    return 0


def run(args) -> int:
    from workbench.app import default_bundle

    apply_demo_kind(args)
    bundle = default_bundle(progress=not args.quiet)
    return serve_bundle(bundle, args)
