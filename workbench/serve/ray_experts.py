"""The two halves of an expert call on Ray Serve, without importing Ray.

* :class:`ExpertReplica` is what one replica of the expert deployment holds: the bundle's own
  :class:`~workbench.experts.ExpertPool` (tiers, budgets, adapters), of which Ray's multiplexer
  keeps at most K experts loaded (:class:`ExpertHandle` is the multiplexed "model": loading it
  switches the expert into the pool, Ray's LRU unload evicts it from the pool).
* :class:`RemotePool` is what the ingress's CoE holds instead of an ExpertPool: the same
  ``generate`` / ``stream`` / ``specs`` / ``residency`` surface, answered by the expert deployment
  through a Serve handle (``multiplexed_model_id`` = the expert's name). So the CoE's fallback
  policy, the engine's stop sequences and cancellation and the trace are the in-process code.

Wire format between them (plain, picklable): the replica streams text chunks (``str``) and ends
with one ``dict``: ``{"generation": {...Generation fields}, "replica": ..., "loaded": bool}`` or
``{"error": "..."}`` when the expert failed (the ingress raises :class:`~workbench.errors.ExpertError`
from it, so the CoE falls back exactly as in-process).
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from workbench.errors import ExpertError
from workbench.experts.spec import SpecNames

__all__ = ["ExpertHandle", "ExpertReplica", "RemotePool", "RemoteStream", "clean_gen"]

#: Generation settings that cross the wire (the rest, e.g. stopping criteria, are rebuilt replica-side).
WIRE_GEN = ("max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty",
            "json_schema")


def clean_gen(gen: dict) -> tuple[dict, list[threading.Event]]:
    """Split ``gen`` into the picklable settings sent to a replica and the halt events to watch.

    The events come from the engine's stopping criteria (:func:`~workbench.serve.engine.halt_criteria`:
    a stop sequence was seen, the client went away); the ingress cancels the remote call when one is
    set and the replica stops its generation within a token.
    """
    events: list[threading.Event] = []
    for criterion in list(gen.get("stopping_criteria") or []):
        events.extend(e for e in getattr(criterion, "watched", ()) if isinstance(e, threading.Event))
    return {k: v for k, v in gen.items() if k in WIRE_GEN}, events


# ------------------------------------------------------------------------------ replica side
class ExpertHandle:
    """One expert loaded in a replica: what ``@serve.multiplexed`` caches (at most K per replica).

    ``__del__`` (called by Ray's LRU unload) evicts the expert from the replica's pool, once; an
    answer still running keeps it until it finishes.
    """

    def __init__(self, replica: ExpertReplica, name: str, tier_found: str, switch_s: float,
                 load_s: float) -> None:
        self.replica, self.name = replica, name
        self.tier_found, self.switch_s, self.load_s = tier_found, switch_s, load_s
        self.fresh = True  # the next answer reports the load's tier and switch time
        self.active = 0
        self.unloaded = False
        self._lock = threading.Lock()

    def acquire(self) -> tuple[bool, str, float]:
        with self._lock:
            self.active += 1
            fresh, self.fresh = self.fresh, False
        return fresh, self.tier_found, self.switch_s

    def release(self) -> None:
        with self._lock:
            self.active -= 1
            evict = self.unloaded and self.active == 0
        if evict:
            self.replica.evict(self.name)

    def unload(self) -> None:
        with self._lock:
            if self.unloaded:
                return
            self.unloaded = True
            busy = self.active > 0
        self.replica.unloads += 1
        if not busy:
            self.replica.evict(self.name)

    def __del__(self) -> None:  # Ray's multiplexer calls it on LRU unload; gc may call it again
        try:
            self.unload()
        except Exception:  # noqa: BLE001 - never raise from __del__
            pass


class ExpertReplica:
    """The state of one expert-deployment replica: the bundle's ExpertPool and its counters.

    Parameters
    ----------
    bundle : path
        The bundle folder (the same path on every node: a shared file system or the image).
    replica : str
        The replica's id, reported in every trace.
    gpu_memory, cpu_memory, offload_dir
        Override the bundle's pool budgets (per replica).
    """

    def __init__(self, bundle: str, *, replica: str = "", gpu_memory: Any = None,
                 cpu_memory: Any = None, offload_dir: Any = None) -> None:
        from workbench.serve.bundle import load_pool

        self.pool = load_pool(bundle, gpu_memory=gpu_memory, cpu_memory=cpu_memory,
                              offload_dir=offload_dir)
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}"
        self.loads = 0
        self.unloads = 0
        self.load_seconds: list[float] = []

    # -- the multiplexed loader ---------------------------------------------------------------
    def load(self, name: str) -> ExpertHandle:
        """Switch ``name`` into the pool (from wherever it is) and return its handle."""
        if name not in self.pool:
            raise ExpertError(f"unknown expert {name!r}; this replica's pool holds: "
                              f"{', '.join(self.pool.names)}")
        t0 = time.perf_counter()
        with self.pool.use(name) as loaded:
            tier, switch_s = str(loaded.tier_found or ""), float(loaded.switch_s or 0.0)
        seconds = time.perf_counter() - t0
        self.loads += 1
        self.load_seconds.append(seconds)
        return ExpertHandle(self, name, tier, switch_s, seconds)

    def evict(self, name: str) -> None:
        try:
            self.pool.evict(name)
        except Exception:  # noqa: BLE001 - in use by a newer handle of the same expert: it stays
            pass

    def status(self) -> dict:
        """Which experts this replica holds, where, and how often Ray loaded and unloaded them."""
        try:
            rows = [dict(r) for r in self.pool.residency()]
        except Exception:  # noqa: BLE001 - informative only
            rows = []
        return {"replica": self.replica, "pid": os.getpid(), "loads": self.loads, "unloads": self.unloads,
                "load_seconds": list(self.load_seconds), "residency": rows}

    # -- answers --------------------------------------------------------------------------------
    def _final(self, generation: Any, fresh: bool, tier: str, switch_s: float) -> dict:
        out = asdict(generation)
        out.pop("token_ids", None)
        if fresh:  # the multiplexed loader did the switch: report where the expert was found
            out["tier_found"], out["switch_s"] = tier, switch_s
        return {"generation": out, "replica": self.replica, "loaded": fresh}

    @staticmethod
    def error_item(exc: BaseException) -> dict:
        """The final item of a failed answer: ``{"error": message}``."""
        from workbench.errors import WorkbenchError

        return {"error": str(exc) if isinstance(exc, WorkbenchError) else f"{type(exc).__name__}: {exc}"}

    async def stream(self, handle: ExpertHandle, chat: Any, gen: dict):
        """Yield the answer's text chunks, then the final dict (see the module docstring).

        A cancelled call (the ingress saw a stop sequence, or its client left) stops the
        generation within one token.
        """
        from workbench.serve.engine import halt_criteria

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        halt = threading.Event()
        fresh, tier, switch_s = handle.acquire()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (replica shutting down)
                pass

        def work() -> None:
            try:
                stream = self.pool.stream(handle.name, chat, stopping_criteria=halt_criteria(halt), **gen)
                for chunk in stream:
                    put(("text", chunk))
                put(("done", stream.generation))
            except BaseException as exc:  # noqa: BLE001 - sent to the ingress as an error item
                put(("error", exc))
            finally:
                handle.release()

        threading.Thread(target=work, name=f"ray-expert-{handle.name}", daemon=True).start()
        try:
            while True:
                kind, value = await queue.get()
                if kind == "text":
                    yield value
                elif kind == "done":
                    yield self._final(value, fresh, tier, switch_s)
                    return
                else:
                    yield self.error_item(value)
                    return
        finally:
            halt.set()  # cancelled or finished: the generation stops at its next token

    async def generate(self, handle: ExpertHandle, chat: Any, gen: dict) -> dict:
        """The whole answer as the final dict (no chunks); cancelling it stops the generation."""
        from workbench.serve.engine import halt_criteria

        halt = threading.Event()
        fresh, tier, switch_s = handle.acquire()

        def work():
            try:
                return self.pool.generate(handle.name, chat, stopping_criteria=halt_criteria(halt), **gen)
            finally:
                handle.release()

        try:
            generation = await asyncio.to_thread(work)
        except asyncio.CancelledError:
            halt.set()
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the ingress
            return self.error_item(exc)
        return self._final(generation, fresh, tier, switch_s)


# ------------------------------------------------------------------------------ ingress side
def _replica_lost(name: str, exc: BaseException) -> ExpertError:
    return ExpertError(f"the Ray replica serving expert {name!r} stopped mid-answer "
                       f"({type(exc).__name__}); Ray restarts it, retry the request. Detail: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")


class RemoteStream:
    """Text chunks of a remote answer; ``.generation`` holds the Generation once exhausted."""

    def __init__(self, pool: RemotePool, name: str, response: Any, events: list[threading.Event]) -> None:
        self.pool, self.name, self.response, self.events = pool, name, response, events
        self.generation = None
        self.chunks: list[str] = []

    def __iter__(self) -> Iterator[str]:
        from workbench.experts.records import Generation

        t0 = time.perf_counter()
        try:
            for item in self.response:
                if isinstance(item, str):
                    self.chunks.append(item)
                    yield item
                    if any(e.is_set() for e in self.events):  # a stop sequence, or the client left
                        self.response.cancel()
                        # the replica's own count is lost with the cancel: count the text
                        text = "".join(self.chunks)
                        seconds = time.perf_counter() - t0
                        counted = self.pool.count_tokens(self.name, text) if self.pool.count_tokens else None
                        tokens = len(self.chunks) if counted is None else counted
                        self.generation = Generation(text, tokens, seconds,
                                                     tokens / seconds if seconds > 0 else 0.0,
                                                     "", 0.0, self.name)
                        return
                else:
                    self.generation = self.pool.finish(self.name, item)
                    return
        except ExpertError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray's errors: the replica died or is gone
            raise _replica_lost(self.name, exc) from None
        raise ExpertError(f"the Ray replica serving expert {self.name!r} ended its answer without "
                          "a result; see the replica's log")


class RemotePool(SpecNames):
    """An ExpertPool look-alike whose experts answer on the Ray Serve expert deployment.

    Parameters
    ----------
    handle : ray.serve.handle.DeploymentHandle
        The expert deployment.
    specs : dict
        The bundle's expert specs (name -> ExpertSpec), for the API's model cards and token counts.
    timeout_s : float
        Longest wait for a whole (non-streamed) answer.
    """

    def __init__(self, handle: Any, specs: dict, *, timeout_s: float = 600.0) -> None:
        self.handle = handle
        self.specs = dict(specs)
        self.timeout_s = float(timeout_s)
        self._local = threading.local()
        self._tiers: dict[str, str] = {}
        #: ``(expert, text) -> tokens or None``, for answers cut short at the ingress (the
        #: ingress engine sets it to its tokenizer count; without it, chunks are counted)
        self.count_tokens: Callable[[str, str], int | None] | None = None

    # -- what the ingress engine reads ---------------------------------------------------------
    def begin(self) -> None:
        """Forget which replica answered last in this thread (called before each request)."""
        self._local.answered = {}

    def answered_by(self) -> dict:
        """``{"replica": ..., "replica_loaded": bool}`` of this thread's latest answer."""
        return dict(getattr(self._local, "answered", {}) or {})

    def residency(self) -> list[dict]:
        """Where each expert was last seen (per the replica that answered; informative)."""
        return [{"expert": name, "tier": self._tiers.get(name, "disk"), "in_use": 0} for name in self.specs]

    def finish(self, name: str, item: dict):
        """The Generation of a replica's final dict (raising its error as an ExpertError)."""
        from workbench.experts.records import Generation

        if not isinstance(item, dict):
            raise ExpertError(f"the Ray replica serving expert {name!r} sent {type(item).__name__}, "
                              "not an answer")
        if "error" in item:
            raise ExpertError(str(item["error"]))
        generation = Generation(**item["generation"])
        self._local.answered = {"replica": item.get("replica"), "replica_loaded": bool(item.get("loaded"))}
        self._tiers[name] = "cpu" if generation.tier_found in ("cold", "disk", "") else generation.tier_found
        return generation

    # -- the pool surface the CoE calls --------------------------------------------------------
    def _options(self, name: str, stream: bool):
        if name not in self.specs:
            raise ExpertError(f"unknown expert {name!r}; the pool holds: {', '.join(self.specs)}")
        return self.handle.options(multiplexed_model_id=name, stream=stream)

    @staticmethod
    def _check_cancelled(name: str, events: list[threading.Event]) -> None:
        if any(e.is_set() for e in events):  # e.g. the fallback try after a cancelled answer
            raise ExpertError(f"the answer of expert {name!r} was cancelled")

    def stream(self, name: str, prompt: Any, **gen: Any) -> RemoteStream:
        wire, events = clean_gen(gen)
        self._check_cancelled(name, events)
        response = self._options(name, True).stream.remote(prompt, wire)
        return RemoteStream(self, name, response, events)

    def generate(self, name: str, prompt: Any, **gen: Any):
        wire, events = clean_gen(gen)
        self._check_cancelled(name, events)
        response = self._options(name, False).generate.remote(prompt, wire)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                item = response.result(timeout_s=0.25)
                break
            except TimeoutError:
                if any(e.is_set() for e in events):  # the client went away: stop the replica
                    response.cancel()
                    raise ExpertError(f"the answer of expert {name!r} was cancelled") from None
                if time.monotonic() > deadline:
                    response.cancel()
                    raise ExpertError(f"expert {name!r} on Ray did not answer within "
                                      f"{self.timeout_s:.0f} s") from None
            except ExpertError:
                raise
            except Exception as exc:  # noqa: BLE001 - Ray's errors: the replica died or is gone
                raise _replica_lost(name, exc) from None
        return self.finish(name, item)

    def close(self) -> None:
        """Nothing to free here: the replicas own the experts."""
