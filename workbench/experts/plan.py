"""The pool's switch decision as a pure function: a snapshot of what is where in, a plan out.

:func:`plan_switch` decides how to make one expert runnable (which copies to load, which experts
to evict or demote, what to reserve) from plain numbers, and :func:`plan_room` how to free bytes
on one tier; neither touches a model, a lock or a file, so the eviction policy is tested without
any checkpoint. :class:`~workbench.experts.ExpertPool` takes a snapshot under its lock, plans,
and executes the plan (the same split accelerate makes between ``infer_auto_device_map`` and
dispatching).

The policy: least recently used first (lowest ``tick``); never a pinned expert, one in use or one
being loaded, nor the expert being switched in; room on the GPU is made by demoting a victim to
the CPU tier when it has no CPU copy and the CPU budget can take it (which may itself evict CPU
copies), else by dropping its GPU copy; a split copy is dropped whole.

Examples
--------
>>> from workbench.experts.plan import ExpertState, SwitchRequest, plan_switch
>>> states = [ExpertState("a", 60, cpu=60, tick=1), ExpertState("b", 60, tick=0)]
>>> plan = plan_switch(states, {"gpu": 0, "cpu": 100}, SwitchRequest("b"))
>>> plan.steps, [(e.expert, e.action) for e in plan.evictions]
(('disk->cpu',), [('a', 'drop-cpu')])
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from workbench.errors import ExpertError

__all__ = ["ExpertState", "SwitchRequest", "Eviction", "SwitchPlan", "RoomPlan", "plan_switch",
           "plan_room"]

#: the tiers with a byte budget (placement.TIERS adds "disk", which has none)
MEMORY_TIERS = ("gpu", "cpu")


@dataclass(frozen=True)
class ExpertState:
    """What one expert holds, as plain numbers (bytes).

    ``gpu`` / ``cpu``: bytes a full copy on that tier frees when dropped (0: no such copy), the
    weights plus an exact copy of the weights a merged adapter replaced. ``split``: bytes per tier
    of a split copy (``None``: none). ``extra``: other bytes held per tier that eviction cannot
    free (reservations of a load in progress, adapter weights). ``busy``: in use or loading.
    """

    name: str
    nbytes: int
    gpu: int = 0
    cpu: int = 0
    split: Mapping[str, int] | None = None
    extra: Mapping[str, int] = field(default_factory=dict)
    pinned: bool = False
    busy: bool = False
    tick: int = 0
    largest_module_bytes: int = 0
    split_on_disk: bool = False

    def held(self, tier: str) -> int:
        """All bytes on ``tier`` (what the pool's ``tracked_bytes`` sums)."""
        full = self.gpu if tier == "gpu" else self.cpu if tier == "cpu" else 0
        return full + (self.split or {}).get(tier, 0) + int(self.extra.get(tier, 0))

    def on(self, tier: str) -> bool:
        """Holds an evictable copy (full or split part) on ``tier``."""
        full = self.gpu if tier == "gpu" else self.cpu
        return bool(full) or bool((self.split or {}).get(tier, 0))


@dataclass(frozen=True)
class SwitchRequest:
    """Switch ``name`` in: ``prefetch`` (a hint: CPU only, never waits or splits), ``may_wait``
    (sessions using other experts will release them: wait rather than split)."""

    name: str
    prefetch: bool = False
    may_wait: bool = False


@dataclass(frozen=True)
class Eviction:
    """One eviction: ``demote`` (GPU copy to the CPU tier), ``drop-gpu``, ``drop-cpu`` or
    ``drop-split``, made to free room on ``tier``."""

    expert: str
    action: str
    tier: str
    nbytes: int


@dataclass(frozen=True)
class RoomPlan:
    """The evictions that free ``need`` bytes on ``tier``; ``ok`` False when they cannot."""

    tier: str
    need: int
    ok: bool
    evictions: tuple[Eviction, ...]


@dataclass(frozen=True)
class SwitchPlan:
    """How to make ``expert`` runnable.

    ``found``: the tier it was found in (``gpu``, ``cpu``, ``disk``, or a split's ``cpu``/``disk``).
    ``steps``: loads to run in order (``disk->cpu``, ``cpu->gpu``, ``disk->gpu``, ``split``), or
    ``("wait",)`` / ``("skip",)``; empty when it is runnable already. ``evictions``: to execute
    first, in order. ``reserve``: bytes per tier to reserve for the loads. ``split_room``: for a
    split, the GPU and CPU bytes left for ``plan_placement``.
    """

    expert: str
    found: str
    steps: tuple[str, ...]
    evictions: tuple[Eviction, ...] = ()
    reserve: Mapping[str, int] = field(default_factory=lambda: {"gpu": 0, "cpu": 0})
    split_room: Mapping[str, int] | None = None


class _Sim:
    """The snapshot, mutated as the plan evicts (never the caller's objects)."""

    def __init__(self, states: Iterable[ExpertState], budgets: Mapping[str, int]) -> None:
        self.states = {s.name: s for s in states}
        self.budgets = {t: int(budgets.get(t, 0) or 0) for t in MEMORY_TIERS}
        self.evictions: list[Eviction] = []

    def used(self, tier: str) -> int:
        return sum(s.held(tier) for s in self.states.values())

    def left(self, tier: str) -> int:
        return self.budgets[tier] - self.used(tier)

    def evictable(self, tier: str, exclude: str) -> list[ExpertState]:
        out = [s for s in self.states.values()
               if s.name != exclude and not s.pinned and not s.busy and s.on(tier)]
        return sorted(out, key=lambda s: s.tick)

    def _set(self, state: ExpertState, **changes) -> None:
        self.states[state.name] = dataclasses.replace(state, **changes)

    def make_room(self, tier: str, need: int, exclude: str) -> bool:
        while self.left(tier) < need:
            victims = self.evictable(tier, exclude)
            if not victims:
                return False
            victim = victims[0]
            if victim.split:
                freed = sum(victim.split.values())
                self.evictions.append(Eviction(victim.name, "drop-split", tier, freed))
                self._set(victim, split=None, split_on_disk=False)
            elif tier == "gpu":
                self._demote_or_drop(victim, exclude)
            else:
                self.evictions.append(Eviction(victim.name, "drop-cpu", tier, victim.cpu))
                self._set(victim, cpu=0)
        return True

    def _demote_or_drop(self, victim: ExpertState, exclude: str) -> None:
        if not victim.cpu and victim.nbytes <= self.budgets["cpu"] \
                and self.make_room("cpu", victim.gpu, exclude):
            self.evictions.append(Eviction(victim.name, "demote", "gpu", victim.gpu))
            self._set(self.states[victim.name], cpu=victim.gpu, gpu=0)
            return
        self.evictions.append(Eviction(victim.name, "drop-gpu", "gpu", victim.gpu))
        self._set(self.states[victim.name], gpu=0)


def _check(states: list[ExpertState], budgets: Mapping[str, int], name: str) -> None:
    names = [s.name for s in states]
    if len(set(names)) != len(names):
        raise ExpertError(f"the snapshot names an expert twice: {sorted({n for n in names if names.count(n) > 1})}")
    if name not in names:
        raise ExpertError(f"expert {name!r} is not in the snapshot; experts: {', '.join(names)}")
    for tier in MEMORY_TIERS:
        if int(budgets.get(tier, 0) or 0) < 0:
            raise ExpertError(f"the {tier} budget must be >= 0 bytes, got {budgets.get(tier)}")


def plan_room(snapshot: Iterable[ExpertState], budgets: Mapping[str, int], tier: str, need: int,
              exclude: str | None = None) -> RoomPlan:
    """The evictions that leave ``need`` bytes free on ``tier`` (LRU first; never pinned, busy or
    ``exclude``). ``ok`` is False when even evicting every candidate is not enough (the plan then
    lists the evictions that would be made anyway, as the pool did)."""
    if tier not in MEMORY_TIERS:
        raise ExpertError(f"unknown tier {tier!r}; use 'gpu' or 'cpu'")
    sim = _Sim(snapshot, budgets)
    ok = sim.make_room(tier, int(need), exclude or "")
    return RoomPlan(tier, int(need), ok, tuple(sim.evictions))


def plan_switch(snapshot: Iterable[ExpertState], budgets: Mapping[str, int],
                request: SwitchRequest) -> SwitchPlan:
    """Decide how to switch ``request.name`` in: loads, evictions, reservations (pure).

    Parameters
    ----------
    snapshot : iterable of ExpertState
        Every expert of the pool, the requested one included.
    budgets : mapping
        ``{"gpu": bytes, "cpu": bytes}`` (a GPU budget of 0: no GPU tier).
    request : SwitchRequest

    Returns
    -------
    SwitchPlan
    """
    states = list(snapshot)
    _check(states, budgets, request.name)
    sim = _Sim(states, budgets)
    me = sim.states[request.name]
    name, n = me.name, me.nbytes
    use_gpu = sim.budgets["gpu"] > 0 and not request.prefetch

    def plan(found: str, steps: tuple[str, ...], gpu: int = 0, cpu: int = 0, room=None) -> SwitchPlan:
        return SwitchPlan(name, found, steps, tuple(sim.evictions), {"gpu": gpu, "cpu": cpu}, room)

    if me.gpu:
        return plan("gpu", ())
    if me.split:
        return plan("disk" if me.split_on_disk else "cpu", ())
    found = "cpu" if me.cpu else "disk"
    if use_gpu and n <= sim.budgets["gpu"] and sim.make_room("gpu", n, name):
        if me.cpu:
            return plan(found, ("cpu->gpu",), gpu=n)
        if n <= sim.budgets["cpu"] and sim.make_room("cpu", n, name):
            return plan(found, ("disk->cpu", "cpu->gpu"), gpu=n, cpu=n)
        return plan(found, ("disk->gpu",), gpu=n)
    if me.cpu:
        return plan("cpu", ())
    if request.prefetch and n > sim.left("cpu") and not sim.evictable("cpu", name):
        return SwitchPlan(name, "disk", ("skip",))
    if n <= sim.budgets["cpu"] and sim.make_room("cpu", n, name):
        return plan("disk", ("disk->cpu",), cpu=n)
    if request.prefetch:
        return SwitchPlan(name, "disk", ("skip",))
    if request.may_wait and n <= sim.budgets["cpu"]:
        others = [s for s in sim.states.values() if s.name != name]
        pinned = sum(s.held("cpu") for s in others if s.pinned)
        busy = sum(s.held("cpu") for s in others if not s.pinned and s.busy)
        if busy and n <= sim.budgets["cpu"] - pinned:
            return SwitchPlan(name, "disk", ("wait",))  # sessions using other experts release them
    # larger than the tier budget (or room blocked by pinned/in-use experts): split
    sim.make_room("cpu", min(n, 2 * me.largest_module_bytes), name)
    room = {"gpu": max(0, sim.left("gpu")) if use_gpu else 0, "cpu": max(0, sim.left("cpu"))}
    return plan("disk", ("split",), room=room)
