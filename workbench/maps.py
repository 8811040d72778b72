"""2-D maps of prompt embeddings: PCA, t-SNE (openTSNE) and UMAP, cached on disk, with placement.

A :class:`Map` holds the 2-D coordinates of a set of reference embeddings and can *place* new
embeddings on the same picture ("where does my prompt land"). :func:`project` computes maps and
caches them in ``cache_dir("maps")`` keyed by a hash of the embeddings, the method, its parameters,
the seed and the library versions; a cache hit never imports umap or openTSNE.

umap-learn compiles its numba kernels for ~40 s on the first call in each process, and the
compilation holds the GIL. :class:`MapBuilder` therefore hands out a cached (or PCA) map at once
and computes UMAP/t-SNE in a **separate process** in the background.

Only numpy is imported at module level; scikit-learn, openTSNE and umap are imported by the
functions that need them.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import threading
import traceback
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import MapError, MapTimeoutError, MissingDependencyError  # noqa: F401  (MapTimeoutError re-exported)
from workbench.safeio import short

__all__ = [
    "Map",
    "MapBuilder",
    "MapTimeoutError",
    "METHODS",
    "project",
    "cached_map",
    "default_params",
]

#: The built-in projection methods.
METHODS = ("pca", "tsne", "umap")

_FORMAT_VERSION = 1
#: parameters that do not change the result and are left out of the cache key
_NOT_IN_KEY = frozenset({"verbose", "n_jobs"})
#: default number of openTSNE threads. On 2 shared cores, openTSNE's thread pool slows down badly
#: when another process competes (measured: 500 points 4 s with 1 thread, 20-40 s with 2), so
#: one thread is the robust default; pass ``n_jobs=2`` on an idle machine.
_DEFAULT_JOBS = 1


# --------------------------------------------------------------------------------------------
# validation and keys
# --------------------------------------------------------------------------------------------
def _as_embeddings(embeddings: Any, *, name: str = "embeddings") -> np.ndarray:
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


def _hash_array(X: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{X.shape}|{X.dtype.str}|".encode())
    h.update(np.ascontiguousarray(X).data)
    return h.hexdigest()


def _lib_version(method: str) -> str:
    """Version string of the library behind ``method``, read without importing it."""
    from importlib import metadata

    from workbench import __version__

    dist = {"umap": "umap-learn", "tsne": "openTSNE", "pca": "numpy"}.get(method)
    lib = "?"
    if dist:
        try:
            lib = metadata.version(dist)
        except metadata.PackageNotFoundError:
            lib = "missing"
    return f"workbench={__version__};{dist}={lib};format={_FORMAT_VERSION}"


def _map_key(emb_hash: str, method: str, params: Mapping[str, Any], seed: int | None) -> str:
    """``{embeddings hash}-{method}-{hash of params, seed and library versions}``.

    The readable prefix lets :func:`cached_map` find every cached map of one set of embeddings.
    """
    keyed = {k: params[k] for k in sorted(params) if k not in _NOT_IN_KEY}
    blob = json.dumps(
        {"emb": emb_hash, "method": method, "params": keyed, "seed": seed,
         "lib": _lib_version(method)},
        sort_keys=True, default=repr,
    )
    label = method if method in METHODS else "custom"
    return f"{emb_hash}-{label}-{hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()}"


def default_params(method: str, *, metric: str = "cosine", **params: Any) -> dict[str, Any]:
    """The full parameter set used for ``method``: defaults updated with ``params``.

    Examples
    --------
    >>> default_params("umap")["n_neighbors"]
    15
    """
    method = _check_method_name(method)
    if method == "pca":
        base: dict[str, Any] = {"metric": metric}
    elif method == "tsne":
        base = {"perplexity": 30.0, "metric": metric, "n_iter": 500, "n_jobs": _DEFAULT_JOBS}
    else:  # umap
        base = {"n_neighbors": 15, "min_dist": 0.1, "metric": metric, "n_jobs": 1}
    unknown = set(params) - set(base) - {"verbose"}
    if method == "pca" and unknown:
        raise MapError(f"PCA takes no parameters besides metric; got {sorted(unknown)}")
    base.update(params)
    return base


def _check_method_name(method: str) -> str:
    m = str(method).lower().replace("-", "")
    if m not in METHODS:
        raise MapError(f"unknown map method {short(method)}; use one of {', '.join(METHODS)} or "
                       "pass an object with fit_transform (and optionally transform)")
    return m


def _cache_path(key: str) -> Path:
    from workbench._paths import cache_dir

    return cache_dir("maps") / f"{key}.npz"


# --------------------------------------------------------------------------------------------
# the Map object
# --------------------------------------------------------------------------------------------
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
                Q = _unit_rows(Q)
            with _single_blas_thread(len(Q) <= 64):
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
            self._unit_ref = _unit_rows(self.embeddings)
        R = self._unit_ref
        k = min(int(k), len(R))
        with _single_blas_thread(len(Q) <= 64):
            sims = _unit_rows(Q) @ R.T  # (m, n) cosine similarities
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
    def _meta(self) -> dict[str, Any]:
        return {"format": _FORMAT_VERSION, "method": self.method, "params": self.params,
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
                                         "meta": np.array(json.dumps(self._meta(), default=repr))}
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
            ref = _as_embeddings(embeddings)
        return cls(coords, meta.get("method", "?"), meta.get("params"), key=meta.get("key"),
                   seed=meta.get("seed"), embeddings=ref, pca=pca, from_cache=True)


_BLAS_CONTROLLER: Any = None


def _single_blas_thread(active: bool):
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


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


# --------------------------------------------------------------------------------------------
# projection
# --------------------------------------------------------------------------------------------
def cached_map(embeddings: Any, method: str = "umap", *, seed: int | None = 0,
               metric: str = "cosine", any_params: bool = False, **params: Any) -> Map | None:
    """Return the cached map for these inputs, or ``None``; never computes nor imports umap.

    With ``any_params=True``, falls back to the most recently written cached map of ``method``
    for these embeddings whatever its parameters (e.g. a UMAP with ``n_neighbors=30`` warmed in
    an earlier session).
    """
    X = _as_embeddings(embeddings)
    m = _check_method_name(method)
    full = default_params(m, metric=metric, **params)
    if seed is None:
        return None
    emb_hash = _hash_array(X)
    hit = _load_cached(_map_key(emb_hash, m, full, seed), X)
    if hit is not None or not any_params:
        return hit
    from workbench._paths import cache_dir

    paths = sorted(cache_dir("maps").glob(f"{emb_hash}-{m}-*.npz"),
                   key=lambda p: p.stat().st_mtime, reverse=True)
    for path in paths:
        hit = _load_cached(path.stem, X)
        if hit is not None and hit.seed == seed and hit.params.get("metric") == metric:
            return hit
    return None


def _load_cached(key: str, X: np.ndarray) -> Map | None:
    path = _cache_path(key)
    if not path.exists():
        return None
    try:
        m = Map.load(path, embeddings=X)
    except MapError as exc:
        warnings.warn(f"ignoring a broken map cache file ({exc})", stacklevel=3)
        return None
    if len(m) != len(X):
        return None
    return m


def project(embeddings: Any, method: Any = "pca", *, seed: int | None = 0,
            cache: bool = True, metric: str = "cosine", verbose: bool = False,
            **params: Any) -> Map:
    """Project embeddings to 2-D with PCA, t-SNE or UMAP (or any reducer object).

    Parameters
    ----------
    embeddings : array of shape (n, d)
        Prompt embeddings (e.g. from :class:`workbench.Embedder`).
    method : {"pca", "tsne", "umap"} or object
        The projection. t-SNE uses openTSNE (falls back to scikit-learn's TSNE when openTSNE
        is missing), UMAP uses umap-learn. Any object with ``fit_transform`` (and optionally
        ``transform``) is accepted, BERTopic-style.
    seed : int or None
        Random seed; the same seed gives the same coordinates. ``None`` disables the cache.
    cache : bool
        Load from / store to ``cache_dir("maps")``. A cache hit does not import umap/openTSNE.
    metric : str
        Distance in embedding space (``"cosine"`` by default; PCA then works on unit vectors).
    verbose : bool
        Show the library's progress output (tqdm bars for UMAP, iterations for t-SNE).
    **params
        Method parameters: UMAP ``n_neighbors=15, min_dist=0.1, n_jobs=1``; t-SNE
        ``perplexity=30, n_iter=500, n_jobs=1`` and any other openTSNE.TSNE argument.

    Returns
    -------
    Map

    Raises
    ------
    MapError
        Wrong shape, NaN, too few points for the perplexity/n_neighbors, unknown method.
    MissingDependencyError
        umap-learn (or openTSNE and scikit-learn) is not installed.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(100, 16)).astype("float32")
    >>> project(X, "pca", cache=False).coords.shape
    (100, 2)
    """
    X = _as_embeddings(embeddings)
    if not isinstance(method, str):
        return _project_object(X, method, seed=seed, cache=cache)
    m = _check_method_name(method)
    full = default_params(m, metric=metric, **params)
    _check_sizes(m, len(X), full)
    key = _map_key(_hash_array(X), m, full, seed) if seed is not None else None
    if cache and key is not None:
        hit = _load_cached(key, X)
        if hit is not None:
            return hit
    coords, extra = _compute(X, m, full, seed=seed, verbose=verbose)
    result = Map(coords, m, _jsonable(full), key=key, embeddings=X, seed=seed, **extra)
    if cache and key is not None:
        try:
            result.save(_cache_path(key), include_embeddings=False)
        except OSError as exc:  # a read-only cache must not break the map itself
            warnings.warn(f"could not write the map cache: {exc}", stacklevel=2)
    return result


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params), default=repr))


def _check_sizes(method: str, n: int, params: Mapping[str, Any]) -> None:
    if method == "tsne":
        perplexity = float(params["perplexity"])
        if perplexity <= 0:
            raise MapError(f"perplexity must be > 0, got {perplexity}")
        if n <= 3 * perplexity:
            raise MapError(f"t-SNE with perplexity={perplexity:g} needs more than "
                           f"{int(3 * perplexity)} points, got {n}; pass a smaller perplexity, "
                           f"e.g. perplexity={max(1, (n - 1) // 3)}")
    elif method == "umap":
        nn = int(params["n_neighbors"])
        if nn < 2:
            raise MapError(f"n_neighbors must be >= 2, got {nn}")
        if n <= nn:
            raise MapError(f"UMAP with n_neighbors={nn} needs more than {nn} points, got {n}; "
                           f"pass a smaller n_neighbors, e.g. n_neighbors={max(2, n // 2)}")


def _compute(X: np.ndarray, method: str, params: dict[str, Any], *, seed: int | None,
             verbose: bool) -> tuple[np.ndarray, dict[str, Any]]:
    if method == "pca":
        return _pca(X, params)
    if method == "tsne":
        return _tsne(X, params, seed=seed, verbose=verbose)
    return _umap(X, params, seed=seed, verbose=verbose)


def _pca(X: np.ndarray, params: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    Z = _unit_rows(X) if params.get("metric") == "cosine" else X
    Z = Z.astype(np.float64)
    mean = Z.mean(axis=0)
    C = Z - mean
    # eigen-decomposition of the (d, d) covariance: fast for n >> d and deterministic.
    # One BLAS thread: 60 ms for 5,000 x 384 where OpenBLAS's pool took 1.4 s on a busy machine
    with _single_blas_thread(True):
        cov = C.T @ C / max(1, len(C) - 1)
        vals, vecs = np.linalg.eigh(cov)
    comps = vecs[:, ::-1][:, :2].T  # (2, d), largest variance first
    # fix the sign so results do not flip between platforms: largest |loading| positive
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    with _single_blas_thread(True):
        coords = (C @ comps.T).astype(np.float32)
    return coords, {"pca": (mean.astype(np.float32), comps.astype(np.float32))}


def _tsne(X: np.ndarray, params: dict[str, Any], *, seed: int | None,
          verbose: bool) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        import openTSNE
    except ImportError:
        openTSNE = None
    kw = dict(params)
    if openTSNE is None:
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            raise MissingDependencyError(
                "t-SNE maps need the package 'openTSNE' (or scikit-learn as a fallback), which "
                "is not installed. Install it with: pip install coe-workbench (it is a core "
                "dependency) or pip install openTSNE") from None
        kw.pop("n_iter", None)
        model = TSNE(n_components=2, random_state=seed, init="pca", verbose=int(verbose),
                     **kw)
        return np.asarray(model.fit_transform(X), dtype=np.float32), {}
    try:
        model = openTSNE.TSNE(n_components=2, random_state=seed, verbose=verbose, **kw)
    except TypeError as exc:
        raise MapError(f"bad t-SNE parameter: {exc}") from None
    emb = model.fit(X)
    return np.asarray(emb, dtype=np.float32), {"native": emb}


def _umap(X: np.ndarray, params: dict[str, Any], *, seed: int | None,
          verbose: bool) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        import umap
    except ImportError:
        raise MissingDependencyError(
            "UMAP maps need the package 'umap-learn', which is not installed. Install it with: "
            "pip install coe-workbench (it is a core dependency) or pip install umap-learn"
        ) from None
    kw = dict(params)
    if seed is not None:
        kw["n_jobs"] = 1  # umap is single-threaded when seeded anyway; say so to silence it
    try:
        model = umap.UMAP(n_components=2, random_state=seed, verbose=verbose, **kw)
    except TypeError as exc:
        raise MapError(f"bad UMAP parameter: {exc}") from None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*")
        warnings.filterwarnings("ignore", message=".*gradient function is not yet implemented.*")
        coords = model.fit_transform(X)
    return np.asarray(coords, dtype=np.float32), {"native": model}


def _project_object(X: np.ndarray, reducer: Any, *, seed: int | None, cache: bool) -> Map:
    if not callable(getattr(reducer, "fit_transform", None)):
        raise MapError(f"method must be one of {', '.join(METHODS)} or an object with "
                       f"fit_transform, got {type(reducer).__name__}")
    name = type(reducer).__name__
    params: dict[str, Any] = {}
    key = None
    if callable(getattr(reducer, "get_params", None)):
        try:
            params = _jsonable(reducer.get_params())
        except Exception:
            params = {}
        if params and cache and seed is not None:
            key = _map_key(_hash_array(X), f"{type(reducer).__module__}.{name}", params, seed)
            hit = _load_cached(key, X)
            if hit is not None:
                return hit
    coords = np.asarray(reducer.fit_transform(X), dtype=np.float32)
    if coords.shape != (len(X), 2):
        raise MapError(f"{name}.fit_transform returned shape {coords.shape}, expected "
                       f"({len(X)}, 2); set n_components=2")
    native = reducer if callable(getattr(reducer, "transform", None)) else None
    result = Map(coords, name, params, key=key, embeddings=X, seed=seed, native=native)
    if key is not None:
        result.save(_cache_path(key), include_embeddings=False)
    return result


# --------------------------------------------------------------------------------------------
# background builder
# --------------------------------------------------------------------------------------------
def _warm_worker(conn: Any, X: np.ndarray, method: str, seed: int | None, metric: str,
                 params: dict[str, Any], cache: bool, cache_root: str | None) -> None:
    """Run in a spawned process: compute the map, write the cache, send coords back."""
    try:
        if cache_root:
            os.environ["COE_WORKBENCH_CACHE"] = cache_root
        m = project(X, method, seed=seed, cache=cache, metric=metric, **params)
        conn.send(("ok", m.coords, m._meta()))
    except BaseException as exc:  # noqa: BLE001 - everything must come back to the parent
        try:
            conn.send(("error", type(exc).__name__, str(exc), traceback.format_exc()))
        except Exception:
            pass
    finally:
        conn.close()


class _Job:
    def __init__(self, method: str) -> None:
        self.method = method
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.process: Any = None


class MapBuilder:
    """Hand out a map at once, compute the slow ones in a background process.

    ``first()`` returns a cached UMAP/t-SNE map when one exists, else a PCA map (milliseconds).
    ``warm("umap")`` starts a **separate process** (numba compilation holds the GIL and would
    freeze a notebook or app for ~40 s) that computes the map and writes the disk cache;
    ``ready``, ``result`` and ``on_ready`` hand it back.

    Parameters
    ----------
    embeddings : array of shape (n, d)
    cache : bool
        Use the disk cache (``cache_dir("maps")``).
    seed : int
        Random seed for every map.
    metric : str
        Distance in embedding space.

    Examples
    --------
    >>> builder = MapBuilder(X)                 # doctest: +SKIP
    >>> m = builder.first()                     # cached UMAP, else PCA, at once   # doctest: +SKIP
    >>> builder.warm("umap")                    # doctest: +SKIP
    >>> builder.on_ready(lambda m: print(m))    # doctest: +SKIP
    >>> umap_map = builder.result("umap", timeout=120)   # doctest: +SKIP
    """

    def __init__(self, embeddings: Any, *, cache: bool = True, seed: int | None = 0,
                 metric: str = "cosine") -> None:
        self.embeddings = _as_embeddings(embeddings)
        self.cache = cache
        self.seed = seed
        self.metric = metric
        self._jobs: dict[str, _Job] = {}
        self._callbacks: list[tuple[Callable[[Map], Any], Callable[[Exception], Any] | None,
                                    str | None]] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = {m: ("ready" if j.future.done() else "running") for m, j in self._jobs.items()}
        return f"MapBuilder(n={len(self.embeddings)}, jobs={state})"

    # -- immediate maps -----------------------------------------------------------------------
    def cached(self, method: str, **params: Any) -> Map | None:
        """The cached map of ``method`` with these params, or ``None`` (no umap import)."""
        if not self.cache:
            return None
        return cached_map(self.embeddings, method, seed=self.seed, metric=self.metric, **params)

    def first(self, prefer: Iterable[str] = ("umap", "tsne")) -> Map:
        """A map at once: a finished or cached map of a preferred method, else PCA.

        Looks, in order of ``prefer``, for a map finished by :meth:`warm` in this builder or a
        cached one with default parameters; then for a cached one with any parameters; then
        computes PCA (milliseconds, cached too). Never imports umap or openTSNE.
        """
        if isinstance(prefer, str):
            prefer = (prefer,)
        for method in prefer:
            job = self._jobs.get(_check_method_name(method))
            if job is not None and job.future.done() and job.future.exception() is None:
                return job.future.result()
            hit = self.cached(method)
            if hit is not None:
                return hit
        if self.cache:  # a map of a preferred method with other parameters is still better
            for method in prefer:
                hit = cached_map(self.embeddings, method, seed=self.seed, metric=self.metric,
                                 any_params=True)
                if hit is not None:
                    return hit
        return project(self.embeddings, "pca", seed=self.seed, cache=self.cache,
                       metric=self.metric)

    # -- background work ----------------------------------------------------------------------
    def warm(self, method: str = "umap", **params: Any) -> MapBuilder:
        """Start computing ``method`` in a separate process (no-op if cached or running).

        Returns ``self`` so calls chain: ``MapBuilder(X).warm("umap").first()``.
        """
        m = _check_method_name(method)
        metric = params.pop("metric", self.metric)
        full = default_params(m, metric=metric, **params)
        _check_sizes(m, len(self.embeddings), full)
        with self._lock:
            old = self._jobs.get(m)
            if old is not None and not old.future.done():
                return self
            job = _Job(m)
            self._jobs[m] = job
        hit = (cached_map(self.embeddings, m, seed=self.seed, metric=metric, **params)
               if self.cache else None)
        if hit is not None:
            self._finish(job, hit)
            return self
        import multiprocessing as mp

        from workbench._paths import cache_dir

        ctx = mp.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_warm_worker, name=f"coe-workbench-{m}-map", daemon=True,
            args=(send, self.embeddings, m, self.seed, metric, params, self.cache,
                  str(cache_dir().resolve())),
        )
        proc.start()
        send.close()
        job.process = proc
        threading.Thread(target=self._watch, args=(job, recv, proc), daemon=True,
                         name=f"coe-workbench-{m}-watch").start()
        return self

    def _watch(self, job: _Job, recv: Any, proc: Any) -> None:
        try:
            msg = recv.recv()
        except (EOFError, OSError):
            msg = None
        finally:
            recv.close()
        proc.join(timeout=30)
        if msg is None:
            err = MapError(f"the background {job.method} map process stopped without a result "
                           f"(exit code {proc.exitcode}); it may have run out of memory or been "
                           "killed. Call warm() again or use project(...) directly")
            self._fail(job, err)
        elif msg[0] == "ok":
            _, coords, meta = msg
            result = Map(coords, meta["method"], meta["params"], key=meta["key"],
                         seed=meta["seed"], embeddings=self.embeddings)
            self._finish(job, result)
        else:
            _, kind, text, tb = msg
            err = MapError(f"the background {job.method} map failed: {kind}: {text}")
            err.worker_traceback = tb  # type: ignore[attr-defined]
            self._fail(job, err)

    def _finish(self, job: _Job, result: Map) -> None:
        with self._lock:  # with on_ready's lock: each callback sees each result exactly once
            job.future.set_result(result)
            callbacks = list(self._callbacks)
        for cb, _, method in callbacks:
            if method in (None, job.method):
                self._call(cb, result)

    def _fail(self, job: _Job, err: Exception) -> None:
        with self._lock:
            job.future.set_exception(err)
            callbacks = list(self._callbacks)
        for _, on_error, method in callbacks:
            if on_error is not None and method in (None, job.method):
                self._call(on_error, err)

    @staticmethod
    def _call(fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:  # a failing callback must not kill the watcher
            warnings.warn(f"MapBuilder callback {fn!r} raised:\n{traceback.format_exc()}",
                          stacklevel=2)

    def ready(self, method: str = "umap") -> bool:
        """Whether the background map of ``method`` is finished (successfully or not)."""
        job = self._jobs.get(_check_method_name(method))
        return job is not None and job.future.done()

    def running(self) -> list[str]:
        """Methods still being computed in the background."""
        return [m for m, j in self._jobs.items() if not j.future.done()]

    def result(self, method: str = "umap", timeout: float | None = None) -> Map:
        """Wait for and return the background map of ``method``.

        Raises
        ------
        MapTimeoutError
            Not finished within ``timeout`` seconds (the work goes on; call again later).
        MapError
            The worker failed, or ``warm(method)`` was never called and nothing is cached.
        """
        m = _check_method_name(method)
        job = self._jobs.get(m)
        if job is None:
            hit = self.cached(m)
            if hit is not None:
                return hit
            raise MapError(f"no background {m} map: call warm({short(m)}) first")
        try:
            return job.future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise MapTimeoutError(f"the {m} map is not ready after {timeout} s; it is still "
                                  "computing in the background (check ready() or call result() "
                                  "again)") from None

    def on_ready(self, callback: Callable[[Map], Any], *, method: str | None = None,
                 on_error: Callable[[Exception], Any] | None = None) -> MapBuilder:
        """Call ``callback(map)`` when a background map (of ``method``, or any) is finished.

        Callbacks run in a background thread; in a Panel app schedule UI updates with
        ``pn.state.execute``. Maps already finished are handed over at once. ``on_error(exc)``
        receives failures.
        """
        m = _check_method_name(method) if method is not None else None
        with self._lock:
            self._callbacks.append((callback, on_error, m))
            done = [j for k, j in self._jobs.items() if j.future.done() and m in (None, k)]
        for job in done:
            exc = job.future.exception()
            if exc is None:
                self._call(callback, job.future.result())
            elif on_error is not None:
                self._call(on_error, exc)
        return self

    def close(self) -> None:
        """Stop background processes that are still running."""
        for job in self._jobs.values():
            proc = job.process
            if proc is not None and proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)

    def __enter__(self) -> MapBuilder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
