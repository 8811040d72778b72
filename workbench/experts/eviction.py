"""The pool's eviction policy: least recently used first, GPU -> CPU -> dropped; never pinned or in-use experts (a mixin)."""
from __future__ import annotations

import time

from workbench.experts.entry import _Entry
from workbench.placement import (
    copy_state,
    drop_weights,
)


class Evicting:
    """Mixed into :class:`~workbench.experts.ExpertPool`."""

    def _drop(self, entry: _Entry, tier: str, *, detail: str = "", record: bool = True) -> int:
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

    def _evictable(self, tier: str, exclude: _Entry) -> list[_Entry]:
        out = [
            e for e in self._entries.values()
            if e is not exclude and not e.pinned and e.in_use == 0 and not e.loading
            and ((tier == "gpu" and (e.gpu_model is not None or (e.split_model is not None and e.placement.bytes_per_tier["gpu"])))
                 or (tier == "cpu" and (e.cpu_model is not None or (e.split_model is not None and e.placement.bytes_per_tier["cpu"]))))
        ]
        return sorted(out, key=lambda e: e.tick)

    def _make_room(self, tier: str, need: int, exclude: _Entry) -> bool:
        """Evict LRU experts from ``tier`` until ``need`` bytes are free; caller holds the lock."""
        budget = self.gpu_budget if tier == "gpu" else self.cpu_budget
        while budget - self.tracked_bytes(tier) < need:
            victims = self._evictable(tier, exclude)
            if not victims:
                return False
            victim = victims[0]
            if tier == "gpu":
                if victim.split_model is not None:
                    self._drop(victim, "split", detail="LRU: making room on gpu")
                else:
                    self._demote_gpu(victim, exclude)
            else:
                kind = "split" if victim.split_model is not None else "cpu"
                self._drop(victim, kind, detail="LRU: making room on cpu")
        # Freed CPU pages go back to the OS after the load that follows (see _switch_in), so that load
        # reuses them without page faults. On the GPU, freed blocks stay in torch's caching allocator for
        # the next expert (memory_allocated drops); evict()/close() also empty the CUDA cache.
        return True

    def _demote_gpu(self, victim: _Entry, exclude: _Entry) -> None:
        """GPU -> CPU (free when a CPU copy exists, else a device->host copy if the CPU budget allows)."""
        if victim.cpu_model is None and victim.nbytes <= self.cpu_budget and self._make_room("cpu", victim.nbytes, exclude):
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
                self._record(victim.spec.name, "error", "gpu", "cpu", 0, 0.0, f"demotion failed, dropped: {exc}")
        self._drop(victim, "gpu", detail="LRU: making room on gpu")
