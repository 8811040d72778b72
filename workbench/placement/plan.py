"""The *plan* half of accelerate's plan/do split: :func:`plan_placement` and its :class:`Placement`.

:func:`plan_placement` builds the model on the meta device (``init_empty_weights``), measures its
modules and asks ``accelerate.infer_auto_device_map`` for a device map under byte budgets. It
allocates no weights, so it is cheap and testable on CPU. Importing this module imports no torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from workbench.errors import ExpertError, PlacementError
from workbench.placement.checkpoint import resolve_model_path
from workbench.placement.load import empty_model, torch_dtype
from workbench.placement.sizes import format_bytes, parse_size

#: The memory tiers an expert's modules can live in, fastest first.
TIERS = ("gpu", "cpu", "disk")


@dataclass
class Placement:
    """Where each module of an expert goes, and the bytes that puts on each tier.

    Attributes
    ----------
    device_map : dict
        accelerate device map: module name -> ``0``/``"cuda:0"`` (GPU), ``"cpu"`` or ``"disk"``.
        ``{"": "cpu"}`` means the whole model on one tier.
    bytes_per_tier : dict
        ``{"gpu": int, "cpu": int, "disk": int}``.
    modules_per_tier : dict
        ``{"gpu": [...], "cpu": [...], "disk": [...]}`` module names from the device map.
    largest_module_bytes : int
        The largest layer that can't be split (a decoder layer, or a leaf such as the embedding):
        what must fit in memory at once to run the model.
    largest_module : str
        Its name.
    total_bytes : int
        Size of the whole model at the planned dtype.
    """

    device_map: dict[str, Any]
    bytes_per_tier: dict[str, int]
    modules_per_tier: dict[str, list[str]]
    largest_module_bytes: int
    largest_module: str = ""
    total_bytes: int = 0

    @property
    def tiers(self) -> list[str]:
        """Tiers that hold at least one module, fastest first."""
        return [t for t in TIERS if self.modules_per_tier.get(t)]

    @property
    def is_split(self) -> bool:
        return len(self.tiers) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "device_map": {k: v for k, v in self.device_map.items()},
            "bytes_per_tier": dict(self.bytes_per_tier),
            "modules_per_tier": {k: list(v) for k, v in self.modules_per_tier.items()},
            "largest_module_bytes": self.largest_module_bytes,
            "largest_module": self.largest_module,
            "total_bytes": self.total_bytes,
        }


def _tier_of(device: Any) -> str:
    if device == "disk":
        return "disk"
    if device == "cpu":
        return "cpu"
    return "gpu"  # int index, "cuda", "cuda:0"


def no_split_classes(model: Any) -> list[str]:
    """The model's own no-split module classes (``_no_split_modules``), as a list."""
    classes = getattr(model, "_no_split_modules", None) or []
    return sorted(classes) if isinstance(classes, (set, frozenset)) else list(classes)


def plan_placement(
    model: Any,
    *,
    gpu_bytes: int | str = 0,
    cpu_bytes: int | str,
    offload_dir: str | os.PathLike | None = None,
    dtype: Any = "auto",
    gpu_device: int | str = 0,
) -> Placement:
    """Plan an expert's placement under byte budgets, without allocating its weights.

    Pure: builds the model on the meta device (``init_empty_weights``) and calls
    ``accelerate.infer_auto_device_map`` with the model's own no-split classes. Modules fill the GPU
    budget first, then CPU, then the disk offload folder.

    Parameters
    ----------
    model : str, Path, PretrainedConfig or PreTrainedModel
        A checkpoint folder (or Hub id in the local cache), a config, or a model (meta or real).
    gpu_bytes, cpu_bytes : int or str
        Budgets (``parse_size`` accepts ``"2GiB"``). ``gpu_bytes=0`` plans without a GPU.
    offload_dir : path, optional
        Disk offload folder. Without it, a model that does not fit in GPU + CPU is an error.
    dtype : str or torch.dtype
        Planned weight dtype (``"auto"``: the checkpoint's).

    Returns
    -------
    Placement

    Raises
    ------
    PlacementError
        When the memory budget of the device that runs the model is smaller than the largest
        module, or the model doesn't fit in memory and no ``offload_dir`` was given. The message
        names the module, its size and the budget to set.

    Examples
    --------
    >>> plan = plan_placement("ckpt/", cpu_bytes="2MiB", offload_dir="offload/")   # doctest: +SKIP
    >>> plan.bytes_per_tier                                                         # doctest: +SKIP
    {'gpu': 0, 'cpu': 1900544, 'disk': 5242880}
    """
    from accelerate.utils import compute_module_sizes, get_max_layer_size, infer_auto_device_map

    gpu_bytes = parse_size(gpu_bytes)
    cpu_bytes = parse_size(cpu_bytes)
    meta = _as_meta_model(model, dtype)
    planned_dtype = torch_dtype(dtype)
    sizes = compute_module_sizes(meta, dtype=planned_dtype)
    total = int(sizes[""])
    no_split = no_split_classes(meta)
    largest, largest_names = get_max_layer_size(list(meta.named_children()), sizes, no_split)
    largest = int(largest)
    largest_name = largest_names[0] if largest_names else ""
    run_tier, run_budget = ("gpu", gpu_bytes) if gpu_bytes > 0 else ("cpu", cpu_bytes)
    if total > gpu_bytes + cpu_bytes or run_budget < total:
        if run_budget < largest:
            need = "gpu_memory" if run_tier == "gpu" else "cpu_memory"
            raise PlacementError(
                f"the {run_tier.upper()} budget {format_bytes(run_budget)} is smaller than the largest module "
                f"{largest_name!r} ({format_bytes(largest)}), which must fit in memory to run the model "
                f"({format_bytes(total)} in all). Fix: raise {need} to at least {format_bytes(largest)} "
                "(or free budget held by pinned/in-use experts)"
            )
    if total > gpu_bytes + cpu_bytes and offload_dir is None:
        raise PlacementError(
            f"the model needs {format_bytes(total)} but the budgets hold only {format_bytes(gpu_bytes + cpu_bytes)} "
            f"(GPU {format_bytes(gpu_bytes)} + CPU {format_bytes(cpu_bytes)}) and no offload_dir was given. "
            "Fix: pass offload_dir=<folder> to offload the rest to disk, or raise the budgets"
        )
    max_memory: dict[Any, int] = {}
    if gpu_bytes > 0:
        max_memory[gpu_device] = gpu_bytes
    max_memory["cpu"] = cpu_bytes
    if offload_dir is not None:
        max_memory["disk"] = 2**62
    if total <= (gpu_bytes if gpu_bytes > 0 else cpu_bytes):
        device_map: dict[str, Any] = {"": gpu_device if gpu_bytes > 0 else "cpu"}
    else:
        device_map = dict(
            infer_auto_device_map(meta, max_memory=max_memory, no_split_module_classes=no_split, dtype=planned_dtype)
        )
    bytes_per_tier = {t: 0 for t in TIERS}
    modules_per_tier: dict[str, list[str]] = {t: [] for t in TIERS}
    for name, device in device_map.items():
        tier = _tier_of(device)
        bytes_per_tier[tier] += int(sizes[name])
        modules_per_tier[tier].append(name)
    if modules_per_tier["disk"] and offload_dir is None:  # pragma: no cover - guarded above
        raise PlacementError("the plan needs disk offload but no offload_dir was given; pass offload_dir=<folder>")
    return Placement(device_map, bytes_per_tier, modules_per_tier, largest, largest_name, total)


def _as_meta_model(model: Any, dtype: Any):
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(model, PretrainedConfig):
        return empty_model(model, dtype)
    if hasattr(model, "named_children") and hasattr(model, "config"):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = resolve_model_path(model)
        try:
            config = AutoConfig.from_pretrained(path)
        except Exception as exc:
            raise ExpertError(f"cannot read the config of {path}: {exc}. Fix: check config.json") from exc
        return empty_model(config, dtype)
    raise PlacementError(
        f"plan_placement needs a checkpoint path, a transformers config or a model, not {type(model).__name__}"
    )
