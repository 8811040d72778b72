"""Checkpoint folders on disk: resolve a model id, list and validate its weight files, sum their bytes.

Nothing here imports torch: a safetensors header is JSON read with :func:`json.loads`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import ExpertError, PlacementError
from workbench.safeio import short, short_list


def weights_bytes_on_disk(folder: str | os.PathLike | None) -> int:
    """Bytes of the weight files in a local checkpoint or adapter folder; no validation.

    The one rule for "how big is this checkpoint on disk": the sum of its ``*.safetensors`` files,
    or of its ``*.bin`` files when it has no safetensors (an old ``pytorch_model.bin`` checkpoint or
    ``adapter_model.bin`` adapter); 0 when ``folder`` is ``None`` or not a folder.

    Examples
    --------
    >>> weights_bytes_on_disk("no/such/folder")
    0
    """
    if folder is None or str(folder) == "":
        return 0
    path = Path(folder).expanduser()
    if not path.is_dir():
        return 0
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return int(sum(f.stat().st_size for f in files if f.is_file()))


@dataclass
class Checkpoint:
    """A resolved checkpoint folder and its weight files."""

    path: Path
    weight_files: list[Path]          # safetensors shards, in order; empty when only .bin exists
    format: str                       # "safetensors" or "bin"
    tensors: dict[str, tuple[str, list[int], Path]] = field(default_factory=dict)  # name -> (dtype, shape, file)

    @property
    def nbytes(self) -> int:
        """Bytes of its weight files on disk (:func:`weights_bytes_on_disk`)."""
        return weights_bytes_on_disk(self.path)

    @property
    def n_params(self) -> int:
        """Parameters in its tensors, from the headers (inspect it with ``validate=True``)."""
        return sum(math.prod(shape) for _, shape, _ in self.tensors.values())


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
        outside = [f for f in dict.fromkeys(weight_map.values())
                   if Path(f).is_absolute() or ".." in Path(f).parts]
        if outside:  # an index names weight files beside it; anything else is not a checkpoint
            raise ExpertError(f"expert {expert!r}: {index} names weight files outside its folder "
                              f"({short_list(outside)}); it may only list files inside {path}. "
                              "Re-save the checkpoint")
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
