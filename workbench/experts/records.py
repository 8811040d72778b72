"""What the pool reports: events, switched-in experts, generations and generation streams."""
from __future__ import annotations

import dataclasses
import queue
from dataclasses import dataclass, field
from typing import Any, Iterator

from workbench.experts.spec import ExpertSpec


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
    #: why generation ended (OpenAI's finish_reason): "length" at max_new_tokens, else "stop"
    stop_reason: str = "stop"


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
