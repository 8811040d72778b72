"""Plan where an expert's modules live (GPU / CPU / disk) before loading anything.

This is the *plan* half of accelerate's plan/do split: :func:`plan_placement` builds the model on
the meta device (``init_empty_weights``), measures its modules and asks
``accelerate.infer_auto_device_map`` for a device map under byte budgets. It allocates no weights,
so it is cheap and testable on CPU. :class:`workbench.experts.ExpertPool` does the loading.

Also here: :func:`parse_size` (``"20GiB"`` -> bytes) and the checkpoint helpers the pool uses to
resolve a model id to files and to validate safetensors files before reading them.

Examples
--------
>>> parse_size("1.5KiB")
1536
>>> parse_size("512MB")
512000000
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ExpertError, PlacementError
from workbench.safeio import short

TIERS = ("gpu", "cpu", "disk")

#: Held while a model is built or weights are assigned into one. Building a skeleton patches process-wide
#: state (accelerate's ``init_empty_weights`` replaces ``nn.Module.register_parameter``; transformers'
#: ``no_init_weights`` / ``from_pretrained`` patch init functions and the default dtype): a thread that
#: assigns weights meanwhile loses them to the meta device, and two overlapping builds can leave the patch
#: installed for good. Everything here that builds or assigns takes this lock; code elsewhere that calls
#: ``from_pretrained`` in threads next to an ExpertPool should take it too.
MODEL_BUILD_LOCK = threading.RLock()

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
#: largest memory size :func:`parse_size` accepts (1 EiB); anything above is a typo, not a budget
MAX_SIZE_BYTES = 2**60
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """Convert a memory size to bytes.

    Parameters
    ----------
    value : int, float or str
        Bytes as a number, or a string with a unit: ``"20GiB"``, ``"512MB"``, ``"1.5 KiB"``, ``"300k"``
        (single letters are binary: ``k`` = KiB). Underscores are allowed (``"1_000"``).

    Returns
    -------
    int
        Number of bytes (>= 0).

    Raises
    ------
    PlacementError
        For negative, non-finite (NaN, infinity, ``"1e999GB"``) or non-numeric values, unknown units,
        and sizes over :data:`MAX_SIZE_BYTES` (1 EiB).

    Examples
    --------
    >>> parse_size(1_000), parse_size("2GiB"), parse_size("3 kb")
    (1000, 2147483648, 3000)
    """
    if isinstance(value, bool):
        raise PlacementError(f"memory size {short(value)} is a bool; give bytes (int) or a string like '20GiB'")
    if isinstance(value, (int, float)):
        return _check_size(value, value)
    if not isinstance(value, str):
        raise PlacementError(
            f"memory size {short(value)} has type {type(value).__name__}; give bytes (int) or a string like '20GiB'"
        )
    match = _SIZE_RE.match(value.replace("_", ""))
    if not match:
        raise PlacementError(
            f"cannot parse memory size {short(value)}; use a number with an optional unit such as "
            "'512MB', '20GiB', '1.5 TiB' or plain bytes"
        )
    number_text, unit = match.groups()
    unit_key = unit.lower()
    if unit_key not in _UNITS:
        raise PlacementError(
            f"unknown unit {short(unit)} in memory size {short(value)}; use one of B, KB, MB, GB, TB, KiB, MiB, "
            "GiB, TiB (for example '20GiB')"
        )
    # float() turns an overlong exponent ("1e999") into inf, which _check_size refuses
    return _check_size(value, float(number_text) * _UNITS[unit_key])


def _check_size(value: Any, number: float) -> int:
    """``number`` (bytes) as an int, refusing NaN, infinity, negatives and sizes over :data:`MAX_SIZE_BYTES`."""
    if isinstance(number, float) and (math.isnan(number) or math.isinf(number)):
        raise PlacementError(
            f"memory size {short(value)} is not a finite number of bytes; give bytes or a string like '20GiB'"
        )
    if number < 0:
        raise PlacementError(
            f"memory size {short(value)} must be a non-negative number of bytes (for example '20GiB')"
        )
    if number > MAX_SIZE_BYTES:
        raise PlacementError(
            f"memory size {short(value)} is absurdly large (over 1 EiB = 2**60 bytes); give a real budget "
            "such as '20GiB'"
        )
    return int(number)


def format_bytes(n: int | float) -> str:
    """Human-readable bytes: ``format_bytes(1536) == '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# ----------------------------------------------------------------------------------------------
# checkpoints


@dataclass
class Checkpoint:
    """A resolved checkpoint folder and its weight files."""

    path: Path
    weight_files: list[Path]          # safetensors shards, in order; empty when only .bin exists
    format: str                       # "safetensors" or "bin"
    tensors: dict[str, tuple[str, list[int], Path]] = field(default_factory=dict)  # name -> (dtype, shape, file)

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.weight_files)


def resolve_model_path(model: str | os.PathLike, *, expert: str = "?") -> Path:
    """A local checkpoint folder for ``model`` (a folder, or a Hugging Face id already in the local cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ExpertError(
            f"expert {expert!r}: model path {str(path)!r} is a file, not a checkpoint folder; "
            "point ExpertSpec.model at the folder holding config.json and the safetensors files"
        )
    text = str(model)
    looks_like_hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~"))
    if looks_like_hub_id:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:
            pass
        raise ExpertError(
            f"expert {expert!r}: model {text!r} is neither a local folder nor in the local Hugging Face cache "
            "(the workbench runs offline). Fix: pass the path of a local checkpoint folder, or download it "
            f"beforehand with `huggingface-cli download {text}`"
        )
    raise ExpertError(
        f"expert {expert!r}: model path {str(path)!r} does not exist. Fix: check ExpertSpec.model "
        "(a checkpoint folder with config.json and *.safetensors, or a Hugging Face id in the local cache)"
    )


def read_safetensors_header(file: Path, *, expert: str = "?") -> dict[str, Any]:
    """Read and validate a safetensors header.

    Raises
    ------
    PlacementError
        (an :class:`ExpertError`) naming the file and what is wrong: too short or truncated, a header
        length beyond the file, a header that is not JSON or not a JSON object, or a tensor entry
        without a string ``dtype``, a list-of-ints ``shape`` or two ``data_offsets``.
    """
    fix = "re-save or re-download the checkpoint (the file is truncated or not a safetensors file)"
    where = f"expert {expert!r}: {file}"
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise PlacementError(f"{where} is only {size} bytes, too short for a safetensors header; {fix}")
            header_len = int.from_bytes(raw, "little")
            if header_len <= 0 or header_len > min(size - 8, 100_000_000):
                raise PlacementError(
                    f"{where} declares a {header_len}-byte header but holds {size} bytes; {fix}"
                )
            header = json.loads(fh.read(header_len))
    except PlacementError:
        raise
    except RecursionError:
        raise PlacementError(f"{where}: the safetensors header is not valid JSON (nested too deeply); {fix}") from None
    except UnicodeDecodeError as exc:
        raise PlacementError(f"{where}: the safetensors header is not UTF-8 JSON (byte {exc.start}); {fix}") from None
    except ValueError as exc:
        raise PlacementError(f"{where}: the safetensors header is not valid JSON ({short(str(exc), 120)[1:-1]}); "
                             f"{fix}") from None
    except OSError as exc:
        raise PlacementError(f"{where}: cannot read the safetensors header: {exc.strerror or exc}") from None
    if not isinstance(header, dict):
        raise PlacementError(f"{where}: the safetensors header is a JSON {type(header).__name__}, not an object "
                             f"mapping tensor names to dtype/shape/data_offsets; {fix}")
    data_end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            if meta is not None and not isinstance(meta, dict):
                raise PlacementError(f"{where}: the safetensors __metadata__ is a {type(meta).__name__}, "
                                     f"not an object; {fix}")
            continue
        problem = _tensor_entry_problem(meta)
        if problem:
            raise PlacementError(f"{where}: tensor {short(name)} in the safetensors header {problem}; {fix}")
        data_end = max(data_end, meta["data_offsets"][1])
    if 8 + header_len + data_end > size:
        raise PlacementError(
            f"{where} is truncated: its header needs {8 + header_len + data_end} bytes but the "
            f"file holds {size}; {fix}"
        )
    return header


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _tensor_entry_problem(meta: Any) -> str:
    """What is wrong with one safetensors header entry, or ``""``."""
    if not isinstance(meta, dict):
        return f"is a {type(meta).__name__}, not an object with dtype, shape and data_offsets"
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in meta]
    if missing:
        return f"has no {', '.join(missing)}"
    if not isinstance(meta["dtype"], str):
        return f"has dtype {short(meta['dtype'])}, not a string such as 'F32'"
    shape = meta["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        return f"has shape {short(shape)}, not a list of non-negative integers"
    offsets = meta["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) and o >= 0 for o in offsets)
            or offsets[0] > offsets[1]):
        return f"has data_offsets {short(offsets)}, not [start, end] with 0 <= start <= end"
    return ""


def inspect_checkpoint(path: Path, *, expert: str = "?", validate: bool = True) -> Checkpoint:
    """Find the weight files of a checkpoint folder and (optionally) validate their headers."""
    if not (path / "config.json").is_file():
        raise ExpertError(
            f"expert {expert!r}: {path} has no config.json, so it is not a Hugging Face checkpoint folder. "
            "Fix: point ExpertSpec.model at the folder written by save_pretrained"
        )
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (ValueError, RecursionError, OSError) as exc:
            raise ExpertError(f"expert {expert!r}: {index} is not a valid safetensors index "
                              f"({short(str(exc), 120)[1:-1]}); re-save the checkpoint") from None
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise ExpertError(f"expert {expert!r}: {index} is not a valid safetensors index (it needs an object "
                              "'weight_map' of tensor name -> file name); re-save the checkpoint")
        files = [path / f for f in dict.fromkeys(weight_map.values())]
    else:
        files = sorted(path.glob("*.safetensors"))
    if not files:
        if list(path.glob("pytorch_model*.bin")):
            return Checkpoint(path, [], "bin")
        raise ExpertError(
            f"expert {expert!r}: no *.safetensors weights in {path}. Fix: save the model with "
            "model.save_pretrained(folder, safe_serialization=True)"
        )
    ckpt = Checkpoint(path, files, "safetensors")
    for f in files:
        if not f.is_file():
            raise ExpertError(f"expert {expert!r}: weight file {f} listed by the index is missing; re-download the checkpoint")
        if validate:
            header = read_safetensors_header(f, expert=expert)
            for name, meta in header.items():
                if name != "__metadata__":
                    ckpt.tensors[name] = (meta["dtype"], meta["shape"], f)
    return ckpt


# ----------------------------------------------------------------------------------------------
# planning


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


def torch_dtype(dtype: Any):
    """``"auto"``/``None`` -> ``None``; ``"bfloat16"``/``"bf16"``/torch dtype -> torch dtype."""
    import torch

    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(str(dtype).lower().replace("torch.", ""), str(dtype).lower().replace("torch.", ""))
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ExpertError(f"unknown dtype {dtype!r}; use 'auto', 'float32', 'bfloat16' or 'float16'")
    return value


def empty_model(config: Any, dtype: Any = None, device: str = "cpu", *, trust_remote_code: bool = False):
    """A model skeleton with its parameters on the meta device (no weights allocated) for a config.

    Buffers (e.g. rotary frequencies) are real and live on ``device``.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    try:  # skip the (pointless, ~0.1 s) weight init on meta tensors, as from_pretrained itself does
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        try:
            from transformers.modeling_utils import no_init_weights
        except ImportError:
            no_init_weights = contextlib.nullcontext
    dtype = torch_dtype(dtype) or torch_dtype(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None))
    with MODEL_BUILD_LOCK:
        with init_empty_weights(), no_init_weights():
            model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32,
                                                      trust_remote_code=trust_remote_code)
        if device != "cpu":
            for module in model.modules():
                for name, buf in list(module._buffers.items()):
                    if buf is not None:
                        module._buffers[name] = buf.to(device)
        if hasattr(model, "tie_weights"):
            model.tie_weights()  # so the slot index below sees tied parameters as one
        _index_slots(model)
    model.eval()
    return model


def _index_slots(model: Any) -> None:
    """Remember where every parameter lives (tied ones grouped) so weights can be assigned and dropped
    without walking ``load_state_dict``'s recursion on every switch."""
    groups: dict[int, list] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, param in module._parameters.items():
            if param is not None:
                name = f"{module_name}.{attr}" if module_name else attr
                groups.setdefault(id(param), []).append((name, module, attr, tuple(param.shape), param.dtype))
    buffers = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for attr, buf in module._buffers.items():
            if buf is not None and attr not in module._non_persistent_buffers_set:
                buffers[f"{module_name}.{attr}" if module_name else attr] = (module, attr)
    names = {entry[0] for group in groups.values() for entry in group} | set(buffers)
    model.__dict__["_workbench_slots"] = (list(groups.values()), buffers, names)


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


# ----------------------------------------------------------------------------------------------
# loading (the "do" half): bytes from disk into a tier


def checkpoint_dtype(checkpoint: Checkpoint | None):
    """The floating dtype the checkpoint stores (first floating tensor), or ``None``."""
    names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
    for dtype, _shape, _file in (checkpoint.tensors.values() if checkpoint else []):
        if dtype in names:
            return torch_dtype(names[dtype])
    return None


def read_weights(checkpoint: Checkpoint, device: str = "cpu", *, dtype: Any = None, expert: str = "?") -> dict:
    """Read every tensor of a safetensors checkpoint into fresh memory on ``device`` (eager ``pread``)."""
    from safetensors.torch import load_file

    dtype = torch_dtype(dtype)
    state: dict = {}
    for file in checkpoint.weight_files:
        try:
            try:
                part = load_file(file, device=device, backend="pread")  # reads every byte now
            except TypeError:  # older safetensors without the pread backend: mmap, then copy
                part = {k: v.clone() for k, v in load_file(file, device=device).items()}
        except Exception as exc:
            raise ExpertError(
                f"expert {expert!r}: reading {file} failed: {exc}. Fix: re-save or re-download the checkpoint"
            ) from exc
        if dtype is not None:
            part = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in part.items()}
        state.update(part)
    return state


def copy_state(model: Any, device: str) -> dict:
    """The model's weights copied to ``device`` (tensors shared in the model, e.g. tied embeddings, copied once)."""
    import torch

    copies: dict = {}
    state: dict = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if key not in copies:
            copies[key] = tensor.detach().to(device, non_blocking=True)
        state[name] = copies[key]
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return state


def drop_weights(model: Any) -> None:
    """Free a skeleton's weights: every parameter becomes a meta tensor again (buffers are kept)."""
    import torch

    slots = model.__dict__.get("_workbench_slots")
    with MODEL_BUILD_LOCK:
        if slots is not None:  # keeps tied parameters tied
            for group in slots[0]:
                _name, _module, _attr, shape, dtype = group[0]
                meta = torch.nn.Parameter(torch.empty(shape, dtype=dtype, device="meta"), requires_grad=False)
                for _name, module, attr, _shape, _dtype in group:
                    module._parameters[attr] = meta
            return
        for module in model.modules():
            for name, param in list(module._parameters.items()):
                if param is not None and param.device.type != "meta":
                    module._parameters[name] = torch.nn.Parameter(
                        torch.empty(param.shape, dtype=param.dtype, device="meta"), requires_grad=False
                    )


def materialise(skeleton: Any, state: dict, *, expert: str = "?", source: Any = "?"):
    """Assign ``state`` into a meta skeleton without copying (tied parameters stay tied), then check it.

    Skeletons from :func:`empty_model` carry an index of their parameter slots, so this is a few
    dictionary writes; other models go through ``load_state_dict(assign=True)``.

    On failure the skeleton is reset to meta and :class:`ExpertError` names the missing/unexpected keys.
    """
    with MODEL_BUILD_LOCK:
        return _materialise_locked(skeleton, state, expert=expert, source=source)


def _check_state(missing: list[str], unexpected: list[str], wrong: list[str], *, expert: str, source: Any) -> None:
    if missing:
        raise ExpertError(
            f"expert {expert!r}: the checkpoint in {source} misses weights "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; it does not match its config.json. "
            "Fix: re-save the checkpoint with save_pretrained"
        )
    if wrong:
        raise ExpertError(
            f"expert {expert!r}: the checkpoint in {source} has weights of the wrong shape: {wrong[:5]}. "
            "Fix: check config.json matches the weights"
        )
    if unexpected:
        raise ExpertError(
            f"expert {expert!r}: the checkpoint in {source} has weights the model does not expect: "
            f"{unexpected[:5]}. Fix: check config.json matches the weights"
        )


def _materialise_locked(skeleton: Any, state: dict, *, expert: str, source: Any):
    slots = skeleton.__dict__.get("_workbench_slots")
    if slots is None:
        return _materialise_state_dict(skeleton, state, expert=expert, source=source)
    import torch

    groups, buffers, names = slots
    missing, wrong = [], []
    try:
        for group in groups:
            tensor = next((state[entry[0]] for entry in group if entry[0] in state), None)
            if tensor is None:
                missing.append(group[0][0])
                continue
            if tuple(tensor.shape) != group[0][3]:
                wrong.append(f"{group[0][0]} {tuple(tensor.shape)} != {group[0][3]}")
                continue
            param = torch.nn.Parameter(tensor, requires_grad=False)
            for _name, module, attr, _shape, _dtype in group:
                module._parameters[attr] = param
        for name, (module, attr) in buffers.items():
            if name in state:
                module._buffers[attr] = state[name]
        _check_state(missing, [k for k in state if k not in names], wrong, expert=expert, source=source)
    except BaseException:
        drop_weights(skeleton)
        raise
    return skeleton


def _materialise_state_dict(skeleton: Any, state: dict, *, expert: str, source: Any):
    try:
        result = skeleton.load_state_dict(state, assign=True, strict=False)
        if result.missing_keys and hasattr(skeleton, "tie_weights"):
            skeleton.tie_weights()
        still_meta = [n for n, p in skeleton.named_parameters() if p.device.type == "meta"]
        if still_meta:
            raise ExpertError(
                f"expert {expert!r}: the checkpoint in {source} misses weights "
                f"{still_meta[:5]}{' ...' if len(still_meta) > 5 else ''}; it does not match its config.json. "
                "Fix: re-save the checkpoint with save_pretrained"
            )
        if result.unexpected_keys:
            raise ExpertError(
                f"expert {expert!r}: the checkpoint in {source} has weights the model does not expect: "
                f"{result.unexpected_keys[:5]}. Fix: check config.json matches the weights"
            )
    except BaseException:
        drop_weights(skeleton)
        raise
    return skeleton.eval()


def load_split(path: Path, placement: Placement, *, offload_folder: Path, dtype: Any = None,
               trust_remote_code: bool = False, expert: str = "?"):
    """Load a checkpoint split across tiers with accelerate, following ``placement.device_map``."""
    from transformers import AutoModelForCausalLM

    try:
        with MODEL_BUILD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(
                path, device_map=placement.device_map, offload_folder=str(offload_folder),
                dtype=torch_dtype(dtype) or "auto", trust_remote_code=trust_remote_code,
            )
    except Exception as exc:
        raise ExpertError(
            f"expert {expert!r}: loading {path} split as {placement.bytes_per_tier} failed: {exc}"
        ) from exc
    return model.eval()


def load_pretrained(path: Path, device: str, *, dtype: Any = None, trust_remote_code: bool = False, expert: str = "?"):
    """``from_pretrained`` onto one device (used for checkpoints without safetensors)."""
    from transformers import AutoModelForCausalLM

    try:
        with MODEL_BUILD_LOCK:
            model = AutoModelForCausalLM.from_pretrained(
                path, device_map={"": device}, dtype=torch_dtype(dtype) or "auto", trust_remote_code=trust_remote_code,
            )
    except Exception as exc:
        raise ExpertError(f"expert {expert!r}: loading {path} failed: {exc}. Fix: re-save it with safetensors") from exc
    return model.eval()


_LIBC: list = []


def malloc_trim() -> None:
    """Ask glibc to return freed heap pages to the OS (no-op elsewhere)."""
    if not _LIBC:
        import ctypes

        try:
            _LIBC.append(ctypes.CDLL("libc.so.6").malloc_trim)
        except (OSError, AttributeError):  # not glibc
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def release_memory(cuda: bool = False) -> None:
    """Give freed memory back to the OS: ``gc.collect()``, glibc ``malloc_trim`` and the CUDA cache."""
    import gc

    gc.collect()
    malloc_trim()
    if cuda:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
