"""The evaluation protocol on any per-prompt results table (see :mod:`workbench.results`).

:func:`evaluate_results` runs the protocol of :mod:`workbench.evaluate` on a results table: with
prompt text it embeds the prompts and runs :func:`~workbench.evaluate.run_protocol` (category
router, budgeted map, DirectRouter, all fitted on the calibration half, reported on the held-out
half), exactly as for a MMLU-Pro folder. Without prompt text but with categories it runs
:func:`run_true_category_protocol`: the same seeded, stratified 50/50 split and the same budgeted
map, applied to each prompt's *true* category (there is nothing to route on), so the map and the
frontier are still measured on held-out prompts; the result says so (``routing`` is
``"true_categories"``).

Before anything is fitted the table is checked against the protocol: every model needs parameter
counts, and every category enough prompts for the split (and, with a router, for the
cross-validation on the calibration half). Each failure names the table's file and row.

Examples
--------
>>> from workbench.results import read_results
>>> table = read_results("my_results.csv", missing="drop")                 # doctest: +SKIP
>>> res = evaluate_results(table, "my_params.yaml", budgets=[8, 30])       # doctest: +SKIP
>>> res.aiq()["coe"]                                                        # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import InfeasibleBudgetError, RegistryError, ScoresError
from workbench.evaluate import (
    DEFAULT_BUDGETS,
    MIN_SPLIT_PROMPTS,
    BudgetResult,
    ProtocolResult,
    run_protocol,
    safe_map,
    stratified_split,
)
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    from workbench.registry import ModelRegistry
    from workbench.results import ResultsTable
    from workbench.router import CategoryRouter
    from workbench.scores import ExpertScores

__all__ = ["check_table", "evaluate_results", "min_category_prompts", "run_true_category_protocol"]


def min_category_prompts(with_router: bool, cv: int = 5) -> int:
    """Prompts each category needs: 2 for the 50/50 split; with a router ``2 * cv``, so the
    calibration half holds ``cv`` of each for the router's cross-validation."""
    return max(MIN_SPLIT_PROMPTS, 2 * int(cv)) if with_router else MIN_SPLIT_PROMPTS


def _registry(params) -> "ModelRegistry":
    from workbench.registry import ModelRegistry

    if params is None:
        return ModelRegistry.mmlu_pro()
    if isinstance(params, ModelRegistry):
        return params
    return ModelRegistry.load(params)


def check_table(table: "ResultsTable", registry: "ModelRegistry", *, with_router: bool,
                cv: int = 5, params_source: str | None = None) -> None:
    """Raise naming the file and row when the protocol cannot run on ``table``.

    Checks: the table has categories; every model has parameter counts in ``registry``; every
    category has :func:`min_category_prompts` prompts.
    """
    if not table.has_categories:
        raise ScoresError(
            f"{table.source} has no categories (no category column, or an empty one); the "
            "protocol splits prompts by category and maps categories to models. Name the column "
            "with --columns category=<column>"
        )
    missing = [m for m in table.scores.experts if m not in registry]
    if missing:
        where = params_source or registry.source or "the built-in counts of the 13 MMLU-Pro models"
        first = missing[0]
        raise RegistryError(
            f"{table.where(model=first)}: model {short(first)} has no parameter counts in {where}"
            + (f" (nor {', '.join(short(m) for m in missing[1:6])})" if len(missing) > 1 else "")
            + "; add every model to a --params file (YAML, one entry per model: "
            f"- {{name: {first}, total_params_b: 7.2, active_params_b: 7.2}}, or a CSV with "
            "name,total_params_b,active_params_b) and pass it with --params FILE"
        )
    need = min_category_prompts(with_router, cv)
    counts = table.scores.category_counts()
    small = {c: n for c, n in counts.items() if n < need}
    if small:
        cats = np.asarray(table.scores.categories)
        name = min(small, key=small.get)
        first = table.scores.prompt_ids[int(np.flatnonzero(cats == name)[0])]
        why = (f"a router needs {need} per category (the 50/50 split, then {cv}-fold "
               "cross-validation on the calibration half)" if with_router else
               f"the 50/50 split stratified by category needs {need} per category")
        others = [f"{short(c)} ({n})" for c, n in small.items() if c != name]
        raise ScoresError(
            f"{table.where(first)}: category {short(name)} has only {small[name]} prompt"
            f"{'s' if small[name] != 1 else ''}"
            + (f" (also {', '.join(others[:5])})" if others else "")
            + f"; {why}. Add prompts, merge the category into another one in the file (or with "
            "--columns category=<a coarser column>), or drop its rows"
        )


def run_true_category_protocol(
    scores: "ExpertScores",
    registry: "ModelRegistry",
    *,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seed: int = 0,
    budget_margin: float | None = None,
    safety_z: float = 3.0,
    fallback_category: str = FALLBACK_CATEGORY,
) -> ProtocolResult:
    """The protocol without a router: maps and frontier on each prompt's true category.

    The same seeded, stratified 50/50 split as :func:`~workbench.evaluate.run_protocol`; per
    budget the map is optimised on the calibration half's category means (with the same safety
    rule on the budget) and measured on the held-out half. ``accuracy`` and ``oracle_accuracy``
    coincide, ``direct`` is empty, the router fields are ``None`` and ``routing`` is
    ``"true_categories"``.
    """
    if scores.categories is None:
        raise ScoresError("the protocol needs the true category of every prompt (scores.categories)")
    registry.require(scores.experts, context="the protocol (--params file)")
    budgets = [float(b) for b in budgets]
    experts = list(scores.experts)
    active = {e: registry.active(e) for e in experts}
    y = np.asarray(scores.categories).astype(str)
    cal, held = stratified_split(y, seed)
    cal_ids = [scores.prompt_ids[i] for i in cal]
    held_ids = [scores.prompt_ids[i] for i in held]
    S_held = scores.values[held]
    cal_scores = scores.subset(cal_ids)
    means, weights = cal_scores.category_means(), cal_scores.category_weights()
    col = {e: j for j, e in enumerate(experts)}
    results = []
    for budget in budgets:
        m = safe_map(means, weights, y[cal], budget, registry, budget_margin=budget_margin,
                     safety_z=safety_z, n_eval=len(held), fallback_category=fallback_category)
        if m is None:
            raise InfeasibleBudgetError(
                f"budget {budget:g}B is infeasible: no map fits it on average with a safety "
                f"margin; the cheapest model has {min(active.values()):g}B active, so ask for "
                "a budget above that"
            )
        assign = m.assignments
        chosen = np.array([col[assign[c]] for c in y[held]])
        acc = float(S_held[np.arange(len(held)), chosen].mean())
        avg = float(np.mean([active[experts[j]] for j in chosen]))
        met = m.metrics(means, registry, weights=weights)
        results.append(BudgetResult(
            budget_b=budget, accuracy=acc, avg_active_b=avg, oracle_accuracy=acc,
            oracle_avg_active_b=avg, fallback_rate=0.0, fallback_expert=m.fallback_expert,
            threshold=None, expected_accuracy=float(met.expected_score),
            expected_avg_active_b=float(met.average_active_params_b),
            resident_params_b=float(met.resident_params_b), mapping=assign, oracle_mapping=assign,
        ))
    return ProtocolResult(
        router_accuracy=None, router_macro_f1=None, router_cv_accuracy=None, router_params=None,
        confusion=None, budgets=results,
        models={e: float(S_held[:, j].mean()) for j, e in enumerate(experts)},
        model_active_b=active, direct=[], oracle_per_question=float(S_held.max(axis=1).mean()),
        n_calibration=len(cal), n_held_out=len(held), seed=seed,
        categories=sorted(set(y.tolist())), calibration_ids=cal_ids, held_out_ids=held_ids,
        embedder=None, routing="true_categories",
    )


def evaluate_results(
    table: "ResultsTable | str | os.PathLike",
    params: "str | os.PathLike | ModelRegistry | None" = None,
    *,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seed: int = 0,
    embedder=None,
    router: "CategoryRouter | None" = None,
    use_router: bool | None = None,
    progress: bool | None = None,
    cv: int = 5,
    **kwargs,
) -> ProtocolResult:
    """Run the protocol on a results table (a :class:`~workbench.results.ResultsTable` or a path).

    Parameters
    ----------
    table : ResultsTable or path
        A path is read with :func:`~workbench.results.read_results` defaults (long layout,
        canonical column names, missing pairs raise).
    params : path or ModelRegistry, optional
        Parameter counts of every model; default the built-in counts of the 13 MMLU-Pro models.
    budgets, seed, router, cv, **kwargs
        As for :func:`~workbench.evaluate.run_protocol`.
    embedder : Embedder or callable, optional
        Embeds the prompt texts (default ``Embedder()``); a callable gets the list of texts.
    use_router : bool, optional
        ``None``: a router when the table has prompt text, true categories otherwise.

    Returns
    -------
    ProtocolResult
    """
    from workbench.results import ResultsTable, read_results

    if not isinstance(table, ResultsTable):
        table = read_results(table)
    registry = _registry(params)
    with_router = table.has_text if use_router is None else bool(use_router)
    if with_router and not table.has_text:
        raise ScoresError(f"{table.source} has no prompt text to route on; map the text column "
                          "with --columns prompt=<column>, or run without a router")
    if params is None:
        source = "the built-in counts of the 13 MMLU-Pro models (no --params given)"
    else:
        source = str(params) if isinstance(params, (str, os.PathLike)) else None
    check_table(table, registry, with_router=with_router, cv=cv, params_source=source)
    if not with_router:
        keep = {k: v for k, v in kwargs.items() if k in ("budget_margin", "safety_z",
                                                          "fallback_category")}
        return run_true_category_protocol(table.scores, registry, budgets=budgets, seed=seed, **keep)
    from workbench.embed import Embedder

    prompts = table.prompt_set()
    emb = embedder if embedder is not None else Embedder(progress=progress)
    X = emb.embed(prompts) if hasattr(emb, "embed") else np.asarray(emb(prompts.texts))
    return run_protocol(X, table.scores, registry, budgets=budgets, seed=seed, router=router,
                        cv=cv, embedder=getattr(emb, "fingerprint", None), **kwargs)
