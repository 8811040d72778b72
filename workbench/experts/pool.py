"""The tiered :class:`ExpertPool` (GPU / CPU / disk): switching experts in, holding, prefetching."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from workbench.errors import ExpertError, PlacementError
from workbench.experts.entry import (
    TRIMMER,
    Entry,
    read_generation_config,
    import_transformers_once,
)
from workbench.experts.eviction import Evicting
from workbench.experts.generation import Generating
from workbench.experts.lora import LoraSwitching
from workbench.experts.plan import SwitchRequest, plan_switch
from workbench.experts.records import LoadedExpert, PoolEvent
from workbench.experts.residency import Residency
from workbench.experts.spec import ExpertSpec, SpecNames
from workbench.placement import (
    Checkpoint,
    Placement,
    checkpoint_dtype,
    copy_state,
    empty_model,
    format_bytes,
    inspect_checkpoint,
    load_pretrained,
    load_split,
    materialise,
    parse_size,
    plan_placement,
    read_weights,
    release_memory,
    resolve_model_path,
    torch_dtype,
)


class ExpertPool(SpecNames, Residency, Evicting, LoraSwitching, Generating):
    """Serve many experts within per-tier budgets (GPU bytes, CPU bytes, a disk offload folder).

    Parameters
    ----------
    experts : iterable of ExpertSpec (or dicts)
        The experts; names must be unique. Nothing is loaded until used.
    gpu_memory : int, str or None
        GPU tier budget. ``"auto"``: 80% of the free memory of ``cuda:0`` when CUDA is present,
        else no GPU tier; ``None``/``0``: no GPU tier.
    cpu_memory : int or str
        CPU tier budget (materialised models in RAM), e.g. ``"4GiB"``.
    offload_dir : path, optional
        Folder for disk offload of experts larger than the budgets; a temporary folder (removed
        on :meth:`close`) when ``None``.
    prefetch : bool
        Allow :meth:`prefetch` to load experts in a background thread.
    wait_for_room : float
        Seconds a switch-in waits for other sessions to release the experts they are using when the
        budget is full of in-use experts (an expert that fits the budget is then loaded whole once
        room frees up). After that, or with ``0``, it is loaded split into what is left, or a
        :class:`~workbench.errors.PlacementError` says which experts hold the budget.

    Notes
    -----
    Every expert always lives on disk (its checkpoint). Loading an expert into a tier first evicts
    least-recently-used experts that are neither pinned nor in use (GPU -> CPU -> dropped). An
    expert larger than a tier's budget is planned with :func:`plan_placement` for the budget left
    and loaded split (``cpu+disk``, ``gpu+cpu+disk``). The pool is thread-safe: several sessions may
    share it; an expert in use by one is never evicted by another.
    """

    def __init__(
        self,
        experts: Iterable[ExpertSpec | dict],
        *,
        gpu_memory: int | str | None = "auto",
        cpu_memory: int | str = "4GiB",
        offload_dir: str | Path | None = None,
        prefetch: bool = True,
        wait_for_room: float = 30.0,
    ) -> None:
        specs: dict[str, ExpertSpec] = {}
        for spec in experts:
            spec = spec if isinstance(spec, ExpertSpec) else ExpertSpec.from_dict(spec)
            if spec.name in specs:
                raise ExpertError(f"two experts are named {spec.name!r}; expert names must be unique")
            specs[spec.name] = spec
        self.specs = specs
        import_transformers_once()
        self.cpu_budget = parse_size(cpu_memory)
        self.gpu_budget = self._gpu_budget(gpu_memory)
        self._own_offload = offload_dir is None
        self.offload_dir = Path(offload_dir) if offload_dir is not None else None
        self.prefetch_enabled = bool(prefetch)
        self.wait_for_room = max(0.0, float(wait_for_room))
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._entries = {name: Entry(spec) for name, spec in specs.items()}
        self._group_adapters()
        self._events: list[PoolEvent] = []
        self._listeners: list[Callable[[PoolEvent], None]] = []
        self._prefetching: dict[str, threading.Thread] = {}
        self._tick = 0
        self._closed = False
        self._enforcer_data: dict = {}  # id(tokenizer) -> (tokenizer, lm-format-enforcer table)

    # -- configuration --------------------------------------------------------------------------

    @staticmethod
    def _gpu_budget(gpu_memory: int | str | None) -> int:
        if gpu_memory is None:
            return 0
        if gpu_memory == "auto":
            try:
                import torch

                if torch.cuda.is_available():
                    return int(torch.cuda.mem_get_info(0)[0] * 0.8)
            except Exception:  # no usable CUDA
                return 0
            return 0
        budget = parse_size(gpu_memory)
        if budget > 0:
            import torch

            if not torch.cuda.is_available():
                raise PlacementError(
                    f"gpu_memory={gpu_memory!r} asks for a GPU tier but CUDA is not available; "
                    "use gpu_memory=None (or 'auto') on a CPU-only machine"
                )
        return budget

    def __repr__(self) -> str:
        return (
            f"ExpertPool({len(self.specs)} experts, gpu={format_bytes(self.gpu_budget)}, "
            f"cpu={format_bytes(self.cpu_budget)}, tracked cpu={format_bytes(self.tracked_bytes('cpu'))})"
        )

    def __enter__(self) -> "ExpertPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise ExpertError(f"unknown expert {name!r}; the pool holds: {', '.join(self.specs) or '(none)'}") from None

    def _offload_root(self) -> Path:
        if self.offload_dir is None:
            from workbench._paths import cache_dir

            self.offload_dir = Path(tempfile.mkdtemp(prefix="pool-", dir=cache_dir("offload")))
        self.offload_dir.mkdir(parents=True, exist_ok=True)
        return self.offload_dir

    # -- events ---------------------------------------------------------------------------------

    def add_listener(self, callback: Callable[[PoolEvent], None]) -> None:
        """Call ``callback(event)`` after every recorded event (keep it quick; it may run under the pool lock)."""
        with self._lock:
            self._listeners.append(callback)

    def _record(self, expert: str, action: str, from_tier: str, to_tier: str, nbytes: int, seconds: float, detail: str = "") -> PoolEvent:
        event = PoolEvent(time.time(), expert, action, from_tier, to_tier, int(nbytes), float(seconds), detail)
        with self._lock:
            self._events.append(event)
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback(event)
            except Exception as exc:  # a broken UI callback must not break serving
                import warnings

                warnings.warn(f"pool listener {callback!r} failed: {exc}", RuntimeWarning, stacklevel=2)
        return event

    def events(self) -> list[PoolEvent]:
        """All recorded events, oldest first."""
        with self._lock:
            return list(self._events)

    def events_frame(self):
        """The events as a ``pandas.DataFrame`` (time, expert, action, from_tier, to_tier, bytes, seconds, detail)."""
        import pandas as pd

        columns = [f.name for f in dataclasses.fields(PoolEvent)]
        return pd.DataFrame([e.to_dict() for e in self.events()], columns=columns)

    # -- state ----------------------------------------------------------------------------------




    # -- pin / unpin / evict ----------------------------------------------------------------------

    def pin(self, name: str, *, load: bool = True) -> None:
        """Keep ``name`` resident: it is never evicted until :meth:`unpin`. Loads it now unless ``load=False``."""
        entry = self._entry(name)
        if entry.base is not None:  # pinning an adapter expert keeps its base resident
            self.pin(entry.base.spec.name, load=False)
        with self._lock:
            entry.pinned = True
        if load:
            try:
                with self.use(name):
                    pass
            except BaseException:
                with self._lock:
                    entry.pinned = False
                raise

    def unpin(self, name: str) -> None:
        with self._lock:
            entry = self._entry(name)
            entry.pinned = False
            if entry.base is not None and not any(c.pinned for c in entry.base.children):
                entry.base.pinned = False  # pinned for its adapter experts; none is pinned now

    def evict(self, name: str) -> None:
        """Drop ``name`` from memory (all tiers). Raises if it is in use; unpins it.

        For an adapter expert: restores its base if the adapter is merged into it and drops the
        adapter's weights; the shared base stays resident (evict the base to drop it).
        """
        entry = self._entry(name)
        if entry.base is not None:
            self._evict_adapter(entry)
            return
        with self._cond:
            while entry.loading:
                self._cond.wait()
            if entry.in_use:
                raise ExpertError(
                    f"expert {name!r} is in use by {entry.in_use} session(s) and cannot be evicted now; "
                    "retry after the generation finishes"
                )
            entry.pinned = False
            freed_gpu = entry.gpu_model is not None
            self._drop(entry, "gpu", detail="evict() called")
            self._drop(entry, "cpu", detail="evict() called")
            self._drop(entry, "split", detail="evict() called")
        release_memory(cuda=freed_gpu)

    def close(self) -> None:
        """Wait for prefetches, drop every expert and remove the temporary offload folder."""
        with self._lock:
            self._closed = True
            threads = list(self._prefetching.values())
        for thread in threads:
            thread.join(timeout=60)
        with self._cond:
            for entry in self._entries.values():
                entry.pinned = False
                for tier in ("gpu", "cpu", "split"):
                    self._drop(entry, tier, detail="pool closed", record=False)
                entry.skeletons.clear()
                entry.merged.clear()
                entry.adapter = None
        release_memory(cuda=self.gpu_budget > 0)
        if self._own_offload and self.offload_dir is not None:
            shutil.rmtree(self.offload_dir, ignore_errors=True)
            self.offload_dir = None





    # -- preparing and loading --------------------------------------------------------------------

    def _prepare(self, entry: Entry) -> bool:
        """Resolve the checkpoint, read config + tokenizer and build the skeleton once. True if this was a cold start."""
        with entry.prep_lock:
            if entry.prepared:
                return False
            spec = entry.spec
            path = resolve_model_path(spec.model, expert=spec.name)
            checkpoint = inspect_checkpoint(path, expert=spec.name)
            from transformers import AutoConfig, AutoTokenizer

            try:
                config = AutoConfig.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
            except Exception as exc:
                raise ExpertError(f"expert {spec.name!r}: cannot read {path / 'config.json'}: {exc}. Fix: re-save the checkpoint") from exc
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
            except Exception:
                tokenizer = None  # use() still works; generate() explains
            skeleton = empty_model(config, self._dtype(entry, checkpoint), trust_remote_code=spec.trust_remote_code)
            generation_config = read_generation_config(path)
            if generation_config is not None:  # as from_pretrained does: the checkpoint's defaults (eos ids, penalties)
                skeleton.generation_config = generation_config
            from accelerate.utils import compute_module_sizes, get_max_layer_size

            from workbench.placement import no_split_classes

            sizes = compute_module_sizes(skeleton)
            largest, _ = get_max_layer_size(list(skeleton.named_children()), sizes, no_split_classes(skeleton))
            entry.checkpoint, entry.tokenizer = checkpoint, tokenizer
            entry.skeletons["cpu"] = skeleton
            entry.nbytes = int(sizes[""])
            entry.largest_module_bytes = int(largest)
            entry.config = config
            return True

    def prepare(self, names: Iterable[str] | None = None) -> None:
        """Resolve checkpoints, read configs + tokenizers and build meta skeletons (no weights) ahead of use.

        Later first uses then report ``tier_found="disk"`` instead of ``"cold"``. Errors (missing
        path, truncated safetensors) surface here, naming the expert.
        """
        for name in self.names if names is None else names:
            self._prepare(self._entry(name))

    @staticmethod
    def _dtype(entry: Entry, checkpoint: Checkpoint | None = None):
        return torch_dtype(entry.spec.dtype) or checkpoint_dtype(checkpoint or entry.checkpoint)

    def _skeleton(self, entry: Entry, device: str):
        skeleton = entry.skeletons.get(device)
        if skeleton is None:
            skeleton = empty_model(entry.config, self._dtype(entry), device=device,
                                   trust_remote_code=entry.spec.trust_remote_code)
            skeleton.generation_config = copy.deepcopy(entry.skeletons["cpu"].generation_config)
            entry.skeletons[device] = skeleton
        return skeleton

    def _materialise(self, entry: Entry, state: dict, device: str):
        return materialise(self._skeleton(entry, device), state, expert=entry.spec.name, source=entry.checkpoint.path)

    def _load_split(self, entry: Entry, placement: Placement):
        return load_split(entry.checkpoint.path, placement, offload_folder=self._offload_root() / entry.spec.name,
                          dtype=self._dtype(entry), trust_remote_code=entry.spec.trust_remote_code, expert=entry.spec.name)

    def _load_full(self, entry: Entry, device: str):
        """Disk -> one device: safetensors read straight into the cached skeleton (from_pretrained for .bin)."""
        if entry.checkpoint.format != "safetensors":
            return load_pretrained(entry.checkpoint.path, device, dtype=self._dtype(entry),
                                   trust_remote_code=entry.spec.trust_remote_code, expert=entry.spec.name)
        state = read_weights(entry.checkpoint, device, dtype=torch_dtype(entry.spec.dtype), expert=entry.spec.name)
        return self._materialise(entry, state, device)

    # -- switching in ---------------------------------------------------------------------------

    def _resident_hit(self, entry: Entry, *, prefetch: bool) -> str | None:
        """The tier of a hit :func:`plan_switch` would return for ``entry`` (its first rules: on
        the GPU; on the CPU when there is no GPU tier to promote to, or for a prefetch), or None
        when the planner has to look at the whole pool. Saves the per-switch snapshot of every
        entry on the hot path; caller holds the lock."""
        if entry.gpu_model is not None:
            return "gpu"
        if entry.cpu_model is not None and entry.split_model is None and (
                prefetch or not self.gpu_budget):
            return "cpu"
        return None

    def _decide(self, entry: Entry, *, prefetch: bool, may_wait: bool = False) -> tuple[str, list[str], Placement | None]:
        """Under the lock: plan the switch (pure, :func:`plan_switch`), evict, reserve bytes.

        Returns (tier_found, steps, placement)."""
        hit = self._resident_hit(entry, prefetch=prefetch)
        if hit is not None:  # what plan_switch answers for a resident expert, without a snapshot
            return hit, [], None
        plan = plan_switch(self._snapshot(), self._budgets(),
                           SwitchRequest(entry.spec.name, prefetch=prefetch, may_wait=may_wait))
        self._execute(plan.evictions)
        if plan.steps != ("split",):
            for tier in ("gpu", "cpu"):
                entry.reserved[tier] += plan.reserve[tier]
            return plan.found, list(plan.steps), None
        gpu_left, cpu_left = plan.split_room["gpu"], plan.split_room["cpu"]
        blockers = [e.spec.name for e in self._entries.values() if e is not entry and (e.pinned or e.in_use) and e.bytes_on("cpu")]
        try:
            placement = plan_placement(
                self._skeleton(entry, "cpu"), gpu_bytes=gpu_left, cpu_bytes=cpu_left,
                offload_dir=self._offload_root(), dtype=self._dtype(entry),
            )
        except PlacementError as exc:
            held = f" (held by pinned/in-use experts: {', '.join(blockers)})" if blockers else ""
            raise PlacementError(f"expert {entry.spec.name!r}: {exc}; budget left: CPU {format_bytes(cpu_left)}{held}") from None
        entry.reserved["gpu"] += placement.bytes_per_tier["gpu"]
        entry.reserved["cpu"] += placement.bytes_per_tier["cpu"]
        return "disk", ["split"], placement

    def _hold(self, name: str, *, prefetch: bool = False) -> LoadedExpert | None:
        """Make a plain (non-adapter) entry runnable and hold it (in_use + 1); :meth:`_unhold` gives it back."""
        t0 = time.perf_counter()
        entry = self._entry(name)
        with self._lock:
            if self._closed:
                raise ExpertError("the pool is closed; create a new ExpertPool")
            entry.in_use += 1
        try:
            cold = self._prepare(entry)
            with self._cond:
                deadline = time.monotonic() + self.wait_for_room
                while True:
                    while entry.loading:
                        self._cond.wait()
                    try:
                        found, steps, placement = self._decide(
                            entry, prefetch=prefetch, may_wait=time.monotonic() < deadline)
                    except BaseException:
                        entry.reserved = {"gpu": 0, "cpu": 0}  # nobody else loads this entry while we decide
                        raise
                    if steps != ["wait"]:
                        break
                    self._cond.wait(timeout=max(0.01, deadline - time.monotonic()))
                if steps == ["skip"]:
                    self._record(name, "prefetch", "disk", "disk", 0, time.perf_counter() - t0, "skipped: no room without evicting in-use/pinned experts")
                    self._unhold(entry)
                    return None
                if steps:
                    entry.loading = True
        except BaseException as exc:
            with self._cond:
                entry.in_use -= 1
                self._cond.notify_all()
            self._record(name, "error", "disk", "disk", 0, time.perf_counter() - t0, str(exc))
            raise
        if cold:
            found = "cold"
        action = "prefetch" if prefetch else "load"
        try:
            for step in steps:
                s0 = time.perf_counter()
                if step == "disk->cpu":
                    model = self._load_full(entry, "cpu")
                    with self._lock:
                        entry.cpu_model, entry.reserved["cpu"] = model, entry.reserved["cpu"] - entry.nbytes
                    self._record(name, action, "disk", "cpu", entry.nbytes, time.perf_counter() - s0, "cold start" if cold else "")
                elif step == "cpu->gpu":
                    state = copy_state(entry.cpu_model, "cuda")
                    model = self._materialise(entry, state, "cuda")
                    with self._lock:
                        entry.gpu_model, entry.reserved["gpu"] = model, entry.reserved["gpu"] - entry.nbytes
                        if "cpu" in entry.merged:  # the copy carries the merged adapter: so does its restore copy
                            who, originals = entry.merged["cpu"]
                            entry.merged["gpu"] = (who, {k: v.to("cuda") for k, v in originals.items()})
                    self._record(name, "switch", "cpu", "gpu", entry.nbytes, time.perf_counter() - s0, "host->device copy")
                elif step == "disk->gpu":
                    model = self._load_full(entry, "cuda")
                    with self._lock:
                        entry.gpu_model, entry.reserved["gpu"] = model, entry.reserved["gpu"] - entry.nbytes
                    self._record(name, action, "disk", "gpu", entry.nbytes, time.perf_counter() - s0, "cold start" if cold else "")
                elif step == "split":
                    model = self._load_split(entry, placement)
                    with self._lock:
                        entry.split_model, entry.placement = model, placement
                        entry.reserved["gpu"] -= placement.bytes_per_tier["gpu"]
                        entry.reserved["cpu"] -= placement.bytes_per_tier["cpu"]
                    self._record(name, action, "disk", entry.tier, placement.total_bytes, time.perf_counter() - s0,
                                 f"split by plan_placement: { {k: v for k, v in placement.bytes_per_tier.items() if v} }")
        except BaseException as exc:
            with self._cond:
                entry.reserved = {"gpu": 0, "cpu": 0}
                entry.loading = False
                entry.in_use -= 1
                self._cond.notify_all()
            self._record(name, "error", "disk", "disk", 0, time.perf_counter() - t0, str(exc))
            release_memory(cuda=self.gpu_budget > 0)
            raise
        if steps:
            # give back what the evictions freed and the load did not reuse, once switching pauses:
            # trimming right after evicting a large expert costs milliseconds on the switch path, and
            # trimming while the next switch runs slows that switch (measured in bench_switch)
            TRIMMER.request()
        with self._cond:
            entry.loading = False
            self._tick += 1
            entry.tick, entry.last_used = self._tick, time.time()
            self._cond.notify_all()
            switch_s = time.perf_counter() - t0
            if not steps:
                self._record(name, "switch", found, entry.tier, 0, switch_s, "hit")
            model, device = self._model_of(entry)
            return LoadedExpert(name, model, entry.tokenizer, entry.spec, found, switch_s, device, entry.tier)

    @staticmethod
    def _model_of(entry: Entry) -> tuple[Any, str]:
        if entry.gpu_model is not None:
            return entry.gpu_model, "cuda"
        if entry.cpu_model is not None:
            return entry.cpu_model, "cpu"
        placement = entry.placement
        return entry.split_model, ("cuda" if placement is not None and placement.bytes_per_tier["gpu"] else "cpu")

    def _unhold(self, entry: Entry) -> None:
        with self._cond:
            entry.in_use = max(0, entry.in_use - 1)
            self._cond.notify_all()

    def _switch_in(self, name: str, *, prefetch: bool = False) -> LoadedExpert | None:
        """Make ``name`` runnable and hold it (not evictable). The caller must :meth:`_release` it.

        A plain expert is switched in as it is. An adapter expert holds its base and merges its
        adapter into it (:meth:`_gate_enter`); a base that adapter experts share is held with every
        adapter restored out of it.
        """
        entry = self._entry(name)
        if entry.base is not None:
            return self._switch_in_adapter(entry)
        loaded = self._hold(name, prefetch=prefetch)
        if loaded is None or prefetch or not entry.children:
            return loaded
        try:
            loaded.adapter_s = self._gate_enter(entry, None, loaded)
        except BaseException:
            self._unhold(entry)
            raise
        loaded.switch_s += loaded.adapter_s
        return loaded

    def _release(self, entry: Entry) -> None:
        """Give back what :meth:`_switch_in` held."""
        if entry.base is not None:
            self._gate_exit(entry.base)
            self._unhold(entry.base)
            self._unhold(entry)
        elif entry.children:
            self._gate_exit(entry)
            self._unhold(entry)
        else:
            self._unhold(entry)

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[LoadedExpert]:
        """Switch ``name`` in (loading it if needed) and hold it, not evictable, inside the ``with`` block.

        Examples
        --------
        >>> with pool.use("math") as expert:                     # doctest: +SKIP
        ...     out = expert.model.generate(**expert.tokenizer("hi", return_tensors="pt"))
        """
        loaded = self._switch_in(name)
        try:
            yield loaded
        finally:
            self._release(self._entries[name])

    def prefetch(self, name: str) -> None:
        """Load ``name`` into the CPU tier in a background thread (no-op if resident, already prefetching,
        or the pool was built with ``prefetch=False``). Never evicts pinned or in-use experts."""
        entry = self._entry(name)
        target = entry.base or entry  # an adapter expert: load its base (and read the adapter)
        with self._lock:
            if not self.prefetch_enabled or self._closed or name in self._prefetching:
                return
            if (target.gpu_model is not None or target.cpu_model is not None or target.split_model is not None) \
                    and (entry.base is None or entry.adapter is not None):
                return

            def work() -> None:
                try:
                    if entry.base is not None:
                        self._prepare_adapter(entry)
                    loaded = self._hold(target.spec.name, prefetch=True)
                    if loaded is not None:
                        self._unhold(target)
                except Exception:  # recorded as an error event already
                    pass
                finally:
                    with self._lock:
                        self._prefetching.pop(name, None)

            thread = threading.Thread(target=work, name=f"prefetch-{name}", daemon=True)
            self._prefetching[name] = thread
        thread.start()

    def wait_prefetch(self, timeout: float | None = None) -> None:
        """Block until running prefetches finish (handy in tests and benchmarks)."""
        with self._lock:
            threads = list(self._prefetching.values())
        for thread in threads:
            thread.join(timeout)
