"""CoE Workbench: build, inspect and serve Compositions of Experts.

``import workbench`` is deliberately light: public names are resolved lazily (PEP 562), so torch,
transformers, umap, panel, plotly and scikit-learn are imported only by the functions that need
them.

Examples
--------
>>> import workbench as wb
>>> prompts = wb.load_demo_prompts()          # doctest: +SKIP
>>> X = wb.Embedder().embed(prompts)          # doctest: +SKIP
>>> m = wb.MapBuilder(X).first()              # doctest: +SKIP
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it: the objects a notebook user holds, and the errors
_LAZY: dict[str, str] = {
    # errors (light): every class of workbench.errors
    **{name: "workbench.errors" for name in (
        "WorkbenchError", "PromptSetError", "UnknownFormatError", "EmbedderError",
        "ModelNotFoundError", "MapError", "RouterError", "ScoresError", "MappingError",
        "InfeasibleBudgetError", "RegistryError", "ExpertError", "PlacementError", "GraphError",
        "MapTimeoutError", "DecomposeError", "DemoError", "ChatError", "FileBoxError",
        "UsageError", "TrustRemoteCodeWarning", "RouterNotFittedError", "PlotError",
        "MissingDependencyError", "BundleError", "RequestError")},
    "PromptSet": "workbench.prompts",
    "load_demo_prompts": "workbench.prompts",
    "Embedder": "workbench.embed",
    "Map": "workbench.maps",
    "MapBuilder": "workbench.maps",
    "CategoryRouter": "workbench.router",
    "DirectRouter": "workbench.router",
    "ExpertScores": "workbench.scores",
    "ModelRegistry": "workbench.registry",
    "CategoryExpertMap": "workbench.mapping",
    "optimize_mapping": "workbench.mapping",
    "pareto_frontier": "workbench.mapping",
    "ExpertSpec": "workbench.experts",
    "ExpertPool": "workbench.experts",
    "CoE": "workbench.coe",
    "Composer": "workbench.compose",
    "QueryGraph": "workbench.compose",
    "build_demo_bundle": "workbench.demo",
}

# helpers that were top-level names before 0.2: still resolved, with a DeprecationWarning naming
# the module to import them from (removed in the release after)
_MOVED: dict[str, str] = {
    "project": "workbench.maps",
    "knn_purity": "workbench.quality",
    "silhouette": "workbench.quality",
    "discover_categories": "workbench.discover",
    "Routing": "workbench.router",
    "RouterReport": "workbench.router",
    "cross_val_proba": "workbench.router",
    "run_protocol": "workbench.evaluate",
    "evaluate_mmlu_pro": "workbench.evaluate",
    "monolithic_baselines": "workbench.mapping",
    "MapMetrics": "workbench.mapping",
    "FrontierPoint": "workbench.mapping",
    "mmlu_pro_registry": "workbench.registry",
    "plan_placement": "workbench.experts",
    "specs_from_file": "workbench.experts",
    "parse_size": "workbench.placement",
    "Trace": "workbench.coe",
    "Answer": "workbench.coe",
    "score_model": "workbench.livescore",
    "score_models": "workbench.livescore",
    "loglik_frame": "workbench.livescore",
    "DemoBundle": "workbench.demo",
}

__all__ = sorted([*_LAZY, "__version__"])

_resolve = lazy_getattr('workbench', _LAZY, globals())


def __getattr__(name: str):
    if name in _MOVED:
        import importlib
        import warnings

        module = _MOVED[name]
        warnings.warn(f"workbench.{name} moved: import it from {module} "
                      f"(from {module} import {name}); the top-level name goes in the next "
                      "release", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), name)
    return _resolve(name)


def __dir__() -> list[str]:
    return __all__
