"""Model registry: total and active parameter counts (billions) per expert.

The registry is what turns a category-to-expert map into costs: the *average active parameters*
(what a prompt pays in compute) and the *resident parameters* (what the distinct experts occupy in
memory). It is read from a small YAML or CSV file with the keys ``name, total_params_b,
active_params_b`` (``active_params_b`` defaults to ``total_params_b``), and optionally ``base,
base_params_b``: models that share weights (LoRA adapters of one base, and the base itself) name
the same ``base`` and its size, so the shared part is resident once however many of them a map
uses.

Examples
--------
>>> reg = ModelRegistry({"small": 7.0, "moe": (46.7, 12.9)})
>>> reg.active("moe"), reg.total("moe")
(12.9, 46.7)
>>> "small" in reg, len(reg)
(True, 2)

Two LoRA adapters (0.8M parameters each) of one 134.5M base, and the base itself:

>>> lora = ModelRegistry([ModelInfo("base", 0.1345, base="smollm2", base_params_b=0.1345),
...                       ModelInfo("math", 0.1353, base="smollm2", base_params_b=0.1345),
...                       ModelInfo("code", 0.1353, base="smollm2", base_params_b=0.1345)])
>>> round(lora.resident(["base", "math", "code"]), 4)  # the base once, plus each adapter
0.1361
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import RegistryError
from workbench.safeio import load_yaml, read_text_limited, short, short_list

__all__ = ["ModelInfo", "ModelRegistry", "MMLU_PRO_PARAMS", "mmlu_pro_registry"]

#: Parameter counts (billions, ``(total, active)``) of the 13 models whose MMLU-Pro results are in
#: ``../shared/data/mmlu-pro``, from the models' own model cards (see that folder's README).
MMLU_PRO_PARAMS: dict[str, tuple[float, float]] = {
    "Phi-3-mini-4k-instruct": (3.8, 3.8),
    "Yi-6b-Chat": (6.1, 6.1),
    "Mistral-7B-Instruct-v0.2": (7.2, 7.2),
    "mathstral-7B": (7.2, 7.2),
    "Qwen1.5-7B-Chat": (7.7, 7.7),
    "Meta-Llama-3_1-8B-Instruct": (8.0, 8.0),
    "gemma-7b": (8.5, 8.5),
    "Mixtral-8x7B-Instruct-v0.1": (46.7, 12.9),
    "Yi-34B": (34.4, 34.4),
    "c4ai-command-r-v01": (35.0, 35.0),
    "Meta-Llama-3_1-70B-Instruct": (70.6, 70.6),
    "Qwen1.5-72B-Chat": (72.3, 72.3),
    "Qwen1.5-110B": (111.2, 111.2),
}

_KEYS = ("name", "total_params_b", "active_params_b")
_BASE_KEYS = ("base", "base_params_b")


@dataclass(frozen=True)
class ModelInfo:
    """One model's parameter counts in billions.

    Parameters
    ----------
    name : str
        The expert's name as used in scores and maps.
    total_params_b : float
        All parameters (what the model occupies in memory), in billions.
    active_params_b : float
        Parameters used per token (differs from the total for mixtures of experts), in billions.
        Defaults to ``total_params_b``.
    base : str, optional
        The weights this model shares with others (e.g. the base model of LoRA adapters; the base
        model itself names it too). Models with the same ``base`` hold it in memory once.
    base_params_b : float, optional
        Size of the shared part in billions (part of ``total_params_b``); required with ``base``.
    """

    name: str
    total_params_b: float
    active_params_b: float | None = None
    base: str | None = None
    base_params_b: float | None = None

    @property
    def own_params_b(self) -> float:
        """The parameters that are this model's alone (the total less the shared base)."""
        return self.total_params_b - (self.base_params_b or 0.0)

    def __post_init__(self) -> None:
        if self.active_params_b is None:
            object.__setattr__(self, "active_params_b", self.total_params_b)
        if not isinstance(self.name, str) or not self.name.strip():
            raise RegistryError(f"model name must be a non-empty string, got {short(self.name)}")
        for key in ("total_params_b", "active_params_b"):
            value = getattr(self, key)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise RegistryError(
                    f"model {short(self.name)}: {key} must be a number of billions, got {short(value)}"
                ) from None
            if not math.isfinite(number) or number <= 0:
                raise RegistryError(
                    f"model {short(self.name)}: {key} must be a positive finite number of billions, "
                    f"got {short(value)}"
                )
            object.__setattr__(self, key, number)
        if self.active_params_b > self.total_params_b * (1 + 1e-12):
            raise RegistryError(
                f"model {short(self.name)}: active_params_b={self.active_params_b:g} exceeds "
                f"total_params_b={self.total_params_b:g}; active parameters are a subset of the total"
            )
        self._check_base()

    def _check_base(self) -> None:
        base, size = self.base, self.base_params_b
        if base in (None, "") and size in (None, ""):
            object.__setattr__(self, "base", None)
            object.__setattr__(self, "base_params_b", None)
            return
        if not isinstance(base, str) or not base.strip():
            raise RegistryError(f"model {short(self.name)}: base_params_b needs a base (the name of the "
                                f"shared weights, e.g. the base model of its LoRA adapter); got base={short(base)}")
        try:
            number = float(size)
        except (TypeError, ValueError):
            raise RegistryError(f"model {short(self.name)}: base {short(base)} needs base_params_b, the "
                                f"shared part's size in billions; got {short(size)}") from None
        if not math.isfinite(number) or number <= 0 or number > self.total_params_b * (1 + 1e-12):
            raise RegistryError(
                f"model {short(self.name)}: base_params_b={short(size)} must be a positive number of "
                f"billions within total_params_b={self.total_params_b:g} (the base is part of the model)")
        object.__setattr__(self, "base_params_b", min(number, self.total_params_b))


def _info_from_value(name: str, value: Any, where: str = "") -> ModelInfo:
    """Build a ModelInfo from ``7.0``, ``(46.7, 12.9)``, ``{"total_params_b":..}`` or a ModelInfo."""
    if isinstance(value, ModelInfo):
        return dataclasses.replace(value, name=name)
    if isinstance(value, Mapping):
        unknown = set(value) - {"total_params_b", "active_params_b", "name", *_BASE_KEYS}
        if unknown:
            raise RegistryError(
                f"model {short(name)}{where}: unknown keys {short(sorted(map(str, unknown)))}; expected "
                "total_params_b and optionally active_params_b, base and base_params_b"
            )
        if "total_params_b" not in value or value["total_params_b"] in (None, ""):
            raise RegistryError(f"model {short(name)}{where} has no total_params_b; add it (billions)")
        total = value["total_params_b"]
        active = value.get("active_params_b")
        return ModelInfo(name, total, total if active in (None, "") else active,
                         base=value.get("base"), base_params_b=value.get("base_params_b"))
    if isinstance(value, (tuple, list)):
        if len(value) not in (1, 2):
            raise RegistryError(
                f"model {short(name)}{where}: expected (total_params_b, active_params_b), got {short(value)}"
            )
        total = value[0]
        active = value[1] if len(value) == 2 and value[1] not in (None, "") else total
        return ModelInfo(name, total, active)
    return ModelInfo(name, value, value)


class ModelRegistry:
    """Total and active parameter counts (billions) of the experts a map may use.

    Parameters
    ----------
    models : iterable of ModelInfo, or mapping
        Either :class:`ModelInfo` objects, or a mapping ``name -> total`` /
        ``name -> (total, active)`` / ``name -> {"total_params_b": .., "active_params_b": ..}``.
    source : str or Path, optional
        The file the registry came from (used in error messages).

    Examples
    --------
    >>> reg = ModelRegistry([ModelInfo("a", 7, 7), ModelInfo("b", 46.7, 12.9)])
    >>> reg.names
    ['a', 'b']
    >>> reg["b"].active_params_b
    12.9
    """

    def __init__(
        self,
        models: Iterable[ModelInfo] | Mapping[str, float | tuple[float, float]],
        *,
        source: str | os.PathLike | None = None,
    ) -> None:
        self.source = str(source) if source is not None else None
        self._models: dict[str, ModelInfo] = {}
        if isinstance(models, ModelRegistry):
            items = [(m.name, m) for m in models]
        elif isinstance(models, Mapping):
            items = list(models.items())
        else:
            items = []
            for m in models:
                if not isinstance(m, ModelInfo):
                    raise RegistryError(
                        f"expected ModelInfo objects or a mapping name -> params, got {short(m)}"
                    )
                items.append((m.name, m))
        for name, value in items:
            name = str(name)
            if name in self._models:
                raise RegistryError(f"model {short(name)} is listed twice{self._where()}; keep one entry")
            self._models[name] = _info_from_value(name, value)
        self._bases: dict[str, tuple[str, float]] = {}  # base -> (first model naming it, its size)
        for m in self._models.values():
            if m.base is None:
                continue
            first = self._bases.setdefault(m.base, (m.name, m.base_params_b))
            if not math.isclose(first[1], m.base_params_b, rel_tol=1e-9):
                raise RegistryError(
                    f"base {short(m.base)}{self._where()} has two sizes: base_params_b={first[1]:g} for "
                    f"model {short(first[0])} and {m.base_params_b:g} for {short(m.name)}; one base has one size")
        for base, (first, size) in self._bases.items():
            m = self._models.get(base)
            if m is not None and m.base != base:  # the base is listed as a model of its own
                raise RegistryError(
                    f"model {short(base)}{self._where()} is the base of {short(first)} but does not say "
                    f"so; give it base: {base} and base_params_b: {size:g}, so it is resident once")

    # ------------------------------------------------------------------ access
    def _where(self) -> str:
        return f" in {self.source}" if self.source else ""

    @property
    def names(self) -> list[str]:
        """Model names in file order."""
        return list(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __getitem__(self, name: str) -> ModelInfo:
        try:
            return self._models[name]
        except KeyError:
            raise RegistryError(self._missing_message([name], context="lookup")) from None

    def __iter__(self) -> Iterator[ModelInfo]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"ModelRegistry({len(self)} models: {', '.join(self.names[:6])}{'...' if len(self) > 6 else ''}{src})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelRegistry):
            return NotImplemented
        return list(self) == list(other)

    def total(self, name: str) -> float:
        """Total parameters of ``name`` in billions (memory footprint)."""
        return self[name].total_params_b

    def active(self, name: str) -> float:
        """Active parameters of ``name`` in billions (per-token compute)."""
        return self[name].active_params_b

    def resident(self, names: Iterable[str]) -> float:
        """Parameters (billions) that the distinct models in ``names`` occupy together: each
        model's own parameters plus each shared ``base`` once."""
        models = [self[n] for n in dict.fromkeys(names)]
        bases = {m.base: m.base_params_b for m in models if m.base is not None}
        return float(sum(m.own_params_b for m in models) + sum(bases.values()))

    @property
    def has_bases(self) -> bool:
        """Whether any model shares a base with others."""
        return bool(self._bases)

    def _missing_message(self, missing: list[str], context: str) -> str:
        where = self.source or "the registry file (YAML or CSV with name,total_params_b,active_params_b)"
        known = short_list(self.names) or "(none)"
        return (
            f"{context}: no parameter counts for {short_list(missing, quote=True)}. "
            f"Add {'them' if len(missing) > 1 else 'it'} to {where} "
            f"(keys name, total_params_b, active_params_b). Known models: {known}"
        )

    def require(self, names: Iterable[str], *, context: str = "model registry") -> None:
        """Raise :class:`RegistryError` naming every model in ``names`` the registry lacks.

        Examples
        --------
        >>> ModelRegistry({"a": 1.0}).require(["a", "b", "c"], context="scores")
        Traceback (most recent call last):
        ...
        workbench.errors.RegistryError: scores: no parameter counts for 'b', 'c'. ...
        """
        missing = [n for n in dict.fromkeys(names) if n not in self._models]
        if missing:
            raise RegistryError(self._missing_message(missing, context))

    def subset(self, names: Iterable[str]) -> "ModelRegistry":
        """A registry with only ``names`` (in that order); unknown names raise RegistryError."""
        names = list(names)
        self.require(names, context="ModelRegistry.subset")
        return ModelRegistry([self._models[n] for n in names], source=self.source)

    def _columns(self) -> list[str]:
        return list(_KEYS + (_BASE_KEYS if self.has_bases else ()))

    def _records(self) -> list[dict]:
        return [{k: getattr(m, k) for k in self._columns()} for m in self]

    def to_frame(self):
        """A pandas DataFrame with columns ``name, total_params_b, active_params_b`` (and ``base,
        base_params_b`` when a model shares a base)."""
        import pandas as pd

        return pd.DataFrame(self._records(), columns=self._columns())

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelRegistry":
        """Read a registry from YAML (a list of records or a mapping) or CSV.

        Accepted YAML shapes::

            - {name: Yi-34B, total_params_b: 34.4}
            - {name: Mixtral-8x7B-Instruct-v0.1, total_params_b: 46.7, active_params_b: 12.9}

            # or
            Yi-34B: 34.4
            Mixtral-8x7B-Instruct-v0.1: {total_params_b: 46.7, active_params_b: 12.9}
            # or the list under a top-level ``models:`` key

        Models sharing weights add ``base`` and ``base_params_b`` (see :class:`ModelInfo`). CSV
        needs the header ``name,total_params_b[,active_params_b][,base,base_params_b]``.
        """
        path = Path(path)
        if not path.exists():
            raise RegistryError(f"model registry file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            text = read_text_limited(path, error=RegistryError, what="model registry file")
            return cls._from_csv_text(text, source=path)
        if suffix in (".yaml", ".yml", ".json"):
            text = read_text_limited(path, error=RegistryError, what="model registry file")
            data = load_yaml(text, f"model registry {path}", error=RegistryError)
            return cls._from_data(data, source=path)
        raise RegistryError(
            f"model registry {path}: unknown format {short(suffix)}; use .yaml, .yml, .json or .csv"
        )

    @classmethod
    def _from_csv_text(cls, text: str, source: Path) -> "ModelRegistry":
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "name" not in header or "total_params_b" not in header:
            raise RegistryError(
                f"model registry {source}: the CSV header must contain name and total_params_b "
                f"(and optionally active_params_b); found {short(header)}"
            )
        models = []
        seen: dict[str, int] = {}
        for lineno, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
            name = row.get("name") or ""
            if not name:
                raise RegistryError(f"model registry {source} line {lineno}: empty name")
            if name in seen:
                raise RegistryError(
                    f"model registry {source} line {lineno}: model {short(name)} already listed on line "
                    f"{seen[name]}; keep one entry"
                )
            seen[name] = lineno
            total = row.get("total_params_b")
            active = row.get("active_params_b") or total
            if not total:
                raise RegistryError(
                    f"model registry {source} line {lineno}: model {short(name)} has no total_params_b"
                )
            try:
                models.append(ModelInfo(name, total, active, base=row.get("base") or None,
                                        base_params_b=row.get("base_params_b") or None))
            except RegistryError as exc:
                raise RegistryError(f"model registry {source} line {lineno}: {exc}") from None
        return cls(models, source=source)

    @classmethod
    def _from_data(cls, data: Any, source: Path | None = None) -> "ModelRegistry":
        where = f" in {source}" if source else ""
        if isinstance(data, Mapping) and set(data) == {"models"}:
            data = data["models"]
        if data is None:
            raise RegistryError(f"model registry{where} is empty; list models with name and total_params_b")
        models: list[ModelInfo] = []
        seen: set[str] = set()
        if isinstance(data, Mapping):
            entries = [(str(k), v, f" (key {short(k)}{where})") for k, v in data.items()]
        elif isinstance(data, list):
            entries = []
            for i, rec in enumerate(data):
                if not isinstance(rec, Mapping) or "name" not in rec:
                    raise RegistryError(
                        f"model registry{where}: entry {i} must be a mapping with a name, got {short(rec)}"
                    )
                entries.append((str(rec["name"]), dict(rec), f" (entry {i}{where})"))
        else:
            raise RegistryError(
                f"model registry{where} must be a list of models or a mapping name -> params, "
                f"got {type(data).__name__}"
            )
        for name, value, loc in entries:
            if name in seen:
                raise RegistryError(f"model {short(name)} is listed twice{loc}; keep one entry")
            seen.add(name)
            try:
                models.append(_info_from_value(name, value, loc))
            except RegistryError as exc:
                if loc in str(exc):
                    raise
                raise RegistryError(f"{exc}{loc}") from None
        return cls(models, source=source)

    def save(self, path: str | os.PathLike) -> None:
        """Write the registry as YAML (``.yaml``/``.yml``, a list of records), JSON or CSV."""
        from workbench._paths import atomic_write_text

        path = Path(path)
        suffix = path.suffix.lower()
        records = self._records()
        if suffix == ".csv":
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self._columns(), lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)
            text = buf.getvalue()
        elif suffix in (".yaml", ".yml"):
            import yaml

            text = yaml.safe_dump(records, sort_keys=False)
        elif suffix == ".json":
            import json

            text = json.dumps(records, indent=2) + "\n"
        else:
            raise RegistryError(f"cannot write a model registry to {path}: use .yaml, .yml, .json or .csv")
        atomic_write_text(path, text)

    # the old names (``from_file`` / ``to_file``), kept for one release: every workbench object
    # reads and writes with ``load`` / ``save``
    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "ModelRegistry":
        """Deprecated name of :meth:`load`."""
        import warnings

        warnings.warn("ModelRegistry.from_file is deprecated; use ModelRegistry.load",
                      DeprecationWarning, stacklevel=2)
        return cls.load(path)

    def to_file(self, path: str | os.PathLike) -> None:
        """Deprecated name of :meth:`save`."""
        import warnings

        warnings.warn("ModelRegistry.to_file is deprecated; use ModelRegistry.save",
                      DeprecationWarning, stacklevel=2)
        self.save(path)

    @classmethod
    def mmlu_pro(cls) -> "ModelRegistry":
        """The 13 MMLU-Pro models of ``../shared/data/mmlu-pro`` with their model-card sizes."""
        return mmlu_pro_registry()


def mmlu_pro_registry() -> ModelRegistry:
    """Registry of the 13 models whose MMLU-Pro results ship in ``../shared/data/mmlu-pro``.

    Examples
    --------
    >>> mmlu_pro_registry().active("Mixtral-8x7B-Instruct-v0.1")
    12.9
    """
    return ModelRegistry(MMLU_PRO_PARAMS, source="workbench.registry.MMLU_PRO_PARAMS")


def format_params(billions: float | None, *, digits: int = 4) -> str:
    """A parameter count given in billions, in the unit that fits: ``"134.5M"``, ``"7.6B"``, ``"850K"``.

    Examples
    --------
    >>> format_params(0.1345), format_params(7.6), format_params(70.55), format_params(0.00085)
    ('134.5M', '7.6B', '70.55B', '850K')
    """
    import math

    if billions is None or not isinstance(billions, (int, float)) or math.isnan(billions):
        return "–"
    value = float(billions) * 1e9
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            scaled = value / size
            text = f"{scaled:.{digits}g}" if abs(scaled) < 10 ** digits else f"{scaled:.0f}"
            if "e" in text:
                text = f"{scaled:.0f}"
            return f"{text}{unit}"
    return f"{value:.0f}"
