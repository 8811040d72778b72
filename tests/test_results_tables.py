"""Your own results tables through the whole protocol: readers, checks, AIQ, `frontier` and `score`.

The protocol's numbers on hand-built long and wide tables are checked against a brute-force
computation written here (every map enumerated, the safety rule applied by hand); every bad input
is checked for a message that names the file, the row and the fix in command-line terms.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

MODELS = {"small": 2.0, "mid": 8.0, "big": 40.0}
CATS = ["law", "math", "bio"]
SKILL = {"law": [0.3, 0.6, 0.8], "math": [0.7, 0.4, 0.9], "bio": [0.5, 0.55, 0.6]}
BUDGETS = [4.0, 12.0, 30.0]


def _hand_table(n_per=14, seed=0):
    """A long table of judge grades (3 decimals, so no ties between maps): prompt-major rows."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in CATS:
        for i in range(n_per):
            for j, m in enumerate(MODELS):
                grade = float(np.clip(rng.normal(SKILL[c][j], 0.25), 0, 1).round(3))
                rows.append({"prompt_id": f"{c}-{i:02d}", "category": c, "model": m,
                             "score": grade})
    return pd.DataFrame(rows)


def _params(tmp_path, models=MODELS):
    path = tmp_path / "params.yaml"
    path.write_text("".join(f"- {{name: {m}, total_params_b: {p}, active_params_b: {p}}}\n"
                            for m, p in models.items()))
    return path


def _frontier(args, capsys):
    from workbench.cli import main

    rc = main(["frontier", *map(str, args), "--json", "--quiet"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    return json.loads(cap.out.strip().splitlines()[-1]), cap.out


def _frontier_error(args, capsys) -> str:
    from workbench.cli import main

    rc = main(["frontier", *map(str, args), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


# ----------------------------------------------------------------------------------- brute force
def _brute_hull_mean(costs, quals, top, grid=200_001):
    """AIQ by definition: on a fine grid, the best chord or flat extension of any points below c."""
    costs, quals = np.asarray(costs, float), np.asarray(quals, float)
    xs = np.linspace(0.0, top, grid)
    best = np.zeros_like(xs)
    for i in range(len(costs)):
        after = xs >= costs[i]
        best[after] = np.maximum(best[after], quals[i])       # flat to the right of a point
        for j in range(len(costs)):
            if costs[j] > costs[i]:
                sel = (xs >= costs[i]) & (xs <= costs[j])
                t = (xs[sel] - costs[i]) / (costs[j] - costs[i])
                best[sel] = np.maximum(best[sel], quals[i] + t * (quals[j] - quals[i]))
    return float(np.trapezoid(best, xs) / top) if hasattr(np, "trapezoid") else \
        float(np.trapz(best, xs) / top)


def _brute_protocol(df, budgets, seed=0):
    """The true-category protocol by hand: split, every map, the safety rule, held-out numbers."""
    from sklearn.model_selection import train_test_split

    from workbench.evaluate import MARGIN_STEPS

    models = list(dict.fromkeys(df["model"]))
    wide = df.pivot(index="prompt_id", columns="model", values="score")
    order = list(dict.fromkeys(df["prompt_id"]))
    wide = wide.loc[order, models]
    cat = df.drop_duplicates("prompt_id").set_index("prompt_id").loc[order, "category"].to_numpy()
    S = wide.to_numpy(float)
    idx = np.arange(len(order))
    cal, held = train_test_split(idx, test_size=0.5, random_state=seed, stratify=cat)
    cal, held = np.sort(cal), np.sort(held)
    cats = sorted(set(cat))
    w = {c: float(np.mean(cat[cal] == c)) for c in cats}
    mean = {c: S[cal][cat[cal] == c].mean(axis=0) for c in cats}
    active = np.array([MODELS[m] for m in models])
    out = []
    for budget in budgets:
        chosen = None
        for f in MARGIN_STEPS:
            target = budget * (1 - f)
            best = None
            for combo in itertools.product(range(len(models)), repeat=len(cats)):
                cost = sum(w[c] * active[j] for c, j in zip(cats, combo))
                if cost > target * (1 + 1e-9):
                    continue
                value = sum(w[c] * mean[c][j] for c, j in zip(cats, combo))
                key = (round(value, 12), -cost)
                if best is None or key > best[0]:
                    best = (key, dict(zip(cats, combo)))
            assert best is not None, "pick budgets every margin can meet"
            assign = best[1]
            costs = np.array([active[assign[c]] for c in cat[cal]])
            if costs.mean() + 3.0 * costs.std() / np.sqrt(len(held)) <= budget * (1 + 1e-12):
                chosen = assign
                break
        pick = np.array([chosen[c] for c in cat[held]])
        out.append({"budget_b": budget,
                    "accuracy": float(S[held, pick].mean()),
                    "avg_active_b": float(active[pick].mean()),
                    "mapping": {c: models[j] for c, j in chosen.items()}})
    models_acc = {m: float(S[held, j].mean()) for j, m in enumerate(models)}
    top = max([b["avg_active_b"] for b in out] + list(active))
    aiq = {"coe": _brute_hull_mean([b["avg_active_b"] for b in out],
                                   [b["accuracy"] for b in out], top),
           "models": _brute_hull_mean(active, list(models_acc.values()), top)}
    return {"budgets": out, "models": models_acc,
            "oracle_per_question": float(S[held].max(axis=1).mean()),
            "n_held_out": len(held), "aiq": aiq}


def _check_against_brute(data, brute):
    assert data["routing"] == "true_categories" and data["router_accuracy"] is None
    assert data["direct"] == [] and data["aiq"]["direct"] is None
    assert data["n_held_out"] == brute["n_held_out"]
    assert data["models"] == pytest.approx(brute["models"], abs=1e-12)
    assert data["oracle_per_question"] == pytest.approx(brute["oracle_per_question"], abs=1e-12)
    for got, want in zip(data["budgets"], brute["budgets"]):
        assert got["budget_b"] == want["budget_b"]
        assert {c: e for c, e in got["mapping"].items() if c != "fallback"} == want["mapping"]
        assert got["accuracy"] == pytest.approx(want["accuracy"], abs=1e-12)
        assert got["avg_active_b"] == pytest.approx(want["avg_active_b"], abs=1e-12)
        assert got["oracle_accuracy"] == got["accuracy"]
    assert data["aiq"]["coe"] == pytest.approx(brute["aiq"]["coe"], abs=1e-4)
    assert data["aiq"]["models"] == pytest.approx(brute["aiq"]["models"], abs=1e-4)


# ------------------------------------------------------------------------------------------ AIQ
def test_aiq_is_routerbench_area_under_the_nondecreasing_hull():
    from workbench.mapping.frontier import aiq, nondecreasing_hull

    # a dominated point under the chord, a better cheaper point, a worse dearer one
    c, q = nondecreasing_hull([1.0, 2.0, 3.0, 4.0, 3.0], [0.2, 0.3, 0.6, 0.5, 0.55])
    assert c.tolist() == [1.0, 3.0] and q.tolist() == [0.2, 0.6]
    # area: chord 1..3 (0.8) + flat 3..4 (0.6), over 4
    assert aiq([1, 2, 3, 4], [0.2, 0.3, 0.6, 0.5]) == pytest.approx(1.4 / 4)
    assert aiq([5.0], [0.7], max_cost=10.0) == pytest.approx(0.35)
    rng = np.random.default_rng(3)
    for _ in range(5):
        costs, quals = rng.uniform(1, 50, 7), rng.uniform(0, 1, 7)
        assert aiq(costs, quals, max_cost=60.0) == pytest.approx(
            _brute_hull_mean(costs, quals, 60.0), abs=1e-4)


def test_aiq_bad_inputs():
    from workbench.errors import UsageError
    from workbench.mapping.frontier import aiq

    with pytest.raises(UsageError, match="as many costs as qualities"):
        aiq([1.0, 2.0], [0.5])
    with pytest.raises(UsageError, match="below the largest cost"):
        aiq([1.0, 20.0], [0.5, 0.6], max_cost=10.0)
    with pytest.raises(UsageError, match="finite"):
        aiq([1.0, np.nan], [0.5, 0.6])


# ----------------------------------------------------------------- protocol vs a brute force
def test_long_table_protocol_matches_brute_force(tmp_path, capsys):
    df = _hand_table()
    path = tmp_path / "long.csv"
    df.to_csv(path, index=False)
    data, out = _frontier(["--results", path, "--params", _params(tmp_path),
                           "--budgets", "4,12,30"], capsys)
    _check_against_brute(data, _brute_protocol(df, BUDGETS))
    assert "no prompt text" in out and "true categories" in out and "AIQ" in out
    assert data["table"] == {"path": str(path), "layout": "long", "prompts": 42,
                             "missing_pairs": {"small": 0, "mid": 0, "big": 0},
                             "dropped_prompts": 0}


def test_wide_table_protocol_matches_brute_force(tmp_path, capsys):
    df = _hand_table()
    wide = df.pivot(index="prompt_id", columns="model", values="score")
    wide = wide.loc[list(dict.fromkeys(df["prompt_id"])), list(MODELS)]
    wide.columns = [f"grade_{m}" for m in wide.columns]
    wide.insert(0, "task", df.drop_duplicates("prompt_id")["category"].to_numpy())
    wide.insert(0, "qid", wide.index)
    path = tmp_path / "wide.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in wide.to_dict(orient="records")))
    data, _ = _frontier(["--results", path, "--params", _params(tmp_path), "--budgets", "4,12,30",
                         "--columns", "prompt_id=qid,category=task", "--prefix", "grade_"], capsys)
    _check_against_brute(data, _brute_protocol(df, BUDGETS))
    assert data["table"]["layout"] == "wide" and list(data["models"]) == list(MODELS)
    # the same table through --models, as Parquet
    plain = wide.rename(columns={f"grade_{m}": m for m in MODELS})
    pq = tmp_path / "wide.parquet"
    plain.to_parquet(pq, index=False)
    again, _ = _frontier(["--results", pq, "--params", _params(tmp_path), "--budgets", "4,12,30",
                          "--columns", "prompt_id=qid,category=task", "--models", "small,mid,big"],
                         capsys)
    assert {k: v for k, v in again.items() if k != "table"} == \
        {k: v for k, v in data.items() if k != "table"}


def test_missing_pairs_are_rejected_or_dropped_for_every_model(tmp_path, capsys):
    df = _hand_table()
    holes = df.drop(index=[4]).copy()                     # law-01 has no score from "mid"
    holes.loc[holes.index[10], "score"] = None            # an empty cell is a missing pair too
    lost = {df.loc[4, "prompt_id"], holes.loc[holes.index[10], "prompt_id"]}
    path = tmp_path / "holes.csv"
    holes.to_csv(path, index=False)
    params = _params(tmp_path)
    err = _frontier_error(["--results", path, "--params", params], capsys)
    assert str(path) in err and "2 (prompt, model) pairs have no score" in err
    assert "model 'mid' lacks 1 of 42 prompts" in err and "row " in err
    assert "--missing drop" in err and "40 of 42 prompts would stay" in err
    data, out = _frontier(["--results", path, "--params", params, "--missing", "drop",
                           "--budgets", "4,12,30"], capsys)
    assert data["table"]["dropped_prompts"] == 2 and data["table"]["prompts"] == 40
    assert "dropped 2 prompts (--missing drop)" in out
    kept = df[~df["prompt_id"].isin(lost)]                 # the same prompts gone for all models
    _check_against_brute(data, _brute_protocol(kept, BUDGETS))


# ------------------------------------------------------------------------- the table with text
def _texts_table(n_per=16, seed=1):
    rng = np.random.default_rng(seed)
    words = {"law": "court contract statute tort appeal", "math": "integral matrix prime sum",
             "bio": "cell gene protein enzyme"}
    df = _hand_table(n_per=n_per, seed=seed)
    text = {}
    for p, c in df.drop_duplicates("prompt_id")[["prompt_id", "category"]].itertuples(index=False):
        text[p] = f"{p}: " + " ".join(rng.choice(words[c].split(), 4))
    df.insert(1, "prompt", df["prompt_id"].map(text))
    return df


def _bag_of_words(texts):
    vocab = sorted({w for t in texts for w in t.split()[1:]})
    X = np.array([[t.split()[1:].count(w) for w in vocab] for t in texts], dtype=np.float32)
    return X + 0.01 * np.random.default_rng(0).normal(size=X.shape).astype(np.float32)


def test_table_with_text_runs_the_router_protocol(tmp_path):
    from workbench.evaluate import run_protocol
    from workbench.evaluate_results import evaluate_results
    from workbench.registry import ModelRegistry
    from workbench.results import read_results

    df = _texts_table()
    path = tmp_path / "with_text.csv"
    df.to_csv(path, index=False)
    table = read_results(path)
    assert table.has_text and table.texts[0].startswith("law-00: ")
    reg = ModelRegistry(MODELS)
    res = evaluate_results(table, reg, budgets=BUDGETS, embedder=_bag_of_words, cv=3)
    assert res.routing == "router" and res.router_accuracy > 0.8
    direct = run_protocol(_bag_of_words(table.texts), table.scores, reg, budgets=BUDGETS, cv=3)
    assert res.to_dict() == direct.to_dict()
    held = table.scores.subset(res.held_out_ids)
    assert res.models == pytest.approx(held.expert_means())
    aiq = res.aiq()
    assert set(aiq) == {"coe", "coe_true_categories", "direct", "models", "max_cost_b"}
    assert all(0 < aiq[k] <= 1 for k in ("coe", "coe_true_categories", "direct", "models"))
    top = max([b.avg_active_b for b in res.budgets] + [d.avg_active_b for d in res.direct] +
              [b.oracle_avg_active_b for b in res.budgets] + list(MODELS.values()))
    assert aiq["max_cost_b"] == top
    assert aiq["direct"] == pytest.approx(_brute_hull_mean(
        [d.avg_active_b for d in res.direct], [d.accuracy for d in res.direct], top), abs=1e-4)
    # without the text the same table runs on true categories
    no_text = evaluate_results(read_results(path, columns="prompt=category"), reg,
                               budgets=BUDGETS, use_router=False)
    assert no_text.routing == "true_categories"


@pytest.mark.slow
def test_frontier_cli_on_a_table_with_text(tmp_path, capsys):
    df = _texts_table()
    path = tmp_path / "with_text.csv"
    df.to_csv(path, index=False)
    data, out = _frontier(["--results", path, "--params", _params(tmp_path),
                           "--budgets", "4,12,30"], capsys)
    assert data["routing"] == "router" and data["router_accuracy"] > 0.5
    assert 1 <= len(data["direct"]) <= 3 and data["aiq"]["direct"] is not None
    assert "router (held-out)" in out


# --------------------------------------------------------------------------------- bad inputs
def _write(tmp_path, df, name="bad.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_duplicate_pairs_name_both_rows(tmp_path, capsys):
    df = _hand_table()
    df = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    path = _write(tmp_path, df)
    err = _frontier_error(["--results", path, "--params", _params(tmp_path)], capsys)
    assert f"{path} rows 4 and {len(df)} both score prompt 'law-01' for model 'small'" in err
    assert "keep one row per pair" in err


def test_non_numeric_score_names_file_row_and_value(tmp_path, capsys):
    df = _hand_table().astype({"score": object})
    df.loc[5, "score"] = "oops"
    path = _write(tmp_path, df)
    err = _frontier_error(["--results", path, "--params", _params(tmp_path)], capsys)
    assert f"{path} row 6: score 'oops' (prompt 'law-01', model 'big') is not a number" in err
    assert "--missing drop" in err
    # a JSONL table names the line
    jl = tmp_path / "bad.jsonl"
    recs = _hand_table().to_dict(orient="records")
    recs[2]["score"] = "n/a?"
    jl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    err = _frontier_error(["--results", jl, "--params", _params(tmp_path)], capsys)
    assert f"{jl} line 3: score 'n/a?'" in err
    # a wide table names the model's column
    wide = pd.DataFrame({"prompt_id": ["a", "b"], "category": ["x", "x"], "s_m1": ["1", "zero"]})
    path = _write(tmp_path, wide, "wide.csv")
    err = _frontier_error(["--results", path, "--prefix", "s_"], capsys)
    assert f"{path} row 2: score 'zero' (prompt 'b', model 'm1', column 's_m1')" in err


def test_model_missing_from_params_names_the_model_row_and_flag(tmp_path, capsys):
    path = _write(tmp_path, _hand_table())
    params = _params(tmp_path, {"small": 2.0, "mid": 8.0})
    err = _frontier_error(["--results", path, "--params", params], capsys)
    assert f"{path} row 3: model 'big' has no parameter counts in {params}" in err
    assert "--params FILE" in err and "name: big" in err
    # without --params the built-in MMLU-Pro counts are named
    err = _frontier_error(["--results", path], capsys)
    assert "model 'small' has no parameter counts in the built-in counts" in err


def test_small_category_names_its_first_row(tmp_path, capsys):
    df = _hand_table()
    extra = pd.DataFrame({"prompt_id": "odd-1", "category": "odd", "model": list(MODELS),
                          "score": [0.5, 0.5, 0.5]})
    path = _write(tmp_path, pd.concat([df, extra], ignore_index=True))
    err = _frontier_error(["--results", path, "--params", _params(tmp_path)], capsys)
    assert f"{path} row {len(df) + 1}: category 'odd' has only 1 prompt" in err
    assert "50/50 split" in err and "merge the category" in err
    # with text, the router's cross-validation needs more
    from workbench.errors import ScoresError
    from workbench.evaluate_results import evaluate_results
    from workbench.registry import ModelRegistry
    from workbench.results import read_results

    small = _texts_table(n_per=4)
    table = read_results(_write(tmp_path, small, "small_text.csv"))
    with pytest.raises(ScoresError, match=r"category 'bio' has only 4 prompts .*a router needs 10"):
        evaluate_results(table, ModelRegistry(MODELS), embedder=_bag_of_words)


def test_column_and_layout_mistakes_say_which_flag_to_use(tmp_path, capsys):
    df = _hand_table().rename(columns={"prompt_id": "qid", "category": "task"})
    path = _write(tmp_path, df)
    params = _params(tmp_path)
    err = _frontier_error(["--results", path, "--params", params], capsys)
    assert "no prompt_id column" in err and "--columns prompt_id=<column>" in err
    err = _frontier_error(["--results", path, "--params", params, "--columns", "prompt_id=qid"],
                          capsys)
    assert "no category column" in err and "--columns category=<column>" in err
    err = _frontier_error(["--results", path, "--params", params, "--columns", "prompt_id=quid"],
                          capsys)
    assert "no column 'quid' (from --columns prompt_id=quid)" in err
    err = _frontier_error(["--results", path, "--params", params, "--columns", "topic=task"],
                          capsys)
    assert "--columns: 'topic' is not one of prompt_id, prompt, category, model, score" in err
    wide = pd.DataFrame({"prompt_id": ["a", "b"], "category": ["x", "x"], "m1": [1, 0]})
    wpath = _write(tmp_path, wide, "wide.csv")
    err = _frontier_error(["--results", wpath, "--params", params], capsys)
    assert "--models a,b or --prefix score_" in err
    err = _frontier_error(["--results", wpath, "--params", params, "--models", "m1,m2"], capsys)
    assert "--models: " in err and "no column(s) 'm2'" in err
    dup = pd.DataFrame({"prompt_id": ["a", "a"], "category": ["x", "x"], "m1": [1, 0]})
    err = _frontier_error(["--results", _write(tmp_path, dup, "dup.csv"), "--models", "m1"], capsys)
    assert "rows 1 and 2 both hold prompt 'a'" in err
    two = _hand_table()
    two.loc[1, "category"] = "math"
    err = _frontier_error(["--results", _write(tmp_path, two, "two.csv"), "--params", params],
                          capsys)
    assert "rows 1 and 2 give prompt 'law-00' two categories ('law' and 'math')" in err
    folder = tmp_path / "folder"
    folder.mkdir()
    err = _frontier_error(["--results", folder, "--missing", "drop"], capsys)
    assert "--missing drop only apply to a results table" in err
    err = _frontier_error(["--results", tmp_path / "table.xlsx"], capsys)
    assert "is not a folder of MMLU-Pro result files" in err


def test_results_table_round_trip_and_summary(tmp_path):
    from workbench.results import read_results, write_results

    df = _texts_table(n_per=3)
    for name in ("t.csv", "t.jsonl", "t.parquet", "t.tsv"):
        path = write_results(df, tmp_path / name)
        table = read_results(path)
        assert table.scores.n_prompts == 9 and table.scores.experts == list(MODELS)
        back = table.to_long()
        assert list(back.columns) == ["prompt_id", "prompt", "category", "model", "score"]
        pd.testing.assert_frame_equal(back.astype({"score": float}).reset_index(drop=True),
                                      df[back.columns].astype({"score": float}), check_dtype=False)
        assert "long table, 9 prompts x 3 models, 3 categories, prompt text" in table.summary()
    only = read_results(tmp_path / "t.csv", models=["big", "small"])
    assert only.scores.experts == ["big", "small"]


# ------------------------------------------------------------------------------- score command
PROMPTS = [
    {"id": "m1", "text": "Solve for x: 3 x + 5 = 20", "category": "math", "answer": "x = 5"},
    {"id": "m2", "text": "What is the derivative of x squared?", "category": "math",
     "answer": "It is two x."},
    {"id": "l1", "text": "Is the contract valid?", "category": "law",
     "answer": "The court ruled that the contract was valid under state law."},
    {"id": "l2", "text": "Hello, how are you today?", "category": "law",
     "answer": "I am fine, thank you."},
]


def test_score_command_writes_and_appends_a_long_table(tiny_experts, tmp_path, capsys):
    from workbench.cli import main
    from workbench.livescore import loglik_frame
    from workbench.results import read_results

    experts = tmp_path / "experts.yaml"
    experts.write_text(f"- {{name: tiny-a, model: {tiny_experts['tiny-a']}, total_params_b: 0.001}}\n"
                       f"- {{name: tiny-b, model: {tiny_experts['tiny-b']}}}\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / "results.csv"
    args = ["score", "--experts", experts, "--prompts", prompts, "--out", out, "--device", "cpu",
            "--quiet"]
    assert main([*map(str, args), "--only", "tiny-a"]) == 0
    text = capsys.readouterr().out
    assert "wrote 4 rows" in text and "name: tiny-a, total_params_b: 0.001" in text
    assert main([*map(str, args), "--only", "tiny-b"]) == 0
    text = capsys.readouterr().out
    assert "appended 4 rows" in text and "8 rows in all" in text
    assert "add parameter counts for 'tiny-b'" in text
    table = read_results(out)
    assert table.scores.experts == ["tiny-a", "tiny-b"] and table.has_text
    assert table.scores.prompt_ids == ["m1", "m2", "l1", "l2"]
    assert list(table.scores.categories) == ["math", "math", "law", "law"]
    ref = loglik_frame(tiny_experts["tiny-a"], pd.DataFrame(PROMPTS), name="tiny-a", device="cpu")
    np.testing.assert_allclose(table.scores.values[:, 0], ref["token_prob"], rtol=1e-5)
    # scoring a model twice is refused unless --replace
    rc = main([*map(str, args), "--only", "tiny-a"])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"{out} row 1 already scores model 'tiny-a'" in err and "--replace" in err
    assert main([*map(str, args), "--only", "tiny-a", "--replace"]) == 0
    capsys.readouterr()
    assert read_results(out).scores.experts == ["tiny-b", "tiny-a"]
    assert len(pd.read_csv(out)) == 8


def test_score_command_bad_inputs(tmp_path, capsys):
    from workbench.cli import main

    experts = tmp_path / "experts.yaml"
    experts.write_text("- {name: a, model: nowhere}\n")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "1", "text": "hi"}) + "\n")
    rc = main(["score", "--experts", str(experts), "--prompts", str(prompts), "--out",
               str(tmp_path / "r.xlsx")])
    assert rc == 2 and "use a .csv, .tsv, .jsonl or .parquet" in capsys.readouterr().err
    rc = main(["score", "--experts", str(experts), "--prompts", str(prompts), "--out",
               str(tmp_path / "r.csv")])
    assert rc == 2 and "no answers column 'answer'" in capsys.readouterr().err
    rc = main(["score", "--experts", str(experts), "--prompts", str(prompts), "--out",
               str(tmp_path / "r.csv"), "--only", "zz"])
    assert rc == 2 and "--only: 'zz' not in" in capsys.readouterr().err
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    prompts.write_text(json.dumps({"id": "1", "text": "hi", "answer": "yo"}) + "\n")
    rc = main(["score", "--experts", str(experts), "--prompts", str(prompts), "--out", str(other)])
    assert rc == 2 and "is not a long results table" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real MMLU-Pro
@pytest.mark.slow
@pytest.mark.shared_data
def test_mmlu_pro_as_a_long_csv_gives_the_folder_numbers(mmlu_pro_dir, tmp_path, capsys):
    from workbench._paths import REPO_DIR
    from workbench.results import mmlu_pro_results, write_results

    csv = write_results(mmlu_pro_results(mmlu_pro_dir), tmp_path / "mmlu_pro_long.csv")
    params = REPO_DIR / "data" / "mmlu_pro_params.yaml"
    folder, _ = _frontier(["--results", mmlu_pro_dir, "--params", params], capsys)
    table, out = _frontier(["--results", csv, "--params", params], capsys)
    assert table.pop("table")["prompts"] == folder["n_calibration"] + folder["n_held_out"]
    assert table == folder
    assert all(0 < folder["aiq"][k] < 1 for k in ("coe", "coe_true_categories", "direct", "models"))
    assert "AIQ" in out


# ------------------------------------------------------------------------------------- notebook
def test_notebook_06_runs_on_hand_built_tables_without_shared_data(tmp_path):
    from helpers_notebooks import outputs_text, run_notebook

    from workbench._paths import REPO_DIR

    path = REPO_DIR / "notebooks" / "06_your_own_results.ipynb"
    text = outputs_text(run_notebook(path, {"COE_SHARED_DATA": str(tmp_path / "absent"),
                                            "COE_NB_MMLU_PRO_DIR": "", "COE_NB_FAST": "1"},
                                     timeout=300))
    assert "ERROR" not in text
    assert "routing: true_categories" in text and "same numbers as the long table: True" in text
    assert "ScoresError:" in text and "--missing drop" in text
    assert "MMLU-Pro results not found" in text and "skipped" in text
