"""ExpertScores: readers, per-category summaries, best-expert labels and bad input."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from workbench.errors import ScoresError
from workbench.scores import ExpertScores


@pytest.fixture
def small():
    values = np.array([
        [1, 0, 1],
        [0, 1, 1],
        [1, 1, 0],
        [0, 0, 1],
        [1, 0, 0],
    ], dtype=float)
    return ExpertScores(values, ["p1", "p2", "p3", "p4", "p5"], ["a", "b", "c"],
                        ["math", "law", "math", "law", "math"])


def test_values_are_a_read_only_copy():
    arr = np.array([[1.0, 0.0]])
    s = ExpertScores(arr, ["p"], ["a", "b"])
    assert arr.flags.writeable  # the caller's array is untouched
    arr[0, 0] = 0.0
    assert s.values[0, 0] == 1.0
    with pytest.raises(ValueError):
        s.values[0, 0] = 5.0


def test_summaries(small):
    means = small.category_means()
    assert list(means.index) == ["law", "math"] and list(means.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(means.loc["math"], [1.0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(means.loc["law"], [0.0, 0.5, 1.0])
    assert small.category_weights() == pytest.approx({"law": 0.4, "math": 0.6})
    assert small.category_counts() == {"law": 2, "math": 3}
    assert small.expert_means() == pytest.approx({"a": 0.6, "b": 0.4, "c": 0.6})
    assert list(small.category_means(["math"]).index) == ["math"]
    assert small.oracle_score() == pytest.approx(1.0)
    with pytest.raises(ScoresError, match="no scored prompts in category 'poetry'"):
        small.category_means(["math", "poetry"])


def test_per_category_wilson_interval():
    values = np.array([[1.0]] * 8 + [[0.0]] * 2)
    s = ExpertScores(values, [f"q{i}" for i in range(10)], ["m"], ["x"] * 10)
    row = s.per_category().iloc[0]
    assert list(s.per_category().columns) == ["category", "expert", "mean", "count", "ci_low", "ci_high"]
    assert row["mean"] == 0.8 and row["count"] == 10
    # the classic Wilson 95% interval for 8/10
    assert row["ci_low"] == pytest.approx(0.4902, abs=1e-4)
    assert row["ci_high"] == pytest.approx(0.9433, abs=1e-4)
    narrow = s.per_category(confidence=0.5).iloc[0]
    assert row["ci_low"] < narrow["ci_low"] < 0.8 < narrow["ci_high"] < row["ci_high"]
    with pytest.raises(ScoresError, match="confidence must be in"):
        s.per_category(confidence=95)


def test_per_category_t_interval_for_judge_scores():
    vals = np.array([[7.0], [8.0], [9.0], [6.0]])
    s = ExpertScores(vals, list("abcd"), ["judge"], ["w"] * 4)
    row = s.per_category().iloc[0]
    from scipy import stats

    half = stats.t.ppf(0.975, 3) * np.std(vals, ddof=1) / 2
    assert row["ci_low"] == pytest.approx(7.5 - half) and row["ci_high"] == pytest.approx(7.5 + half)


def test_best_expert_ties_go_to_cheapest_then_name(small):
    # p1: a and c tie; p2: b and c; p3: a and b; p4: c; p5: a
    assert small.best_expert().tolist() == ["a", "b", "a", "c", "a"]
    costs = {"a": 70.0, "b": 7.0, "c": 7.0}
    assert small.best_expert(costs).tolist() == ["c", "b", "b", "c", "a"]
    with pytest.raises(ScoresError, match=r"no cost for expert\(s\) \['c'\]"):
        small.best_expert({"a": 1, "b": 2})


def test_subset_in_given_order_and_unknown_ids(small):
    sub = small.subset(["p3", "p1"])
    assert sub.prompt_ids == ["p3", "p1"]
    assert sub.values.tolist() == [[1, 1, 0], [1, 0, 1]]
    assert sub.categories.tolist() == ["math", "math"]
    with pytest.raises(ScoresError, match=r"2 prompt ids have no scores, e.g. \['zz', 'yy'\]"):
        small.subset(["p1", "zz", "yy"])
    assert small.select_experts(["c", "a"]).values[:, 0].tolist() == [1, 1, 0, 1, 0]
    with pytest.raises(ScoresError, match="no scores for expert.*'d'"):
        small.select_experts(["d"])
    relabelled = small.with_categories(["x"] * 5)
    assert relabelled.category_weights() == {"x": 1.0}


def test_long_and_wide_round_trip(small):
    long = small.to_long()
    assert list(long.columns) == ["prompt_id", "expert", "score", "category"]
    back = ExpertScores.from_long(long.sample(frac=1, random_state=0))
    back = back.subset(small.prompt_ids).select_experts(small.experts)
    np.testing.assert_array_equal(back.values, small.values)
    assert back.categories.tolist() == small.categories.tolist()
    wide = long.pivot(index=["prompt_id", "category"], columns="expert", values="score").reset_index()
    w = ExpertScores.from_wide(wide)
    assert w.experts == ["a", "b", "c"]
    np.testing.assert_array_equal(w.subset(small.prompt_ids).values, small.values)


def test_file_readers(tmp_path, small):
    small.to_long().to_csv(tmp_path / "long.csv", index=False)
    s = ExpertScores.from_file(tmp_path / "long.csv")
    assert s.subset(small.prompt_ids).select_experts(small.experts).values.tolist() == small.values.tolist()
    wide = pd.DataFrame({"prompt_id": ["007", "8"], "category": ["x", "y"], "m1": [1, 0], "m2": [0.5, 0.25]})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    s = ExpertScores.from_file(tmp_path / "wide.csv")
    assert s.prompt_ids == ["007", "8"] and s.experts == ["m1", "m2"]


def test_missing_scores_raise_or_drop():
    df = pd.DataFrame({"prompt_id": ["a", "a", "b"], "expert": ["x", "y", "x"], "score": [1, 0, 1],
                       "category": ["c", "c", "d"]})
    with pytest.raises(ScoresError, match=r"missing .*'y' lacks 1.*prompt 'b' and expert 'y'.*on_missing='drop'"):
        ExpertScores.from_long(df)
    s = ExpertScores.from_long(df, on_missing="drop")
    assert s.prompt_ids == ["a"] and s.categories.tolist() == ["c"]
    wide = pd.DataFrame({"prompt_id": ["a", "b"], "x": [1.0, np.nan], "y": [0.0, 1.0]})
    with pytest.raises(ScoresError, match="'x' lacks 1"):
        ExpertScores.from_wide(wide)
    assert ExpertScores.from_wide(wide, on_missing="drop").prompt_ids == ["a"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(values=[[1.0, np.nan]], prompt_ids=["p"], experts=["a", "b"]),
         r"1 scores are NaN or infinite, e.g. \(prompt, expert\) = \('p', 'b'\)"),
        (dict(values=[[1.0, 2.0]], prompt_ids=["p"], experts=["a"]), "shape \\(1, 2\\) but there are 1 prompt ids and 1 experts"),
        (dict(values=[[1.0], [0.0]], prompt_ids=["p", "p"], experts=["a"]), "duplicate prompt ids: \\['p'\\]"),
        (dict(values=[[1.0, 0.0]], prompt_ids=["p"], experts=["a", "a"]), "duplicate experts"),
        (dict(values=[1.0, 0.0], prompt_ids=["p"], experts=["a"]), "2-D"),
        (dict(values=[[1.0]], prompt_ids=["p"], experts=["a"], categories=["x", "y"]), "2 categories for 1 prompts"),
        (dict(values=[[1.0]], prompt_ids=["p"], experts=["a"], categories=[None]), "have no category"),
        (dict(values=[["x"]], prompt_ids=["p"], experts=["a"]), "scores must be numbers"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises(ScoresError, match=match):
        ExpertScores(**kwargs)


def test_bad_tables():
    df = pd.DataFrame({"prompt_id": ["a", "a"], "expert": ["x", "x"], "score": [1, 0]})
    with pytest.raises(ScoresError, match="repeat a \\(prompt, expert\\) pair"):
        ExpertScores.from_long(df)
    df = pd.DataFrame({"prompt_id": ["a"], "expert": ["x"], "score": ["bad"]})
    with pytest.raises(ScoresError, match="NaN or not numbers"):
        ExpertScores.from_long(df)
    with pytest.raises(ScoresError, match=r"lacks column\(s\) \['score'\]"):
        ExpertScores.from_long(pd.DataFrame({"prompt_id": ["a"], "expert": ["x"]}))
    df = pd.DataFrame({"prompt_id": ["a", "a"], "expert": ["x", "y"], "score": [1, 0], "category": ["c", "d"]})
    with pytest.raises(ScoresError, match="several categories"):
        ExpertScores.from_long(df)
    s = ExpertScores([[1.0]], ["p"], ["a"])
    with pytest.raises(ScoresError, match="needs each prompt's category"):
        s.category_means()


def _write_mmlu_zip(path, records):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(path.stem + ".json", json.dumps(records))


def test_from_mmlu_pro_on_synthetic_files(tmp_path):
    def rec(qid, cat, pred, answer="A"):
        return {"question_id": qid, "question": "q", "options": [], "answer": answer, "answer_index": 0,
                "cot_content": "", "category": cat, "src": "s", "pred": pred, "generated_text": ""}

    _write_mmlu_zip(tmp_path / "model_outputs_alpha_5shots.zip",
                    [rec(1, "math", "A"), rec(2, "law", None), rec(3, "law", "B")])
    _write_mmlu_zip(tmp_path / "model_outputs_beta-7B_5shots.zip",
                    [rec(1, "math", "B"), rec(2, "law", "A")])
    s = ExpertScores.from_mmlu_pro(tmp_path)
    assert s.experts == ["alpha", "beta-7B"]
    assert s.prompt_ids == ["1", "2"]  # common questions only
    assert s.values.tolist() == [[1.0, 0.0], [0.0, 1.0]]  # pred None counts as wrong
    assert s.categories.tolist() == ["math", "law"]
    again = ExpertScores.from_mmlu_pro(tmp_path)  # from the on-disk cache
    assert again.values.tolist() == s.values.tolist() and again.prompt_ids == s.prompt_ids
    assert again.categories.tolist() == s.categories.tolist() and again.experts == s.experts
    # a changed file invalidates the cache
    _write_mmlu_zip(tmp_path / "model_outputs_beta-7B_5shots.zip",
                    [rec(1, "math", "A"), rec(2, "law", "A"), rec(3, "law", "A")])
    assert ExpertScores.from_mmlu_pro(tmp_path).values.tolist() == [[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]]
    _write_mmlu_zip(tmp_path / "model_outputs_beta-7B_5shots.zip",
                    [rec(1, "math", "B"), rec(2, "law", "A")])
    full = ExpertScores.from_mmlu_pro(tmp_path, common_only=False, cache=False)
    assert full.prompt_ids == ["1", "2", "3"] and full.values[2].tolist() == [0.0, 0.0]
    assert ExpertScores.from_mmlu_pro(tmp_path, models=["beta-7B"]).experts == ["beta-7B"]
    with pytest.raises(ScoresError, match="no MMLU-Pro result file for model.*'gamma'.*available: alpha, beta-7B"):
        ExpertScores.from_mmlu_pro(tmp_path, models=["gamma"])
    with pytest.raises(ScoresError, match="no MMLU-Pro result files"):
        ExpertScores.from_mmlu_pro(tmp_path / "..")
    with pytest.raises(ScoresError, match="does not exist"):
        ExpertScores.from_mmlu_pro(tmp_path / "missing")


@pytest.mark.shared_data
def test_from_mmlu_pro_matches_known_accuracies(mmlu_pro_dir):
    s = ExpertScores.from_mmlu_pro(mmlu_pro_dir)
    assert s.values.shape == (12032, 13)
    assert len(s.category_weights()) == 14
    means = s.expert_means()
    # MMLU-Pro leaderboard (5-shot CoT): Llama-3.1-70B-Instruct ~0.63, Llama-3.1-8B ~0.44
    assert means["Meta-Llama-3_1-70B-Instruct"] == pytest.approx(0.628, abs=0.005)
    assert means["Meta-Llama-3_1-8B-Instruct"] == pytest.approx(0.442, abs=0.005)
    assert max(means, key=means.get) == "Meta-Llama-3_1-70B-Instruct"
    per = s.per_category()
    assert len(per) == 14 * 13 and (per.ci_low <= per["mean"]).all() and (per["mean"] <= per.ci_high).all()
    assert per["count"].sum() == 12032 * 13
    # the per-prompt best expert is mostly the strongest model
    best = s.best_expert({e: 1.0 for e in s.experts})
    assert (best == "Meta-Llama-3_1-70B-Instruct").mean() > 0.5
