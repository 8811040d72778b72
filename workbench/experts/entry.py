"""The pool's bookkeeping per expert (:class:`Entry`) and small helpers shared by the pool modules."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.experts.spec import ExpertSpec
from workbench.placement import (
    Checkpoint,
    Placement,
    malloc_trim,
)


@dataclass
class Entry:
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
    base: "Entry | None" = None
    children: list = field(default_factory=list)
    hidden: bool = False                                  # a base no spec names (not in pool.names)
    adapter: Any = None                                   # LoraAdapter, read on first use
    adapter_lock: threading.Lock = field(default_factory=threading.Lock)
    gate_active: Any = None                               # adapter entry the base runs with now (None: plain)
    gate_users: int = 0
    merged: dict = field(default_factory=dict)            # "gpu"/"cpu" -> (adapter entry, originals)
    _merged_nbytes: dict = field(default_factory=dict, repr=False)  # tier -> (originals, bytes)

    def merged_bytes(self, tier: str) -> int:
        """Bytes of the exact copy of the base weights a merged adapter replaced on ``tier``.

        Summed once per copy (remembered by the copy's identity): every switch plans on a snapshot
        of every entry, and the real base's copy is 90 tensors."""
        got = self.merged.get(tier)
        if not got:
            return 0
        originals = got[1]
        cached = self._merged_nbytes.get(tier)
        if cached is None or cached[0] is not originals:
            cached = (originals, sum(t.numel() * t.element_size() for t in originals.values()))
            self._merged_nbytes[tier] = cached
        return cached[1]

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
        held += self.merged_bytes(tier)  # the exact copy of the weights a merged adapter replaced
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


def read_generation_config(path: Path):
    """The checkpoint's ``generation_config.json`` (None when absent or unreadable)."""
    if not (path / "generation_config.json").is_file():
        return None
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except Exception:  # a bad generation config should not stop serving; generate() uses the model defaults
        return None


def base_key(spec: ExpertSpec) -> tuple:
    """What makes two experts share one base copy: the same model (folder or id), dtype and code setting."""
    path = Path(str(spec.model)).expanduser()
    model = str(path.resolve()) if path.exists() else str(spec.model)
    return model, spec.dtype or "auto", bool(spec.trust_remote_code)


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


#: one background trimmer per process: malloc_trim returns the whole process's freed heap, so
#: one thread serves every pool (the pools ask it; it trims once switching pauses)
TRIMMER = _BackgroundTrim()


_TRANSFORMERS_NAMES = ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "GenerationConfig",
                       "TextIteratorStreamer")


_IMPORT_LOCK = threading.Lock()
_imported = False


def import_transformers_once() -> None:
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
