"""The OpenAI-compatible HTTP API of a CoE (FastAPI + uvicorn): ``coe-workbench serve-api``.

Endpoints: ``GET /v1/models`` (the CoE as model ``coe`` plus each expert), ``POST
/v1/chat/completions`` (with and without ``stream``), ``GET /health`` and ``GET /metrics``
(Prometheus text). ``model: "coe"`` routes each request (conversation-aware, see
:mod:`workbench.serve.conversation`); an expert's name forces that expert. Every answer carries the
routing decision: ``x-coe-*`` headers and a ``coe_trace`` object (in the final chunk when
streaming).

Limits: at most ``max_concurrent`` generations run at once, up to ``max_queue`` more wait for a
slot (beyond that: 429). A client that disconnects mid-answer stops its generation within a token.
Bad requests get OpenAI-style JSON errors with a 4xx status naming the field; nothing returns a
traceback. With ``api_key`` every ``/v1`` and ``/metrics`` request needs ``Authorization: Bearer``.

Examples
--------
>>> app = create_api(coe, max_concurrent=2)                                 # doctest: +SKIP
>>> serve_api(coe, host="127.0.0.1", port=8000)                             # doctest: +SKIP
"""
# no ``from __future__ import annotations`` here: FastAPI reads the handlers' annotations (Request)
# at runtime, and fastapi is imported inside create_api so that importing this module stays light
import asyncio
import hmac
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from workbench.errors import RequestError, UsageError, missing_dependency
from workbench.serve import protocol
from workbench.serve.engine import ServeEngine

__all__ = ["bind_socket", "create_api", "require_fastapi", "serve_api", "start_in_thread"]

log = logging.getLogger("workbench.serve")

ENDPOINTS = "GET /v1/models, POST /v1/chat/completions, GET /health, GET /metrics"


def require_fastapi() -> None:
    """Raise :class:`~workbench.errors.MissingDependencyError` (naming the extra) without FastAPI."""
    try:
        import fastapi  # noqa: F401
    except ImportError:
        raise missing_dependency("fastapi", "serve", "the OpenAI-compatible API") from None


class _Slots:
    """At most ``n`` generations at once; up to ``max_queue`` requests wait for a slot."""

    def __init__(self, n: int, max_queue: int, metrics) -> None:
        self.n, self.max_queue, self.metrics = n, max_queue, metrics
        self.sem = asyncio.Semaphore(n)
        self.waiting = 0

    async def acquire(self) -> None:
        if self.sem.locked() and self.waiting >= self.max_queue:
            raise RequestError(f"the server is busy: {self.n} generation(s) running and {self.waiting} "
                               "queued; retry in a moment", status=429, type="rate_limit_error",
                               code="server_busy")
        self.waiting += 1
        self.metrics.gauge("queued", 1)
        try:
            await self.sem.acquire()
        finally:
            self.waiting -= 1
            self.metrics.gauge("queued", -1)
        self.metrics.gauge("in_flight", 1)

    def release(self) -> None:
        self.metrics.gauge("in_flight", -1)
        self.sem.release()


def _model_cards(coe: Any, created: int) -> list[dict]:
    mapping = coe.mapping
    assignments = dict(getattr(mapping, "assignments", {}) or {})
    cards = [{"id": protocol.COE_MODEL, "object": "model", "created": created, "owned_by": "coe-workbench",
              "coe": {"kind": "router", "experts": list(coe.pool.names),
                      "categories": list(assignments), "fallback_expert": coe.fallback_expert}}]
    for name, spec in coe.pool.specs.items():
        cards.append({"id": name, "object": "model", "created": created, "owned_by": "coe-workbench",
                      "coe": {"kind": "expert", "description": spec.description,
                              "total_params_b": spec.total_params_b, "active_params_b": spec.active_params_b,
                              "adapter": spec.adapter is not None,
                              "categories": [c for c, e in assignments.items() if e == name]}})
    return cards


def create_api(coe: Any, *, api_key: str | None = None, max_concurrent: int = 2, max_queue: int = 64,
               switch_confidence: float | None = None, max_tokens_limit: int = 4096,
               memory_size: int = 10_000, engine: ServeEngine | None = None):
    """The FastAPI app serving ``coe`` over OpenAI's chat-completions API.

    Parameters
    ----------
    coe : CoE
    api_key : str, optional
        Require ``Authorization: Bearer <api_key>`` on ``/v1/*`` and ``/metrics``.
    max_concurrent : int
        Generations running at once (the rest wait in a queue).
    max_queue : int
        Requests that may wait for a slot; more get a 429.
    switch_confidence : float, optional
        Conversation-aware routing: a later turn moves to another expert only when its category
        is at least this probable (default :data:`~workbench.serve.conversation.DEFAULT_SWITCH_CONFIDENCE`).
    max_tokens_limit : int
        The largest ``max_tokens`` accepted.
    memory_size : int
        Answered turns remembered for conversation-aware routing.
    engine : ServeEngine, optional
        Serve through this engine (built over ``coe``) instead of a new one: the Ray Serve backend
        passes its own (:mod:`workbench.serve.ray_backend`); the other engine settings are then
        the engine's.

    Returns
    -------
    fastapi.FastAPI
        ``app.state.engine`` is the :class:`~workbench.serve.engine.ServeEngine` (metrics, recent
        results).
    """
    require_fastapi()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    if int(max_concurrent) < 1:
        raise UsageError(f"max_concurrent must be at least 1, got {max_concurrent}")
    if int(max_queue) < 0:
        raise UsageError(f"max_queue must be 0 or more, got {max_queue}")
    if engine is None:
        engine = ServeEngine(coe, switch_confidence=switch_confidence, memory_size=memory_size,
                             max_tokens_limit=max_tokens_limit)
    metrics = engine.metrics
    slots = _Slots(int(max_concurrent), int(max_queue), metrics)
    workers = ThreadPoolExecutor(max_workers=int(max_concurrent) + 2, thread_name_prefix="coe-api")
    created = int(time.time())
    app = FastAPI(title="CoE Workbench API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    def error(exc: RequestError, model: str = "?") -> JSONResponse:
        metrics.request(model, exc.status)
        metrics.error(exc.code or exc.type)
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(protocol.error_body(exc), status_code=exc.status, headers=headers)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise RequestError("missing or wrong API key: send the header 'Authorization: Bearer <key>' "
                               "with the key the server was started with (--api-key)", status=401,
                               code="invalid_api_key")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):  # raised by a route (authorize)
        return error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}; this server has {ENDPOINTS}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; this server has {ENDPOINTS}"
        else:
            message = str(exc.detail)
        return error(RequestError(message, status=exc.status_code))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug: logged, never a traceback
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        metrics.error("internal")
        return JSONResponse(protocol.error_body(RequestError(
            f"internal error ({type(exc).__name__}); the server log has the details", status=500,
            type="server_error")), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": engine.models, "in_flight": metrics.in_flight,
                "queued": metrics.queued, "max_concurrent": slots.n}

    @app.get("/metrics")
    async def get_metrics(request: Request):
        authorize(request)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def list_models(request: Request):
        authorize(request)
        return {"object": "list", "data": _model_cards(coe, created)}

    @app.get("/v1/models/{model}")
    async def get_model(model: str, request: Request):
        authorize(request)
        for card in _model_cards(coe, created):
            if card["id"] == model:
                return card
        raise RequestError(f"the model {model!r} does not exist; this server has: "
                           f"{', '.join(engine.models)}", param="model", status=404,
                           code="model_not_found")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        model = "?"
        try:
            authorize(request)
            req = protocol.parse_chat_request(await request.body(), engine.models,
                                              max_tokens_limit=engine.max_tokens_limit)
            model = req.model
            await slots.acquire()
        except RequestError as exc:
            return error(exc, model)
        queue_s = time.perf_counter() - t0
        loop = asyncio.get_running_loop()
        try:
            plan = await loop.run_in_executor(workers, engine.prepare, req)
        except BaseException as exc:
            slots.release()
            if isinstance(exc, RequestError):
                return error(exc, model)
            raise
        if req.stream:
            return _stream(req, plan, queue_s, t0)
        cancel = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, cancel))
        try:
            result = await loop.run_in_executor(workers, engine.run, plan, cancel)
        except RequestError as exc:
            return error(exc, model)
        finally:
            watcher.cancel()
            slots.release()
        result.trace["queue_s"] = queue_s
        body = protocol.completion(protocol.new_id(), req.model, result.text,
                                   "stop" if result.finish_reason == "cancelled" else result.finish_reason,
                                   result.usage, result.trace)
        metrics.request(model, 200, time.perf_counter() - t0)
        return JSONResponse(body, headers=protocol.coe_headers(result.trace))

    def _stream(req, plan, queue_s: float, t0: float):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()
        cid, now = protocol.new_id(), int(time.time())

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (server shutting down)
                pass

        def work() -> None:
            try:
                put(("done", engine.run(plan, cancel, on_text=lambda text: put(("text", text)))))
            except BaseException as exc:  # noqa: BLE001 - reported to the client as an error event
                put(("error", exc))
            finally:
                try:
                    loop.call_soon_threadsafe(slots.release)
                except RuntimeError:
                    pass

        threading.Thread(target=work, name="coe-api-stream", daemon=True).start()
        decision = plan.decision
        headers = protocol.coe_headers({"category": decision.category, "expert": decision.expert,
                                        "confidence": decision.confidence,
                                        "is_fallback": decision.is_fallback,
                                        "tier_found": engine.tier_of(decision.expert), "rule": decision.rule})
        headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})

        async def events():
            finished = False
            try:
                yield protocol.sse(protocol.chunk(cid, req.model, now, {"role": "assistant", "content": ""}))
                while True:
                    kind, value = await queue.get()
                    if kind == "text":
                        yield protocol.sse(protocol.chunk(cid, req.model, now, {"content": value}))
                        continue
                    finished = True
                    if kind == "done":
                        value.trace["queue_s"] = queue_s
                        finish = "stop" if value.finish_reason == "cancelled" else value.finish_reason
                        yield protocol.sse(protocol.chunk(cid, req.model, now, {}, finish,
                                                          coe_trace=value.trace))
                        if req.include_usage:
                            yield protocol.sse(protocol.chunk(cid, req.model, now, None, usage=value.usage))
                        metrics.request(req.model, 200, time.perf_counter() - t0)
                    else:
                        exc = value if isinstance(value, RequestError) else RequestError(
                            f"generation failed ({type(value).__name__}): {value}", status=500,
                            type="server_error")
                        if not isinstance(value, RequestError):
                            log.error("stream failed: %r", value)
                        metrics.request(req.model, exc.status)
                        yield protocol.sse(protocol.error_body(exc))
                    yield "data: [DONE]\n\n"
                    return
            finally:
                if not finished:  # the client went away: stop generating
                    cancel.set()
                    metrics.request(req.model, 499)

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    return app


async def _watch_disconnect(request, cancel: threading.Event, every: float = 0.2) -> None:
    """Set ``cancel`` when the client of a non-streaming request goes away."""
    try:
        while not cancel.is_set():
            if await request.is_disconnected():
                cancel.set()
                return
            await asyncio.sleep(every)
    except asyncio.CancelledError:
        pass


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``; a busy port is a one-line :class:`UsageError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server on "
                         f"that port?); stop it or pick another port with --port {port + 1}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve_api(coe: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
              sock: socket.socket | None = None, **options: Any) -> None:
    """Serve ``coe`` with uvicorn until interrupted (``options`` go to :func:`create_api`)."""
    app = create_api(coe, **options)
    try:
        import uvicorn
    except ImportError:
        raise missing_dependency("uvicorn", "serve", "the OpenAI-compatible API") from None
    sock = sock or bind_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


def start_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
    """Run ``app`` with uvicorn in a daemon thread (tests, benchmarks, notebooks).

    Returns ``(base_url, stop)``: the server's ``http://host:port`` and a function that shuts it
    down. ``port=0`` picks a free port.
    """
    import uvicorn

    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="coe-api-server",
                              daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise UsageError(f"the API server did not start within {timeout:.0f} s")
        time.sleep(0.02)
    url = f"http://{host}:{sock.getsockname()[1]}"

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return url, stop
