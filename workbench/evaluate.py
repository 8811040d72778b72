"""The evaluation protocol of a Composition of Experts on per-prompt results (MMLU-Pro).

Split the prompts 50/50 (seeded, stratified by category) into a *calibration* and a *held-out*
half. Everything is fitted on the calibration half: the category router, its fallback threshold and
the budgeted category-to-expert map. The held-out half only measures:

* router accuracy (predicted vs true category);
* for each budget on average active parameters, the CoE accuracy with the router's categories
  (fallback included), the measured held-out average of active parameters, and the accuracy with
  true categories (a perfect router, its own map);
* each model alone, and the single-step :class:`~workbench.router.DirectRouter` at the same budgets.

The map is optimised against the categories the router will actually *predict*: out-of-fold
routings of the calibration half give, for every routed category (the fallback included), the mean
score of each expert on the prompts routed there and how often it is routed to. The expected score
of a map on that table is then an unbiased estimate of its held-out accuracy, and its cost an
estimate of the held-out average of active parameters (kept under budget with a small margin).

Entry points: :func:`run_protocol` (any embeddings + :class:`~workbench.scores.ExpertScores`),
:func:`evaluate_mmlu_pro` (a folder of MMLU-Pro result files) and
:func:`workbench.evaluate_results.evaluate_results` (any per-prompt results table, with or without
prompt text). :meth:`ProtocolResult.aiq` sums each held-out cost/quality curve up in RouterBench's
AIQ.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import InfeasibleBudgetError, ScoresError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.registry import ModelRegistry
    from workbench.router import CategoryRouter
    from workbench.scores import ExpertScores

__all__ = [
    "DEFAULT_BUDGETS",
    "BudgetResult",
    "DirectResult",
    "ProtocolResult",
    "default_router",
    "run_protocol",
    "safe_map",
    "stratified_split",
    "evaluate_mmlu_pro",
]

DEFAULT_BUDGETS = (8.0, 13.0, 30.0, 50.0)
#: Fallback rates tried (on the calibration half) for each budget.
DEFAULT_FALLBACK_RATES = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4)
#: Budget shares held back, tried in order until the safety rule holds (automatic margin).
MARGIN_STEPS = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3)


def default_router() -> "CategoryRouter":
    """The router the protocol uses unless told otherwise (chosen by cross-validation on the
    calibration half of MMLU-Pro; see ``notebooks/02_mmlu_pro_coe.ipynb``)."""
    from workbench.router import CategoryRouter

    # 5-fold CV accuracy on the calibration half (seed 0, all-MiniLM-L6-v2): kNN k=20 with
    # softmax(similarity / 0.07) votes 0.802; kNN k=10 inverse-distance 0.784; k=25 0.771;
    # logistic regression C=10 0.768; the knn+logreg blend 0.808, but its calibration estimates of
    # CoE accuracy at 8/13/30/50B match the kNN's within 0.001 and it fits ~5x slower.
    return CategoryRouter(head="knn", n_neighbors=20, knn_weights="softmax", knn_temperature=0.07)


@dataclass(frozen=True)
class BudgetResult:
    """The CoE at one budget: held-out figures plus the calibration estimates they came from."""

    budget_b: float
    accuracy: float                  # held-out, router-predicted categories (fallback included)
    avg_active_b: float              # held-out measured average of active parameters
    oracle_accuracy: float           # held-out, true categories, map optimised on true categories
    oracle_avg_active_b: float
    fallback_rate: float             # held-out share routed to the fallback category
    fallback_expert: str
    threshold: float | None
    expected_accuracy: float         # calibration (out-of-fold) estimate
    expected_avg_active_b: float
    resident_params_b: float
    mapping: dict[str, str]
    oracle_mapping: dict[str, str]


@dataclass(frozen=True)
class DirectResult:
    """The single-step DirectRouter at one budget (held-out)."""

    budget_b: float
    accuracy: float
    avg_active_b: float
    cost_weight: float


@dataclass
class ProtocolResult:
    """Everything the protocol measured; :meth:`to_dict` is the ``--json`` object.

    ``routing`` is ``"router"`` (a category router fitted on prompt embeddings) or
    ``"true_categories"`` (a table without prompt text: the map is applied to each prompt's true
    category, there is no router and no DirectRouter, and the router fields are ``None``).
    """

    router_accuracy: float | None
    router_macro_f1: float | None
    router_cv_accuracy: float | None
    router_params: dict | None
    confusion: "pd.DataFrame | None"
    budgets: list[BudgetResult]
    models: dict[str, float]
    model_active_b: dict[str, float]
    direct: list[DirectResult]
    oracle_per_question: float
    n_calibration: int
    n_held_out: int
    seed: int
    categories: list[str]
    calibration_ids: list[str] = field(repr=False, default_factory=list)
    held_out_ids: list[str] = field(repr=False, default_factory=list)
    embedder: str | None = None
    routing: str = "router"

    def aiq(self) -> dict[str, Any]:
        """RouterBench's AIQ of each held-out cost/quality curve, on one shared cost range.

        Points are (held-out average active parameters, held-out accuracy): ``coe`` the CoE at
        each budget (router categories; true categories when ``routing`` is
        ``"true_categories"``), ``coe_true_categories`` the CoE with true categories, ``direct``
        the DirectRouter at each budget (``None`` without a router), ``models`` every model
        alone. Each curve is its non-decreasing convex hull extended flat to ``max_cost_b``, the
        largest cost of any point, so the figures compare (see
        :func:`workbench.mapping.frontier.aiq`).
        """
        from workbench.mapping.frontier import aiq

        curves: dict[str, list[tuple[float, float]]] = {
            "coe": [(b.avg_active_b, b.accuracy) for b in self.budgets],
            "coe_true_categories": [(b.oracle_avg_active_b, b.oracle_accuracy)
                                    for b in self.budgets],
            "direct": [(d.avg_active_b, d.accuracy) for d in self.direct],
            "models": [(self.model_active_b[m], a) for m, a in self.models.items()],
        }
        curves = {k: [p for p in v if np.isfinite(p).all()] for k, v in curves.items()}
        top = max(c for pts in curves.values() for c, _ in pts)
        out: dict[str, Any] = {k: (aiq([c for c, _ in pts], [q for _, q in pts], max_cost=top)
                                   if pts else None) for k, pts in curves.items()}
        out["max_cost_b"] = float(top)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (no arrays)."""
        budgets = []
        for b in self.budgets:
            d = asdict(b)
            budgets.append(d)
        return {
            "routing": self.routing,
            "router_accuracy": self.router_accuracy,
            "router_macro_f1": self.router_macro_f1,
            "router_cv_accuracy": self.router_cv_accuracy,
            "router_params": self.router_params,
            "budgets": budgets,
            "models": self.models,
            "model_active_b": self.model_active_b,
            "direct": [asdict(d) for d in self.direct],
            "oracle_per_question": self.oracle_per_question,
            "n_calibration": self.n_calibration,
            "n_held_out": self.n_held_out,
            "seed": self.seed,
            "categories": self.categories,
            "embedder": self.embedder,
            "aiq": self.aiq(),
        }

    def comparison_table(self) -> "pd.DataFrame":
        """Two-step CoE vs single-step DirectRouter (and the best single model) per budget."""
        import pandas as pd

        direct = {d.budget_b: d for d in self.direct}
        rows = []
        for b in self.budgets:
            fits = {m: a for m, a in self.models.items() if self.model_active_b[m] <= b.budget_b}
            best = max(fits, key=fits.get) if fits else None
            d = direct.get(b.budget_b)
            rows.append({
                "budget_b": b.budget_b,
                "coe_accuracy": b.accuracy,
                "coe_avg_active_b": b.avg_active_b,
                "coe_true_category_accuracy": b.oracle_accuracy,
                "direct_accuracy": d.accuracy if d else float("nan"),
                "direct_avg_active_b": d.avg_active_b if d else float("nan"),
                "best_single_model": best,
                "best_single_accuracy": fits[best] if best else float("nan"),
            })
        return pd.DataFrame(rows)

    def budgets_table(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame([{k: v for k, v in asdict(b).items() if "mapping" not in k}
                             for b in self.budgets])

    def mapping_table(self) -> "pd.DataFrame":
        """Category -> expert at each budget (columns), router-predicted-category maps."""
        import pandas as pd

        return pd.DataFrame({f"{b.budget_b:g}B": b.mapping for b in self.budgets})


# -------------------------------------------------------------------------------------- helpers
#: Prompts a category needs for the seeded, stratified 50/50 split (one in each half).
MIN_SPLIT_PROMPTS = 2


def stratified_split(categories: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (sorted) of the calibration and held-out halves: seeded, stratified 50/50."""
    from sklearn.model_selection import train_test_split

    names, counts = np.unique(np.asarray(categories).astype(str), return_counts=True)
    small = [f"{n!r} ({c})" for n, c in zip(names, counts) if c < MIN_SPLIT_PROMPTS]
    if small:
        raise ScoresError(
            f"categories with fewer than {MIN_SPLIT_PROMPTS} prompts: {', '.join(small[:5])}; the "
            "50/50 split stratified by category needs a prompt of each category in both halves. "
            "Add prompts or merge those categories into others"
        )
    idx = np.arange(len(categories))
    cal, held = train_test_split(idx, test_size=0.5, random_state=seed, stratify=categories)
    return np.sort(cal), np.sort(held)


_split = stratified_split  # the name notebook 02 imports


def _route_categories(conf: np.ndarray, predicted: np.ndarray, threshold: float | None,
                      fallback_category: str = FALLBACK_CATEGORY) -> np.ndarray:
    out = np.asarray(predicted, dtype=object).copy()
    if threshold is not None:
        out[conf < threshold] = fallback_category
    return out.astype(str)


def _apply_map(mapping: Mapping[str, str], routed: Sequence[str], values: np.ndarray,
               experts: Sequence[str], active: Mapping[str, float]) -> tuple[float, float]:
    col = {e: j for j, e in enumerate(experts)}
    chosen = np.array([col[mapping[c]] for c in routed])
    acc = float(values[np.arange(len(chosen)), chosen].mean())
    avg = float(np.mean([active[experts[j]] for j in chosen]))
    return acc, avg


def safe_map(means, weights, routed: Sequence[str], budget: float, registry: "ModelRegistry", *,
             fallback_expert: str | None = None, budget_margin: float | None = None,
             safety_z: float = 3.0, n_eval: int, fallback_category: str = FALLBACK_CATEGORY):
    """The best map whose budget survives the protocol's safety rule (``None`` if none does).

    With ``budget_margin=None`` the optimiser's target is lowered step by step
    (:data:`MARGIN_STEPS`) until the map's average active parameters over the calibration
    prompts ``routed`` plus ``safety_z`` standard errors of an ``n_eval``-prompt average fit the
    budget; a fixed ``budget_margin`` is used as given.
    """
    from workbench.mapping import optimize_mapping

    margins = MARGIN_STEPS if budget_margin is None else (float(budget_margin),)
    for f in margins:
        try:
            m = optimize_mapping(means, weights, registry, budget_active_b=budget * (1 - f),
                                 fallback_expert=fallback_expert,
                                 fallback_category=fallback_category)
        except InfeasibleBudgetError:
            return None
        cost = {c: registry.active(e) for c, e in m.assignments.items()}
        costs = np.array([cost[c] for c in routed])
        if budget_margin is not None or _within(costs, budget, safety_z, n_eval):
            return m
    return None


def _within(costs: np.ndarray, budget: float, safety_z: float, n_eval: int) -> bool:
    """The safety rule: mean cost plus ``safety_z`` standard errors of an ``n_eval`` mean fits."""
    se = costs.std() / np.sqrt(n_eval)
    return costs.mean() + safety_z * se <= budget * (1 + 1e-12)


# ----------------------------------------------------------------------------------- protocol
def run_protocol(
    X: np.ndarray,
    scores: "ExpertScores",
    registry: "ModelRegistry",
    *,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seed: int = 0,
    router: "CategoryRouter | None" = None,
    fine_labels: Sequence[str] | None = None,
    fallback_rates: Sequence[float] = DEFAULT_FALLBACK_RATES,
    fallback_experts: Sequence[str] | None = None,
    budget_margin: float | None = None,
    safety_z: float = 3.0,
    cv: int = 5,
    direct_neighbors: int = 50,
    embedder: str | None = None,
    fallback_category: str = FALLBACK_CATEGORY,
) -> ProtocolResult:
    """Fit router, threshold and maps on a calibration half; measure on the held-out half.

    Parameters
    ----------
    X : ndarray of shape (n_prompts, d)
        Prompt embeddings, rows in ``scores.prompt_ids`` order.
    scores : ExpertScores
        Per-prompt scores with true categories.
    registry : ModelRegistry
        Active parameters of every expert (the budget's unit).
    budgets : sequence of float
        Budgets on average active parameters (billions).
    seed : int
        Seed of the 50/50 stratified split (and of the cross-validation folds).
    router : CategoryRouter, optional
        Unfitted router to use (default :func:`default_router`).
    fine_labels : sequence of str, optional
        Finer training labels for the router (e.g. MMLU-Pro ``src``), rows like ``X``.
    fallback_rates : sequence of float
        Fallback rates tried per budget; the one with the best out-of-fold calibration score wins.
    fallback_experts : sequence of str, optional
        Candidate experts for the fallback category (default: the experts on the cost/quality
        Pareto front of calibration means); the best on the calibration estimate wins per budget.
    budget_margin : float, optional
        Fixed share of the budget held back: the optimiser gets ``budget * (1 - budget_margin)``.
        ``None`` (default) chooses it per map: the smallest margin in :data:`MARGIN_STEPS` for
        which the map's calibration estimate of average active parameters plus ``safety_z``
        standard errors of a held-out-sized average stays within the budget.
    safety_z : float
        Standard errors of safety for the automatic margin.
    cv : int
        Folds of the out-of-fold routing on the calibration half.
    direct_neighbors : int
        Neighbours of the DirectRouter.
    fallback_category : str
        The category low-confidence prompts are routed to (the router's and the map's).

    Returns
    -------
    ProtocolResult
    """
    from sklearn.base import clone

    from workbench.router import DirectRouter, cross_val_proba, router_report

    X = np.asarray(X, dtype=np.float32)
    if scores.categories is None:
        raise ScoresError("the protocol needs the true category of every prompt (scores.categories)")
    if X.ndim != 2 or len(X) != len(scores.prompt_ids):
        raise UsageError(
            f"X has shape {X.shape} but there are {len(scores.prompt_ids)} scored prompts; give one "
            "embedding row per prompt, in scores.prompt_ids order"
        )
    registry.require(scores.experts, context="the MMLU-Pro protocol (--params file)")
    budgets = [float(b) for b in budgets]
    experts = list(scores.experts)
    active = {e: registry.active(e) for e in experts}
    y = np.asarray(scores.categories).astype(str)
    fine = None if fine_labels is None else np.asarray(fine_labels).astype(str)
    cal, held = stratified_split(y, seed)
    cal_ids = [scores.prompt_ids[i] for i in cal]
    held_ids = [scores.prompt_ids[i] for i in held]
    S_cal, S_held = scores.values[cal], scores.values[held]
    cal_scores = scores.subset(cal_ids)

    # ---- router: out-of-fold routing of the calibration half, then the final fit
    base = clone(router) if router is not None else default_router()
    base.set_params(threshold=None)
    oof = cross_val_proba(base, X[cal], y[cal], cv=cv,
                          fine_labels=None if fine is None else fine[cal], random_state=seed)
    classes = np.unique(y[cal])
    oof_pred = classes[np.argmax(oof, axis=1)]
    fitted = clone(base).fit(X[cal], y[cal], fine_labels=None if fine is None else fine[cal])
    oof_conf = fitted.confidence_scores(oof)
    held_routing = fitted.route(X[held])
    held_pred = np.asarray(held_routing.predicted).astype(str)
    held_conf = held_routing.confidence
    rep = router_report(y[held], held_routing.proba, fitted.classes_)

    # ---- oracle maps (true categories; a perfect router), per budget
    true_means = cal_scores.category_means()
    true_weights = cal_scores.category_weights()

    # ---- CoE maps against the router's own (out-of-fold) routing, per budget
    if fallback_experts is not None:
        candidates_fb = list(fallback_experts)
    else:  # the cost/quality Pareto front: no other expert is as cheap and better
        cal_mean = S_cal.mean(axis=0)
        candidates_fb = [e for j, e in enumerate(experts) if not any(
            active[o] <= active[e] and cal_mean[k] > cal_mean[j]
            for k, o in enumerate(experts) if o != e)]
    n_eval = len(held)
    margins = MARGIN_STEPS if budget_margin is None else (float(budget_margin),)

    def _fits(costs: np.ndarray, budget: float) -> bool:
        return budget_margin is not None or _within(costs, budget, safety_z, n_eval)

    def _cheapest_safe(means, weights, routed, budget, fb):
        """The best map under the largest target whose safety rule holds (None if none)."""
        return safe_map(means, weights, routed, budget, registry, fallback_expert=fb,
                        budget_margin=budget_margin, safety_z=safety_z, n_eval=n_eval,
                        fallback_category=fallback_category)
    tables = {}
    for rate in sorted(set(float(r) for r in fallback_rates)):
        thr = None if rate <= 0 else float(np.sort(oof_conf)[int(np.floor(rate * len(oof_conf)))])
        routed = _route_categories(oof_conf, oof_pred, thr, fallback_category)
        routed_scores = cal_scores.with_categories(routed)
        tables[rate] = (thr, routed_scores.category_means(), routed_scores.category_weights(),
                        routed)

    results: list[BudgetResult] = []
    for budget in budgets:
        best = None
        for rate, (thr, means, weights, routed) in tables.items():
            fb_list = candidates_fb if fallback_category in weights else [None]
            for fb in fb_list:
                m = _cheapest_safe(means, weights, routed, budget, fb)
                if m is None:
                    continue
                met = m.metrics(means, registry, weights=weights)
                key = (met.expected_score, -met.average_active_params_b, -rate)
                if best is None or key > best[0]:
                    best = (key, rate, thr, m, met)
        if best is None:
            raise InfeasibleBudgetError(
                f"budget {budget:g}B is infeasible: no map fits it on average with a safety "
                f"margin; the cheapest expert has {min(active.values()):g}B active, so ask for "
                "a budget above that"
            )
        _, rate, thr, cmap, met = best
        routed_held = _route_categories(held_conf, held_pred, thr, fallback_category)
        assign = cmap.assignments
        acc, avg = _apply_map(assign, routed_held, S_held, experts, active)
        omap = _cheapest_safe(true_means, true_weights, y[cal], budget, None)
        if omap is not None:
            o_assign = omap.assignments
            o_acc, o_avg = _apply_map(o_assign, y[held], S_held, experts, active)
        else:
            o_assign, o_acc, o_avg = {}, float("nan"), float("nan")
        results.append(BudgetResult(
            budget_b=budget, accuracy=acc, avg_active_b=avg, oracle_accuracy=o_acc,
            oracle_avg_active_b=o_avg,
            fallback_rate=float(np.mean(routed_held == fallback_category)),
            fallback_expert=cmap.fallback_expert, threshold=thr,
            expected_accuracy=float(met.expected_score),
            expected_avg_active_b=float(met.average_active_params_b),
            resident_params_b=float(met.resident_params_b), mapping=assign,
            oracle_mapping=o_assign,
        ))

    # ---- single models and the single-step router
    models = {e: float(S_held[:, j].mean()) for j, e in enumerate(experts)}
    direct_router = DirectRouter(n_neighbors=direct_neighbors).fit(
        X[cal], S_cal, experts=experts, costs=[active[e] for e in experts])
    Q_held = direct_router.quality(X[held])
    direct = []
    for budget in budgets:
        lam = None
        for f in margins:
            try:
                lam_f = direct_router.cost_weight_for_budget(budget * (1.0 - f))
            except InfeasibleBudgetError:
                break
            loo_costs = direct_router.costs_[direct_router.choose(direct_router.loo_quality_, lam_f)]
            if _fits(loo_costs, budget):
                lam = lam_f
                break
        if lam is None:
            continue
        chosen = direct_router.choose(Q_held, lam)
        direct.append(DirectResult(
            budget_b=budget,
            accuracy=float(S_held[np.arange(len(held)), chosen].mean()),
            avg_active_b=float(np.mean([active[experts[j]] for j in chosen])),
            cost_weight=float(lam),
        ))

    params = fitted.get_params()
    hls = params["hidden_layer_sizes"]
    params["hidden_layer_sizes"] = [int(hls)] if np.isscalar(hls) else [int(h) for h in hls]
    return ProtocolResult(
        router_accuracy=rep.accuracy,
        router_macro_f1=rep.macro_f1,
        router_cv_accuracy=float(np.mean(oof_pred == y[cal])),
        router_params={k: v for k, v in params.items() if k != "threshold"},
        confusion=rep.confusion,
        budgets=results,
        models=models,
        model_active_b=active,
        direct=direct,
        oracle_per_question=float(S_held.max(axis=1).mean()),
        n_calibration=len(cal),
        n_held_out=len(held),
        seed=seed,
        categories=[str(c) for c in classes],
        calibration_ids=cal_ids,
        held_out_ids=held_ids,
        embedder=embedder,
    )


def load_mmlu_pro(results_dir: str | os.PathLike, *, embedder=None, progress: bool | None = None):
    """Scores, embeddings (rows in score order) and ``src`` subjects of a MMLU-Pro results folder."""
    from workbench.embed import Embedder
    from workbench.prompts import PromptSet
    from workbench.scores import ExpertScores

    results_dir = Path(results_dir)
    scores = ExpertScores.from_mmlu_pro(results_dir)
    prompts = PromptSet.from_mmlu_pro(results_dir)
    pos = {str(i): k for k, i in enumerate(prompts.ids)}
    missing = [p for p in scores.prompt_ids if p not in pos]
    if missing:
        raise ScoresError(f"{len(missing)} scored questions have no text in {results_dir}, e.g. "
                          f"{missing[:3]}")
    order = [pos[p] for p in scores.prompt_ids]
    prompts = prompts.subset(order)
    emb = embedder if embedder is not None else Embedder(progress=progress)
    X = emb.embed(prompts) if hasattr(emb, "embed") else np.asarray(emb(prompts.texts))
    src = prompts.df["src"].astype(str).to_numpy() if "src" in prompts.df else None
    return scores, X, src, prompts, getattr(emb, "fingerprint", None)


def evaluate_mmlu_pro(
    results_dir: str | os.PathLike,
    params: "str | os.PathLike | ModelRegistry | None" = None,
    *,
    budgets: Sequence[float] = DEFAULT_BUDGETS,
    seed: int = 0,
    embedder=None,
    router: "CategoryRouter | None" = None,
    use_subjects: bool = False,
    progress: bool | None = None,
    **kwargs,
) -> ProtocolResult:
    """Run :func:`run_protocol` on a folder of MMLU-Pro result files.

    Parameters
    ----------
    results_dir : path
        Folder with ``model_outputs_<model>_5shots.zip`` files.
    params : path or ModelRegistry, optional
        Parameter counts (YAML/CSV, see :class:`~workbench.registry.ModelRegistry`); default the
        built-in counts of the 13 published models.
    budgets, seed, router, **kwargs
        Passed to :func:`run_protocol`.
    embedder : Embedder, optional
        Default ``Embedder()`` (all-MiniLM-L6-v2, disk-cached).
    use_subjects : bool
        Train the router on the 91 ``src`` subjects and sum them back into categories.

    Examples
    --------
    >>> res = evaluate_mmlu_pro("../shared/data/mmlu-pro", "data/mmlu_pro_params.yaml")  # doctest: +SKIP
    >>> res.router_accuracy > 0.78                                                      # doctest: +SKIP
    True
    """
    from workbench.registry import ModelRegistry

    if params is None:
        registry = ModelRegistry.mmlu_pro()
    elif isinstance(params, ModelRegistry):
        registry = params
    else:
        registry = ModelRegistry.load(params)
    scores, X, src, _, fingerprint = load_mmlu_pro(results_dir, embedder=embedder, progress=progress)
    return run_protocol(X, scores, registry, budgets=budgets, seed=seed, router=router,
                        fine_labels=src if use_subjects else None, embedder=fingerprint, **kwargs)
