"""The MMLU-Pro evaluation protocol and `coe-workbench frontier` (synthetic data + the real run)."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from workbench.errors import WorkbenchError

EXPERTS = {"tiny": 2.0, "mid": 8.0, "big": 60.0}
CATS = ["law", "math", "bio", "art"]
# probability each expert answers a prompt of each category correctly
SKILL = {
    "law": {"tiny": 0.2, "mid": 0.7, "big": 0.8},
    "math": {"tiny": 0.6, "mid": 0.3, "big": 0.9},
    "bio": {"tiny": 0.5, "mid": 0.5, "big": 0.6},
    "art": {"tiny": 0.1, "mid": 0.2, "big": 0.9},
}


def _synthetic(n_per=150, d=12, spread=1.2, seed=0):
    from workbench.registry import ModelRegistry
    from workbench.scores import ExpertScores

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (len(CATS), d))
    X, cats, rows = [], [], []
    for c, centre in zip(CATS, centres):
        X.append(centre + rng.normal(0, spread, (n_per, d)))
        cats += [c] * n_per
        rows.append(np.c_[[rng.random(n_per) < SKILL[c][e] for e in EXPERTS]].T)
    values = np.vstack(rows).astype(float)
    scores = ExpertScores(values, [f"q{i}" for i in range(len(cats))], list(EXPERTS), cats)
    return np.vstack(X), scores, ModelRegistry(EXPERTS)


def test_protocol_on_synthetic_data():
    from workbench.evaluate import run_protocol

    X, scores, reg = _synthetic()
    res = run_protocol(X, scores, reg, budgets=[4.0, 10.0, 30.0], seed=0, cv=3)
    assert res.n_calibration == res.n_held_out == 300
    assert not set(res.calibration_ids) & set(res.held_out_ids)
    assert res.router_accuracy > 0.8
    held = scores.subset(res.held_out_ids)
    assert res.models == pytest.approx(held.expert_means())
    assert res.oracle_per_question == pytest.approx(held.values.max(axis=1).mean())
    prev = -1.0
    for b in res.budgets:
        assert b.avg_active_b <= b.budget_b * 1.02  # held-out average within budget (+ noise)
        assert b.expected_avg_active_b <= b.budget_b
        assert set(CATS) <= set(b.mapping) and "fallback" in b.mapping
        assert 0 <= b.accuracy <= 1 and 0 <= b.oracle_accuracy <= 1
        assert b.accuracy >= prev - 0.03  # more budget does not make it (much) worse
        prev = b.accuracy
    # at a generous budget the CoE beats every single model that fits it
    top = res.budgets[-1]
    fits = [a for m, a in res.models.items() if reg.active(m) <= top.budget_b]
    assert top.accuracy >= max(fits) - 0.02
    # the map follows the skills: math -> tiny is the cheap winner at a tight budget
    assert res.budgets[0].oracle_mapping["math"] == "tiny"
    assert [d.budget_b for d in res.direct] == [4.0, 10.0, 30.0]
    for d in res.direct:
        assert d.avg_active_b <= d.budget_b * 1.05
    out = res.to_dict()
    back = json.loads(json.dumps(out))
    assert {"router_accuracy", "budgets", "models", "direct"} <= set(back)
    assert {"budget_b", "accuracy", "oracle_accuracy", "avg_active_b", "mapping"} <= set(back["budgets"][0])
    assert {"budget_b", "accuracy", "avg_active_b"} <= set(back["direct"][0])
    table = res.comparison_table()
    assert list(table["budget_b"]) == [4.0, 10.0, 30.0]
    assert {"coe_accuracy", "direct_accuracy", "best_single_accuracy"} <= set(table.columns)


def test_protocol_is_seeded():
    from workbench.evaluate import run_protocol

    X, scores, reg = _synthetic(n_per=60)
    a = run_protocol(X, scores, reg, budgets=[10.0], seed=1, cv=3)
    b = run_protocol(X, scores, reg, budgets=[10.0], seed=1, cv=3)
    c = run_protocol(X, scores, reg, budgets=[10.0], seed=2, cv=3)
    assert a.held_out_ids == b.held_out_ids and a.to_dict() == b.to_dict()
    assert a.held_out_ids != c.held_out_ids
    # stratified: each category split evenly
    held = scores.subset(a.held_out_ids)
    assert set(held.category_counts().values()) == {30}


def test_protocol_bad_inputs():
    from workbench.errors import InfeasibleBudgetError, RegistryError, ScoresError
    from workbench.evaluate import run_protocol
    from workbench.registry import ModelRegistry
    from workbench.scores import ExpertScores

    X, scores, reg = _synthetic(n_per=40)
    with pytest.raises(WorkbenchError, match="one embedding row per prompt"):
        run_protocol(X[:-1], scores, reg)
    with pytest.raises(RegistryError, match="big"):
        run_protocol(X, scores, ModelRegistry({"tiny": 2.0, "mid": 8.0}))
    with pytest.raises(InfeasibleBudgetError, match="budget 1B is infeasible"):
        run_protocol(X, scores, reg, budgets=[1.0], cv=3)
    nocat = ExpertScores(scores.values, scores.prompt_ids, scores.experts)
    with pytest.raises(ScoresError, match="true category"):
        run_protocol(X, nocat, reg)


# ------------------------------------------------------------------------------------------- CLI
WORDS = {
    "law": "contract tort statute plaintiff court verdict appeal",
    "math": "integral derivative equation polynomial matrix prime",
    "biology": "cell protein enzyme gene organism membrane",
}


def _fake_mmlu_dir(tmp_path, n_per=24, seed=0):
    rng = np.random.default_rng(seed)
    models = {"small-model": {"law": 0.3, "math": 0.8, "biology": 0.5},
              "big-model": {"law": 0.9, "math": 0.6, "biology": 0.7}}
    questions = []
    qid = 0
    for cat, words in WORDS.items():
        vocab = words.split()
        for i in range(n_per):
            text = f"Question {i} about {cat}: " + " ".join(rng.choice(vocab, 5)) + "?"
            questions.append((str(qid), cat, text))
            qid += 1
    for name, skill in models.items():
        recs = []
        for q, cat, text in questions:
            ok = rng.random() < skill[cat]
            recs.append({"question_id": q, "question": text, "options": ["a", "b"], "answer": "A",
                         "answer_index": 0, "cot_content": "", "category": cat, "src": f"ori-{cat}",
                         "pred": "A" if ok else "B", "generated_text": ""})
        with zipfile.ZipFile(tmp_path / f"model_outputs_{name}_5shots.zip", "w") as zf:
            zf.writestr(f"model_outputs_{name}_5shots.json", json.dumps(recs))
    params = tmp_path / "params.yaml"
    params.write_text("- {name: small-model, total_params_b: 7, active_params_b: 7}\n"
                      "- {name: big-model, total_params_b: 70, active_params_b: 70}\n")
    return tmp_path, params


@pytest.mark.slow
def test_frontier_cli_json(tmp_path, capsys):
    from workbench.cli import main

    results, params = _fake_mmlu_dir(tmp_path)
    rc = main(["frontier", "--results", str(results), "--params", str(params),
               "--budgets", "10,40", "--seed", "0", "--json", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    data = json.loads(out.strip().splitlines()[-1])
    assert data["router_accuracy"] > 0.8
    assert [b["budget_b"] for b in data["budgets"]] == [10.0, 40.0]
    assert set(data["models"]) == {"small-model", "big-model"}
    assert len(data["direct"]) == 2
    assert "category -> expert" in out


def test_frontier_cli_bad_inputs(tmp_path, capsys):
    from workbench.cli import main

    rc = main(["frontier", "--results", str(tmp_path / "nope"), "--json"])
    assert rc == 2
    assert "is not a folder of MMLU-Pro result files" in capsys.readouterr().err
    rc = main(["frontier", "--results", str(tmp_path), "--params", str(tmp_path / "p.yaml")])
    assert rc == 2
    assert "--params" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frontier", "--results", str(tmp_path), "--budgets", "8,x"])
    assert "--budgets must be comma-separated numbers" in capsys.readouterr().err


@pytest.mark.slow
def test_frontier_cli_params_missing_a_model(tmp_path, capsys):
    from workbench.cli import main

    results, _ = _fake_mmlu_dir(tmp_path)
    params = tmp_path / "partial.yaml"
    params.write_text("- {name: small-model, total_params_b: 7}\n")
    rc = main(["frontier", "--results", str(results), "--params", str(params), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "big-model" in err


# ------------------------------------------------------------------------------ the real protocol
@pytest.mark.slow
@pytest.mark.shared_data
def test_mmlu_pro_protocol_meets_acceptance_floors(mmlu_pro_dir):
    from workbench._paths import REPO_DIR
    from workbench.evaluate import evaluate_mmlu_pro

    res = evaluate_mmlu_pro(mmlu_pro_dir, REPO_DIR / "data" / "mmlu_pro_params.yaml",
                            budgets=[8, 13, 30, 50], seed=0)
    assert len(res.models) == 13 and len(res.categories) == 14
    assert res.router_accuracy >= 0.78
    floors = {8.0: 0.46, 13.0: 0.47, 30.0: 0.52, 50.0: 0.58}
    for b in res.budgets:
        assert b.avg_active_b <= b.budget_b, (b.budget_b, b.avg_active_b)
        assert b.accuracy >= floors[b.budget_b], (b.budget_b, b.accuracy)
    assert {d.budget_b for d in res.direct} == set(floors)
    assert res.models["Meta-Llama-3_1-70B-Instruct"] == pytest.approx(0.63, abs=0.02)


# ------------------------------------------------------------------------------------- notebook
def _run_notebook(path, env, timeout):
    from helpers_notebooks import outputs_text, run_notebook

    return outputs_text(run_notebook(path, env, timeout=timeout))


def test_notebook_02_stops_gracefully_without_data(tmp_path):
    from workbench._paths import REPO_DIR

    path = REPO_DIR / "notebooks" / "02_mmlu_pro_coe.ipynb"
    text = _run_notebook(path, {"COE_SHARED_DATA": str(tmp_path / "absent"),
                                "COE_NB_MMLU_PRO_DIR": "", "COE_NB_FAST": "1"}, timeout=300)
    assert "ERROR" not in text
    assert "MMLU-Pro results not found" in text and "skipped" in text
