"""The CoE on Ray Serve: the same OpenAI-compatible API, experts multiplexed over replicas.

Two deployments (``coe-workbench serve-api BUNDLE --backend ray``):

* ``CoEIngress`` (FastAPI through ``@serve.ingress``): the in-process server's own app
  (:func:`workbench.serve.api.create_api`) over a CoE whose pool is a
  :class:`~workbench.serve.ray_experts.RemotePool`. Request validation, the conversation rule,
  embedding, routing, the map, stop sequences, cancellation, the fallback expert, the trace and the
  error codes are the in-process code; each trace adds ``replica`` (which expert replica
  answered) and ``replica_loaded`` (that answer loaded the expert there).
* ``CoEExperts``: ``--replicas N`` replicas, each holding the bundle's own
  :class:`~workbench.experts.ExpertPool` (its GPU / CPU / disk tiers and budgets); Ray's
  ``@serve.multiplexed(max_num_models_per_replica=K)`` loads an expert into a replica's pool on
  first use, unloads the least recently used one past K (``--experts-per-replica``), and routes a
  request to a replica that already holds its expert (the request's ``multiplexed_model_id`` is
  the expert's name). Streaming goes through Serve (``handle.options(stream=True)``).

Ray is imported only here and only when used (``pip install 'coe-workbench[ray]'``).

Examples
--------
>>> app = build_application("my-coe", replicas=2, experts_per_replica=1)   # doctest: +SKIP
>>> serve.run(app, name="coe", route_prefix="/")                           # doctest: +SKIP

``serve run`` / ``serve deploy`` use :func:`build_app` through a config file written by
``coe-workbench export FOLDER --ray-config serve.yaml`` (:func:`ray_config`).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from workbench.errors import UsageError, missing_dependency
from workbench.serve.engine import ServeEngine

__all__ = ["APP_NAME", "RayServeEngine", "build_app", "build_application", "ray_config", "require_ray",
           "serve_ray", "write_ray_config"]

APP_NAME = "coe"
INGRESS = "CoEIngress"
EXPERTS = "CoEExperts"
_DEPLOYMENTS: dict[int, tuple] = {}  # K -> (experts class, ingress class): Serve classes, built once per K


def require_ray():
    """``ray`` (with Serve), or :class:`~workbench.errors.MissingDependencyError` naming the extra."""
    try:
        import ray
        from ray import serve  # noqa: F401
    except ImportError:
        raise missing_dependency("ray", "ray", "the Ray Serve backend") from None
    return ray


class RayServeEngine(ServeEngine):
    """The in-process :class:`~workbench.serve.engine.ServeEngine`, adding to each trace the
    replica that answered (the CoE's pool is a :class:`~workbench.serve.ray_experts.RemotePool`).
    The pool counts the tokens of an answer cut short at the ingress with the engine's tokenizers."""

    def __init__(self, coe, **options) -> None:
        super().__init__(coe, **options)
        coe.pool.count_tokens = self.text_tokens

    def run(self, plan, cancel=None, on_text=None):
        self.coe.pool.begin()
        result = super().run(plan, cancel, on_text)
        result.trace.update(self.coe.pool.answered_by())
        return result


def _remote_coe(bundle: str, handle: Any, timeout_s: float):
    """The bundle's CoE (embedder, router, map, settings) over a RemotePool of ``handle``."""
    from workbench.coe import CoE
    from workbench.serve.bundle import load_coe
    from workbench.serve.ray_experts import RemotePool

    local = load_coe(bundle)  # validates the bundle; its own pool loads nothing and is closed
    specs = dict(local.pool.specs)
    local.pool.close()
    return CoE(local.embedder, local.router, local.mapping, RemotePool(handle, specs, timeout_s=timeout_s),
               on_error=local.on_error, fallback_expert=local.fallback_expert, prefetch_next=False)


def _deployments(experts_per_replica: int) -> tuple:
    """The two Serve deployment classes (``@serve.multiplexed`` takes K at class definition)."""
    if experts_per_replica in _DEPLOYMENTS:
        return _DEPLOYMENTS[experts_per_replica]
    require_ray()
    from ray import serve

    from workbench.serve.ray_experts import ExpertReplica

    @serve.deployment(name=EXPERTS)
    class CoEExperts:
        """Expert replicas: the bundle's ExpertPool, K experts loaded through Ray's multiplexer."""

        def __init__(self, bundle: str, pool_options: dict | None = None) -> None:
            context = serve.get_replica_context()
            self.core = ExpertReplica(bundle, replica=str(context.replica_id.unique_id),
                                      **(pool_options or {}))

        @serve.multiplexed(max_num_models_per_replica=experts_per_replica)
        async def expert(self, name: str):
            import asyncio

            return await asyncio.to_thread(self.core.load, name)

        async def _handle(self):
            return await self.expert(serve.get_multiplexed_model_id())

        async def stream(self, chat, gen: dict):
            try:
                handle = await self._handle()
            except Exception as exc:  # noqa: BLE001 - a broken expert: the CoE falls back
                yield self.core.error_item(exc)
                return
            async for item in self.core.stream(handle, chat, gen):
                yield item

        async def generate(self, chat, gen: dict) -> dict:
            try:
                handle = await self._handle()
            except Exception as exc:  # noqa: BLE001
                return self.core.error_item(exc)
            return await self.core.generate(handle, chat, gen)

        async def status(self) -> dict:
            """The replica's experts and load counters, and its Ray actor's name (namespace "serve")."""
            actor = serve.get_replica_context().replica_id.to_full_id_str()
            return dict(self.core.status(), actor_name=actor)

    @serve.deployment(name=INGRESS)
    @serve.ingress()
    class CoEIngress:
        """The OpenAI-compatible API (the in-process FastAPI app) over the expert deployment."""

        def __init__(self, experts, bundle: str, api_options: dict | None = None) -> None:
            options = dict(api_options or {})
            timeout_s = float(options.pop("timeout_s", 600.0))
            self.coe = _remote_coe(bundle, experts, timeout_s)
            self.engine = RayServeEngine(self.coe, switch_confidence=options.pop("switch_confidence", None),
                                         memory_size=int(options.pop("memory_size", 10_000)),
                                         max_tokens_limit=int(options.pop("max_tokens_limit", 4096)))
            self.options = options

        def __serve_build_asgi_app__(self):
            from workbench.serve.api import create_api

            return create_api(self.coe, engine=self.engine, **self.options)

    _DEPLOYMENTS[experts_per_replica] = (CoEExperts, CoEIngress)
    return CoEExperts, CoEIngress


def _expert_names(bundle: str) -> list[str]:
    from workbench.serve.bundle import read_manifest

    return [str(e.get("name")) for e in read_manifest(bundle)["experts"]]


def build_application(bundle: str | os.PathLike, *, replicas: int = 1, experts_per_replica: int | None = None,
                      expert_cpus: float = 1.0, expert_gpus: float = 0.0, expert_memory: int | None = None,
                      ingress_cpus: float = 0.5, max_ongoing_requests: int = 4,
                      pool_options: dict | None = None, **api_options: Any):
    """The Serve application of a bundle: ``CoEIngress`` bound to ``CoEExperts``.

    Parameters
    ----------
    bundle : path
        The bundle folder; every node must see it at the same path.
    replicas : int
        Expert replicas (``CoEExperts``).
    experts_per_replica : int, optional
        K of ``@serve.multiplexed``: experts loaded at once in a replica (default: all of them).
    expert_cpus, expert_gpus, expert_memory
        Ray resources of each expert replica (``memory`` in bytes).
    ingress_cpus : float
        CPUs of the ingress (embedding and routing run there).
    max_ongoing_requests : int
        Answers one expert replica runs at once.
    pool_options : dict, optional
        ``gpu_memory`` / ``cpu_memory`` / ``offload_dir`` of each replica's pool.
    **api_options
        :func:`~workbench.serve.api.create_api` settings (``api_key``, ``max_concurrent``,
        ``max_queue``, ``switch_confidence``) and ``timeout_s`` (longest non-streamed answer).
    """
    bundle = str(Path(bundle).expanduser().resolve())
    names = _expert_names(bundle)
    if int(replicas) < 1:
        raise UsageError(f"--replicas must be at least 1, got {replicas}")
    k = len(names) if experts_per_replica is None else int(experts_per_replica)
    if k < 1:
        raise UsageError(f"--experts-per-replica must be at least 1, got {experts_per_replica}")
    experts_cls, ingress_cls = _deployments(k)
    actor = {"num_cpus": float(expert_cpus)}
    if expert_gpus:
        actor["num_gpus"] = float(expert_gpus)
    if expert_memory:
        actor["memory"] = int(expert_memory)
    experts = experts_cls.options(num_replicas=int(replicas), ray_actor_options=actor,
                                  max_ongoing_requests=int(max_ongoing_requests)).bind(bundle, pool_options or {})
    slots = int(api_options.get("max_concurrent", 2)) + int(api_options.get("max_queue", 64)) + 8
    return ingress_cls.options(ray_actor_options={"num_cpus": float(ingress_cpus)},
                               max_ongoing_requests=slots).bind(experts, bundle, api_options)


def build_app(args: dict):
    """The application builder of ``serve run`` / ``serve deploy`` (``import_path:
    workbench.serve.ray_backend:build_app``); ``args`` as in :func:`build_application`.

    Examples
    --------
    ``serve run workbench.serve.ray_backend:build_app bundle=/data/my-coe replicas=2``
    """
    args = dict(args or {})
    if "bundle" not in args:
        raise UsageError("the Ray Serve application needs args.bundle: the bundle folder "
                         "(written by coe-workbench export)")
    ints = ("replicas", "experts_per_replica", "max_ongoing_requests", "max_concurrent", "max_queue",
            "expert_memory", "max_tokens_limit", "memory_size")
    floats = ("expert_cpus", "expert_gpus", "ingress_cpus", "switch_confidence", "timeout_s")
    for key in ints:
        if args.get(key) is not None:
            args[key] = int(args[key])
    for key in floats:
        if args.get(key) is not None:
            args[key] = float(args[key])
    return build_application(args.pop("bundle"), **args)


# -------------------------------------------------------------------------------- running it
def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server "
                             f"on that port?); stop it or pick another port with --port {port + 1}") from None


def start_ray_app(bundle: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
                  num_cpus: float | None = None, temp_dir: str | None = None, **options: Any) -> str:
    """Start a local Ray (unless one is running), Serve's proxy on ``host:port`` and the app.

    Returns the base URL (``http://host:port``). Stop with ``serve.shutdown(); ray.shutdown()``.
    """
    ray = require_ray()
    from ray import serve

    if not ray.is_initialized():
        init: dict[str, Any] = {"include_dashboard": False, "configure_logging": True,
                                "logging_level": "WARNING"}
        if num_cpus is not None:
            init["num_cpus"] = num_cpus
        if temp_dir is not None:
            init["_temp_dir"] = str(temp_dir)
        if host in ("127.0.0.1", "localhost") and not os.environ.get("RAY_ADDRESS"):
            init["_node_ip_address"] = "127.0.0.1"  # a local instance, reachable from this machine only
        ray.init(**init)
    serve.start(http_options={"host": host, "port": int(port)})
    serve.run(build_application(bundle, **options), name=APP_NAME, route_prefix="/")
    return f"http://{host}:{port}"


def serve_ray(bundle: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, **options: Any) -> None:
    """Serve ``bundle`` on Ray Serve until interrupted (``coe-workbench serve-api --backend ray``)."""
    ray = require_ray()
    from ray import serve

    _check_port(host, port)
    try:
        start_ray_app(bundle, host=host, port=port, **options)
        print(f"Ray Serve is up at http://{host}:{port}/v1 (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


# -------------------------------------------------------------------------------- config file
def _expert_bytes(bundle: str) -> list[int]:
    from workbench.placement.checkpoint import resolve_model_path, weights_bytes_on_disk
    from workbench.serve.bundle import read_manifest

    out = []
    root = Path(bundle)
    for entry in read_manifest(bundle)["experts"]:
        size = 0
        for key in ("model", "adapter"):
            value = entry.get(key)
            if value is None:
                continue
            path = Path(str(value)).expanduser()
            path = path if path.is_absolute() else root / path
            try:
                size += weights_bytes_on_disk(path if path.is_dir() else resolve_model_path(str(value)))
            except Exception:  # noqa: BLE001 - a Hugging Face id not in the cache: unknown size
                pass
        out.append(size)
    return out


def ray_config(bundle: str | os.PathLike, *, replicas: int = 1, experts_per_replica: int | None = None,
               host: str = "0.0.0.0", port: int = 8000, expert_cpus: float = 1.0,
               expert_gpus: float | None = None, ingress_cpus: float = 0.5) -> dict:
    """The ``serve run`` / ``serve deploy`` config (a dict to write as YAML) serving ``bundle``.

    Resources per expert replica come from the bundle: ``num_gpus: 1`` when its pool has a GPU
    budget (unless ``expert_gpus`` says), ``memory`` = 1.5 x the K largest experts' weights on disk
    plus 1 GiB for the runtime.
    """
    from workbench.serve.bundle import read_manifest

    root = Path(bundle).expanduser().resolve()
    manifest = read_manifest(root)
    names = [str(e.get("name")) for e in manifest["experts"]]
    k = len(names) if experts_per_replica is None else int(experts_per_replica)
    sizes = sorted(_expert_bytes(str(root)), reverse=True)
    memory = int(1.5 * sum(sizes[:k])) + (1 << 30)
    gpus = expert_gpus if expert_gpus is not None else (1.0 if int(manifest["pool"].get("gpu_memory") or 0) > 0 else 0.0)
    actor: dict[str, Any] = {"num_cpus": float(expert_cpus), "memory": memory}
    if gpus:
        actor["num_gpus"] = float(gpus)
    args = {"bundle": str(root), "replicas": int(replicas), "experts_per_replica": k,
            "expert_cpus": float(expert_cpus), "expert_gpus": float(gpus), "expert_memory": memory,
            "ingress_cpus": float(ingress_cpus)}
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": host, "port": int(port)},
        "applications": [{
            "name": APP_NAME, "route_prefix": "/",
            "import_path": "workbench.serve.ray_backend:build_app",
            "args": args,
            "deployments": [
                {"name": INGRESS, "num_replicas": 1, "ray_actor_options": {"num_cpus": float(ingress_cpus)}},
                {"name": EXPERTS, "num_replicas": int(replicas), "max_ongoing_requests": 4,
                 "ray_actor_options": actor},
            ],
        }],
    }


def write_ray_config(bundle: str | os.PathLike, file: str | os.PathLike, **options: Any) -> Path:
    """Write :func:`ray_config` as YAML to ``file`` (atomically); returns its path."""
    import yaml

    from workbench._paths import atomic_write_text

    config = ray_config(bundle, **options)
    head = ("# Ray Serve config for a CoE Workbench bundle, written by `coe-workbench export --ray-config`.\n"
            "# Local: serve run THIS_FILE   Cluster: serve deploy THIS_FILE (or a KubeRay RayService's\n"
            "# serveConfigV2). The bundle folder must exist at args.bundle on every node.\n")
    path = Path(file).expanduser()
    atomic_write_text(path, head + yaml.safe_dump(config, sort_keys=False))
    return path
