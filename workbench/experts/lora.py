"""LoRA experts on a shared base: grouping, the adapter gate, exact merge and restore (a pool mixin).

Experts with the same ``model`` and ``dtype`` share one base entry of the :class:`ExpertPool`; an
adapter expert holds that base and merges its adapter into it (:mod:`workbench.adapters`).
Sessions that need the same adapter share the base; one that needs another waits until they finish.
"""
from __future__ import annotations

import time
from pathlib import Path

from workbench.errors import ExpertError, PlacementError
from workbench.experts.entry import base_key, Entry
from workbench.experts.records import LoadedExpert
from workbench.experts.spec import ExpertSpec
from workbench.placement import (
    format_bytes,
)


class LoraSwitching:
    """The pool's LoRA methods (mixed into :class:`~workbench.experts.ExpertPool`)."""

    def _group_adapters(self) -> None:
        """Point every adapter expert at the entry of its base: one shared copy per base model + dtype.

        A base that no spec names on its own (no plain expert with the same ``model`` and ``dtype``)
        gets a hidden entry, which holds memory like any expert but is not in :attr:`names`.
        """
        bases: dict[tuple, Entry] = {}
        for entry in self._entries.values():
            if entry.spec.adapter is None:
                bases.setdefault(base_key(entry.spec), entry)
        for entry in list(self._entries.values()):
            spec = entry.spec
            if spec.adapter is None:
                continue
            key = base_key(spec)
            base = bases.get(key)
            if base is None:
                hidden = f"{Path(str(spec.model)).name or spec.model} (base)"
                while hidden in self._entries:
                    hidden += "'"
                base = Entry(ExpertSpec(name=hidden, model=spec.model, dtype=spec.dtype,
                                         trust_remote_code=spec.trust_remote_code,
                                         description="shared base of LoRA experts"), hidden=True)
                self._entries[hidden] = base
                bases[key] = base
            entry.base = base
            base.children.append(entry)

    def _evict_adapter(self, entry: Entry) -> None:
        from workbench.adapters import LoraAdapter

        base = entry.base
        with self._cond:
            if entry.in_use:
                raise ExpertError(f"expert {entry.spec.name!r} is in use by {entry.in_use} session(s) and cannot "
                                  "be evicted now; retry after the generation finishes")
            entry.pinned = False
            for tier, (who, originals) in list(base.merged.items()):
                if who is entry:
                    model = base.gpu_model if tier == "gpu" else base.cpu_model
                    if model is not None:
                        LoraAdapter.restore(model, originals)
                    base.merged.pop(tier)
            if entry.adapter is not None:
                nbytes, entry.adapter = entry.adapter.nbytes, None
                self._record(entry.spec.name, "evict", "cpu", "disk", nbytes, 0.0, "evict() called: adapter dropped")

    def _prepare_adapter(self, entry: Entry):
        """Read the adapter expert's LoRA weights once (small; kept on the CPU)."""
        from workbench.adapters import LoraAdapter

        with entry.prep_lock:
            if entry.adapter is None:
                t0 = time.perf_counter()
                adapter = LoraAdapter.load(entry.spec.adapter, expert=entry.spec.name)
                with self._lock:
                    entry.adapter = adapter
                self._record(entry.spec.name, "load", "disk", "cpu", adapter.nbytes, time.perf_counter() - t0,
                             f"LoRA adapter, {adapter.n_params:,} parameters")
            return entry.adapter

    def _switch_in_adapter(self, entry: Entry) -> LoadedExpert:
        t0 = time.perf_counter()
        base = entry.base
        with self._lock:
            if self._closed:
                raise ExpertError("the pool is closed; create a new ExpertPool")
            entry.in_use += 1
        try:
            self._prepare_adapter(entry)
            loaded = self._hold(base.spec.name)
        except BaseException as exc:
            self._unhold(entry)
            self._record(entry.spec.name, "error", "disk", "disk", 0, time.perf_counter() - t0, str(exc))
            raise
        try:
            if loaded.tier not in ("gpu", "cpu"):
                raise ExpertError(
                    f"expert {entry.spec.name!r}: its base {base.spec.name!r} was loaded split across "
                    f"{loaded.tier}; a LoRA adapter is merged into a base held whole in one tier. Fix: raise "
                    f"cpu_memory (or gpu_memory) to hold {format_bytes(base.nbytes)} plus the adapter")
            adapter_s = self._gate_enter(base, entry, loaded)
        except BaseException as exc:
            self._unhold(base)
            self._unhold(entry)
            self._record(entry.spec.name, "error", loaded.tier, loaded.tier, 0, time.perf_counter() - t0, str(exc))
            raise
        with self._cond:
            self._tick += 1
            entry.tick, entry.last_used = self._tick, time.time()
        return LoadedExpert(entry.spec.name, loaded.model, loaded.tokenizer, entry.spec, loaded.tier_found,
                            time.perf_counter() - t0, loaded.device, loaded.tier, adapter_s)

    def _gate_enter(self, base: Entry, want: Entry | None, loaded: LoadedExpert) -> float:
        """Hold the shared base in the state ``want`` needs (its adapter merged, or none); returns merge seconds.

        Sessions that need the same adapter share the base; a session that needs another one waits
        until they finish (the base holds one merged adapter at a time).
        """
        with self._cond:
            while base.gate_users and base.gate_active is not want:
                self._cond.wait()
            base.gate_active = want
            base.gate_users += 1
        try:
            return self._apply_adapter(base, want, loaded)
        except BaseException:
            self._gate_exit(base)
            raise

    def _gate_exit(self, base: Entry) -> None:
        with self._cond:
            base.gate_users = max(0, base.gate_users - 1)
            self._cond.notify_all()

    def _apply_adapter(self, base: Entry, want: Entry | None, loaded: LoadedExpert) -> float:
        """Merge ``want``'s adapter into the resident base (restoring the previous one first)."""
        from workbench.adapters import LoraAdapter

        tier = "gpu" if loaded.model is base.gpu_model and base.gpu_model is not None else "cpu"
        model = loaded.model
        with base.adapter_lock:
            current = base.merged.get(tier)
            previous = current[0] if current else None
            if previous is want:
                return 0.0
            t0 = time.perf_counter()
            originals = current[1] if current else None
            moved = sum(t.numel() * t.element_size() for t in (originals or {}).values())
            if want is None or (originals is not None and set(originals) != set(want.adapter.modules)):
                LoraAdapter.restore(model, originals)
                with self._lock:
                    base.merged.pop(tier, None)
                originals = None
            if want is not None:
                adapter = want.adapter
                if originals is None:
                    need = adapter.originals_bytes(model)
                    with self._lock:
                        if not self._make_room(tier, need, base):
                            raise PlacementError(
                                f"expert {want.spec.name!r}: no room on the {tier} tier for the "
                                f"{format_bytes(need)} copy of the base weights its adapter replaces; raise "
                                f"{tier}_memory or release other experts")
                    originals = adapter.snapshot(model, expert=want.spec.name)
                try:
                    adapter.merge(model, originals, expert=want.spec.name)
                except BaseException:
                    LoraAdapter.restore(model, originals)
                    raise
                with self._lock:
                    base.merged[tier] = (want, originals)
            seconds = time.perf_counter() - t0
        name = want.spec.name if want is not None else base.spec.name
        if want is None:
            detail = f"restored base {base.spec.name} (unmerged {previous.spec.name})"
        else:
            detail = f"merged into base {base.spec.name}" + (f", replacing {previous.spec.name}" if previous else "")
        moved = max(moved, sum(t.numel() * t.element_size() for t in (originals or {}).values()))
        self._record(name, "adapter", tier, tier, moved, seconds, detail)
        return seconds
