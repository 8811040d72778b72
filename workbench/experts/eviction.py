"""Executing the pool's eviction plans (the policy itself is the pure :mod:`workbench.experts.plan`): drop or demote copies (a mixin)."""
from __future__ import annotations

import time

from workbench.experts.entry import Entry
from workbench.experts.plan import ExpertState, plan_room
from workbench.placement import (
    copy_state,
    drop_weights,
)


class Evicting:
    """Mixed into :class:`~workbench.experts.ExpertPool`."""

    def _drop(self, entry: Entry, tier: str, *, detail: str = "", record: bool = True) -> int:
        """Drop one copy of ``entry`` (``gpu``/``cpu``/``split``); caller holds the lock. Returns bytes freed."""
        t0 = time.perf_counter()
        if tier in ("gpu", "cpu"):
            entry.merged.pop(tier, None)  # the merged adapter goes with the weights it was merged into
        if tier == "gpu" and entry.gpu_model is not None:
            drop_weights(entry.gpu_model)
            entry.gpu_model = None
            to = "cpu" if entry.cpu_model is not None else "disk"
            nbytes = entry.nbytes
        elif tier == "cpu" and entry.cpu_model is not None:
            drop_weights(entry.cpu_model)
            entry.cpu_model = None
            to, nbytes = "disk", entry.nbytes
            if entry.gpu_model is not None:
                to = "gpu"
        elif tier == "split" and entry.split_model is not None:
            tier = entry.tier
            nbytes = entry.placement.bytes_per_tier["gpu"] + entry.placement.bytes_per_tier["cpu"]
            entry.split_model = None
            entry.placement = None
            to = "disk"
        else:
            return 0
        if record:
            self._record(entry.spec.name, "evict", tier, to, nbytes, time.perf_counter() - t0, detail)
        return nbytes

    # -- planning (pure, workbench.experts.plan) and executing -----------------------------------
    def _state(self, entry: Entry) -> ExpertState:
        """``entry`` as plain numbers for the planner; caller holds the lock."""
        gpu = entry.nbytes + entry.merged_bytes("gpu") if entry.gpu_model is not None else 0
        cpu = entry.nbytes + entry.merged_bytes("cpu") if entry.cpu_model is not None else 0
        split = None
        if entry.split_model is not None and entry.placement is not None:
            split = {t: int(entry.placement.bytes_per_tier.get(t, 0)) for t in ("gpu", "cpu")}
        full = {"gpu": gpu, "cpu": cpu}
        extra = {t: entry.bytes_on(t) - full[t] - (split or {}).get(t, 0) for t in ("gpu", "cpu")}
        return ExpertState(
            entry.spec.name, entry.nbytes, gpu=gpu, cpu=cpu, split=split, extra=extra,
            pinned=entry.pinned, busy=bool(entry.in_use or entry.loading), tick=entry.tick,
            largest_module_bytes=entry.largest_module_bytes,
            split_on_disk=bool(split is not None and entry.placement.bytes_per_tier.get("disk", 0)))

    def _snapshot(self) -> list[ExpertState]:
        return [self._state(e) for e in self._entries.values()]

    def _budgets(self) -> dict[str, int]:
        return {"gpu": int(self.gpu_budget), "cpu": int(self.cpu_budget)}

    def _execute(self, evictions) -> None:
        """Carry out a plan's evictions in order; caller holds the lock."""
        for ev in evictions:
            victim = self._entries[ev.expert]
            detail = f"LRU: making room on {ev.tier}"
            if ev.action == "demote":
                self._demote_gpu(victim)
            elif ev.action == "drop-split":
                self._drop(victim, "split", detail=detail)
            elif ev.action == "drop-gpu":
                self._drop(victim, "gpu", detail=detail)
            else:
                self._drop(victim, "cpu", detail=detail)
        # Freed CPU pages go back to the OS after the load that follows (see _hold), so that load
        # reuses them without page faults. On the GPU, freed blocks stay in torch's caching allocator for
        # the next expert (memory_allocated drops); evict()/close() also empty the CUDA cache.

    def _make_room(self, tier: str, need: int, exclude: Entry) -> bool:
        """Evict LRU experts from ``tier`` until ``need`` bytes are free; caller holds the lock."""
        plan = plan_room(self._snapshot(), self._budgets(), tier, need, exclude.spec.name)
        self._execute(plan.evictions)
        return plan.ok

    def _demote_gpu(self, victim: Entry) -> None:
        """GPU -> CPU by a device->host copy (the plan made the CPU room); dropped if the copy fails."""
        t0 = time.perf_counter()
        try:
            state = copy_state(victim.gpu_model, "cpu")
            victim.cpu_model = self._materialise(victim, state, "cpu")
            if "gpu" in victim.merged:  # the copy carries the merged adapter: so does its restore copy
                who, originals = victim.merged["gpu"]
                victim.merged["cpu"] = (who, {k: v.to("cpu") for k, v in originals.items()})
            self._record(victim.spec.name, "evict", "gpu", "cpu", victim.nbytes, time.perf_counter() - t0,
                         "LRU: demoted to the CPU tier")
            drop_weights(victim.gpu_model)
            victim.gpu_model = None
            return
        except Exception as exc:  # fall back to dropping
            victim.cpu_model = None
            victim.merged.pop("cpu", None)
            self._record(victim.spec.name, "error", "gpu", "cpu", 0, 0.0, f"demotion failed, dropped: {exc}")
        self._drop(victim, "gpu", detail="LRU: making room on gpu")
