"""The on-disk embedding cache: vectors keyed by text hash, in checksummed ``.npz`` shards."""
from __future__ import annotations

import hashlib
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from workbench._paths import atomic_write_bytes


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """The cache key of each text: a 16-byte blake2b hash of its UTF-8 bytes (``S16`` array)."""
    out = np.empty(len(texts), dtype="S16")
    for i, t in enumerate(texts):
        out[i] = hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest()
    return out


#: Format of a cache shard: ``keys`` (S16 text hashes), ``vectors`` (float32, n x dim) and
#: ``checksum`` (:func:`shard_checksum` of both). Shards of another format are misses.
SHARD_FORMAT = 2
_OLD_FORMAT = "an older cache format without a checksum"


def shard_checksum(keys: np.ndarray, vectors: np.ndarray) -> str:
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
        if checksum != shard_checksum(keys, vecs):
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
        np.savez(buf, keys=keys, vectors=vectors, checksum=np.asarray(shard_checksum(keys, vectors)))
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
