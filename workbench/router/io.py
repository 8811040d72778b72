"""The routers' pickle-free file format: one ``.npz`` of plain numeric/string arrays plus a JSON
``__meta__`` header, read with ``allow_pickle=False`` and validated array by array, so a router file
from elsewhere can never run code when loaded."""
from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from workbench.errors import RouterError
from workbench.safeio import short

__all__ = [
    "CATEGORY_ROUTER_FORMAT",
    "FORMAT_VERSION",
    "check_arrays",
    "json_labels",
    "npz_path",
    "read_head_state",
    "read_npz",
    "write_npz",
]

CATEGORY_ROUTER_FORMAT = "coe-workbench/category-router"
FORMAT_VERSION = 1


def npz_path(path: str | os.PathLike) -> Path:
    """``path`` with an ``.npz`` suffix (appended when it has another one)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    return path


def write_npz(path: Path, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` and the JSON header ``meta`` to one compressed ``.npz``, atomically."""
    from workbench._paths import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, __meta__=np.asarray(json.dumps(dict(meta))), **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def json_labels(labels: np.ndarray) -> list:
    out = labels.tolist()
    for value in out:
        if not isinstance(value, (str, int, float, bool)):
            raise RouterError(
                f"cannot save a router whose labels are of type {type(value).__name__} ({short(value)}); "
                "use str or int labels"
            )
    return out


def read_npz(path: Path, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Open a router ``.npz`` without pickle; return (header dict, arrays)."""
    if not path.is_file():
        raise RouterError(f"{what} file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError (object arrays), OSError, ...
        raise RouterError(
            f"{str(path)!r} is not a {what} file (.npz of plain arrays, no pickle): {exc}. "
            f"Save one with {what}.save(path)."
        ) from None
    if "__meta__" not in arrays:
        raise RouterError(
            f"{str(path)!r} has no '__meta__' header, so it was not written by {what}.save(); "
            f"arrays found: {sorted(arrays)}"
        )
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except (json.JSONDecodeError, TypeError) as exc:
        raise RouterError(f"{str(path)!r}: the '__meta__' header is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise RouterError(f"{str(path)!r}: the '__meta__' header must be a JSON object")
    return meta, arrays


def check_arrays(path: Path, arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple]) -> None:
    """Every named array exists, is numeric and finite, and has the expected shape (None = any)."""
    for name, shape in shapes.items():
        if name not in arrays:
            raise RouterError(f"{str(path)!r} is missing the array {name!r}; the file is incomplete or "
                              "not a router file")
        arr = arrays[name]
        if arr.dtype.kind not in "fiub":
            raise RouterError(f"{str(path)!r}: array {name!r} has dtype {arr.dtype}, expected numbers")
        if len(shape) != arr.ndim or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            raise RouterError(
                f"{str(path)!r}: array {name!r} has shape {arr.shape}, expected "
                f"{tuple('any' if s is None else s for s in shape)}; the file was edited or is corrupt"
            )
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise RouterError(f"{str(path)!r}: array {name!r} contains NaN or infinite values")


def read_head_state(path: Path, arrays: Mapping[str, np.ndarray], head: str, d: int,
                    n_fine: int) -> dict[str, np.ndarray]:
    """The validated inference state of a ``head`` (``"knn"``, ``"logreg"``, ``"knn+logreg"`` or
    ``"mlp"``) over ``d`` features and ``n_fine`` labels, from a router file's arrays."""
    if head in ("knn", "logreg", "knn+logreg"):
        state = {}
        if head in ("knn", "knn+logreg"):
            check_arrays(path, arrays, {"head_train": (None, d), "head_labels": (None,)})
            state.update(train=arrays["head_train"],
                         labels=arrays["head_labels"].astype(np.int64))
            if len(state["labels"]) != len(state["train"]) or len(state["labels"]) == 0 or \
                    state["labels"].min() < 0 or state["labels"].max() >= n_fine:
                raise RouterError(f"{str(path)!r}: kNN labels do not match its training rows")
        if head in ("logreg", "knn+logreg"):
            check_arrays(path, arrays, {"head_coef": (n_fine, d), "head_intercept": (n_fine,)})
            state.update(coef=arrays["head_coef"], intercept=arrays["head_intercept"])
    else:
        check_arrays(path, arrays, {"head_n_layers": ()})
        n_layers = int(arrays["head_n_layers"])
        if not 1 <= n_layers <= 64:
            raise RouterError(f"{str(path)!r}: implausible MLP depth {n_layers}")
        state = {"n_layers": np.asarray(n_layers)}
        width = d
        for i in range(n_layers):
            out = n_fine if i == n_layers - 1 else None
            check_arrays(path, arrays, {f"head_W{i}": (width, out), f"head_b{i}": (None,)})
            W, b = arrays[f"head_W{i}"], arrays[f"head_b{i}"]
            if b.shape != (W.shape[1],):
                raise RouterError(f"{str(path)!r}: MLP layer {i} bias does not match its weights")
            state[f"W{i}"], state[f"b{i}"] = W, b
            width = W.shape[1]
    return state
