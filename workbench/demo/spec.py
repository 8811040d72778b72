"""The demo experts' spec file (``data/demo_experts.yaml``): reading and validating it.

:func:`read_spec` and :func:`parse_categories` are shared with the real demo's spec
(:mod:`workbench.demo.real`); :class:`DemoConfig` is the tiny demo's parsed spec.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench._paths import data_dir
from workbench.errors import DemoError


def default_spec_file() -> Path:
    """``data/demo_experts.yaml``: the demo experts' names, sizes and training categories."""
    return data_dir() / "demo_experts.yaml"


@dataclass
class DemoExpertConfig:
    """One demo expert of ``demo_experts.yaml``: what it is, its size and what it trains on."""

    name: str
    description: str
    categories: list[str] | None  # None: every category (the generalist)
    architecture: dict[str, int]
    steps: int

    @property
    def is_generalist(self) -> bool:
        return self.categories is None


@dataclass
class DemoConfig:
    """The parsed demo spec file (see ``data/demo_experts.yaml``)."""

    experts: list[DemoExpertConfig]
    tokenizer: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    source: str = "<dict>"
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def generalist(self) -> str:
        return next(e.name for e in self.experts if e.is_generalist)

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()[:16]


_TRAINING_DEFAULTS = {
    "held_out": 0.25,
    "max_length": 160,
    "batch_size": 16,
    "learning_rate": 3e-3,
    "warmup_steps": 10,
    "weight_decay": 0.0,
}
_ARCH_KEYS = {"hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"}


def read_spec(path: str | os.PathLike | Mapping | None, default: Path, what: str) -> tuple[Any, str]:
    """``(parsed YAML, source name)`` of a spec file, or of an already parsed mapping.

    YAML aliases and duplicate keys are refused (:func:`workbench.safeio.load_yaml`).
    """
    from workbench.safeio import read_yaml_file

    if isinstance(path, Mapping):
        return dict(path), "<dict>"
    file = Path(path) if path is not None else default
    if not file.is_file():
        raise DemoError(f"{what} file {file} does not exist; pass the path of a YAML file like "
                        f"data/{default.name}")
    return read_yaml_file(file, error=DemoError, what=f"{what} file") or {}, str(file)


def parse_categories(cats: Any, where: str) -> list[str] | None:
    """An expert's ``categories``: ``"all"`` (None: the generalist) or a non-empty list of names."""
    if cats in ("all", None):
        return None
    if isinstance(cats, list) and cats and all(isinstance(c, str) for c in cats):
        return list(cats)
    raise DemoError(f"{where}: categories must be 'all' or a list of category names, got {cats!r}")


def load_demo_config(path: str | os.PathLike | Mapping | None = None) -> DemoConfig:
    """Read and validate the demo experts' spec file.

    Parameters
    ----------
    path : path or mapping, optional
        A YAML file like ``data/demo_experts.yaml`` (the default), or the already parsed mapping.

    Raises
    ------
    DemoError
        Naming the file, the expert and the bad key.
    """
    raw, source = read_spec(path, default_spec_file(), "demo expert spec")
    if not isinstance(raw, Mapping) or not isinstance(raw.get("experts"), list) or not raw["experts"]:
        raise DemoError(f"{source}: expected a mapping with a non-empty 'experts' list")
    experts: list[DemoExpertConfig] = []
    for i, item in enumerate(raw["experts"]):
        where = f"{source}: experts[{i}]"
        if not isinstance(item, Mapping) or not item.get("name"):
            raise DemoError(f"{where}: each expert needs at least 'name', 'architecture' and 'steps'")
        where = f"{source}: expert {item['name']!r}"
        arch = dict(item.get("architecture") or {})
        missing = _ARCH_KEYS - set(arch)
        if missing:
            raise DemoError(f"{where}: architecture lacks {sorted(missing)}; give "
                            f"{sorted(_ARCH_KEYS)}")
        if arch["hidden_size"] % arch["num_attention_heads"]:
            raise DemoError(f"{where}: hidden_size {arch['hidden_size']} is not divisible by "
                            f"num_attention_heads {arch['num_attention_heads']}")
        categories = parse_categories(item.get("categories", "all"), where)
        steps = item.get("steps")
        if not isinstance(steps, int) or steps < 1:
            raise DemoError(f"{where}: steps must be a positive integer, got {steps!r}")
        experts.append(DemoExpertConfig(str(item["name"]), str(item.get("description", "")).strip(),
                                        categories, {k: int(v) for k, v in arch.items()}, steps))
    names = [e.name for e in experts]
    if len(set(names)) != len(names):
        raise DemoError(f"{source}: expert names must be unique, got {names}")
    if not any(e.is_generalist for e in experts):
        raise DemoError(f"{source}: one expert must be the generalist (categories: all)")
    training = {**_TRAINING_DEFAULTS, **(raw.get("training") or {})}
    return DemoConfig(experts, dict(raw.get("tokenizer") or {}), training,
                      dict(raw.get("generation") or {}), source, dict(raw))
