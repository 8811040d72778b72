"""Projection: :func:`project` computes PCA, t-SNE (openTSNE) and UMAP maps of embeddings and
caches them in ``cache_dir("maps")`` keyed by a hash of the embeddings, the method, its parameters,
the seed and the library versions; a cache hit never imports umap or openTSNE.
:func:`default_params` is the full parameter set of a method, :func:`cached_map` a cache lookup.

scikit-learn, openTSNE and umap are imported by the functions that need them.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import MapError, MissingDependencyError
from workbench.maps.map import (
    FORMAT_VERSION,
    Map,
    as_embeddings,
    single_blas_thread,
    unit_rows,
)
from workbench.safeio import short

__all__ = [
    "default_map_params",
    "METHODS",
    "cache_path",
    "cached_map",
    "check_method_name",
    "check_sizes",
    "default_params",
    "project",
]

#: The built-in projection methods.
METHODS = ("pca", "tsne", "umap")

#: parameters that do not change the result and are left out of the cache key
_NOT_IN_KEY = frozenset({"verbose", "n_jobs"})
#: default number of openTSNE threads. On 2 shared cores, openTSNE's thread pool slows down badly
#: when another process competes (measured: 500 points 4 s with 1 thread, 20-40 s with 2), so
#: one thread is the robust default; pass ``n_jobs=2`` on an idle machine.
_DEFAULT_JOBS = 1


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
    return f"workbench={__version__};{dist}={lib};format={FORMAT_VERSION}"


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
    method = check_method_name(method)
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


def check_method_name(method: str) -> str:
    """The canonical name (``"pca"``, ``"tsne"`` or ``"umap"``) of ``method``, or a MapError."""
    m = str(method).lower().replace("-", "")
    if m not in METHODS:
        raise MapError(f"unknown map method {short(method)}; use one of {', '.join(METHODS)} or "
                       "pass an object with fit_transform (and optionally transform)")
    return m


def default_map_params(method: str, n: int) -> dict[str, Any]:
    """Projection parameters for ``n`` points: the library defaults, shrunk for small sets.

    t-SNE's perplexity must stay below ``n / 3`` and UMAP's ``n_neighbors`` below ``n``.

    Examples
    --------
    >>> default_map_params("tsne", 31), default_map_params("umap", 10), default_map_params("pca", 5)
    ({'perplexity': 10.0}, {'n_neighbors': 5}, {})
    """
    m = check_method_name(method)
    if m == "tsne" and n <= 90:
        return {"perplexity": float(max(1, (n - 1) // 3))}
    if m == "umap" and n <= 15:
        return {"n_neighbors": max(2, n // 2)}
    return {}


def cache_path(key: str) -> Path:
    """Where the cached map with cache key ``key`` lives."""
    from workbench._paths import cache_dir

    return cache_dir("maps") / f"{key}.npz"


# --------------------------------------------------------------------------------------------


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
    X = as_embeddings(embeddings)
    m = check_method_name(method)
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
    path = cache_path(key)
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
    X = as_embeddings(embeddings)
    if not isinstance(method, str):
        return _project_object(X, method, seed=seed, cache=cache)
    m = check_method_name(method)
    full = default_params(m, metric=metric, **params)
    check_sizes(m, len(X), full)
    key = _map_key(_hash_array(X), m, full, seed) if seed is not None else None
    if cache and key is not None:
        hit = _load_cached(key, X)
        if hit is not None:
            return hit
    coords, extra = _compute(X, m, full, seed=seed, verbose=verbose)
    result = Map(coords, m, _jsonable(full), key=key, embeddings=X, seed=seed, **extra)
    if cache and key is not None:
        try:
            result.save(cache_path(key), include_embeddings=False)
        except OSError as exc:  # a read-only cache must not break the map itself
            warnings.warn(f"could not write the map cache: {exc}", stacklevel=2)
    return result


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(params), default=repr))


def check_sizes(method: str, n: int, params: Mapping[str, Any]) -> None:
    """Raise a MapError naming a smaller value when ``n`` points are too few for the t-SNE
    perplexity or the UMAP n_neighbors in ``params``."""
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
    Z = unit_rows(X) if params.get("metric") == "cosine" else X
    Z = Z.astype(np.float64)
    mean = Z.mean(axis=0)
    C = Z - mean
    # eigen-decomposition of the (d, d) covariance: fast for n >> d and deterministic.
    # One BLAS thread: 60 ms for 5,000 x 384 where OpenBLAS's pool took 1.4 s on a busy machine
    with single_blas_thread(True):
        cov = C.T @ C / max(1, len(C) - 1)
        vals, vecs = np.linalg.eigh(cov)
    comps = vecs[:, ::-1][:, :2].T  # (2, d), largest variance first
    # fix the sign so results do not flip between platforms: largest |loading| positive
    signs = np.sign(comps[np.arange(2), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    with single_blas_thread(True):
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
        result.save(cache_path(key), include_embeddings=False)
    return result


# --------------------------------------------------------------------------------------------
