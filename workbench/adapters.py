"""LoRA adapters as experts: read a peft adapter folder, merge it into a resident base, restore.

A CoE of many fine-tunes of one base (multi-LoRA serving) keeps one copy of the base and switches
adapters. The pool does it by merging: switching to adapter ``a`` writes ``W0 + scale * B_a @ A_a``
into each targeted weight, restoring ``W0`` from an exact copy first. Generation then runs on a
plain model at full speed (no extra LoRA matmuls per token), and switching costs one pass over
the targeted weights (milliseconds for a small model).

The folder is what ``peft`` writes with ``save_pretrained``: ``adapter_config.json`` and
``adapter_model.safetensors``. Plain LoRA on linear layers is supported (``use_rslora``,
``fan_in_fan_out`` and per-module ranks included); DoRA, embedding or convolution LoRA, bias
training and ``modules_to_save`` raise a clear error. Pickled ``adapter_model.bin`` files are
refused.

Examples
--------
>>> from workbench.adapters import LoraAdapter
>>> adapter = LoraAdapter.load("data/demo_adapters/smollm2-stem")        # doctest: +SKIP
>>> adapter.n_params, sorted(adapter.target_modules)[:1]                  # doctest: +SKIP
(737280, ['o_proj'])
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from workbench.errors import ExpertError
from workbench.safeio import load_json, read_text_limited, short, short_list

__all__ = ["LoraAdapter", "is_adapter_folder"]

_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])(?:\.[^.]+)?\.weight$")


def is_adapter_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder with a peft ``adapter_config.json``."""
    return (Path(path).expanduser() / "adapter_config.json").is_file()


@dataclass
class LoraAdapter:
    """One LoRA adapter: per module ``(A, B, scale)`` with ``delta = scale * B @ A``.

    Attributes
    ----------
    path : Path
        The adapter folder.
    modules : dict
        Module path in the base model (``model.layers.0.self_attn.q_proj``) -> ``(A, B, scale)``;
        ``A`` is ``r x in``, ``B`` is ``out x r`` (fp32 CPU tensors).
    config : dict
        The adapter's ``adapter_config.json``.
    """

    path: Path
    modules: dict[str, tuple[Any, Any, float]]
    config: dict = field(default_factory=dict)
    fan_in_fan_out: bool = False

    # -- reading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, expert: str = "?") -> "LoraAdapter":
        """Read and validate a peft LoRA adapter folder.

        Raises
        ------
        ExpertError
            Missing files, a pickled ``.bin`` adapter, a non-LoRA or unsupported adapter type,
            or tensors that do not pair up; the message names the file and the fix.
        """
        folder = Path(path).expanduser()
        where = f"expert {short(expert)}: adapter {folder}"
        cfg_file = folder / "adapter_config.json"
        if not cfg_file.is_file():
            raise ExpertError(f"{where} has no adapter_config.json; give the folder that peft's "
                              "save_pretrained wrote (adapter_config.json + adapter_model.safetensors)")
        text = read_text_limited(cfg_file, error=ExpertError, what=f"{where}: adapter_config.json")
        try:  # duplicate keys are refused too
            config = load_json(text, f"{where}: adapter_config.json", error=ExpertError)
        except ExpertError as exc:
            raise ExpertError(f"{exc}; re-save the adapter") from None
        if not isinstance(config, dict):
            raise ExpertError(f"{where}: adapter_config.json must hold a JSON object")
        kind = str(config.get("peft_type", "LORA")).upper()
        if kind != "LORA":
            raise ExpertError(f"{where} is a {short_list([kind])} adapter; only LoRA adapters can be "
                              "merged into an expert")
        unsupported = [k for k in ("use_dora",) if config.get(k)]
        if config.get("bias", "none") not in (None, "none"):
            unsupported.append(f"bias={short(config['bias'])}")
        if config.get("modules_to_save"):
            unsupported.append(f"modules_to_save={short(config['modules_to_save'])}")
        if unsupported:
            raise ExpertError(f"{where} uses {', '.join(unsupported)}, which the pool cannot merge; "
                              "train a plain LoRA adapter (use_dora=False, bias='none', no modules_to_save)")
        weights = folder / "adapter_model.safetensors"
        if not weights.is_file():
            if (folder / "adapter_model.bin").is_file():
                raise ExpertError(f"{where} holds adapter_model.bin (a pickle, which the workbench does not "
                                  "load); re-save it with peft's save_pretrained(safe_serialization=True)")
            raise ExpertError(f"{where} has no adapter_model.safetensors")
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(weights))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types
            raise ExpertError(f"{where}: cannot read {weights.name} ({exc}); re-save the adapter") from None
        parts: dict[str, dict[str, Any]] = {}
        for key, tensor in tensors.items():
            match = _KEY.match(key)
            if match is None:
                raise ExpertError(f"{where}: tensor {short(key)} is not a LoRA A/B weight (embedding or "
                                  "convolution LoRA and extra trained modules are not supported)")
            parts.setdefault(match["module"], {})[match["part"]] = tensor.float()
        if not parts:
            raise ExpertError(f"{where}: {weights.name} holds no LoRA weights")
        alpha = float(config.get("lora_alpha", config.get("r", 8)))
        alpha_pattern = config.get("alpha_pattern") or {}
        modules = {}
        for module, ab in sorted(parts.items()):
            if set(ab) != {"A", "B"}:
                raise ExpertError(f"{where}: module {short(module)} has lora_{''.join(ab)} but not both A and B")
            a, b = ab["A"], ab["B"]
            if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
                raise ExpertError(f"{where}: module {short(module)} has A {tuple(a.shape)} and B {tuple(b.shape)}, "
                                  "which do not multiply (expected A r x in, B out x r)")
            rank = int(a.shape[0])
            module_alpha = alpha
            for pattern, value in alpha_pattern.items():
                if re.search(rf"(^|\.){pattern}$", module):
                    module_alpha = float(value)
            scale = module_alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
            modules[module] = (a.contiguous(), b.contiguous(), scale)
        return cls(folder, modules, config, bool(config.get("fan_in_fan_out", False)))

    # -- facts ---------------------------------------------------------------------------------

    @cached_property  # the modules never change after loading; every switch plan reads this
    def n_params(self) -> int:
        """Trainable parameters of the adapter (A and B of every module)."""
        return int(sum(a.numel() + b.numel() for a, b, _ in self.modules.values()))

    @cached_property
    def nbytes(self) -> int:
        """Bytes the adapter's tensors take in memory (fp32)."""
        return int(sum(a.numel() * a.element_size() + b.numel() * b.element_size()
                       for a, b, _ in self.modules.values()))

    @property
    def target_modules(self) -> set[str]:
        """The leaf names of the targeted modules (``q_proj``, ``v_proj`` ...)."""
        return {m.rsplit(".", 1)[-1] for m in self.modules}

    @property
    def base_model(self) -> str | None:
        """``base_model_name_or_path`` as recorded by peft (informative only)."""
        return self.config.get("base_model_name_or_path")

    # -- merging -------------------------------------------------------------------------------

    def _weights(self, model, *, expert: str):
        out = {}
        for module in self.modules:
            try:
                layer = model.get_submodule(module)
            except AttributeError:
                raise ExpertError(f"expert {short(expert)}: adapter {self.path} targets {short(module)}, which the base "
                                  "model does not have; the adapter was trained for a different base") from None
            weight = getattr(layer, "weight", None)
            a, b, _ = self.modules[module]
            want = (b.shape[0], a.shape[1]) if not self.fan_in_fan_out else (a.shape[1], b.shape[0])
            if weight is None or tuple(weight.shape) != want:
                raise ExpertError(f"expert {short(expert)}: adapter {self.path} expects {short(module)} of shape {want}, "
                                  f"the base has {None if weight is None else tuple(weight.shape)}; the adapter was "
                                  "trained for a different base")
            out[module] = weight
        return out

    def originals_bytes(self, model) -> int:
        """Bytes of the base weights this adapter touches (the size of the restore copy)."""
        return int(sum(w.numel() * w.element_size() for w in self._weights(model, expert="?").values()))

    def snapshot(self, model, *, expert: str = "?") -> dict:
        """Copies of the base weights this adapter touches, to restore them exactly later."""
        return {m: w.detach().clone() for m, w in self._weights(model, expert=expert).items()}

    def merge(self, model, originals: dict, *, expert: str = "?") -> None:
        """Write ``W0 + delta`` into every targeted weight of ``model`` (``W0`` from ``originals``).

        Every targeted module must be in ``originals``: a snapshot from the unmerged base.
        """
        import torch

        weights = self._weights(model, expert=expert)
        missing = sorted(set(weights) - set(originals))
        if missing:
            raise ExpertError(f"expert {short(expert)}: no restore copy for {short(missing[:3])}; snapshot the base first")
        with torch.no_grad():
            for module, weight in weights.items():
                a, b, scale = self.modules[module]
                delta = (b.to(weight.device) @ a.to(weight.device)) * scale
                if self.fan_in_fan_out:
                    delta = delta.T
                torch.add(originals[module], delta.to(weight.dtype), out=weight)  # one pass: W = W0 + delta

    @staticmethod
    def restore(model, originals: dict) -> None:
        """Copy the saved base weights back (exact: the bytes from before any merge)."""
        import torch

        with torch.no_grad():
            for module, saved in originals.items():
                model.get_submodule(module).weight.copy_(saved)
