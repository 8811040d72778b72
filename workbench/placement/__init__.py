"""Plan where an expert's modules live (GPU / CPU / disk) before loading anything, then load them.

accelerate's plan/do split, one module per job:

- :mod:`~workbench.placement.sizes`: :func:`parse_size` (``"20GiB"`` -> bytes), :func:`format_bytes`.
- :mod:`~workbench.placement.checkpoint`: resolve a model id to a folder, validate safetensors
  headers and indexes, and :func:`weights_bytes_on_disk` (the one checkpoint byte sum).
- :mod:`~workbench.placement.plan`: the pure :func:`plan_placement` and its :class:`Placement`.
- :mod:`~workbench.placement.load`: skeletons, reading and assigning weights, split loading, and
  the process-wide :data:`MODEL_BUILD_LOCK`.
- :mod:`~workbench.placement.memory`: :func:`malloc_trim`, :func:`release_memory`.

:class:`workbench.experts.ExpertPool` executes the plans. Importing this package imports no torch.

Examples are in the modules that own each name.
"""
from workbench.placement.checkpoint import (
    Checkpoint, inspect_checkpoint, read_safetensors_header, resolve_model_path, weights_bytes_on_disk,
)
from workbench.placement.load import (
    MODEL_BUILD_LOCK, checkpoint_dtype, copy_state, drop_weights, empty_model, load_pretrained, load_split,
    materialise, read_weights, torch_dtype,
)
from workbench.placement.memory import malloc_trim, release_memory
from workbench.placement.plan import TIERS, Placement, no_split_classes, plan_placement
from workbench.placement.sizes import MAX_SIZE_BYTES, format_bytes, parse_size

__all__ = [
    "TIERS", "MODEL_BUILD_LOCK", "MAX_SIZE_BYTES", "parse_size", "format_bytes",
    "Checkpoint", "resolve_model_path", "read_safetensors_header", "inspect_checkpoint", "weights_bytes_on_disk",
    "Placement", "no_split_classes", "plan_placement",
    "torch_dtype", "empty_model", "checkpoint_dtype", "read_weights", "copy_state", "drop_weights",
    "materialise", "load_split", "load_pretrained", "malloc_trim", "release_memory",
]
