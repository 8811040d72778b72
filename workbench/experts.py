"""Experts and the tiered :class:`ExpertPool` (GPU / CPU / disk).

A Composition of Experts holds many experts but runs one per prompt; what makes it cheap is where
the experts live and how fast the active one is switched in. The pool keeps every expert on disk
(its safetensors checkpoint), a working set materialised in RAM (the CPU tier) and, when a GPU is
present, the active experts on the GPU. Switching in an expert from the CPU tier costs no copy on
CPU (microseconds) and one host->device copy on GPU; from disk it reads the safetensors straight
into a model skeleton built once per expert, so it costs about what ``safetensors`` takes to read
the bytes. An expert larger than a tier's budget is planned with :func:`plan_placement` and loaded
split across GPU + CPU + disk with accelerate.

Examples
--------
>>> from workbench.experts import ExpertSpec, ExpertPool
>>> specs = [ExpertSpec("math", "ckpt/math"), ExpertSpec("code", "ckpt/code")]   # doctest: +SKIP
>>> pool = ExpertPool(specs, cpu_memory="2GiB")                                 # doctest: +SKIP
>>> pool.generate("math", "What is 2 + 2?").text                                # doctest: +SKIP
>>> pool.events_frame()                                                         # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from workbench.errors import ExpertError, PlacementError
from workbench.placement import (  # noqa: F401  (parse_size, plan_placement, release_memory are re-exported)
    Checkpoint,
    Placement,
    checkpoint_dtype,
    copy_state,
    drop_weights,
    empty_model,
    format_bytes,
    inspect_checkpoint,
    load_pretrained,
    load_split,
    malloc_trim,
    materialise,
    parse_size,
    plan_placement,
    read_weights,
    release_memory,
    resolve_model_path,
    torch_dtype,
)

__all__ = [
    "ExpertSpec", "specs_from_file", "parse_size", "plan_placement", "Placement", "ExpertPool",
    "LoadedExpert", "Generation", "GenerationStream", "PoolEvent", "release_memory",
]

# ----------------------------------------------------------------------------------------------
# spec


@dataclass
class ExpertSpec:
    """What an expert is and how to run it.

    Parameters
    ----------
    name : str
        Unique name used by maps and routers.
    model : str or Path
        A local checkpoint folder (``config.json`` + ``*.safetensors`` + tokenizer) or a Hugging
        Face id already in the local cache (nothing is downloaded).
    dtype : str
        ``"auto"`` (the checkpoint's), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    total_params_b, active_params_b : float, optional
        Parameter counts in billions (for budgets; active = per token, e.g. for MoE experts).
    chat_template : bool, optional
        Apply the tokenizer's chat template; ``None`` uses it when the tokenizer has one.
    generation : dict
        Defaults for ``generate`` (``max_new_tokens``, ``do_sample``, ``temperature`` ...).
    description : str
        What the expert is good at (for similarity routing).
    trust_remote_code : bool
        Off unless you turn it on; passed to transformers.
    adapter : str or Path, optional
        A LoRA adapter folder (peft's ``save_pretrained``: ``adapter_config.json`` +
        ``adapter_model.safetensors``). The expert is then ``model`` + this adapter: the pool keeps
        one copy of the base for every expert that shares it and switches adapters by merging
        them into the resident base (see :mod:`workbench.adapters`). Parameter counts should
        include the adapter's.

    Examples
    --------
    >>> s = ExpertSpec.from_dict({"name": "math", "model": "ckpt/math", "generation": {"max_new_tokens": 32}})
    >>> s.to_dict()["generation"]
    {'max_new_tokens': 32}
    """

    name: str
    model: str | Path
    dtype: str = "auto"
    total_params_b: float | None = None
    active_params_b: float | None = None
    chat_template: bool | None = None
    generation: dict = field(default_factory=dict)
    description: str = ""
    trust_remote_code: bool = False
    adapter: str | Path | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ExpertError(f"ExpertSpec.name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.model, (str, Path)) or not str(self.model).strip():
            raise ExpertError(f"expert {self.name!r}: model must be a checkpoint folder or a Hugging Face id, got {self.model!r}")
        if self.adapter is not None and (not isinstance(self.adapter, (str, Path)) or not str(self.adapter).strip()):
            raise ExpertError(f"expert {self.name!r}: adapter must be a LoRA adapter folder (or None), got {self.adapter!r}")
        if not isinstance(self.generation, dict):
            raise ExpertError(f"expert {self.name!r}: generation must be a dict of generate() defaults, got {self.generation!r}")
        if self.dtype not in (None, "auto"):
            try:
                torch_dtype(self.dtype)
            except ExpertError as exc:
                raise ExpertError(f"expert {self.name!r}: {exc}") from None
        for attr in ("total_params_b", "active_params_b"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ExpertError(f"expert {self.name!r}: {attr} must be a non-negative number, got {value!r}")

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: str | Path | None = None) -> "ExpertSpec":
        """Build from a dict (e.g. one YAML entry). Relative model paths resolve against ``base_dir``."""
        if not isinstance(data, dict):
            raise ExpertError(f"an expert entry must be a mapping with 'name' and 'model', got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExpertError(
                f"expert entry {data.get('name', '?')!r} has unknown keys {unknown}; valid keys: {sorted(known)}"
            )
        missing = [k for k in ("name", "model") if k not in data]
        if missing:
            raise ExpertError(f"expert entry {data!r} misses {missing}; each expert needs 'name' and 'model'")
        data = dict(data)
        if base_dir is not None:
            for key in ("model", "adapter"):
                if data.get(key) is None:
                    continue
                candidate = Path(base_dir) / str(data[key])
                if not Path(str(data[key])).is_absolute() and candidate.exists():
                    data[key] = str(candidate)
        return cls(**data)

    def to_dict(self) -> dict:
        """A plain dict (YAML/JSON friendly)."""
        out = dataclasses.asdict(self)
        out["model"] = str(self.model)
        out["adapter"] = None if self.adapter is None else str(self.adapter)
        return out


def specs_from_file(path: str | Path) -> list[ExpertSpec]:
    """Read expert specs from a YAML (or JSON) file: a list of entries, or ``{"experts": [...]}``.

    Relative ``model`` paths are resolved against the file's folder when they exist there.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ExpertError(f"expert spec file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ExpertError(f"{path} is not valid YAML: {exc}") from exc
    if isinstance(data, dict) and "experts" in data:
        data = data["experts"]
    if not isinstance(data, list):
        raise ExpertError(f"{path} must hold a list of experts (or a mapping with key 'experts'), got {type(data).__name__}")
    specs = []
    for i, entry in enumerate(data):
        try:
            specs.append(ExpertSpec.from_dict(entry, base_dir=path.parent))
        except ExpertError as exc:
            raise ExpertError(f"{path} entry {i}: {exc}") from None
    return specs


# ----------------------------------------------------------------------------------------------
# records


@dataclass
class PoolEvent:
    """One load, switch, eviction, prefetch or error in the pool."""

    time: float
    expert: str
    action: str          # load | switch | evict | prefetch | error
    from_tier: str
    to_tier: str
    bytes: int
    seconds: float
    detail: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LoadedExpert:
    """An expert switched in and held (not evictable) inside ``with pool.use(name)``."""

    name: str
    model: Any
    tokenizer: Any
    spec: ExpertSpec
    tier_found: str      # gpu | cpu | disk | cold
    switch_s: float
    device: str
    tier: str = ""       # where it runs: gpu | cpu | gpu+cpu | cpu+disk | ...
    adapter_s: float = 0.0   # of switch_s: seconds spent merging a LoRA adapter into the shared base


@dataclass
class Generation:
    """The result of :meth:`ExpertPool.generate`."""

    text: str
    new_tokens: int
    seconds: float
    tokens_per_s: float
    tier_found: str
    switch_s: float
    expert: str = ""
    token_ids: list[int] = field(default_factory=list)
    adapter_s: float = 0.0


# ----------------------------------------------------------------------------------------------
# pool internals


@dataclass
class _Entry:
    spec: ExpertSpec
    prep_lock: threading.Lock = field(default_factory=threading.Lock)
    checkpoint: Checkpoint | None = None
    config: Any = None
    tokenizer: Any = None
    skeletons: dict = field(default_factory=dict)      # "cpu" / "cuda" -> model skeleton (meta params when idle)
    nbytes: int = 0
    largest_module_bytes: int = 0
    cpu_model: Any = None
    gpu_model: Any = None
    split_model: Any = None
    placement: Placement | None = None
    reserved: dict = field(default_factory=lambda: {"gpu": 0, "cpu": 0})
    pinned: bool = False
    in_use: int = 0
    loading: bool = False
    last_used: float | None = None
    tick: int = 0
    # LoRA: an adapter expert points at its base entry; a base lists its adapter experts
    base: "_Entry | None" = None
    children: list = field(default_factory=list)
    hidden: bool = False                                  # a base no spec names (not in pool.names)
    adapter: Any = None                                   # LoraAdapter, read on first use
    adapter_lock: threading.Lock = field(default_factory=threading.Lock)
    gate_active: Any = None                               # adapter entry the base runs with now (None: plain)
    gate_users: int = 0
    merged: dict = field(default_factory=dict)            # "gpu"/"cpu" -> (adapter entry, originals)

    @property
    def prepared(self) -> bool:
        return self.config is not None

    def bytes_on(self, tier: str) -> int:
        held = self.reserved.get(tier, 0)
        if tier == "gpu":
            if self.gpu_model is not None:
                held += self.nbytes
        elif tier == "cpu":
            if self.cpu_model is not None:
                held += self.nbytes
        if self.split_model is not None and self.placement is not None:
            held += self.placement.bytes_per_tier.get(tier, 0)
        if tier in self.merged:  # the exact copy of the weights a merged adapter replaced
            held += sum(t.numel() * t.element_size() for t in self.merged[tier][1].values())
        if tier == "cpu" and self.adapter is not None:
            held += self.adapter.nbytes
        return held

    @property
    def tier(self) -> str:
        if self.base is not None:
            return self.base.tier
        if self.gpu_model is not None:
            return "gpu"
        if self.cpu_model is not None:
            return "cpu"
        if self.split_model is not None and self.placement is not None:
            return "+".join(self.placement.tiers)
        return "disk"


def _generation_config(path: Path):
    """The checkpoint's ``generation_config.json`` (None when absent or unreadable)."""
    if not (path / "generation_config.json").is_file():
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except Exception:  # a bad generation config should not stop serving; generate() uses the model defaults
        return None


def _enforcer_tokenizer_data(tokenizer):
    """lm-format-enforcer's table of a Hugging Face tokenizer: each token's text and whether it starts a word."""
    import functools

    from lmformatenforcer import TokenEnforcerTokenizerData

    vocab_size = len(tokenizer)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for token in range(vocab_size):
        if token in special:
            continue
        after_zero = tokenizer.decode([zero, token])[1:]  # a leading space survives after "0"
        regular.append((token, after_zero, len(after_zero) > len(tokenizer.decode([token]))))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    eos = tokenizer.eos_token_id
    return TokenEnforcerTokenizerData(regular, functools.partial(decode), eos, False, vocab_size)


def _base_key(spec: ExpertSpec) -> tuple:
    """What makes two experts share one base copy: the same model (folder or id), dtype and code setting."""
    path = Path(str(spec.model)).expanduser()
    model = str(path.resolve()) if path.exists() else str(spec.model)
    return model, spec.dtype or "auto", bool(spec.trust_remote_code)


def _adapter_bytes_on_disk(adapter: str | Path | None) -> int:
    file = Path(str(adapter)).expanduser() / "adapter_model.safetensors" if adapter else None
    return file.stat().st_size if file is not None and file.is_file() else 0


def _weights_on_disk(model: str | Path) -> int:
    """Bytes of ``*.safetensors`` in a local checkpoint folder (0 if it is not one); no validation."""
    folder = Path(model).expanduser()
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) if folder.is_dir() else 0


class GenerationStream:
    """Iterator of text chunks from :meth:`ExpertPool.stream`; ``.generation`` holds the result after."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self.generation: Generation | None = None
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        kind, value = self._queue.get()
        if kind == "text":
            return value
        if kind == "error":
            raise value
        raise StopIteration


# ----------------------------------------------------------------------------------------------
# the pool


class _BackgroundTrim:
    """Run glibc ``malloc_trim`` off the switch path, once requests have paused for ``delay`` seconds.

    Requests coalesce; one daemon thread serves them (ctypes releases the GIL during the call).
    """

    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="workbench-malloc-trim", daemon=True)
                self._thread.start()
        self._event.set()

    def _run(self) -> None:
        while True:
            self._event.wait()
            while True:  # debounce: wait until no request came for `delay` seconds
                self._event.clear()
                if not self._event.wait(self.delay):
                    break
            malloc_trim()


_TRIMMER = _BackgroundTrim()

_TRANSFORMERS_NAMES = ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "GenerationConfig",
                       "TextIteratorStreamer")
_IMPORT_LOCK = threading.Lock()
_imported = False


def _import_transformers_once() -> None:
    """Resolve transformers' lazily imported names on one thread before sessions share the pool.

    transformers loads its public names on first attribute access; several threads doing that at
    once can see ``ImportError: cannot import name 'TextIteratorStreamer'``. Resolving them once,
    under a lock, when the pool is built makes later imports plain dictionary lookups.
    """
    global _imported
    if _imported:
        return
    with _IMPORT_LOCK:
        if not _imported:
            import transformers

            for name in _TRANSFORMERS_NAMES:
                getattr(transformers, name)
            _imported = True


class ExpertPool:
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
        _import_transformers_once()
        self.cpu_budget = parse_size(cpu_memory)
        self.gpu_budget = self._gpu_budget(gpu_memory)
        self._own_offload = offload_dir is None
        self.offload_dir = Path(offload_dir) if offload_dir is not None else None
        self.prefetch_enabled = bool(prefetch)
        self.wait_for_room = max(0.0, float(wait_for_room))
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._entries = {name: _Entry(spec) for name, spec in specs.items()}
        self._group_adapters()
        self._events: list[PoolEvent] = []
        self._listeners: list[Callable[[PoolEvent], None]] = []
        self._prefetching: dict[str, threading.Thread] = {}
        self._tick = 0
        self._closed = False

    def _group_adapters(self) -> None:
        """Point every adapter expert at the entry of its base: one shared copy per base model + dtype.

        A base that no spec names on its own (no plain expert with the same ``model`` and ``dtype``)
        gets a hidden entry, which holds memory like any expert but is not in :attr:`names`.
        """
        bases: dict[tuple, _Entry] = {}
        for entry in self._entries.values():
            if entry.spec.adapter is None:
                bases.setdefault(_base_key(entry.spec), entry)
        for entry in list(self._entries.values()):
            spec = entry.spec
            if spec.adapter is None:
                continue
            key = _base_key(spec)
            base = bases.get(key)
            if base is None:
                hidden = f"{Path(str(spec.model)).name or spec.model} (base)"
                while hidden in self._entries:
                    hidden += "'"
                base = _Entry(ExpertSpec(name=hidden, model=spec.model, dtype=spec.dtype,
                                         trust_remote_code=spec.trust_remote_code,
                                         description="shared base of LoRA experts"), hidden=True)
                self._entries[hidden] = base
                bases[key] = base
            entry.base = base
            base.children.append(entry)

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

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __len__(self) -> int:
        return len(self.specs)

    def __repr__(self) -> str:
        return (
            f"ExpertPool({len(self.specs)} experts, gpu={format_bytes(self.gpu_budget)}, "
            f"cpu={format_bytes(self.cpu_budget)}, tracked cpu={format_bytes(self.tracked_bytes('cpu'))})"
        )

    def __enter__(self) -> "ExpertPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _entry(self, name: str) -> _Entry:
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

    def tracked_bytes(self, tier: str) -> int:
        """Bytes the pool holds (or has reserved for a load in progress) on ``tier`` (``gpu``/``cpu``/``disk``)."""
        if tier not in ("gpu", "cpu", "disk"):
            raise ExpertError(f"unknown tier {tier!r}; use 'gpu', 'cpu' or 'disk'")
        with self._lock:
            if tier == "disk":
                return sum(e.placement.bytes_per_tier["disk"] for e in self._entries.values()
                           if e.split_model is not None and e.placement is not None)
            return sum(e.bytes_on(tier) for e in self._entries.values())

    def residency(self) -> list[dict]:
        """Per expert: tier, bytes per tier, which modules each tier holds, pinned, in_use, last_used.

        ``disk_bytes`` counts the bytes that would be read from disk to run the expert now (all of
        it when it is not in memory; the offloaded part of a split expert).

        An adapter expert's row has its base's tier, ``base`` (the shared base's name),
        ``adapter_merged`` (merged into the base now) and the adapter's own bytes; a base that no
        spec names has ``hidden=True``.
        """
        with self._lock:
            rows = []
            for name, e in self._entries.items():
                tier = e.tier
                common = {"base": e.base.spec.name if e.base is not None else None, "hidden": e.hidden,
                          "adapter_merged": e.base is not None and any(w is e for w, _ in e.base.merged.values())}
                if e.base is not None:
                    size = e.adapter.nbytes if e.adapter is not None else _adapter_bytes_on_disk(e.spec.adapter)
                    rows.append({"expert": name, "tier": tier, "gpu_bytes": 0, "cpu_bytes": e.bytes_on("cpu"),
                                 "disk_bytes": 0 if e.adapter is not None else size, "size_bytes": size,
                                 "pinned": e.pinned, "in_use": e.in_use, "loading": e.base.loading,
                                 "last_used": e.last_used, "modules": {}, **common})
                    continue
                if e.split_model is not None and e.placement is not None:
                    modules = {t: list(v) for t, v in e.placement.modules_per_tier.items() if v}
                    disk = e.placement.bytes_per_tier["disk"]
                elif tier in ("gpu", "cpu"):
                    modules = {t: [""] for t in ("gpu", "cpu") if e.bytes_on(t)}
                    disk = 0
                else:
                    modules = {"disk": [""]}
                    disk = e.nbytes or (e.checkpoint.nbytes if e.checkpoint else _weights_on_disk(e.spec.model))
                rows.append({
                    "expert": name,
                    "tier": tier,
                    "gpu_bytes": e.bytes_on("gpu"),
                    "cpu_bytes": e.bytes_on("cpu"),
                    "disk_bytes": int(disk),
                    "size_bytes": e.nbytes,
                    "pinned": e.pinned,
                    "in_use": e.in_use,
                    "loading": e.loading,
                    "last_used": e.last_used,
                    "modules": modules,
                    **common,
                })
            return rows

    def residency_frame(self):
        """:meth:`residency` as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.residency())

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

    def _evict_adapter(self, entry: _Entry) -> None:
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

    # -- preparing and loading --------------------------------------------------------------------

    def _prepare(self, entry: _Entry) -> bool:
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
            generation_config = _generation_config(path)
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
    def _dtype(entry: _Entry, checkpoint: Checkpoint | None = None):
        return torch_dtype(entry.spec.dtype) or checkpoint_dtype(checkpoint or entry.checkpoint)

    def _skeleton(self, entry: _Entry, device: str):
        skeleton = entry.skeletons.get(device)
        if skeleton is None:
            skeleton = empty_model(entry.config, self._dtype(entry), device=device,
                                   trust_remote_code=entry.spec.trust_remote_code)
            skeleton.generation_config = copy.deepcopy(entry.skeletons["cpu"].generation_config)
            entry.skeletons[device] = skeleton
        return skeleton

    def _materialise(self, entry: _Entry, state: dict, device: str):
        return materialise(self._skeleton(entry, device), state, expert=entry.spec.name, source=entry.checkpoint.path)

    def _load_split(self, entry: _Entry, placement: Placement):
        return load_split(entry.checkpoint.path, placement, offload_folder=self._offload_root() / entry.spec.name,
                          dtype=self._dtype(entry), trust_remote_code=entry.spec.trust_remote_code, expert=entry.spec.name)

    def _load_full(self, entry: _Entry, device: str):
        """Disk -> one device: safetensors read straight into the cached skeleton (from_pretrained for .bin)."""
        if entry.checkpoint.format != "safetensors":
            return load_pretrained(entry.checkpoint.path, device, dtype=self._dtype(entry),
                                   trust_remote_code=entry.spec.trust_remote_code, expert=entry.spec.name)
        state = read_weights(entry.checkpoint, device, dtype=torch_dtype(entry.spec.dtype), expert=entry.spec.name)
        return self._materialise(entry, state, device)

    # -- switching in ---------------------------------------------------------------------------

    def _decide(self, entry: _Entry, *, prefetch: bool, may_wait: bool = False) -> tuple[str, list[str], Placement | None]:
        """Under the lock: where is it, what to do. Returns (tier_found, steps, placement); reserves bytes."""
        use_gpu = self.gpu_budget > 0 and not prefetch
        if entry.gpu_model is not None:
            return "gpu", [], None
        if entry.split_model is not None:
            return ("disk" if entry.placement.bytes_per_tier["disk"] else "cpu"), [], None
        found = "cpu" if entry.cpu_model is not None else "disk"
        if use_gpu and entry.nbytes <= self.gpu_budget and self._make_room("gpu", entry.nbytes, entry):
            entry.reserved["gpu"] += entry.nbytes
            if entry.cpu_model is not None:
                return found, ["cpu->gpu"], None
            if entry.nbytes <= self.cpu_budget and self._make_room("cpu", entry.nbytes, entry):
                entry.reserved["cpu"] += entry.nbytes
                return found, ["disk->cpu", "cpu->gpu"], None
            return found, ["disk->gpu"], None
        if entry.cpu_model is not None:
            return "cpu", [], None
        if prefetch and entry.nbytes > self.cpu_budget - self.tracked_bytes("cpu") and not self._evictable("cpu", entry):
            return "disk", ["skip"], None
        if entry.nbytes <= self.cpu_budget and self._make_room("cpu", entry.nbytes, entry):
            entry.reserved["cpu"] += entry.nbytes
            return "disk", ["disk->cpu"], None
        if prefetch:
            return "disk", ["skip"], None
        if may_wait and entry.nbytes <= self.cpu_budget:
            others = [e for e in self._entries.values() if e is not entry]
            pinned = sum(e.bytes_on("cpu") for e in others if e.pinned)
            busy = sum(e.bytes_on("cpu") for e in others if not e.pinned and (e.in_use or e.loading))
            if busy and entry.nbytes <= self.cpu_budget - pinned:
                return "disk", ["wait"], None  # sessions using other experts will release them
        # larger than the tier budget (or room blocked by pinned/in-use experts): split
        self._make_room("cpu", min(entry.nbytes, 2 * entry.largest_module_bytes), entry)
        gpu_left = max(0, self.gpu_budget - self.tracked_bytes("gpu")) if use_gpu else 0
        cpu_left = max(0, self.cpu_budget - self.tracked_bytes("cpu"))
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
            _TRIMMER.request()
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
    def _model_of(entry: _Entry) -> tuple[Any, str]:
        if entry.gpu_model is not None:
            return entry.gpu_model, "cuda"
        if entry.cpu_model is not None:
            return entry.cpu_model, "cpu"
        placement = entry.placement
        return entry.split_model, ("cuda" if placement is not None and placement.bytes_per_tier["gpu"] else "cpu")

    def _unhold(self, entry: _Entry) -> None:
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

    def _release(self, entry: _Entry) -> None:
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

    # -- LoRA adapters on a shared base -------------------------------------------------------------

    def _prepare_adapter(self, entry: _Entry):
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

    def _switch_in_adapter(self, entry: _Entry) -> LoadedExpert:
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

    def _gate_enter(self, base: _Entry, want: _Entry | None, loaded: LoadedExpert) -> float:
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

    def _gate_exit(self, base: _Entry) -> None:
        with self._cond:
            base.gate_users = max(0, base.gate_users - 1)
            self._cond.notify_all()

    def _apply_adapter(self, base: _Entry, want: _Entry | None, loaded: LoadedExpert) -> float:
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

    # -- generation -------------------------------------------------------------------------------

    def _encode(self, loaded: LoadedExpert, prompt: str | list[dict]):
        tokenizer = loaded.tokenizer
        if tokenizer is None:
            raise ExpertError(
                f"expert {loaded.name!r}: no tokenizer found in {loaded.spec.model}; save one there with "
                "tokenizer.save_pretrained(folder)"
            )
        use_template = loaded.spec.chat_template
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_template is None:
            use_template = has_template
        if use_template and not has_template:
            raise ExpertError(f"expert {loaded.name!r}: chat_template=True but its tokenizer has no chat template")
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
            messages = prompt
        else:
            raise ExpertError(f"prompt must be a string or a list of {{'role', 'content'}} dicts, got {type(prompt).__name__}")
        if use_template:
            enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        else:
            text = prompt if isinstance(prompt, str) else "\n".join(str(m["content"]) for m in messages)
            enc = tokenizer(text, return_tensors="pt")
        return {k: v.to(loaded.device) for k, v in dict(enc).items() if k in ("input_ids", "attention_mask")}

    def _json_constraint(self, loaded: LoadedExpert, schema: dict):
        """A ``prefix_allowed_tokens_fn`` that lets the model write only JSON valid for ``schema``.

        lm-format-enforcer's :class:`TokenEnforcer` does the work; its own transformers glue does
        not import under transformers 5, so the few lines of glue live in
        :func:`_enforcer_tokenizer_data`. The tokenizer's vocabulary table (a pass over the
        vocabulary, a second or two) is computed once per tokenizer and kept.
        """
        try:
            from lmformatenforcer import CharacterLevelParserConfig, JsonSchemaParser, TokenEnforcer
        except ImportError:
            from workbench.errors import MissingDependencyError

            raise MissingDependencyError(
                "JSON-constrained generation needs the package 'lm-format-enforcer' (a dependency of "
                "coe-workbench); reinstall the workbench or run: pip install lm-format-enforcer") from None
        if not isinstance(schema, dict):
            raise ExpertError(f"json_schema must be a JSON schema dict, got {type(schema).__name__}")
        tokenizer = loaded.tokenizer
        with self._lock:
            cache = self.__dict__.setdefault("_enforcer_data", {})
            data = cache.get(id(tokenizer))
        if data is None or data[0] is not tokenizer:
            data = (tokenizer, _enforcer_tokenizer_data(tokenizer))
            with self._lock:
                cache[id(tokenizer)] = data
        try:
            # keys in the schema's order ("required"), so a schema can fix what comes first; at most two
            # whitespace characters in a row (small models otherwise pad until max_new_tokens)
            parser = JsonSchemaParser(schema)
            enforcer = TokenEnforcer(data[1], parser)  # sets the parser's config to the tokenizer's alphabet
            parser.config = CharacterLevelParserConfig(alphabet=data[1].tokenizer_alphabet,
                                                       force_json_field_order=True, max_consecutive_whitespaces=2)
        except Exception as exc:  # noqa: BLE001 - pydantic raises several types
            raise ExpertError(f"json_schema is not a usable JSON schema: {exc}") from None

        def allowed(batch_id: int, sent) -> list[int]:
            return enforcer.get_allowed_tokens(sent.tolist()).allowed_tokens

        return allowed

    def _gen_kwargs(self, loaded: LoadedExpert, max_new_tokens: int | None, gen: dict) -> dict:
        kwargs = {"max_new_tokens": 64, "do_sample": False}
        kwargs.update(loaded.spec.generation)
        kwargs.update(gen)
        schema = kwargs.pop("json_schema", None)
        if schema is not None:  # decoding constrained to the schema: the reply always parses
            kwargs["prefix_allowed_tokens_fn"] = self._json_constraint(loaded, schema)
        if max_new_tokens is not None:
            kwargs["max_new_tokens"] = int(max_new_tokens)
        if not kwargs.get("do_sample"):
            for key in ("temperature", "top_p", "top_k"):
                kwargs.pop(key, None)
        tokenizer = loaded.tokenizer
        if "pad_token_id" not in kwargs and tokenizer is not None:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            if pad is not None:
                kwargs["pad_token_id"] = pad
        return kwargs

    def _run_generate(self, loaded: LoadedExpert, prompt, max_new_tokens, streamer, gen) -> Generation:
        import torch

        inputs = self._encode(loaded, prompt)
        kwargs = self._gen_kwargs(loaded, max_new_tokens, gen)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                out = loaded.model.generate(**inputs, streamer=streamer, **kwargs)
        except Exception as exc:
            raise ExpertError(f"expert {loaded.name!r}: generate failed: {exc}") from exc
        seconds = time.perf_counter() - t0
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        text = loaded.tokenizer.decode(new, skip_special_tokens=True)
        return Generation(text, len(new), seconds, len(new) / seconds if seconds > 0 else 0.0,
                          loaded.tier_found, loaded.switch_s, loaded.name, new, loaded.adapter_s)

    def generate(self, name: str, prompt: str | list[dict], *, max_new_tokens: int | None = None, streamer: Any = None, **gen: Any) -> Generation:
        """Switch ``name`` in and generate (greedy unless the spec or ``gen`` say otherwise).

        Parameters
        ----------
        name : str
            Expert name.
        prompt : str or list of dict
            Text, or chat messages; the chat template is applied when the spec asks for it (or,
            with ``chat_template=None``, when the tokenizer has one).
        max_new_tokens : int, optional
            Overrides the spec's default (64 when unset).
        streamer : transformers streamer, optional
        **gen
            Other ``generate`` arguments; ``json_schema=<dict>`` constrains decoding so the reply
            is JSON valid for that schema (lm-format-enforcer).

        Returns
        -------
        Generation
        """
        with self.use(name) as loaded:
            return self._run_generate(loaded, prompt, max_new_tokens, streamer, gen)

    def stream(self, name: str, prompt: str | list[dict], **gen: Any) -> GenerationStream:
        """Yield text chunks as they are generated (``TextIteratorStreamer`` in a thread).

        The returned :class:`GenerationStream` is an iterator of strings; after it is exhausted its
        ``.generation`` holds the final :class:`Generation`.
        """
        from transformers import TextIteratorStreamer

        stream = GenerationStream()
        loaded = self._switch_in(name)  # hold it now; errors surface here, in the caller's thread
        entry = self._entries[name]
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True) if loaded.tokenizer else None
        max_new_tokens = gen.pop("max_new_tokens", None)

        def work() -> None:
            try:
                stream.generation = self._run_generate(loaded, prompt, max_new_tokens, streamer, gen)
            except BaseException as exc:
                stream.error = exc
                if streamer is not None:
                    streamer.end()
            finally:
                self._release(entry)

        def pump() -> None:
            thread = threading.Thread(target=work, name=f"generate-{name}", daemon=True)
            thread.start()
            try:
                if streamer is not None:
                    for chunk in streamer:
                        if chunk:
                            stream._queue.put(("text", chunk))
            finally:
                thread.join()
                if stream.error is not None:
                    stream._queue.put(("error", stream.error))
                stream._queue.put(("end", None))

        threading.Thread(target=pump, name=f"stream-{name}", daemon=True).start()
        return stream
