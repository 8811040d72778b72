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

from workbench.experts.pool import ExpertPool
from workbench.experts.records import (
    Generation,
    GenerationStream,
    LoadedExpert,
    PoolEvent,
)
from workbench.experts.spec import ExpertSpec, registry_for, specs_from_file
from workbench.placement import Placement, parse_size, plan_placement, release_memory

__all__ = [
    "ExpertSpec", "specs_from_file", "registry_for", "parse_size", "plan_placement", "Placement", "ExpertPool",
    "LoadedExpert", "Generation", "GenerationStream", "PoolEvent", "release_memory",
]
