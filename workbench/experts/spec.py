"""What an expert is: :class:`ExpertSpec` and expert spec files (YAML / JSON)."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import ExpertError, TrustRemoteCodeWarning
from workbench.placement import (
    torch_dtype,
)
from workbench.safeio import read_yaml_file, short

if TYPE_CHECKING:
    from workbench.registry import ModelRegistry

__all__ = ["ExpertSpec", "SpecNames", "TrustRemoteCodeWarning", "registry_for", "specs_from_file"]


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
        Off unless you turn it on; passed to transformers. On, loading the expert runs the Python
        code that ships with the checkpoint (``modeling_*.py``) with your user's rights; an expert
        file that turns it on gets a :class:`TrustRemoteCodeWarning`.
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
            raise ExpertError(f"ExpertSpec.name must be a non-empty string, got {short(self.name)}")
        name = short(self.name)
        if not isinstance(self.model, (str, Path)) or not str(self.model).strip():
            raise ExpertError(f"expert {name}: model must be a checkpoint folder or a Hugging Face "
                              f"id, got {short(self.model)}")
        if self.adapter is not None and (not isinstance(self.adapter, (str, Path)) or not str(self.adapter).strip()):
            raise ExpertError(f"expert {name}: adapter must be a LoRA adapter folder (or None), "
                              f"got {short(self.adapter)}")
        if not isinstance(self.generation, dict):
            raise ExpertError(f"expert {name}: generation must be a dict of generate() defaults, "
                              f"got {short(self.generation)}")
        if not isinstance(self.trust_remote_code, bool):
            raise ExpertError(f"expert {name}: trust_remote_code must be true or false, got "
                              f"{short(self.trust_remote_code)}")
        if self.dtype not in (None, "auto"):
            try:
                torch_dtype(self.dtype)
            except ExpertError as exc:
                raise ExpertError(f"expert {name}: {exc}") from None
        for attr in ("total_params_b", "active_params_b"):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ExpertError(f"expert {name}: {attr} must be a non-negative number, got "
                                  f"{short(value)}")

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: str | Path | None = None) -> "ExpertSpec":
        """Build from a dict (e.g. one YAML entry). Relative model paths resolve against ``base_dir``."""
        if not isinstance(data, dict):
            raise ExpertError(f"an expert entry must be a mapping with 'name' and 'model', got "
                              f"{short(data)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ExpertError(
                f"expert entry {short(data.get('name', '?'))} has unknown keys {short(unknown)}; "
                f"valid keys: {sorted(known)}"
            )
        missing = [k for k in ("name", "model") if k not in data]
        if missing:
            raise ExpertError(f"expert entry {short(data)} misses {missing}; each expert needs "
                              "'name' and 'model'")
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

    Relative ``model`` paths are resolved against the file's folder when they exist there. YAML
    aliases and duplicate keys are refused. An expert with ``trust_remote_code: true`` gets a
    :class:`TrustRemoteCodeWarning`: loading it runs the checkpoint's own Python code.
    """
    path = Path(path)
    if not path.is_file():
        raise ExpertError(f"expert spec file {str(path)!r} does not exist")
    data = read_yaml_file(path, error=ExpertError, what="expert spec file")
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
        if specs[-1].trust_remote_code:
            warnings.warn(
                f"{path}: expert {short(specs[-1].name)} sets trust_remote_code: true, so loading it "
                f"runs the Python code that ships with its model ({short(str(specs[-1].model))}) "
                "with your user's rights. Only keep it for checkpoints whose code you have read "
                "or trust; remove the line otherwise.",
                TrustRemoteCodeWarning, stacklevel=2)
    return specs


def registry_for(specs) -> "ModelRegistry":
    """The parameter counts of ``specs`` as a :class:`~workbench.registry.ModelRegistry`.

    LoRA experts (``adapter`` set) share their base: when the base model is an expert too (a spec
    on the same ``model`` without an adapter), the adapters and it name that expert as their
    ``base`` with its size, so a map's resident parameters count the base once, as the pool holds
    it. When no expert is the base (the pool then holds a hidden one), the adapters name the
    ``model`` as their base and its size is counted from the checkpoint's safetensors headers
    (no weights are read); a base that is not on this machine leaves them counted whole.
    ``active_params_b`` defaults to ``total_params_b`` and the other way round.

    Examples
    --------
    >>> reg = registry_for([ExpertSpec("base", "ckpt", total_params_b=0.1345),
    ...                     ExpertSpec("math", "ckpt", total_params_b=0.1353, adapter="lora/math")])
    >>> reg["math"].base, round(reg.resident(["base", "math"]), 4)
    ('base', 0.1353)
    """
    from workbench.errors import RegistryError
    from workbench.registry import ModelInfo, ModelRegistry

    specs = list(specs)
    missing = [s.name for s in specs if s.total_params_b is None and s.active_params_b is None]
    if missing:
        raise RegistryError(f"experts {', '.join(map(repr, missing))} have no total_params_b; add "
                            "it to each expert's entry (billions)")
    bases: dict[str, ExpertSpec] = {}
    for s in specs:
        if s.adapter is None:
            bases.setdefault(str(s.model), s)
    adapted = {str(s.model) for s in specs if s.adapter is not None}
    hidden = {model: _checkpoint_params_b(model) for model in adapted if model not in bases}
    models = []
    for s in specs:
        total = s.total_params_b if s.total_params_b is not None else s.active_params_b
        active = s.active_params_b if s.active_params_b is not None else total
        key = str(s.model)
        if key in adapted and key in bases:
            base = bases[key]
            size = base.total_params_b if base.total_params_b is not None else base.active_params_b
            models.append(ModelInfo(s.name, total, active, base=base.name, base_params_b=size))
        elif hidden.get(key) is not None and hidden[key] <= total:
            models.append(ModelInfo(s.name, total, active, base=key, base_params_b=hidden[key]))
        else:
            models.append(ModelInfo(s.name, total, active))
    return ModelRegistry(models)


def _checkpoint_params_b(model: str) -> float | None:
    """Parameters (billions) of a local checkpoint, from its safetensors headers; None when it
    is not on this machine or has no safetensors weights."""
    from workbench.placement import inspect_checkpoint, resolve_model_path

    try:  # validating reads every shard's header: the tensors' names, dtypes and shapes
        count = inspect_checkpoint(resolve_model_path(model), validate=True).n_params
    except (ExpertError, OSError, TypeError, ValueError):
        return None
    return count / 1e9 if count else None


class SpecNames:
    """``names``, ``in`` and ``len`` over ``self.specs`` (name -> ExpertSpec): what the CoE and the
    API ask of a pool, shared by :class:`~workbench.experts.ExpertPool` and the Ray ingress's
    remote pool."""

    specs: dict

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def __contains__(self, name: object) -> bool:
        return name in self.specs

    def __len__(self) -> int:
        return len(self.specs)
