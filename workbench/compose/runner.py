"""The runner interface: how the composer asks an expert something.

Everything in :mod:`workbench.compose` talks to experts through one small interface, a callable
``run(expert, prompt) -> text``. It may also return an object with a ``.text`` attribute (e.g. an
:class:`~workbench.experts.Generation`), whose token counts and tier information then show up in
the per-node timings. :class:`PoolRunner` adapts an :class:`~workbench.experts.ExpertPool`.
"""
from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import ExpertError

__all__ = ["Runner", "PoolRunner", "ProcessPoolRunner", "RunOutput", "as_runner", "call_runner"]

Runner = Callable[[str, str], Any]


@dataclass
class RunOutput:
    """What one runner call produced, normalised."""

    text: str
    new_tokens: int | None = None
    tier_found: str | None = None
    switch_s: float | None = None
    generate_s: float | None = None


def usable_cores() -> int:
    """CPU cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


#: One switch lock per pool, shared by every runner over that pool (weakly held: a closed pool's
#: lock goes with it). Process-wide because runners are cheap objects made per Composer call.
_SWITCH_LOCKS: "weakref.WeakKeyDictionary[Any, threading.Lock]" = weakref.WeakKeyDictionary()
_SWITCH_GUARD = threading.Lock()


def _switch_lock(pool: Any) -> threading.Lock:
    with _SWITCH_GUARD:
        try:
            lock = _SWITCH_LOCKS.get(pool)
        except TypeError:  # not weak-referenceable: one lock per runner
            return threading.Lock()
        if lock is None:
            lock = _SWITCH_LOCKS[pool] = threading.Lock()
        return lock


class PoolRunner:
    """Run prompts on an :class:`~workbench.experts.ExpertPool` (``pool.generate``).

    Parameters
    ----------
    pool : ExpertPool
    **gen
        Generation settings passed to every ``pool.generate`` call (e.g. ``max_new_tokens=32``).

    Notes
    -----
    Generations run in parallel, but switching an expert in is serialised per pool: the expert is
    taken with ``pool.use`` under a lock, then ``pool.generate`` finds it resident (a hit) while it
    is held. Loads compete for the same disk and cores anyway, and building a model skeleton
    (``accelerate.init_empty_weights`` patches ``nn.Module.register_parameter`` process-wide)
    while another thread materialises weights loses those weights to the meta device.

    Examples
    --------
    >>> run = PoolRunner(pool, max_new_tokens=32)            # doctest: +SKIP
    >>> run("demo-stem-7m", "What is 2 + 2?").text           # doctest: +SKIP
    """

    def __init__(self, pool: Any, **gen: Any) -> None:
        self.pool = pool
        self.gen = gen
        self._switch = _switch_lock(pool)

    def __call__(self, expert: str, prompt: str, **gen: Any) -> Any:
        if expert not in self.pool:
            raise ExpertError(f"unknown expert {expert!r}; the pool holds: {', '.join(self.pool.names)}")
        gen = {**self.gen, **gen}
        if not hasattr(self.pool, "use"):
            return self.pool.generate(expert, prompt, **gen)
        with self._switch:
            held = self.pool.use(expert)
            loaded = held.__enter__()
        try:
            out = self.pool.generate(expert, prompt, **gen)
            if loaded is not None and hasattr(out, "tier_found"):  # where it was found before *this* switch
                out.tier_found = loaded.tier_found
                out.switch_s = float(loaded.switch_s or 0.0) + float(getattr(out, "switch_s", 0.0) or 0.0)
            return out
        finally:
            held.__exit__(None, None, None)

    @property
    def experts(self) -> list[str]:
        return list(self.pool.names)

    def capacity_bytes(self) -> int:
        """Bytes of experts the pool can hold runnable at once (its GPU tier if any, else its CPU tier)."""
        gpu = int(getattr(self.pool, "gpu_budget", 0) or 0)
        return gpu if gpu > 0 else int(getattr(self.pool, "cpu_budget", 0) or 0)

    def expert_bytes(self, expert: str) -> int:
        """Size of ``expert``'s weights: what the pool measured, else its safetensors files on disk."""
        try:
            for row in self.pool.residency():
                if row.get("expert") == expert and row.get("size_bytes"):
                    return int(row["size_bytes"])
        except Exception:  # a pool without residency(): fall back to the files
            pass
        spec = self.pool.specs.get(expert) if hasattr(self.pool, "specs") else None
        if spec is not None:
            from workbench.placement import weights_bytes_on_disk

            return weights_bytes_on_disk(str(spec.model))
        return 0


def as_runner(obj: Any, **gen: Any) -> Runner:
    """A runner from an ExpertPool (wrapped in :class:`PoolRunner`) or a callable (returned as is)."""
    if hasattr(obj, "generate") and hasattr(obj, "specs") and not callable(obj):
        return PoolRunner(obj, **gen)
    if hasattr(obj, "generate") and hasattr(obj, "use"):
        return PoolRunner(obj, **gen)
    if callable(obj):
        return obj
    raise ExpertError(f"expected an ExpertPool or a callable run(expert, prompt) -> text, got {type(obj).__name__}")


def _takes_keywords(runner: Runner) -> bool:
    import inspect

    try:
        params = inspect.signature(runner).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_runner(runner: Runner, expert: str, prompt: str, **gen: Any) -> RunOutput:
    """Call ``runner`` and normalise its result to :class:`RunOutput`.

    ``gen`` (generation settings such as ``json_schema`` or ``max_new_tokens``) reaches runners
    that accept keyword arguments (:class:`PoolRunner`, :class:`ProcessPoolRunner`); a plain
    ``run(expert, prompt)`` callable is called without them.
    """
    out = runner(expert, prompt, **gen) if gen and _takes_keywords(runner) else runner(expert, prompt)
    if isinstance(out, str):
        return RunOutput(out)
    if isinstance(out, RunOutput):
        return out
    text = getattr(out, "text", None)
    if not isinstance(text, str):
        raise ExpertError(f"the runner for expert {expert!r} returned {type(out).__name__}; it must return text "
                          "or an object with a .text string (e.g. a Generation)")
    return RunOutput(text, getattr(out, "new_tokens", None), getattr(out, "tier_found", None),
                     getattr(out, "switch_s", None), getattr(out, "seconds", None))


# ----------------------------------------------------------------------------------------------
# worker processes: generations that do not share one interpreter (no GIL between them)

#: The expert pool of this worker process (set by the process pool's initializer; each worker
#: process has exactly one, so a module global is the process-local state it is meant to be).
_WORKER_POOL: Any = None


def _worker_init(spec_dicts: list[dict], pool_kwargs: dict, threads: int, preload: list[str] | None = None) -> None:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from workbench.experts import ExpertPool, ExpertSpec

    torch.set_num_threads(max(1, int(threads)))
    global _WORKER_POOL
    _WORKER_POOL = ExpertPool([ExpertSpec.from_dict(d) for d in spec_dicts], **pool_kwargs)
    for name in preload or []:  # every worker holds these before it takes a task
        _WORKER_POOL.generate(name, "Hello", max_new_tokens=1)


def _worker_ready() -> int:
    import os

    return os.getpid()


def _worker_generate(expert: str, prompt: str, gen: dict) -> dict:
    import os

    out = _WORKER_POOL.generate(expert, prompt, **gen)
    return {"text": out.text, "new_tokens": out.new_tokens, "seconds": out.seconds,
            "tier_found": out.tier_found, "switch_s": out.switch_s, "pid": os.getpid()}


class ProcessPoolRunner:
    """Run generations in worker processes, each with its own :class:`~workbench.experts.ExpertPool`.

    Threads in one Python process share the GIL, and Hugging Face ``generate`` does real Python
    work per token, so small models gain little from running in threads at once. Worker processes
    do not share an interpreter: up to ``workers`` generations truly run at the same time. Each
    worker loads the experts it is asked for into its own pool, so memory grows with the workers.

    Parameters
    ----------
    specs : list of ExpertSpec
    workers : int, optional
        Worker processes (default: the usable CPU cores).
    threads_per_worker : int
        ``torch.set_num_threads`` in each worker.
    cpu_memory : str or int
        Each worker pool's CPU tier budget.
    preload : bool or list of str
        Experts every worker loads when it starts (``True``: all), so no node pays a cold load in
        whichever worker picks it up.
    **gen
        Generation settings for every call.

    Examples
    --------
    >>> with ProcessPoolRunner(bundle.specs, workers=2, max_new_tokens=16) as run:   # doctest: +SKIP
    ...     run.warm()
    ...     GraphExecutor(run).run(graph)
    """

    def __init__(self, specs: Any, *, workers: int | None = None, threads_per_worker: int = 1,
                 cpu_memory: int | str = "2GiB", preload: bool | list[str] = True, **gen: Any) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.specs = {s.name: s for s in specs}
        if not self.specs:
            raise ExpertError("ProcessPoolRunner needs at least one ExpertSpec")
        self.workers = int(workers or usable_cores())
        if self.workers < 1:
            raise ExpertError(f"workers must be at least 1, got {workers!r}")
        self.gen = gen
        self.cpu_memory = cpu_memory
        if preload is True:
            preload = list(self.specs)
        elif not preload:
            preload = []
        unknown = [n for n in preload if n not in self.specs]
        if unknown:
            raise ExpertError(f"preload names unknown experts {unknown}; known: {', '.join(self.specs)}")
        spec_dicts = []
        for s in self.specs.values():
            d = s.to_dict()
            d["model"] = str(s.model)
            spec_dicts.append(d)
        self._executor = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
            initargs=(spec_dicts, {"gpu_memory": None, "cpu_memory": cpu_memory, "prefetch": False},
                      threads_per_worker, list(preload)))

    @property
    def max_concurrency(self) -> int:
        """Generations that can run at once (the executor never schedules more)."""
        return self.workers

    @property
    def experts(self) -> list[str]:
        return list(self.specs)

    def __call__(self, expert: str, prompt: str, **gen: Any) -> RunOutput:
        if expert not in self.specs:
            raise ExpertError(f"unknown expert {expert!r}; the workers hold: {', '.join(self.specs)}")
        out = self._executor.submit(_worker_generate, expert, prompt, {**self.gen, **gen}).result()
        return RunOutput(out["text"], out["new_tokens"], out["tier_found"], out["switch_s"], out["seconds"])

    def warm(self) -> set[int]:
        """Start every worker (each loads its ``preload`` experts first) and wait; returns their pids."""
        pids: set[int] = set()
        for _ in range(20):
            futures = [self._executor.submit(_worker_ready) for _ in range(4 * self.workers)]
            pids |= {f.result() for f in futures}
            if len(pids) >= self.workers:
                break
        return pids

    def capacity_bytes(self) -> int:
        from workbench.placement import parse_size

        return int(parse_size(self.cpu_memory))

    def expert_bytes(self, expert: str) -> int:
        from workbench.placement import weights_bytes_on_disk

        return weights_bytes_on_disk(str(self.specs[expert].model))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ProcessPoolRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
