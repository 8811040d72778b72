"""The query executor: run a :class:`~workbench.compose.graph.QueryGraph` in parallel.

Scheduling uses :class:`graphlib.TopologicalSorter`: every node whose dependencies are done is
*ready*; ready nodes start at once in worker threads, within two limits:

* ``max_parallel``: at most this many nodes run at the same time;
* the expert pool's capacity: the distinct experts running at once must fit in what the pool can
  hold runnable together (its GPU tier, else its CPU tier). Nodes for the same expert are grouped:
  they share one loaded copy, so a second node of a running expert costs no extra memory and is
  started before nodes that would need another expert switched in.

A node whose expert fails is reported (``status="failed"`` with the error); the nodes that need
its answer are ``"skipped"``; every other node still runs, so the result says exactly what is
missing. Per-node start/end times are recorded and the critical path is computed from the
measured durations.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from workbench.compose.graph import QueryGraph, critical_path
from workbench.compose.runner import Runner, call_runner, usable_cores  # noqa: F401 (re-exported)
from workbench.errors import ExpertError, GraphError

__all__ = ["NodeResult", "ExecutionResult", "GraphExecutor", "execute_graph", "resolve_torch_threads", "torch_threads"]


@dataclass
class NodeResult:
    """What happened to one node."""

    id: str
    expert: str | None
    status: str                     # pending | running | ok | failed | skipped
    prompt: str = ""                # the sub-query with upstream answers filled in
    text: str = ""
    error: str | None = None
    start_s: float | None = None    # seconds since the run started
    end_s: float | None = None
    duration_s: float = 0.0
    worker: str = ""
    new_tokens: int | None = None
    tier_found: str | None = None
    switch_s: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ExecutionResult:
    """The outcome of :meth:`GraphExecutor.run`.

    Attributes
    ----------
    graph : QueryGraph
    nodes : dict[str, NodeResult]
        Per node, in the graph's order.
    wall_s : float
        Wall time of the whole run.
    max_parallel : int
        The concurrency limit used; ``peak_parallel`` is what was reached.
    """

    graph: QueryGraph
    nodes: dict[str, NodeResult]
    wall_s: float
    max_parallel: int
    peak_parallel: int = 0
    capacity_bytes: int | None = None
    torch_threads: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def answers(self) -> dict[str, str]:
        """Node id -> answer text, for the nodes that finished."""
        return {nid: r.text for nid, r in self.nodes.items() if r.status == "ok"}

    @property
    def failed(self) -> list[str]:
        return [nid for nid, r in self.nodes.items() if r.status == "failed"]

    @property
    def skipped(self) -> list[str]:
        return [nid for nid, r in self.nodes.items() if r.status == "skipped"]

    @property
    def missing(self) -> list[str]:
        """Nodes without an answer (failed, or skipped because something they need failed)."""
        return self.failed + self.skipped

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def durations(self) -> dict[str, float]:
        return {nid: r.duration_s for nid, r in self.nodes.items()}

    @property
    def sequential_s(self) -> float:
        """Sum of the node durations: what running them one by one would take at these speeds."""
        return float(sum(self.durations.values()))

    @property
    def critical_path(self) -> tuple[float, list[str]]:
        """(seconds, node ids) of the longest dependency chain at the measured node durations."""
        return critical_path(self.graph.dependencies(), self.durations)

    @property
    def critical_path_s(self) -> float:
        return self.critical_path[0]

    def missing_report(self) -> str:
        """One line per missing node saying why (empty when complete)."""
        lines = []
        for nid in self.missing:
            r = self.nodes[nid]
            lines.append(f"{nid} ({r.status}, expert {r.expert!r}): {r.error}")
        return "\n".join(lines)

    def to_frame(self):
        """One row per node: id, expert, status, start/end/duration, tokens, error, prompt, text."""
        import pandas as pd

        rows = []
        for nid, r in self.nodes.items():
            row = r.to_dict()
            row["depends_on"] = ", ".join(self.graph[nid].dependencies)
            row["on_critical_path"] = nid in self.critical_path[1]
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        cp_s, cp = self.critical_path
        return {"graph": self.graph.to_dict(), "nodes": [r.to_dict() for r in self.nodes.values()],
                "wall_s": self.wall_s, "sequential_s": self.sequential_s, "critical_path_s": cp_s,
                "critical_path": cp, "max_parallel": self.max_parallel, "peak_parallel": self.peak_parallel,
                "failed": self.failed, "skipped": self.skipped, "notes": list(self.notes),
                "torch_threads": self.torch_threads}

    def summary(self) -> str:
        cp_s, cp = self.critical_path
        ok = sum(r.status == "ok" for r in self.nodes.values())
        text = (f"{ok}/{len(self.nodes)} nodes answered in {self.wall_s:.2f}s wall "
                f"(one by one at these speeds: {self.sequential_s:.2f}s; critical path {' -> '.join(cp)}: {cp_s:.2f}s; "
                f"up to {self.peak_parallel} at once)")
        if self.missing:
            text += "\nmissing:\n" + self.missing_report()
        return text


class GraphExecutor:
    """Run the nodes of a query graph whose dependencies are met in parallel.

    Parameters
    ----------
    runner : callable
        ``run(expert, prompt) -> text`` (or an object with ``.text``); a
        :class:`~workbench.compose.runner.PoolRunner` also tells the executor how many bytes of
        experts the pool can hold at once.
    max_parallel : int, optional
        Most nodes running at once (default: the graph's width, at most 16). ``1`` runs them one
        by one in dependency order (the sequential baseline).
    capacity_bytes : int, "auto" or None
        Bytes of experts that may be running at once; ``"auto"`` asks the runner
        (``runner.capacity_bytes()``), ``None`` means no memory limit.
    default_expert : str, optional
        For nodes no router gave an expert.
    torch_threads : int, "auto" or None
        Threads per torch op while nodes run concurrently. ``torch.set_num_threads`` is
        process-wide, so it is set once per run and restored afterwards: ``"auto"`` uses
        ``cores // concurrency`` (at least 1; 1 when the machine's load average already exceeds
        its cores), see :func:`resolve_torch_threads`. Only done when torch is already imported;
        ``None`` leaves it alone.
    on_error : {"report", "raise"}
        ``"report"``: failures become ``status="failed"`` and the run goes on. ``"raise"``:
        after the running nodes finish, raise :class:`~workbench.errors.ExpertError`.

    Examples
    --------
    >>> ex = GraphExecutor(lambda expert, prompt: prompt.upper(), max_parallel=4)
    >>> g = QueryGraph.from_dict({"nodes": [{"id": "a", "text": "x", "expert": "e"},
    ...                                     {"id": "b", "text": "{{a}}!", "expert": "e"}]})
    >>> ex.run(g).answers
    {'a': 'X', 'b': 'X!'}
    """

    def __init__(self, runner: Runner, *, max_parallel: int | None = None, capacity_bytes: int | str | None = "auto",
                 default_expert: str | None = None, torch_threads: int | str | None = "auto",
                 on_error: str = "report") -> None:
        if max_parallel is not None and int(max_parallel) < 1:
            raise GraphError(f"max_parallel must be at least 1, got {max_parallel!r}")
        if on_error not in ("report", "raise"):
            raise GraphError(f"on_error must be 'report' or 'raise', got {on_error!r}")
        self.runner = runner
        self.max_parallel = None if max_parallel is None else int(max_parallel)
        self.capacity_bytes = capacity_bytes
        self.default_expert = default_expert
        self.torch_threads = torch_threads
        self.on_error = on_error

    # -- limits ---------------------------------------------------------------------------------

    def _capacity(self) -> int | None:
        if self.capacity_bytes == "auto":
            fn = getattr(self.runner, "capacity_bytes", None)
            cap = fn() if callable(fn) else None
            return int(cap) if cap else None
        return None if self.capacity_bytes is None else int(self.capacity_bytes)

    def _sizes(self, experts: set[str]) -> dict[str, int]:
        fn = getattr(self.runner, "expert_bytes", None)
        if not callable(fn):
            return {e: 0 for e in experts}
        out = {}
        for e in experts:
            try:
                out[e] = int(fn(e) or 0)
            except Exception:
                out[e] = 0
        return out

    # -- running --------------------------------------------------------------------------------

    def run(self, graph: QueryGraph, *, callback: Callable[[NodeResult], None] | None = None) -> ExecutionResult:
        """Execute ``graph``; ``callback(node_result)`` is called as each node starts and ends."""
        from graphlib import TopologicalSorter

        if not isinstance(graph, QueryGraph):
            raise GraphError(f"expected a QueryGraph, got {type(graph).__name__}")
        graph.validate()
        experts = {}
        for node in graph:
            expert = node.expert or self.default_expert
            if not expert:
                raise GraphError(f"node {node.id!r} has no expert; route the graph first (Composer.route / "
                                 "assign_experts) or give the executor a default_expert")
            experts[node.id] = expert
        limit = self.max_parallel or max(1, min(16, graph.width))
        runner_cap = getattr(self.runner, "max_concurrency", None)
        if isinstance(runner_cap, int) and runner_cap >= 1:
            limit = min(limit, runner_cap)  # e.g. worker processes: queueing inside the runner would hide waits
        capacity = self._capacity()
        sizes = self._sizes(set(experts.values()))
        notes = []
        if capacity is not None:
            too_big = [e for e, b in sizes.items() if b > capacity]
            if too_big:
                notes.append(f"experts {too_big} exceed the pool's capacity alone; each runs by itself (split by the pool)")

        results: dict[str, NodeResult] = {nid: NodeResult(nid, experts[nid], "pending") for nid in graph.ids}
        answers: dict[str, str] = {}
        lock = threading.Lock()
        t_start = time.perf_counter()

        def work(nid: str) -> NodeResult:
            res = results[nid]
            res.worker = threading.current_thread().name
            res.status = "running"
            res.start_s = time.perf_counter() - t_start
            if callback is not None:
                _safe(callback, res)
            try:
                with lock:
                    res.prompt = graph.fill(nid, answers)
                out = call_runner(self.runner, res.expert, res.prompt)
                res.text = out.text
                res.new_tokens, res.tier_found, res.switch_s = out.new_tokens, out.tier_found, out.switch_s
                res.status = "ok"
            except Exception as exc:  # reported, not raised: independent nodes go on
                res.status = "failed"
                res.error = f"{type(exc).__name__}: {exc}"
            res.end_s = time.perf_counter() - t_start
            res.duration_s = res.end_s - res.start_s
            if callback is not None:
                _safe(callback, res)
            return res

        sorter = TopologicalSorter(graph.dependencies())
        sorter.prepare()
        ready: list[str] = []
        running: dict[Future, str] = {}
        peak = 0
        order = {nid: i for i, nid in enumerate(graph.ids)}
        threads_before = self._set_threads(min(limit, graph.width))
        try:
            with ThreadPoolExecutor(max_workers=limit, thread_name_prefix="compose") as pool:
                while sorter.is_active():
                    # collect ready nodes; skip those whose inputs failed (and cascade at once)
                    progressed = True
                    while progressed:
                        progressed = False
                        for nid in sorter.get_ready():
                            bad = [d for d in graph[nid].dependencies if results[d].status in ("failed", "skipped")]
                            if bad:
                                res = results[nid]
                                res.status = "skipped"
                                res.error = f"needs the answer of {', '.join(bad)}, which " + (
                                    "is" if len(bad) == 1 else "are") + " missing"
                                res.start_s = res.end_s = time.perf_counter() - t_start
                                if callback is not None:
                                    _safe(callback, res)
                                sorter.done(nid)
                                progressed = True
                            else:
                                ready.append(nid)
                    # start what fits
                    for nid in self._admit(ready, running, experts, sizes, capacity, limit, order):
                        ready.remove(nid)
                        running[pool.submit(work, nid)] = nid
                    peak = max(peak, len(running))
                    if not running:
                        if ready:  # cannot happen (admission always allows one), but never spin
                            raise GraphError(f"executor stalled with ready nodes {ready}")
                        continue
                    done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in done:
                        nid = running.pop(fut)
                        fut.result()
                        if results[nid].status == "ok":
                            with lock:
                                answers[nid] = results[nid].text
                        sorter.done(nid)
        finally:
            self._restore_threads(threads_before)
        wall = time.perf_counter() - t_start
        result = ExecutionResult(graph, results, wall, limit, peak, capacity,
                                 None if threads_before is None else self._threads_used, notes)
        if self.on_error == "raise" and result.failed:
            first = results[result.failed[0]]
            raise ExpertError(f"node {first.id!r} (expert {first.expert!r}) failed: {first.error}; "
                              f"missing: {', '.join(result.missing)}")
        return result

    @staticmethod
    def _admit(ready, running, experts, sizes, capacity, limit, order) -> list[str]:
        """Ready nodes to start now: same-expert nodes first (no extra memory), then new experts that fit."""
        if not ready:
            return []
        active = {experts[n] for n in running.values()}
        picked: list[str] = []
        slots = limit - len(running)
        if slots <= 0:
            return []
        candidates = sorted(ready, key=lambda n: (experts[n] not in active, order[n]))
        used = sum(sizes.get(e, 0) for e in active)
        for nid in candidates:
            if len(picked) >= slots:
                break
            expert = experts[nid]
            if expert in active:
                picked.append(nid)
                continue
            need = sizes.get(expert, 0)
            if capacity is None or used + need <= capacity or not active:
                picked.append(nid)
                active.add(expert)
                used += need
        return picked

    def _set_threads(self, concurrency: int) -> int | None:
        self._threads_used = None
        n = resolve_torch_threads(self.torch_threads, concurrency)
        if n is None:
            return None
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        self._threads_used = n
        return before

    @staticmethod
    def _restore_threads(before: int | None) -> None:
        if before is not None:
            import torch

            torch.set_num_threads(before)


def resolve_torch_threads(setting: int | str | None, concurrency: int) -> int | None:
    """Torch threads per generation for ``concurrency`` generations at once (``None``: leave torch alone).

    ``"auto"``: ``cores // concurrency`` (at least 1), and 1 when the machine is already
    oversubscribed (1-minute load average above the core count): there, several OpenMP threads per
    op spin and thrash; a 24-token generation of a 7M-parameter demo expert was measured at 12.1 s
    with 2 threads vs 0.56 s with 1 on a 2-core machine at load ~8. Nothing is set when torch has
    not been imported (runners that do not use it).
    """
    if setting is None or "torch" not in sys.modules:
        return None
    if setting == "auto":
        cores = usable_cores()
        try:
            overloaded = os.getloadavg()[0] > cores
        except (OSError, AttributeError):  # no load average on this platform
            overloaded = False
        return 1 if overloaded else max(1, cores // max(1, int(concurrency)))
    try:
        n = int(setting)
    except (TypeError, ValueError):
        raise GraphError(f"torch_threads must be 'auto', a positive int or None, got {setting!r}") from None
    if n < 1:
        raise GraphError(f"torch_threads must be at least 1, got {setting!r}")
    return n


@contextlib.contextmanager
def torch_threads(setting: int | str | None, concurrency: int = 1) -> Iterator[int | None]:
    """Set ``torch.set_num_threads`` per :func:`resolve_torch_threads` inside the block, then restore it.

    ``torch.set_num_threads`` is process-wide: two blocks running at once in different threads
    overwrite each other's setting.
    """
    n = resolve_torch_threads(setting, concurrency)
    if n is None:
        yield None
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _safe(callback: Callable, arg: Any) -> None:
    try:
        callback(arg)
    except Exception as exc:  # a broken UI callback must not break execution
        import warnings

        warnings.warn(f"compose callback {callback!r} failed: {exc}", RuntimeWarning, stacklevel=2)


def execute_graph(graph: QueryGraph, runner: Runner, **kwargs: Any) -> ExecutionResult:
    """Shorthand for ``GraphExecutor(runner, **kwargs).run(graph)``."""
    return GraphExecutor(runner, **kwargs).run(graph)
