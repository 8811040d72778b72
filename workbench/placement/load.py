"""The *do* half: build model skeletons, read weights into a tier, assign and drop them, split loads.

torch, transformers, accelerate and safetensors are imported inside the functions that use them.
"""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ExpertError

if TYPE_CHECKING:  # pragma: no cover
    from workbench.placement.checkpoint import Checkpoint
    from workbench.placement.plan import Placement

#: Process-wide on purpose, not one lock per pool: the state it guards is process-wide.
#: Held while a model is built or weights are assigned into one. Building a skeleton patches process-wide
#: state (accelerate's ``init_empty_weights`` replaces ``nn.Module.register_parameter``; transformers'
#: ``no_init_weights`` / ``from_pretrained`` patch init functions and the default dtype): a thread that
#: assigns weights meanwhile loses them to the meta device, and two overlapping builds can leave the patch
#: installed for good. Everything here that builds or assigns takes this lock; code elsewhere that calls
#: ``from_pretrained`` in threads next to an ExpertPool should take it too.
MODEL_BUILD_LOCK = threading.RLock()


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
