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
from pathlib import Path
from typing import Any

from workbench.errors import ExpertError

__all__ = ["Runner", "PoolRunner", "RunOutput", "as_runner", "call_runner"]

Runner = Callable[[str, str], Any]


@dataclass
class RunOutput:
    """What one runner call produced, normalised."""

    text: str
    new_tokens: int | None = None
    tier_found: str | None = None
    switch_s: float | None = None
    generate_s: float | None = None


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

    def __call__(self, expert: str, prompt: str) -> Any:
        if expert not in self.pool:
            raise ExpertError(f"unknown expert {expert!r}; the pool holds: {', '.join(self.pool.names)}")
        if not hasattr(self.pool, "use"):
            return self.pool.generate(expert, prompt, **self.gen)
        with self._switch:
            held = self.pool.use(expert)
            loaded = held.__enter__()
        try:
            out = self.pool.generate(expert, prompt, **self.gen)
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
            path = Path(str(spec.model))
            if path.is_dir():
                return int(sum(f.stat().st_size for f in path.glob("*.safetensors")))
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


def call_runner(runner: Runner, expert: str, prompt: str) -> RunOutput:
    """Call ``runner`` and normalise its result to :class:`RunOutput`."""
    out = runner(expert, prompt)
    if isinstance(out, str):
        return RunOutput(out)
    text = getattr(out, "text", None)
    if not isinstance(text, str):
        raise ExpertError(f"the runner for expert {expert!r} returned {type(out).__name__}; it must return text "
                          "or an object with a .text string (e.g. a Generation)")
    return RunOutput(text, getattr(out, "new_tokens", None), getattr(out, "tier_found", None),
                     getattr(out, "switch_s", None), getattr(out, "seconds", None))
