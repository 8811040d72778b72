"""Helpers the explore models share: bundle embeddings, shared map builders, method names (the
small-set projection defaults are :func:`workbench.maps.default_map_params`, re-exported). No
Panel, bokeh or ipywidgets here."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from workbench.errors import MapError
from workbench.maps.projection import check_method_name, default_map_params

__all__ = ["COLOR_BY", "METHODS", "PRETTY", "bundle_embeddings", "default_map_params",
           "is_session_model", "method_name", "shared_builder"]

METHODS = ("pca", "tsne", "umap")
COLOR_BY = ("category", "best_expert", "router_error", "discovered")
#: display names of the projections
PRETTY = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def bundle_embeddings(bundle: Any) -> np.ndarray:
    """``bundle.embeddings`` (or the embedder's embeddings of ``bundle.prompts``), checked."""
    X = getattr(bundle, "embeddings", None)
    if X is None:
        embedder = getattr(bundle, "embedder", None)
        if embedder is None:
            raise MapError("the bundle has neither embeddings nor an embedder; build it with "
                           "workbench.demo.build_demo_bundle()")
        X = embedder.embed(bundle.prompts)
    X = np.asarray(X, dtype=np.float32)
    if len(X) != len(bundle.prompts):
        raise MapError(f"the bundle has {len(X)} embeddings for {len(bundle.prompts)} prompts")
    return X


def is_session_model(obj: Any) -> bool:
    """A session model (ClusterMapModel, MappingEditorModel) rather than a plain object."""
    import param

    return isinstance(obj, param.Parameterized) and "version" in obj.param


# One MapBuilder per embeddings and seed, shared by all sessions of the process (maps are
# read-only; two sessions must not compute the same UMAP twice). Bounded: the least recently used
# builder goes when a ninth set of embeddings arrives (its maps stay in the on-disk cache).
MAX_SHARED_BUILDERS = 8
_BUILDERS: OrderedDict[str, Any] = OrderedDict()
_BUILDERS_LOCK = threading.Lock()


def shared_builder(X: np.ndarray, seed: int | None) -> Any:
    """One :class:`~workbench.maps.MapBuilder` per embeddings and seed, shared by all sessions
    (maps are read-only), so two browser sessions never compute the same UMAP twice."""
    from workbench.maps import MapBuilder

    h = hashlib.blake2b(np.ascontiguousarray(X).data, digest_size=16).hexdigest()
    key = f"{h}-{X.shape}-{seed}"
    with _BUILDERS_LOCK:
        if key in _BUILDERS:
            _BUILDERS.move_to_end(key)
        else:
            _BUILDERS[key] = MapBuilder(X, seed=seed)
            while len(_BUILDERS) > MAX_SHARED_BUILDERS:
                _BUILDERS.popitem(last=False)
        return _BUILDERS[key]


def method_name(method: str) -> str:
    """``"t-SNE"`` -> ``"tsne"``; unknown methods raise :class:`~workbench.errors.MapError`."""
    return check_method_name(method)
