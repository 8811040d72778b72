"""The :class:`Map` object: 2-D coordinates of a set of reference embeddings, with a way to
*place* new embeddings on the same picture ("where does my prompt land"), saved without pickle.

Only numpy is imported at module level.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import MapError
from workbench.safeio import short

__all__ = ["FORMAT_VERSION", "Map", "as_embeddings", "single_blas_thread", "unit_rows"]

#: version of the map file format (and part of every cache key)
FORMAT_VERSION = 1


def as_embeddings(embeddings: Any, *, name: str = "embeddings") -> np.ndarray:
    """Return ``embeddings`` as a C-contiguous float32 (n, d) array or raise a clear MapError."""
    try:
        X = np.asarray(embeddings)
    except Exception as exc:  # ragged lists etc.
        raise MapError(f"{name} could not be read as a 2-D numeric array: {exc}") from None
    if X.dtype == object or not np.issubdtype(X.dtype, np.number):
        raise MapError(f"{name} must be numeric, got dtype {X.dtype}; pass the (n, d) array "
                       "returned by Embedder.encode/embed")
    if X.ndim != 2:
        raise MapError(f"{name} must be a 2-D array of shape (n_prompts, dim), got shape "
                       f"{X.shape}; for a single prompt use X[None, :]")
    if X.shape[0] < 3:
        raise MapError(f"{name} has {X.shape[0]} rows; a map needs at least 3 points")
    if X.shape[1] < 2:
        raise MapError(f"{name} has dimension {X.shape[1]}; a 2-D map needs dim >= 2")
    X = np.ascontiguousarray(X, dtype=np.float32)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise MapError(f"{name} contain NaN or inf in {bad.sum()} row(s), first at row(s) "
                       f"{rows[:5].tolist()}; re-embed those prompts or drop them")
    return X


class Map:
    """2-D coordinates of a set of embeddings, with a way to place new points on them.

    Parameters
    ----------
    coords : array of shape (n, 2)
        The map coordinates (stored as float32).
    method : str
        ``"pca"``, ``"tsne"``, ``"umap"`` or the class name of a custom reducer.
    params : dict
        The parameters the map was computed with (JSON-serialisable).
    key : str or None
        The cache key, or ``None`` for uncached maps.
    embeddings : array of shape (n, d) or None
        The reference embeddings; needed by :meth:`place` (kNN placement).
    seed : int or None
        The random seed used.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 8)).astype("float32")
    >>> from workbench.maps import project
    >>> m = project(X, method="pca", cache=False)
    >>> m.coords.shape, m.place(X[:1]).shape
    ((50, 2), (1, 2))
    """

    def __init__(self, coords: Any, method: str, params: Mapping[str, Any] | None = None, *,
                 key: str | None = None, embeddings: Any = None, seed: int | None = None,
                 pca: tuple[np.ndarray, np.ndarray] | None = None, native: Any = None,
                 from_cache: bool = False) -> None:
        coords = np.ascontiguousarray(np.asarray(coords, dtype=np.float32))
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise MapError(f"map coordinates must have shape (n, 2), got {coords.shape}")
        self.coords = coords
        self.method = str(method)
        self.params = dict(params or {})
        self.key = key
        self.seed = seed
        self.from_cache = from_cache
        self.embeddings: np.ndarray | None = None
        if embeddings is not None:
            self.embeddings = np.ascontiguousarray(np.asarray(embeddings, dtype=np.float32))
            if self.embeddings.ndim != 2 or len(self.embeddings) != len(coords):
                raise MapError(f"reference embeddings of shape {self.embeddings.shape} do not "
                               f"match {len(coords)} map points")
        self._pca = pca  # (mean (d,), components (2, d)) for an exact linear transform
        self._native = native  # fitted reducer with .transform, only within this process
        self._unit_ref: np.ndarray | None = None

    # -- basic protocol ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.coords)

    def __repr__(self) -> str:
        where = ", from cache" if self.from_cache else ""
        return f"Map(method={self.method!r}, n={len(self)}, params={self.params}{where})"

    @property
    def x(self) -> np.ndarray:
        """First coordinate of every point."""
        return self.coords[:, 0]

    @property
    def y(self) -> np.ndarray:
        """Second coordinate of every point."""
        return self.coords[:, 1]

    @property
    def can_place_natively(self) -> bool:
        """Whether :meth:`place` can use the method's own transform (PCA, or a fitted model)."""
        return self._pca is not None or self._native is not None

    # -- placing new points -----------------------------------------------------------------
    def place(self, new_embeddings: Any, *, how: str = "auto", k: int = 10,
              temperature: float = 0.05) -> np.ndarray:
        """Place new embeddings on this map.

        Parameters
        ----------
        new_embeddings : array of shape (m, d) or (d,)
            Embeddings of the new prompts, from the same embedder as the map.
        how : {"auto", "knn", "native"}
            ``"native"``: PCA's exact linear transform, or the openTSNE/UMAP/custom reducer's
            own ``transform`` (only for maps fitted in this process; UMAP's first transform
            call compiles more numba kernels and takes seconds). ``"knn"``: a weighted average
            of the map positions of the ``k`` most cosine-similar reference points (about a
            millisecond per point on 5,000 points). ``"auto"``: native when available (PCA
            always; UMAP/t-SNE fitted in this process), kNN everywhere else, including maps
            loaded from disk or cache and maps computed by :class:`MapBuilder`.
        k : int
            Number of neighbours for kNN placement.
        temperature : float
            Softness of the similarity weights ``exp((sim - max_sim) / temperature)``; smaller
            values pull a point harder towards its single nearest neighbour. A new point that
            equals a reference embedding lands exactly on it.

        Returns
        -------
        numpy.ndarray of shape (m, 2), float32
        """
        Q = np.asarray(new_embeddings, dtype=np.float32)
        if Q.ndim == 1:
            Q = Q[None, :]
        if Q.ndim != 2:
            raise MapError(f"new embeddings must have shape (m, d) or (d,), got {Q.shape}")
        dim = self._dim()
        if dim is not None and Q.shape[1] != dim:
            raise MapError(f"new embeddings have dimension {Q.shape[1]} but the map was built "
                           f"from dimension {dim}; embed them with the same model")
        if not np.isfinite(Q).all():
            raise MapError("new embeddings contain NaN or inf")
        if len(Q) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        how = str(how).lower()
        if how not in ("auto", "knn", "native"):
            raise MapError(f"unknown placement how={short(how)}; use 'auto', 'knn' or 'native'")
        if how == "native" or (how == "auto" and self.can_place_natively):
            return self._place_native(Q)
        return self._place_knn(Q, k=k, temperature=temperature)

    def _dim(self) -> int | None:
        if self.embeddings is not None:
            return int(self.embeddings.shape[1])
        if self._pca is not None:
            return int(self._pca[0].shape[0])
        return None

    def _place_native(self, Q: np.ndarray) -> np.ndarray:
        if self._pca is not None:
            mean, components = self._pca
            if self.params.get("metric") == "cosine":
                Q = unit_rows(Q)
            with single_blas_thread(len(Q) <= 64):
                return ((Q - mean) @ components.T).astype(np.float32)
        if self._native is not None and hasattr(self._native, "transform"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = self._native.transform(Q)
            return np.asarray(out, dtype=np.float32).reshape(len(Q), 2)
        raise MapError(
            f"this {self.method} map has no native transform here (maps loaded from disk or "
            "cache, sklearn's t-SNE and reducers without .transform keep no fitted model in "
            "this process); use how='knn' or how='auto'")

    def _place_knn(self, Q: np.ndarray, *, k: int, temperature: float) -> np.ndarray:
        if self.embeddings is None:
            raise MapError("this map has no reference embeddings, so it cannot place new points "
                           "by kNN; load it with Map.load(path, embeddings=X) or save it with "
                           "include_embeddings=True")
        if k < 1:
            raise MapError(f"k must be >= 1, got {k}")
        if temperature <= 0:
            raise MapError(f"temperature must be > 0, got {temperature}")
        if self._unit_ref is None:
            self._unit_ref = unit_rows(self.embeddings)
        R = self._unit_ref
        k = min(int(k), len(R))
        with single_blas_thread(len(Q) <= 64):
            sims = unit_rows(Q) @ R.T  # (m, n) cosine similarities
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(R) else \
            np.broadcast_to(np.arange(len(R)), (len(Q), len(R)))
        top = np.take_along_axis(sims, idx, axis=1)
        w = np.exp((top - top.max(axis=1, keepdims=True)) / temperature)
        exact = top >= 1.0 - 1e-6
        has_exact = exact.any(axis=1)
        w[has_exact] = exact[has_exact].astype(np.float32)  # duplicates land exactly on them
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("mk,mkc->mc", w, self.coords[idx]).astype(np.float32)

    # -- persistence --------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        """The JSON header saved with the map (format, method, params, key, seed, n)."""
        return {"format": FORMAT_VERSION, "method": self.method, "params": self.params,
                "key": self.key, "seed": self.seed, "n": len(self)}

    def save(self, path: str | os.PathLike, *, include_embeddings: bool = True) -> Path:
        """Save to ``.npz`` (arrays) with JSON metadata; never pickle.

        The fitted UMAP/openTSNE model is not saved; a loaded map places new points by kNN.
        """
        from workbench._paths import atomic_write_bytes

        path = Path(path)
        if path.suffix != ".npz":
            raise MapError(f"maps are saved as .npz files, got {short(path.name)}")
        arrays: dict[str, np.ndarray] = {"coords": self.coords,
                                         "meta": np.array(json.dumps(self.metadata(), default=repr))}
        if include_embeddings and self.embeddings is not None:
            arrays["embeddings"] = self.embeddings
        if self._pca is not None:
            arrays["pca_mean"], arrays["pca_components"] = self._pca
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, embeddings: Any = None) -> Map:
        """Load a map written by :meth:`save` (``allow_pickle=False``).

        Parameters
        ----------
        embeddings : array, optional
            Reference embeddings to attach when the file was saved without them.
        """
        path = Path(path)
        if not path.exists():
            raise MapError(f"map file {str(path)!r} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                coords = z["coords"]
                ref = z["embeddings"] if "embeddings" in z.files else None
                pca = (z["pca_mean"], z["pca_components"]) if "pca_mean" in z.files else None
        except MapError:
            raise
        except Exception as exc:
            raise MapError(f"{str(path)!r} is not a readable map file ({type(exc).__name__}: "
                           f"{short(str(exc), 200)[1:-1]}); recompute it with project(...)") from None
        if embeddings is not None:
            ref = as_embeddings(embeddings)
        return cls(coords, meta.get("method", "?"), meta.get("params"), key=meta.get("key"),
                   seed=meta.get("seed"), embeddings=ref, pca=pca, from_cache=True)


_BLAS_CONTROLLER: Any = None



def single_blas_thread(active: bool):
    """Run a small matrix product on one BLAS thread.

    A (1, d) x (d, n) product is memory-bound; OpenBLAS's thread pool only adds hand-off cost,
    and on a busy 2-core machine that cost dominates (measured: 45 ms threaded vs 2.5 ms on one
    thread for 5,000 x 384). Uses threadpoolctl (a scikit-learn dependency) when present.
    """
    global _BLAS_CONTROLLER
    import contextlib

    if not active:
        return contextlib.nullcontext()
    if _BLAS_CONTROLLER is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        except Exception:  # threadpoolctl missing or failing: just run threaded
            _BLAS_CONTROLLER = False
    if _BLAS_CONTROLLER is False:
        return contextlib.nullcontext()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows of ``X`` scaled to unit length (near-zero rows are divided by 1e-12, not by zero)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)

