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

The server answers only requests whose Host header names this machine (127.0.0.1, localhost or
the --address; add names with --allow-host). Map files typed into the Mapping tab are read and
written only inside one folder (--files, default $COE_WORKBENCH_FILES or the cache's files/).
Before exposing the app beyond this machine, give it an access token: --token prints a URL that
carries a new random token (or pass --token VALUE, or set COE_WORKBENCH_TOKEN).

example:
  coe-workbench serve
  coe-workbench serve --port 5007 --show
  coe-workbench serve --address 0.0.0.0 --token --allow-host myhost.example
"""


def add_server_arguments(parser) -> None:
    parser.add_argument("--port", type=int, default=5006, help="TCP port (default 5006)")
    parser.add_argument("--address", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--show", action="store_true", help="open a browser tab")
    parser.add_argument("--quiet", action="store_true", help="no progress output while building")
    parser.add_argument("--token", nargs="?", const="", default=None, metavar="TOKEN",
                        help="require an access token from every browser; without a value a "
                             "random one is made and printed in the URL (also COE_WORKBENCH_TOKEN)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="another host name the app may be reached by (a reverse proxy's); "
                             "repeatable")
    parser.add_argument("--files", metavar="DIR", default=None,
                        help="the folder the Mapping tab's map file box reads and writes "
                             "(default $COE_WORKBENCH_FILES or the cache's files/ folder)")
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


def _token(args) -> str | None:
    import os
    import secrets

    token = getattr(args, "token", None)
    if token is None:
        token = os.environ.get("COE_WORKBENCH_TOKEN") or None
    elif token == "":
        token = secrets.token_urlsafe(18)
    return token


def _port_in_use(address: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return True
    return False


def serve_bundle(bundle, args) -> int:
    import sys

    from workbench.app import serve
    from workbench.safeio import FileBox

    token = _token(args)
    if args.port and _port_in_use(args.address, args.port):
        print(f"coe-workbench serve: error: port {args.port} on {args.address} is in use (another "
              f"server?); stop it or pick another port with --port {args.port + 1}", file=sys.stderr)
        return 2
    files = FileBox(args.files) if getattr(args, "files", None) else None
    url = f"http://{args.address}:{args.port}/" + (f"?token={token}" if token else "")
    if args.address not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.address}: anyone who can reach this machine can use "
              "the app" + ("" if token else "; add --token to require an access token"))
    print(f"CoE Workbench at {url}  (Ctrl-C to stop)", flush=True)
    serve(port=args.port, address=args.address, show=args.show, bundle=bundle, token=token,
          allow_hosts=tuple(getattr(args, "allow_host", []) or ()), files=files)
    return 0


def run(args) -> int:
    from workbench.app import default_bundle

    apply_demo_kind(args)
    bundle = default_bundle(progress=not args.quiet)
    return serve_bundle(bundle, args)
