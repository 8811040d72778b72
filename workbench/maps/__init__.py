"""2-D maps of prompt embeddings: PCA, t-SNE (openTSNE) and UMAP, cached on disk, with placement.

A :class:`Map` (:mod:`workbench.maps.map`) holds the 2-D coordinates of a set of reference
embeddings and can *place* new embeddings on the same picture ("where does my prompt land").
:func:`project` (:mod:`workbench.maps.projection`) computes maps and caches them in
``cache_dir("maps")`` keyed by a hash of the embeddings, the method, its parameters, the seed and
the library versions; a cache hit never imports umap or openTSNE.

umap-learn compiles its numba kernels for ~40 s on the first call in each process, and the
compilation holds the GIL. :class:`MapBuilder` (:mod:`workbench.maps.builder`) therefore hands out
a cached (or PCA) map at once and computes UMAP/t-SNE in a **separate process** in the background.

Only numpy is imported at module level; scikit-learn, openTSNE and umap are imported by the
functions that need them.
"""
from __future__ import annotations

from workbench.errors import MapTimeoutError
from workbench.maps.builder import MapBuilder
from workbench.maps.map import Map
from workbench.maps.projection import METHODS, cached_map, default_map_params, default_params, project

__all__ = [
    "Map",
    "default_map_params",
    "MapBuilder",
    "MapTimeoutError",
    "METHODS",
    "project",
    "cached_map",
    "default_params",
]
