"""Embeddings files: :func:`save_embeddings` / :func:`load_embeddings` (``.npz``, never pickled)."""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench._paths import atomic_write_bytes
from workbench.errors import EmbedderError
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    from workbench.prompts import PromptSet


@dataclass
class EmbeddingFile:
    """Contents of an embeddings file written by :func:`save_embeddings`."""

    embeddings: np.ndarray
    ids: list[str] | None = None
    texts: list[str] | None = None
    categories: list[str | None] | None = None  # None for a prompt without a category
    meta: dict[str, Any] = field(default_factory=dict)


def save_embeddings(
    path: str | os.PathLike,
    embeddings: np.ndarray,
    prompts: PromptSet | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write embeddings (and the prompts' ids, texts, categories) to an ``.npz`` atomically."""
    import io

    path = Path(path)
    if path.suffix != ".npz":
        raise EmbedderError(f"embeddings are saved as .npz; got {str(path)!r}")
    arrays: dict[str, np.ndarray] = {"embeddings": np.asarray(embeddings, dtype=np.float32)}
    if prompts is not None:
        if len(prompts) != len(embeddings):
            raise EmbedderError(f"{len(embeddings)} embeddings for {len(prompts)} prompts")
        arrays["ids"] = np.asarray(prompts.ids, dtype=str)
        arrays["texts"] = np.asarray(prompts.texts, dtype=str)
        if prompts.has_categories:
            # a prompt without a category is written as "" (read back as None), never as "nan"
            arrays["categories"] = np.asarray([_category_text(c) for c in prompts.categories], dtype=str)
    arrays["meta"] = np.asarray(json.dumps(meta or {}))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _category_text(value: Any) -> str:
    """A category as stored in an embeddings file: ``""`` when the prompt has none."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    try:
        import pandas as pd

        if pd.isna(value) is True:
            return ""
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)


_RECREATE = "recreate it with `coe-workbench embed SOURCE --out FILE.npz`"


def load_embeddings(path: str | os.PathLike) -> EmbeddingFile:
    """Read an ``.npz`` from :func:`save_embeddings` (or a bare ``.npy`` array); never unpickles.

    Raises
    ------
    EmbedderError
        When the file is missing, truncated, not ``.npz``/``.npy``, or its arrays do not fit
        together; the message names the file and how to recreate it.
    """
    path = Path(path)
    if not path.exists():
        raise EmbedderError(f"embeddings file {str(path)!r} does not exist; create it with "
                            "`coe-workbench embed SOURCE --out FILE.npz`")
    try:
        if path.suffix == ".npy":
            out = EmbeddingFile(np.load(path, allow_pickle=False).astype(np.float32))
        else:
            with np.load(path, allow_pickle=False) as z:
                if "embeddings" not in z:
                    raise EmbedderError(f"{path} has no 'embeddings' array (arrays: {short(list(z.keys()))}); "
                                        f"is it an embeddings file? {_RECREATE}")
                get = lambda k: z[k].tolist() if k in z else None  # noqa: E731
                meta = json.loads(str(z["meta"])) if "meta" in z else {}
                out = EmbeddingFile(z["embeddings"].astype(np.float32), get("ids"), get("texts"),
                                    get("categories"), meta if isinstance(meta, dict) else {})
    except EmbedderError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile.BadZipFile (truncated), ValueError, OSError, EOFError...
        kind = "truncated or not a zip archive" if isinstance(exc, zipfile.BadZipFile) else type(exc).__name__
        raise EmbedderError(f"cannot read embeddings from {path} ({kind}: {short(str(exc))[1:-1]}); the file is "
                            f"corrupt or not .npz/.npy: {_RECREATE}") from None
    if out.embeddings.ndim != 2:
        raise EmbedderError(f"{path}: embeddings must be 2-D (n, dim), got shape {out.embeddings.shape}; "
                            f"{_RECREATE}")
    n = len(out.embeddings)
    for label in ("ids", "texts", "categories"):
        values = getattr(out, label)
        if values is not None and (not isinstance(values, list) or len(values) != n):
            got = len(values) if isinstance(values, list) else "not a list of"
            raise EmbedderError(f"{path}: {got} {label} for {n} embeddings; the file is damaged: {_RECREATE}")
    if out.categories is not None:
        out.categories = [c if c != "" else None for c in out.categories]
    return out
