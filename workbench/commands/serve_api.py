"""``coe-workbench serve-api``: serve a CoE over an OpenAI-compatible HTTP API."""
from __future__ import annotations

NAME = "serve-api"
ORDER = 91
HELP = "serve a CoE bundle (default: the offline demo) over an OpenAI-compatible API"
DESCRIPTION = """\
Serve a CoE over the parts of the OpenAI API that clients use: GET /v1/models (the CoE as model
`coe`, plus each expert by name), POST /v1/chat/completions (with and without stream), GET /health
and GET /metrics (Prometheus text). `model: "coe"` routes each request; an expert's name forces it.
Every answer carries the routing decision: x-coe-category, x-coe-expert, x-coe-confidence,
x-coe-fallback, x-coe-tier (and x-coe-rule) headers and a `coe_trace` object in the body (in the
final chunk when streaming).

Multi-turn requests are routed on the latest user turn, but keep the expert that answered the
previous turn unless the new turn is confidently about something else (--switch-confidence). The
server remembers which expert wrote each of its answers; a client may also name it in the
assistant message's `name` field.

BUNDLE is a folder written by `coe-workbench export` or CoE.save(); without it the offline demo is
served (built on first use; --tiny for the tiny experts). Listens on 127.0.0.1 only unless --host
says otherwise; --api-key requires `Authorization: Bearer KEY`.

--backend ray serves a BUNDLE on Ray Serve (pip install 'coe-workbench[ray]'): the same API, the
experts spread over --replicas expert replicas, each holding at most --experts-per-replica experts
(Ray's model multiplexing; a request goes to a replica that holds its expert). Without a running
cluster (RAY_ADDRESS) a local Ray instance is started.

example:
  coe-workbench serve-api
  coe-workbench serve-api my-coe --backend ray --replicas 2 --experts-per-replica 1
  coe-workbench serve-api my-coe --port 8001 --max-concurrent 4
  coe-workbench serve-api --host 0.0.0.0 --api-key "$(openssl rand -hex 16)"
"""

from workbench.commands.serve import add_demo_arguments, apply_demo_kind


def register(parser) -> None:
    parser.add_argument("bundle", metavar="BUNDLE", nargs="?", default=None,
                        help="a bundle folder (default: the offline demo)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="require 'Authorization: Bearer KEY' (also COE_API_KEY)")
    parser.add_argument("--max-concurrent", type=int, default=2, metavar="N",
                        help="generations running at once; more requests wait (default 2)")
    parser.add_argument("--max-queue", type=int, default=64, metavar="N",
                        help="requests that may wait for a slot; more get HTTP 429 (default 64)")
    parser.add_argument("--switch-confidence", type=float, default=None, metavar="P",
                        help="a later turn moves to another expert only when its category is at "
                             "least this probable (default 0.6)")
    parser.add_argument("--backend", choices=("inprocess", "ray"), default="inprocess",
                        help="inprocess (default: uvicorn in this process) or ray (Ray Serve)")
    parser.add_argument("--replicas", type=int, default=1, metavar="N",
                        help="with --backend ray: expert replicas (default 1)")
    parser.add_argument("--experts-per-replica", type=int, default=None, metavar="K",
                        help="with --backend ray: experts loaded at once per replica (default: all)")
    parser.add_argument("--quiet", action="store_true", help="no progress output while building")
    add_demo_arguments(parser)


def run(args) -> int:
    import os

    from workbench.errors import UsageError
    from workbench.serve.api import bind_socket, require_fastapi, serve_api

    if args.max_concurrent < 1:
        raise UsageError(f"--max-concurrent must be at least 1, got {args.max_concurrent}")
    if getattr(args, "backend", "inprocess") == "ray":
        return _run_ray(args)
    require_fastapi()  # a missing extra, or a busy port, is said before minutes of building
    sock = bind_socket(args.host, args.port)
    if args.bundle:
        from workbench.serve.bundle import load_coe

        coe = load_coe(args.bundle)
        what = args.bundle
    else:
        from workbench.demo import build_demo_bundle

        apply_demo_kind(args)
        bundle = build_demo_bundle(progress=not args.quiet)
        coe, what = bundle.coe, f"the offline demo ({bundle.kind})"
    api_key = args.api_key or os.environ.get("COE_API_KEY") or None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can use the "
              "API" + ("" if api_key else "; add --api-key to require a key"))
    base = f"http://{args.host}:{args.port}/v1"
    print(f"serving {what} at {base} (models: coe, {', '.join(coe.pool.names)}); Ctrl-C to stop",
          flush=True)
    try:
        serve_api(coe, host=args.host, port=args.port, api_key=api_key, sock=sock,
                  max_concurrent=args.max_concurrent, max_queue=args.max_queue,
                  switch_confidence=args.switch_confidence)
    finally:
        coe.pool.close()
    return 0


def _run_ray(args) -> int:
    import os

    from workbench.serve.ray_backend import require_ray, serve_ray

    require_ray()
    if not args.bundle:  # the offline demo, exported once to the cache (replicas load a folder)
        args.bundle = str(_demo_bundle_folder(args))
    api_key = args.api_key or os.environ.get("COE_API_KEY") or None
    print(f"serving {args.bundle} on Ray Serve at http://{args.host}:{args.port}/v1 ({args.replicas} "
          f"expert replica(s), {args.experts_per_replica or 'all'} expert(s) each); starting ...", flush=True)
    serve_ray(args.bundle, host=args.host, port=args.port, replicas=args.replicas,
              experts_per_replica=args.experts_per_replica, api_key=api_key,
              max_concurrent=args.max_concurrent, max_queue=args.max_queue,
              switch_confidence=args.switch_confidence)
    return 0


def _demo_bundle_folder(args):
    """The offline demo as a bundle folder under the cache (exported on first use, re-exported
    when the demo changed), for the Ray replicas to load."""
    from workbench._paths import cache_dir
    from workbench.demo import build_demo_bundle
    from workbench.errors import BundleError
    from workbench.serve.bundle import load_coe, save_coe

    apply_demo_kind(args)
    bundle = build_demo_bundle(progress=not args.quiet)
    folder = cache_dir("bundles") / f"demo-{bundle.kind}"
    try:
        current = load_coe(folder)
        same = (dict(current.mapping.items()) == dict(bundle.coe.mapping.items())
                and list(current.pool.names) == list(bundle.coe.pool.names))
        current.pool.close()
    except (BundleError, OSError):
        same = False
    if not same:
        save_coe(bundle.coe, folder)
        print(f"exported the offline demo ({bundle.kind}) to {folder}", flush=True)
    bundle.coe.pool.close()
    return folder
