"""CategoryExpertMap: validation, edits with undo/redo, diff, metrics, files, figures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from workbench.constants import FALLBACK_CATEGORY
from workbench.errors import MappingError, RegistryError, ScoresError
from workbench.mapping import CategoryExpertMap, Edit, optimize_mapping, pareto_frontier
from workbench.registry import ModelRegistry
from workbench.scores import ExpertScores

EXPERTS = ["qwen", "llama", "phi"]
CATS = ["math", "law", "chat"]


def make_map(**kw):
    return CategoryExpertMap(
        {"math": "qwen", "law": "llama", "chat": "phi", "fallback": "llama"},
        experts=EXPERTS, categories=CATS, **kw,
    )


@pytest.fixture
def reg():
    return ModelRegistry({"qwen": 7.7, "llama": 70.6, "phi": 3.8, "moe": (46.7, 12.9)})


def test_basic_access():
    m = make_map()
    assert FALLBACK_CATEGORY == "fallback"
    assert m.categories == CATS
    assert m.assignments == {"math": "qwen", "law": "llama", "chat": "phi", "fallback": "llama"}
    assert m.fallback_category == "fallback" and m.fallback_expert == "llama"
    assert m.experts_used == ["qwen", "llama", "phi"]
    assert m.expert_for("law") == "llama" and m["fallback"] == "llama"
    a = m.assignments
    a["law"] = "phi"  # a copy: the map is unchanged
    assert m.expert_for("law") == "llama"
    assert "law" in m and "poetry" not in m and len(m) == 4
    with pytest.raises(MappingError, match="category 'poetry' is not in the map; known categories: math, law, chat, fallback"):
        m.expert_for("poetry")


def test_registry_as_known_experts(reg):
    m = CategoryExpertMap({"math": "moe", "fallback": "llama"}, experts=reg)
    assert m.known_experts == reg.names
    with pytest.raises(MappingError, match="unknown expert 'gpt'"):
        CategoryExpertMap({"math": "gpt", "fallback": "llama"}, experts=reg)


@pytest.mark.parametrize(
    "assignments, match",
    [
        ({"math": "qwen", "law": "llama", "chat": "phi"}, "no 'fallback' entry; add 'fallback'"),
        ({"math": "qwen", "law": "llama", "chat": "gpt", "fallback": "llama"},
         "category 'chat' maps to unknown expert 'gpt'; known experts: qwen, llama, phi"),
        ({"math": "qwen", "law": "llama", "chat": "phi", "poetry": "phi", "fallback": "llama"},
         "category 'poetry' is not one of the router's categories: math, law, chat"),
        ({"math": "qwen", "fallback": "llama"}, "categories 'law', 'chat' are not mapped"),
        ({"math": 3, "law": "llama", "chat": "phi", "fallback": "llama"}, "not an expert name"),
    ],
)
def test_validation(assignments, match):
    with pytest.raises(MappingError, match=match):
        CategoryExpertMap(assignments, experts=EXPERTS, categories=CATS)


def test_custom_fallback_category():
    m = CategoryExpertMap({"math": "qwen", "unsure": "llama"}, fallback_category="unsure")
    assert m.categories == ["math"] and m.fallback_expert == "llama"
    back = CategoryExpertMap.from_dict(m.to_dict())
    assert back == m and back.fallback_category == "unsure"


def test_edits_undo_redo_history():
    m = make_map()
    assert not m.can_undo and not m.can_redo
    m.assign("math", "llama")
    m.assign("chat", "qwen")
    m.assign("chat", "qwen")  # no-op: not recorded
    assert m.history == [Edit("math", "qwen", "llama"), Edit("chat", "phi", "qwen")]
    assert str(m.history[0]) == "math: qwen -> llama"
    assert m.undo() == Edit("chat", "phi", "qwen")
    assert m.expert_for("chat") == "phi" and m.can_redo
    assert m.redo() == Edit("chat", "phi", "qwen")
    assert m.expert_for("chat") == "qwen"
    m.undo()
    m.undo()
    assert m == make_map() and not m.can_undo
    with pytest.raises(MappingError, match="nothing to undo"):
        m.undo()
    m.redo()
    m.assign("law", "phi")  # a new edit clears the redo stack
    assert not m.can_redo
    with pytest.raises(MappingError, match="nothing to redo"):
        m.redo()
    with pytest.raises(MappingError, match="unknown expert 'gpt'; known experts"):
        m.assign("law", "gpt")
    with pytest.raises(MappingError, match="'poetry' is not in the map"):
        m.assign("poetry", "phi")
    m.assign("fallback", "qwen")
    assert m.fallback_expert == "qwen"


def test_diff():
    a, b = make_map(), make_map()
    assert a.diff(b) == []
    b.assign("math", "llama")
    b.assign("fallback", "phi")
    assert a.diff(b) == ["math: qwen -> llama", "fallback: llama -> phi"]
    assert b.diff(a) == ["math: llama -> qwen", "fallback: phi -> llama"]
    c = CategoryExpertMap({"math": "qwen", "poetry": "phi", "fallback": "llama"})
    assert a.diff(c) == ["law: llama -> (unmapped)", "chat: phi -> (unmapped)", "poetry: (unmapped) -> phi"]


def _scores():
    # math: 2 prompts, law: 1, chat: 1
    values = np.array([
        # qwen llama phi
        [1.0, 1.0, 0.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 1.0],
        [0.0, 1.0, 1.0],
    ])
    return ExpertScores(values, ["m1", "m2", "l1", "c1"], EXPERTS, ["math", "math", "law", "chat"])


def test_metrics_by_hand(reg):
    m = make_map()
    met = m.metrics(_scores(), reg)
    # weights .5 .25 .25; scores qwen@math 1.0, llama@law 1.0, phi@chat 1.0
    assert met.expected_score == pytest.approx(1.0)
    assert met.average_active_params_b == pytest.approx(0.5 * 7.7 + 0.25 * 70.6 + 0.25 * 3.8)
    assert met.resident_params_b == pytest.approx(7.7 + 70.6 + 3.8)
    assert met.n_experts == 3
    per = met.per_category.set_index("category")
    assert list(per.index) == CATS
    assert per.loc["math", "weight"] == pytest.approx(0.5)
    assert per.score_contribution.sum() == pytest.approx(met.expected_score)
    assert per.active_contribution.sum() == pytest.approx(met.average_active_params_b)
    m.assign("math", "phi")
    assert m.metrics(_scores(), reg).expected_score == pytest.approx(0.5)
    # a means table with explicit weights gives the same numbers
    s = _scores()
    met2 = m.metrics(s.category_means(), reg, s.category_weights())
    assert met2.expected_score == pytest.approx(0.5)
    # equal weights for a means table without weights
    assert m.metrics(s.category_means(), reg).expected_score == pytest.approx((0 + 1 + 1) / 3)


def test_fallback_resident_even_when_unused_elsewhere(reg):
    m = CategoryExpertMap({"math": "qwen", "law": "qwen", "chat": "qwen", "fallback": "moe"})
    met = m.metrics(_scores(), reg)
    assert met.resident_params_b == pytest.approx(7.7 + 46.7)
    assert met.average_active_params_b == pytest.approx(7.7)  # fallback has no weight here


def test_metrics_bad_input(reg):
    s = _scores()
    m = CategoryExpertMap({"math": "moe", "law": "llama", "chat": "phi", "fallback": "llama"})
    with pytest.raises(ScoresError, match="mapped to 'moe', which has no scores"):
        m.metrics(s, reg)
    m = make_map()
    with pytest.raises(RegistryError, match="no parameter counts for 'phi'"):
        m.metrics(s, ModelRegistry({"qwen": 7.7, "llama": 70.6}))
    partial = CategoryExpertMap({"math": "qwen", "law": "llama", "fallback": "llama"})
    with pytest.raises(MappingError, match=r"categories \['chat'\] that the map does not assign"):
        partial.metrics(s, reg)
    nan = s.category_means()
    nan.loc["math", "qwen"] = np.nan
    with pytest.raises(ScoresError, match="'qwen' on category 'math' is NaN"):
        m.metrics(nan, reg, s.category_weights())
    with pytest.raises(ScoresError, match=r"no weight for categories \['chat'\]"):
        m.metrics(s.category_means(), reg, {"math": 1, "law": 1})
    extra = CategoryExpertMap({"math": "qwen", "law": "llama", "chat": "phi", "poetry": "phi", "fallback": "llama"})
    with pytest.raises(ScoresError, match="no scores for category 'poetry'"):
        extra.metrics(s.category_means(), reg, {**s.category_weights(), "poetry": 0.1})
    # a mapped category with no scored prompts simply has zero weight
    assert extra.metrics(s, reg).expected_score == pytest.approx(1.0)


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_file_round_trip(tmp_path, suffix):
    m = make_map()
    m.assign("law", "phi")
    path = m.save(tmp_path / f"map{suffix}")
    back = CategoryExpertMap.load(path, experts=EXPERTS, categories=CATS)
    assert back == m and back.assignments == m.assignments
    assert list(back.assignments) == list(m.assignments)
    assert CategoryExpertMap.from_dict(m.to_dict()) == m
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temp file


def test_plain_mapping_file_and_errors_with_line_numbers(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("# my map\nmath: qwen\nlaw: llama\nchat: phi\nlawx: phi\nfallback: llama\n")
    with pytest.raises(MappingError, match=r"mapping\.yaml: category 'lawx' is not one of the router's categories: math, law, chat.*'lawx' on line 5"):
        CategoryExpertMap.load(path, categories=CATS)
    path.write_text("math: qwen\nlaw: gpt-5\nchat: phi\nfallback: llama\n")
    with pytest.raises(MappingError, match=r"unknown expert 'gpt-5'.*'law' on line 2"):
        CategoryExpertMap.load(path, experts=EXPERTS)
    assert CategoryExpertMap.load(path).expert_for("law") == "gpt-5"  # no known experts: accepted
    jpath = tmp_path / "m.json"
    jpath.write_text(json.dumps({"fallback_category": "fallback",
                                 "assignments": {"math": "qwen", "law": "nobody", "fallback": "llama"}}, indent=2))
    with pytest.raises(MappingError, match=r"unknown expert 'nobody'.*'law' on line 5"):
        CategoryExpertMap.load(jpath, experts=EXPERTS)
    jpath.write_text("{not json")
    with pytest.raises(MappingError, match="is not valid JSON"):
        CategoryExpertMap.load(jpath)
    path.write_text("math: [\n")
    with pytest.raises(MappingError, match="is not valid YAML"):
        CategoryExpertMap.load(path)
    with pytest.raises(MappingError, match="does not exist"):
        CategoryExpertMap.load(tmp_path / "nope.yaml")
    with pytest.raises(MappingError, match="use a .json, .yaml or .yml"):
        make_map().save(tmp_path / "m.txt")
    with pytest.raises(MappingError, match="unknown keys"):
        CategoryExpertMap.from_dict({"assignments": {"fallback": "x"}, "budget": 3})


def test_optimized_map_round_trips_and_validates(tmp_path, reg):
    s = _scores()
    m = optimize_mapping(s.category_means(), s.category_weights(), reg.subset(EXPERTS), budget_active_b=20)
    assert m.known_experts == EXPERTS and m.categories == ["chat", "law", "math"]
    back = CategoryExpertMap.load(m.save(tmp_path / "opt.yaml"), experts=reg)
    assert back == m
    with pytest.raises(MappingError, match="unknown expert"):
        m.assign("law", "moe")  # known experts come from the (subset) registry


def test_figures(reg):
    pytest.importorskip("plotly")
    from workbench.mapping import monolithic_baselines
    from workbench.plots.mapping import category_expert_heatmap, frontier_figure

    s = _scores()
    r = reg.subset(EXPERTS)
    points = pareto_frontier(s.category_means(), s.category_weights(), r)
    base = monolithic_baselines(s.category_means(), s.category_weights(), r)
    current = make_map().metrics(s, r)
    fig = frontier_figure(points, baselines={k: (v.average_active_params_b, v.expected_score) for k, v in base.items()},
                          current=(current.average_active_params_b, current.expected_score))
    names = [t.name for t in fig.data]
    assert names == ["optimal maps (frontier)", "single experts (hover for names)", "current map"]
    assert list(fig.data[0].x) == sorted(p.average_active_params_b for p in points)
    assert list(fig.data[1].text) == list(base)
    assert fig.data[2].x[0] == pytest.approx(current.average_active_params_b)
    assert "math: " in fig.data[0].text[0]  # hover shows the map
    # FrontierPoints and MapMetrics are accepted directly
    fig2 = frontier_figure(points, baselines=base, current=current)
    assert fig2.data[1].y[0] == pytest.approx(base["qwen"].expected_score)
    heat = category_expert_heatmap(s.category_means(), make_map())
    assert list(heat.data[0].x) == EXPERTS and list(heat.data[0].y) == ["chat", "law", "math"]
    assert sorted(zip(heat.data[1].y, heat.data[1].x)) == [("chat", "phi"), ("law", "llama"), ("math", "qwen")]
    assert len(category_expert_heatmap(s).data) == 1


def test_realised_metrics_with_router_predictions(reg):
    s = _scores()
    m = make_map()
    predicted = ["math", "law", "fallback", "chat"]  # m2 misrouted to law, l1 to the fallback
    realised = m.metrics(s.with_categories(predicted), reg)
    chosen = m.experts_for(predicted)
    assert chosen.tolist() == ["qwen", "llama", "llama", "phi"]
    per_prompt = [s.values[i, EXPERTS.index(e)] for i, e in enumerate(chosen)]
    assert realised.expected_score == pytest.approx(np.mean(per_prompt))
    assert realised.average_active_params_b == pytest.approx(np.mean([reg.active(e) for e in chosen]))
    assert "fallback" in set(realised.per_category.category)
    with pytest.raises(MappingError, match=r"categories \['poetry'\] are not in the map"):
        m.experts_for(["math", "poetry"])


def test_assign_many_is_one_undoable_action_and_all_or_nothing():
    from workbench.mapping import CategoryExpertMap
    from workbench.mapping import Edit, EditGroup

    m = CategoryExpertMap({"math": "a", "law": "a", "code": "a", "fallback": "b"}, experts=["a", "b", "c"])
    edits = m.assign_many([("math", "b"), ("law", "c"), ("code", "a")])  # code unchanged: skipped
    assert edits == [Edit("math", "a", "b"), Edit("law", "a", "c")]
    m.assign("code", "c")
    assert m.undo() == Edit("code", "a", "c")            # a single edit comes back as an Edit
    group = m.undo()                                      # the two-row action as one group
    assert isinstance(group, EditGroup) and str(group) == "math: a -> b; law: a -> c"
    assert m.assignments == {"math": "a", "law": "a", "code": "a", "fallback": "b"}
    assert isinstance(m.redo(), EditGroup) and m.expert_for("law") == "c"
    with pytest.raises(MappingError, match="unknown expert"):
        m.assign_many([("math", "c"), ("code", "nobody")])
    assert m.expert_for("math") == "b"                    # nothing of the bad action was applied
    assert [len(a) for a in m.actions] == [2] and len(m.history) == 2
