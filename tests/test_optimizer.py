"""The budgeted optimizer and the frontier are exact: checked against brute force and scipy's milp."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from workbench.errors import InfeasibleBudgetError, MappingError, RegistryError, ScoresError
from workbench.mapping import (
    CategoryExpertMap,
    monolithic_baselines,
    optimize_mapping,
    pareto_frontier,
)
from workbench.registry import ModelInfo, ModelRegistry, mmlu_pro_registry

TOL = 1e-9


# ----------------------------------------------------------------------------- helpers
def random_case(rng, n_cat=None, n_exp=None, ties=True, zero_weight=False, bases=False):
    n_cat = n_cat or int(rng.integers(2, 6))
    n_exp = n_exp or int(rng.integers(2, 6))
    cats = [f"c{i}" for i in range(n_cat)]
    experts = [f"e{j}" for j in range(n_exp)]
    scores = rng.random((n_cat, n_exp))
    if ties:  # coarse values make equal scores (and equal costs) common
        scores = np.round(scores * 4) / 4
    means = pd.DataFrame(scores, index=cats, columns=experts)
    sizes = rng.choice([1.0, 2.0, 3.5, 7.0, 7.0, 13.0], size=n_exp)
    models = []
    # with bases: experts share one of two bases (LoRA adapters of a base model), or none
    # (a base's size, each adapter a small own part on top of it)
    group = rng.integers(-1, 2, size=n_exp) if bases else np.full(n_exp, -1)
    base_b = {g: float(rng.choice([2.0, 7.0, 13.0])) for g in set(group.tolist()) if g >= 0}
    for e, s, g in zip(experts, sizes, group.tolist()):
        if g >= 0:
            total = base_b[g] + float(rng.choice([0.01, 0.1, 0.5]))
            models.append(ModelInfo(e, total, total, base=f"B{g}", base_params_b=base_b[g]))
            continue
        total = s * (3 if rng.random() < 0.25 else 1)  # some mixtures of experts
        models.append(ModelInfo(e, total, s))
    reg = ModelRegistry(models)
    w = rng.integers(1, 10, size=n_cat).astype(float)
    if zero_weight and n_cat > 2:
        w[int(rng.integers(n_cat))] = 0.0
    weights = dict(zip(cats, w))
    return means, weights, reg


def brute_force(means, weights, reg, *, budget=math.inf, locked=None, fallback=None,
                max_resident=None, max_experts=None):
    """(best value, least cost among best, all feasible (cost, value)) by enumeration."""
    cats = list(means.index)
    experts = list(means.columns)
    S = means.to_numpy(dtype=float)
    w = np.array([weights[c] for c in cats], dtype=float)
    w = w / w.sum()
    active = np.array([reg.active(e) for e in experts])
    # memory of a set of experts, written out here: each one's own part, each shared base once
    def memory(names):
        infos = [reg[n] for n in set(names)]
        own = sum(m.total_params_b - (m.base_params_b or 0.0) for m in infos)
        return own + sum({m.base: m.base_params_b for m in infos if m.base}.values())

    if fallback is None:
        overall = w @ S
        fallback = sorted(experts, key=lambda e: (-overall[experts.index(e)], reg.active(e), e))[0]
    fb = experts.index(fallback) if fallback in experts else None
    locked = locked or {}
    options = [[experts.index(locked[c])] if c in locked else range(len(experts)) for c in cats]
    combos = np.array(list(itertools.product(*options)), dtype=int)
    rows = np.arange(len(cats))
    costs = (w[None, :] * active[combos]).sum(axis=1)
    values = np.where(w[None, :] > 0, w[None, :] * S[rows[None, :], combos], 0.0).sum(axis=1)
    decided = [i for i, c in enumerate(cats) if w[i] > 0 or c in locked]
    free = [i for i in range(len(cats)) if i not in decided]
    best_val, best_cost, pts = -math.inf, math.inf, []
    for combo, cost, value in zip(combos.tolist(), costs.tolist(), values.tolist()):
        used = {combo[i] for i in decided}
        # zero-weight categories need not use a new expert: they reuse one already resident
        if any(combo[i] not in used and combo[i] != fb for i in free):
            continue
        if cost > budget + TOL * max(1, budget):
            continue
        resident = memory([experts[j] for j in used] + [fallback])
        n_used = len(used - {fb}) + 1
        if max_resident is not None and resident > max_resident * (1 + TOL):
            continue
        if max_experts is not None and n_used > max_experts:
            continue
        pts.append((cost, value))
        if value > best_val + 1e-12:
            best_val, best_cost = value, cost
        elif abs(value - best_val) <= 1e-12:
            best_cost = min(best_cost, cost)
    return best_val, best_cost, pts


def check_map(m, means, weights, reg, budget, locked=None, max_resident=None, max_experts=None):
    metrics = m.metrics(means, reg, weights)
    assert metrics.average_active_params_b <= budget + TOL * max(1, budget)
    if max_resident is not None:
        assert metrics.resident_params_b <= max_resident * (1 + TOL)
    if max_experts is not None:
        assert len(m.experts_used) <= max_experts
    for c, e in (locked or {}).items():
        assert m.expert_for(c) == e
    assert set(m.categories) == set(means.index)
    return metrics


def test_adapters_of_one_base_fit_where_separate_models_would_not():
    """A generalist base and four LoRA adapters of it: under a memory cap of about one base, the
    optimizer uses every specialist (the base is resident once), as the demo's pool holds them."""
    base = 0.1345
    reg = ModelRegistry([ModelInfo("generalist", base, base="smollm2", base_params_b=base)]
                        + [ModelInfo(f"lora-{c}", base + 0.0008, base="smollm2", base_params_b=base)
                           for c in "abcd"])
    means = pd.DataFrame(0.1, index=list("abcd"), columns=reg.names)
    for c in "abcd":
        means.loc[c, f"lora-{c}"] = 0.5
    weights = dict.fromkeys("abcd", 1.0)
    m = optimize_mapping(means, weights, reg, budget_active_b=1.0, max_resident_b=0.14,
                         fallback_expert="generalist")
    assert {c: m.expert_for(c) for c in "abcd"} == {c: f"lora-{c}" for c in "abcd"}
    metrics = m.metrics(means, reg, weights)
    assert metrics.resident_params_b == pytest.approx(base + 4 * 0.0008)
    assert metrics.expected_score == pytest.approx(0.5)


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("seed", range(60))
def test_optimize_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    means, weights, reg = random_case(rng, zero_weight=seed % 3 == 0)
    locked = {}
    if seed % 2:
        c = str(rng.choice(means.index))
        locked[c] = str(rng.choice(means.columns))
    _, _, pts = brute_force(means, weights, reg, locked=locked)
    costs = sorted({round(c, 12) for c, _ in pts})
    budgets = [costs[0], costs[-1], float(rng.uniform(costs[0], costs[-1])), costs[len(costs) // 2]]
    for budget in budgets:
        val, cost, _ = brute_force(means, weights, reg, budget=budget, locked=locked)
        m = optimize_mapping(means, weights, reg, budget_active_b=budget, locked=locked)
        metrics = check_map(m, means, weights, reg, budget, locked)
        assert metrics.expected_score == pytest.approx(val, abs=TOL)
        # ties in score go to the cheaper map
        assert metrics.average_active_params_b == pytest.approx(cost, abs=TOL)


@pytest.mark.parametrize("seed", range(60))
def test_limits_match_brute_force(seed):
    """Seeds 40-59 give experts shared bases (LoRA adapters): a base is resident once."""
    rng = np.random.default_rng(1000 + seed)
    means, weights, reg = random_case(rng, zero_weight=seed % 4 == 0, bases=seed >= 40)
    locked = {str(means.index[0]): str(means.columns[-1])} if seed % 3 == 0 else {}
    fallback = str(rng.choice(means.columns)) if seed % 2 else None
    _, _, pts = brute_force(means, weights, reg, locked=locked, fallback=fallback)
    costs = sorted(c for c, _ in pts)
    budget = float(rng.uniform(costs[0], costs[-1]))
    totals = sorted(m.total_params_b for m in reg)
    everything = (sum(m.total_params_b - (m.base_params_b or 0.0) for m in reg)
                  + sum({m.base: m.base_params_b for m in reg if m.base}.values()))
    max_resident = float(rng.uniform(totals[0], everything)) if seed % 2 == 0 else None
    max_experts = int(rng.integers(1, len(totals) + 1)) if seed % 2 == 1 or seed % 5 == 0 else None
    val, _, feas = brute_force(means, weights, reg, budget=budget, locked=locked, fallback=fallback,
                               max_resident=max_resident, max_experts=max_experts)
    kwargs = dict(budget_active_b=budget, locked=locked, fallback_expert=fallback,
                  max_resident_b=max_resident, max_experts=max_experts)
    if not feas:
        with pytest.raises(InfeasibleBudgetError):
            optimize_mapping(means, weights, reg, **kwargs)
        return
    m = optimize_mapping(means, weights, reg, **kwargs)
    metrics = check_map(m, means, weights, reg, budget, locked, max_resident, max_experts)
    assert metrics.expected_score == pytest.approx(val, abs=TOL)
    if fallback is not None:
        assert m.fallback_expert == fallback


@pytest.mark.parametrize("seed", range(30))
def test_frontier_breakpoints_are_the_brute_force_pareto_set(seed):
    rng = np.random.default_rng(2000 + seed)
    means, weights, reg = random_case(rng, n_cat=int(rng.integers(2, 6)), n_exp=int(rng.integers(3, 6)),
                                      ties=seed % 2 == 0, zero_weight=seed % 5 == 0)
    locked = {str(means.index[-1]): str(means.columns[0])} if seed % 2 else None
    _, _, pts = brute_force(means, weights, reg, locked=locked)
    expected = _pareto_of(pts)  # the brute-force Pareto set
    frontier = pareto_frontier(means, weights, reg, locked=locked)
    got = [(p.average_active_params_b, p.expected_score) for p in frontier]
    assert len(got) == len(expected)
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=TOL)
    for p in frontier:
        assert p.budget_b == p.average_active_params_b
        check_map(p.mapping, means, weights, reg, p.budget_b, locked or {})
        assert p.mapping.metrics(means, reg, weights).expected_score == pytest.approx(p.expected_score, abs=1e-12)
    # strictly better as it gets dearer
    assert all(b.expected_score > a.expected_score for a, b in zip(frontier, frontier[1:]))
    assert all(b.average_active_params_b > a.average_active_params_b for a, b in zip(frontier, frontier[1:]))


def test_frontier_with_budgets_matches_optimize_per_budget():
    rng = np.random.default_rng(7)
    means, weights, reg = random_case(rng, n_cat=6, n_exp=5, ties=False)
    lo = pareto_frontier(means, weights, reg)[0].average_active_params_b
    budgets = list(np.linspace(lo, 15, 25))
    points = pareto_frontier(means, weights, reg, budgets=budgets)
    assert [p.budget_b for p in points] == pytest.approx(budgets)
    for b, p in zip(budgets, points):
        m = optimize_mapping(means, weights, reg, budget_active_b=b)
        assert m.metrics(means, reg, weights).expected_score == pytest.approx(p.expected_score, abs=TOL)
        assert p.average_active_params_b <= b + TOL * b
    # every point is its own object: editing one does not change another
    points[0].mapping.assign("c0", "e1" if points[0].mapping.expert_for("c0") != "e1" else "e2")
    assert points[1].mapping.history == []


def test_frontier_with_limits_per_budget():
    rng = np.random.default_rng(11)
    means, weights, reg = random_case(rng, n_cat=5, n_exp=5, ties=False)
    lo = pareto_frontier(means, weights, reg)[0].average_active_params_b
    budgets = [lo + 0.5, lo + 3, lo + 8]
    points = pareto_frontier(means, weights, reg, budgets=budgets, max_experts=2)
    for b, p in zip(budgets, points):
        val, _, _ = brute_force(means, weights, reg, budget=b, max_experts=2)
        assert p.expected_score == pytest.approx(val, abs=TOL)
        assert len(p.mapping.experts_used) <= 2


def _pareto_of(pts):
    pts = sorted(pts)
    groups: list[list[float]] = []
    for c, v in pts:  # costs equal up to rounding noise count as equal
        if groups and c - groups[-1][0] <= 1e-12:
            groups[-1][1] = max(groups[-1][1], v)
        else:
            groups.append([c, v])
    out, best = [], -math.inf
    for c, v in groups:
        if v > best + 1e-12:
            out.append((c, v))
            best = v
    return out


@pytest.mark.parametrize("seed", range(20))
def test_limited_frontier_breakpoints_match_brute_force(seed):
    rng = np.random.default_rng(3000 + seed)
    means, weights, reg = random_case(rng, n_cat=int(rng.integers(3, 6)), n_exp=int(rng.integers(3, 6)),
                                      ties=seed % 2 == 0, zero_weight=seed % 4 == 0)
    totals = sorted(m.total_params_b for m in reg)
    kwargs = {}
    if seed % 2 == 0:
        kwargs["max_experts"] = int(rng.integers(1, len(totals) + 1))
    if seed % 3 != 1:
        kwargs["max_resident_b"] = float(rng.uniform(totals[-1], sum(totals)))
    locked = {str(means.index[0]): str(means.columns[0])} if seed % 5 == 0 else None
    fallback = str(means.columns[-1])
    _, _, pts = brute_force(means, weights, reg, locked=locked, fallback=fallback,
                            max_resident=kwargs.get("max_resident_b"), max_experts=kwargs.get("max_experts"))
    if not pts:
        with pytest.raises(InfeasibleBudgetError):
            pareto_frontier(means, weights, reg, locked=locked, fallback_expert=fallback, **kwargs)
        return
    frontier = pareto_frontier(means, weights, reg, locked=locked, fallback_expert=fallback, **kwargs)
    expected = _pareto_of(pts)
    got = [(q.average_active_params_b, q.expected_score) for q in frontier]
    assert len(got) == len(expected)
    np.testing.assert_allclose(np.array(got), np.array(expected), atol=TOL)
    for q in frontier:
        check_map(q.mapping, means, weights, reg, q.budget_b, locked,
                  kwargs.get("max_resident_b"), kwargs.get("max_experts"))


def _milp_optimum(means, weights, reg, budget, max_resident=None, max_experts=None, fallback=None):
    from scipy.optimize import Bounds, LinearConstraint, milp

    C, E = means.shape
    w = np.array([weights[c] for c in means.index], dtype=float)
    w /= w.sum()
    a = np.array([reg.active(e) for e in means.columns])
    t = np.array([reg.total(e) for e in means.columns])
    n = C * E + E
    obj = np.zeros(n)
    obj[: C * E] = -(w[:, None] * means.to_numpy()).ravel()
    rows, lb, ub = [], [], []
    for c in range(C):
        r = np.zeros(n)
        r[c * E:(c + 1) * E] = 1
        rows.append(r), lb.append(1), ub.append(1)
    r = np.zeros(n)
    r[: C * E] = (w[:, None] * a[None, :]).ravel()
    rows.append(r), lb.append(-np.inf), ub.append(budget)
    for c in range(C):
        for e in range(E):
            r = np.zeros(n)
            r[c * E + e], r[C * E + e] = 1, -1
            rows.append(r), lb.append(-np.inf), ub.append(0)
    if max_resident is not None:
        r = np.zeros(n)
        r[C * E:] = t
        rows.append(r), lb.append(-np.inf), ub.append(max_resident)
    if max_experts is not None:
        r = np.zeros(n)
        r[C * E:] = 1
        rows.append(r), lb.append(-np.inf), ub.append(max_experts)
    lower = np.zeros(n)
    if fallback is not None:
        lower[C * E + list(means.columns).index(fallback)] = 1
    res = milp(obj, constraints=LinearConstraint(np.array(rows), lb, ub), integrality=np.ones(n),
               bounds=Bounds(lower, np.ones(n)), options={"mip_rel_gap": 0})
    assert res.success
    return -res.fun


def test_matches_scipy_milp_on_a_medium_case():
    rng = np.random.default_rng(3)
    means, weights, reg = random_case(rng, n_cat=12, n_exp=9, ties=False)
    frontier = pareto_frontier(means, weights, reg)
    budgets = np.linspace(frontier[0].budget_b, frontier[-1].budget_b, 7)
    for b, p in zip(budgets, pareto_frontier(means, weights, reg, budgets=budgets)):
        assert p.expected_score == pytest.approx(_milp_optimum(means, weights, reg, b), abs=1e-7)
    fb = optimize_mapping(means, weights, reg, budget_active_b=budgets[3]).fallback_expert
    totals = sorted(m.total_params_b for m in reg)
    cap = totals[0] + totals[-1] + reg.total(fb)
    m = optimize_mapping(means, weights, reg, budget_active_b=budgets[3], max_resident_b=cap, max_experts=3)
    got = m.metrics(means, reg, weights)
    want = _milp_optimum(means, weights, reg, budgets[3], max_resident=cap, max_experts=3, fallback=fb)
    assert got.expected_score == pytest.approx(want, abs=1e-7)
    assert got.resident_params_b <= cap + 1e-9 and got.n_experts <= 3


# ----------------------------------------------------------------------------- semantics
def _toy():
    means = pd.DataFrame(
        {"small": [0.9, 0.2, 0.5], "mid": [0.9, 0.6, 0.55], "large": [0.95, 0.8, 0.9]},
        index=["chat", "math", "law"],
    )
    reg = ModelRegistry({"small": 7.0, "mid": 13.0, "large": 70.0})
    weights = {"chat": 0.5, "math": 0.25, "law": 0.25}
    return means, weights, reg


def test_toy_optimum_by_hand():
    means, weights, reg = _toy()
    # budget 14: chat must stay small (0.5*7 = 3.5); math+law get 10.5 -> both mid (6.5) or...
    m = optimize_mapping(means, weights, reg, budget_active_b=14)
    assert m.assignments == {"chat": "small", "math": "mid", "law": "mid", "fallback": "large"}
    assert m.metrics(means, reg, weights).expected_score == pytest.approx(0.5 * 0.9 + 0.25 * 0.6 + 0.25 * 0.55)
    # with ample budget every category takes its best expert
    top = optimize_mapping(means, weights, reg, budget_active_b=70)
    assert top.assignments == {"chat": "large", "math": "large", "law": "large", "fallback": "large"}
    assert top.fallback_expert == "large"  # default fallback: best mean score


def test_ties_go_to_the_cheaper_expert():
    means, weights, reg = _toy()
    means.loc["chat", "large"] = 0.9  # now small, mid and large tie on chat
    m = optimize_mapping(means, weights, reg, budget_active_b=70)
    assert m.expert_for("chat") == "small"


def test_locked_and_fallback():
    means, weights, reg = _toy()
    m = optimize_mapping(means, weights, reg, budget_active_b=70, locked={"math": "small"},
                         fallback_expert="mid")
    assert m.expert_for("math") == "small" and m.fallback_expert == "mid"
    assert m.expert_for("law") == "large"
    # locking the fallback through `locked` works too, a conflict is an error
    assert optimize_mapping(means, weights, reg, budget_active_b=70,
                            locked={"fallback": "small"}).fallback_expert == "small"
    with pytest.raises(MappingError, match="conflicts"):
        optimize_mapping(means, weights, reg, budget_active_b=70, locked={"fallback": "small"},
                         fallback_expert="mid")


def test_weighted_fallback_row_counts_as_a_locked_category():
    means, weights, reg = _toy()
    means.loc["fallback"] = [0.3, 0.4, 0.7]
    weights = {**weights, "fallback": 1.0}  # half the traffic goes to the fallback
    m = optimize_mapping(means, weights, reg, budget_active_b=70, fallback_expert="mid")
    metrics = m.metrics(means, reg, weights)
    assert "fallback" in list(metrics.per_category.category)
    assert metrics.average_active_params_b == pytest.approx(0.5 * 13 + 0.5 * 70)
    # the fallback's cost is fixed, so a budget below it is infeasible
    with pytest.raises(InfeasibleBudgetError, match="at least 10"):
        optimize_mapping(means, weights, reg, budget_active_b=9, fallback_expert="mid")


def test_resident_and_expert_count_limits():
    means, weights, reg = _toy()
    # only one expert resident: everything on the fallback
    m = optimize_mapping(means, weights, reg, budget_active_b=70, max_experts=1)
    assert set(m.assignments.values()) == {"large"}
    m = optimize_mapping(means, weights, reg, budget_active_b=70, max_resident_b=77,
                         fallback_expert="large")
    assert set(m.experts_used) <= {"small", "large"}
    assert m.metrics(means, reg, weights).resident_params_b <= 77


def test_monolithic_baselines_lie_on_or_below_the_frontier():
    rng = np.random.default_rng(5)
    means, weights, reg = random_case(rng, n_cat=5, n_exp=4)
    base = monolithic_baselines(means, weights, reg)
    assert set(base) == set(means.columns)
    w = np.array([weights[c] for c in means.index])
    w = w / w.sum()
    for e, p in base.items():
        assert p.expected_score == pytest.approx(float(w @ means[e].to_numpy()))
        assert p.average_active_params_b == pytest.approx(reg.active(e))
        assert p.resident_params_b == pytest.approx(reg.total(e))
        assert set(p.mapping.assignments.values()) == {e}
        best = optimize_mapping(means, weights, reg, budget_active_b=p.average_active_params_b)
        assert best.metrics(means, reg, weights).expected_score >= p.expected_score - TOL


# ----------------------------------------------------------------------------- bad input
def test_infeasible_budget_names_the_smallest_feasible_budget():
    means, weights, reg = _toy()
    with pytest.raises(InfeasibleBudgetError, match=r"budget_active_b=5 .* at least 7\b"):
        optimize_mapping(means, weights, reg, budget_active_b=5)
    with pytest.raises(InfeasibleBudgetError, match=r"at least 22\.75"):
        # locked math on large: 0.5*7 + 0.25*70 + 0.25*7 = 22.75
        optimize_mapping(means, weights, reg, budget_active_b=10, locked={"math": "large"})
    with pytest.raises(InfeasibleBudgetError, match="smallest feasible"):
        pareto_frontier(means, weights, reg, budgets=[30, 1])


def test_infeasible_limits_are_explained():
    means, weights, reg = _toy()
    with pytest.raises(InfeasibleBudgetError, match="fallback expert 'large'"):
        optimize_mapping(means, weights, reg, budget_active_b=70, max_resident_b=50)
    # with one expert (the fallback, large) the cheapest map costs 70
    with pytest.raises(InfeasibleBudgetError, match=r"max_experts=1, 70B"):
        optimize_mapping(means, weights, reg, budget_active_b=20, max_experts=1)
    with pytest.raises(MappingError, match="positive integer"):
        optimize_mapping(means, weights, reg, budget_active_b=20, max_experts=0)


def test_bad_inputs_are_clear_errors():
    means, weights, reg = _toy()
    with pytest.raises(RegistryError, match="no parameter counts for 'large'.*Add it to"):
        optimize_mapping(means, weights, reg.subset(["small", "mid"]), budget_active_b=20)
    with pytest.raises(MappingError, match="locked categories \\['poetry'\\]"):
        optimize_mapping(means, weights, reg, budget_active_b=20, locked={"poetry": "small"})
    with pytest.raises(RegistryError, match="'ghost'"):
        optimize_mapping(means, weights, reg, budget_active_b=20, locked={"math": "ghost"})
    reg2 = ModelRegistry({"small": 7.0, "mid": 13.0, "large": 70.0, "unscored": 3.0})
    with pytest.raises(ScoresError, match="locked expert.*no scores.*'unscored'"):
        optimize_mapping(means, weights, reg2, budget_active_b=20, locked={"math": "unscored"})
    nan = means.copy()
    nan.loc["math", "mid"] = np.nan
    with pytest.raises(ScoresError, match="NaN, e.g. expert 'mid' on category 'math'"):
        optimize_mapping(nan, weights, reg, budget_active_b=20, fallback_expert="large")
    with pytest.raises(ScoresError, match=r"no weight for categories \['law'\]"):
        optimize_mapping(means, {"chat": 1, "math": 1}, reg, budget_active_b=20)
    with pytest.raises(ScoresError, match="weights name categories with no scores"):
        optimize_mapping(means, {**weights, "poetry": 1}, reg, budget_active_b=20)
    with pytest.raises(ScoresError, match="finite number >= 0"):
        optimize_mapping(means, {**weights, "law": -1}, reg, budget_active_b=20)
    with pytest.raises(MappingError, match="budget_active_b must be a finite number"):
        optimize_mapping(means, weights, reg, budget_active_b=float("nan"))


def test_params_file_missing_a_model_names_the_model_and_the_file(tmp_path):
    means, weights, _ = _toy()
    path = tmp_path / "params.yaml"
    path.write_text("- {name: small, total_params_b: 7}\n- {name: mid, total_params_b: 13}\n")
    reg = ModelRegistry.load(path)
    with pytest.raises(RegistryError, match=r"no parameter counts for 'large'\. Add it to .*params\.yaml"):
        optimize_mapping(means, weights, reg, budget_active_b=20)
    with pytest.raises(RegistryError, match="'large'"):
        pareto_frontier(means, weights, reg)
    m = CategoryExpertMap({"chat": "small", "math": "large", "law": "mid", "fallback": "large"})
    with pytest.raises(RegistryError, match=r"CategoryExpertMap\.metrics: no parameter counts for 'large'"):
        m.metrics(means, reg, weights)


def test_nan_is_fine_when_the_category_is_locked_away_from_it():
    means, weights, reg = _toy()
    means.loc["math", "mid"] = np.nan
    m = optimize_mapping(means, weights, reg, budget_active_b=70, locked={"math": "large"},
                         fallback_expert="large")
    assert m.expert_for("math") == "large"


# ----------------------------------------------------------------------------- real data
@pytest.mark.shared_data
def test_mmlu_pro_frontier(mmlu_pro_dir):
    from workbench.scores import ExpertScores

    scores = ExpertScores.from_mmlu_pro(mmlu_pro_dir)
    reg = mmlu_pro_registry()
    means, weights = scores.category_means(), scores.category_weights()
    frontier = pareto_frontier(means, weights, reg)
    base = monolithic_baselines(means, weights, reg)
    llama = base["Meta-Llama-3_1-70B-Instruct"]
    assert llama.expected_score == pytest.approx(0.628, abs=0.005)
    # the cheapest point is the smallest model everywhere; Llama-70B is the best expert on every
    # MMLU-Pro category, so the dearest point is Llama-70B everywhere
    assert frontier[0].average_active_params_b == pytest.approx(3.8)
    assert set(frontier[0].mapping.assignments.values()) - {frontier[0].mapping.fallback_expert} == {
        "Phi-3-mini-4k-instruct"}
    assert frontier[-1].expected_score == pytest.approx(max(p.expected_score for p in base.values()))
    assert frontier[-1].average_active_params_b == pytest.approx(70.6)
    # in between, compositions beat every single expert of similar cost
    for name, b in base.items():
        assert optimize_mapping(means, weights, reg, budget_active_b=b.average_active_params_b).metrics(
            scores, reg).expected_score >= b.expected_score - 1e-12
    # at Llama-70B's cost a composition scores at least as well
    at_llama = optimize_mapping(means, weights, reg, budget_active_b=llama.average_active_params_b)
    assert at_llama.metrics(scores, reg).expected_score >= llama.expected_score
    # the frontier agrees with per-prompt scoring of its maps
    p = frontier[len(frontier) // 2]
    assert p.mapping.metrics(scores, reg).expected_score == pytest.approx(p.expected_score, abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_binding_limits_frontier_matches_brute_force(seed):
    rng = np.random.default_rng(4000 + seed)
    means, weights, reg = random_case(rng, n_cat=5, n_exp=5, ties=False)
    small = min(reg, key=lambda m: m.total_params_b).name
    limits = dict(max_experts=2) if seed % 2 else dict(max_resident_b=reg.total(small) + sorted(
        m.total_params_b for m in reg)[2])
    _, _, pts = brute_force(means, weights, reg, fallback=small, max_resident=limits.get("max_resident_b"),
                            max_experts=limits.get("max_experts"))
    frontier = pareto_frontier(means, weights, reg, fallback_expert=small, **limits)
    unlimited = pareto_frontier(means, weights, reg, fallback_expert=small)
    got = [(q.average_active_params_b, q.expected_score) for q in frontier]
    np.testing.assert_allclose(np.array(got), np.array(_pareto_of(pts)), atol=TOL)
    # the limits bind: the limited frontier never beats the unlimited one and ends lower or equal
    assert frontier[-1].expected_score <= unlimited[-1].expected_score + TOL
    # every budget's branch-and-bound optimum lies on the enumerated frontier
    for q in frontier:
        m = optimize_mapping(means, weights, reg, budget_active_b=q.budget_b, fallback_expert=small, **limits)
        assert m.metrics(means, reg, weights).expected_score == pytest.approx(q.expected_score, abs=TOL)


def test_a_custom_fallback_category_is_carried_through_the_optimizer():
    import pandas as pd

    from workbench.mapping import monolithic_baselines, optimize_mapping, pareto_frontier
    from workbench.registry import ModelRegistry

    means = pd.DataFrame({"a": [0.5, 0.9, 0.6], "b": [0.8, 0.6, 0.7]}, index=["x", "y", "unsure"])
    weights = {"x": 1.0, "y": 1.0, "unsure": 0.5}
    reg = ModelRegistry({"a": 7.0, "b": 8.0})
    m = optimize_mapping(means, weights, reg, budget_active_b=8.0, fallback_category="unsure")
    assert m.fallback_category == "unsure" and set(m.categories) == {"x", "y"}
    assert m.expert_for("unsure") in ("a", "b")
    front = pareto_frontier(means, weights, reg, fallback_category="unsure")
    assert all(p.mapping.fallback_category == "unsure" for p in front)
    base = monolithic_baselines(means, weights, reg, fallback_category="unsure")
    assert set(base) == {"a", "b"}


def test_limits_no_map_can_meet_name_what_the_fallback_and_locked_experts_need():
    reg = ModelRegistry([ModelInfo("a", 7.0, base="a", base_params_b=7.0), ModelInfo("b", 13.0),
                         ModelInfo("lora", 7.1, base="a", base_params_b=7.0)])
    means = pd.DataFrame([[0.5, 0.9, 0.6], [0.4, 0.8, 0.7]], index=["x", "y"], columns=["a", "b", "lora"])
    with pytest.raises(InfeasibleBudgetError, match=r"no map satisfies max_resident_b=10 at any budget: "
                       r"the fallback expert 'a' and the locked experts alone need 20B resident in 2 expert"):
        optimize_mapping(means, {"x": 1, "y": 1}, reg, budget_active_b=13, max_resident_b=10,
                         locked={"x": "b"}, fallback_expert="a")
    # the adapter shares the fallback's base: locked on it, the two need 7.1B, within the limit
    m = optimize_mapping(means, {"x": 1, "y": 1}, reg, budget_active_b=13, max_resident_b=7.2,
                         locked={"x": "lora"}, fallback_expert="a")
    assert m.expert_for("x") == "lora" and m.metrics(means, reg, {"x": 1, "y": 1}).resident_params_b == pytest.approx(7.1)
