"""CoE Workbench: build, inspect and serve Compositions of Experts.

``import workbench`` is deliberately light: public names are resolved lazily (PEP 562), so torch,
transformers, umap, panel, plotly and scikit-learn are imported only by the functions that need
them.

Examples
--------
>>> import workbench as wb
>>> prompts = wb.load_demo_prompts()          # doctest: +SKIP
>>> X = wb.Embedder().embed(prompts)          # doctest: +SKIP
>>> m = wb.project(X, method="pca")           # doctest: +SKIP
"""
from __future__ import annotations

from workbench._lazy import lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY: dict[str, str] = {
    # errors (light): every class of workbench.errors
    "WorkbenchError": "workbench.errors",
    "PromptSetError": "workbench.errors",
    "UnknownFormatError": "workbench.errors",
    "EmbedderError": "workbench.errors",
    "ModelNotFoundError": "workbench.errors",
    "MapError": "workbench.errors",
    "RouterError": "workbench.errors",
    "ScoresError": "workbench.errors",
    "MappingError": "workbench.errors",
    "InfeasibleBudgetError": "workbench.errors",
    "RegistryError": "workbench.errors",
    "ExpertError": "workbench.errors",
    "PlacementError": "workbench.errors",
    "GraphError": "workbench.errors",
    "MapTimeoutError": "workbench.errors",
    "DecomposeError": "workbench.errors",
    "DemoError": "workbench.errors",
    "ChatError": "workbench.errors",
    "FileBoxError": "workbench.errors",
    "UsageError": "workbench.errors",
    "TrustRemoteCodeWarning": "workbench.errors",
    "RouterNotFittedError": "workbench.errors",
    "PlotError": "workbench.errors",
    "MissingDependencyError": "workbench.errors",
    # prompts
    "PromptSet": "workbench.prompts",
    "load_demo_prompts": "workbench.prompts",
    # embeddings
    "Embedder": "workbench.embed",
    # maps and cluster quality
    "Map": "workbench.maps",
    "project": "workbench.maps",
    "MapBuilder": "workbench.maps",
    "knn_purity": "workbench.quality",
    "silhouette": "workbench.quality",
    "discover_categories": "workbench.discover",
    # routing, scores, mapping
    "CategoryRouter": "workbench.router",
    "DirectRouter": "workbench.router",
    "Routing": "workbench.router",
    "RouterReport": "workbench.router",
    "cross_val_proba": "workbench.router",
    "run_protocol": "workbench.evaluate",
    "evaluate_mmlu_pro": "workbench.evaluate",
    "ExpertScores": "workbench.scores",
    "ModelRegistry": "workbench.registry",
    "CategoryExpertMap": "workbench.mapping",
    "optimize_mapping": "workbench.mapping",
    "pareto_frontier": "workbench.mapping",
    "monolithic_baselines": "workbench.mapping",
    "MapMetrics": "workbench.mapping",
    "FrontierPoint": "workbench.mapping",
    "mmlu_pro_registry": "workbench.registry",
    # experts and runtime
    "ExpertSpec": "workbench.experts",
    "ExpertPool": "workbench.experts",
    "plan_placement": "workbench.experts",
    "specs_from_file": "workbench.experts",
    "parse_size": "workbench.placement",
    "CoE": "workbench.coe",
    "Trace": "workbench.coe",
    "Answer": "workbench.coe",
    "score_model": "workbench.livescore",
    "score_models": "workbench.livescore",
    "loglik_frame": "workbench.livescore",
    "build_demo_bundle": "workbench.demo",
    "DemoBundle": "workbench.demo",
    # composition
    "QueryGraph": "workbench.compose",
    "Composer": "workbench.compose",
}

__all__ = sorted([*_LAZY, "__version__"])


__getattr__ = lazy_getattr('workbench', _LAZY, globals())


def __dir__() -> list[str]:
    return __all__
