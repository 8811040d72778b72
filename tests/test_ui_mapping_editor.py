"""Mapping editor: the model (edits, undo/redo, optimise with locks, files, atomic autosave,
per-session isolation) and thin checks of its Panel and ipywidgets views."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from workbench.errors import InfeasibleBudgetError, MappingError
from workbench.mapping import CategoryExpertMap, optimize_mapping
from workbench.scores import ExpertScores

pytest.importorskip("panel")
from workbench.ui.mapping_editor import (  # noqa: E402
    MappingEditorModel,
    MappingEditorPanel,
    mapping_editor_widget,
)

CATS = ["math", "law", "code", "chat"]
EXPERTS = ["small", "mid", "big"]


@pytest.fixture
def bundle(map_editor_bundle):
    return map_editor_bundle


@pytest.fixture
def editor(bundle, tmp_path):
    return MappingEditorModel.from_bundle(bundle, autosave_path=tmp_path / "auto.json")


def test_two_sessions_do_not_see_each_others_edits(bundle):
    a = MappingEditorModel.from_bundle(bundle)
    b = MappingEditorModel.from_bundle(bundle)
    a.set_expert("math", "big")
    assert a.mapping.expert_for("math") == "big"
    assert b.mapping.expert_for("math") == "small"
    assert bundle.mapping.expert_for("math") == "small"  # the bundle's map is never edited
    assert a.autosave_path != b.autosave_path
    assert CategoryExpertMap.load(a.autosave_path).expert_for("math") == "big"
    assert not b.autosave_path.exists()  # a session that never edits writes no autosave
    b.set_expert("code", "mid")
    assert CategoryExpertMap.load(b.autosave_path).expert_for("math") == "small"


def test_old_autosaves_are_cleaned_up_when_a_session_first_saves(bundle):
    from workbench.ui.mapping_editor import AUTOSAVE_MAX_AGE_S, clean_autosaves

    a = MappingEditorModel.from_bundle(bundle)
    a.set_expert("math", "big")
    stale = a.autosave_path.with_name("mapping-0123456789ab.json")
    stale.write_text(a.autosave_path.read_text())
    old = __import__("time").time() - AUTOSAVE_MAX_AGE_S - 60
    os.utime(stale, (old, old))
    b = MappingEditorModel.from_bundle(bundle)
    assert stale.exists()
    b.set_expert("code", "mid")  # b's first autosave cleans the week-old file, keeps a's
    assert not stale.exists() and a.autosave_path.exists() and b.autosave_path.exists()
    assert clean_autosaves(0.0) and not a.autosave_path.exists()


def test_edit_updates_metrics_and_marker(editor, bundle):
    before = editor.metrics_dict()
    v = editor.version
    editor.set_expert("math", "big")
    after = editor.metrics_dict()
    direct = editor.mapping.metrics(bundle.scores, bundle.registry)
    assert after["expected_score"] == pytest.approx(direct.expected_score)
    assert after["average_active_params_b"] == pytest.approx(before["average_active_params_b"]
                                                             + 0.25 * 9.0)
    assert after["expected_score"] > before["expected_score"]
    assert editor.current_marker == pytest.approx((after["average_active_params_b"],
                                                   after["expected_score"]))
    assert editor.version > v
    assert "math: small -> big" in editor.status


def test_bad_edits_name_the_value_and_leave_the_map(editor):
    with pytest.raises(MappingError, match="unknown expert 'huge'.*small, mid, big"):
        editor.set_expert("math", "huge")
    with pytest.raises(MappingError, match="category 'poetry' is not in the map"):
        editor.set_expert("poetry", "big")
    assert editor.mapping.expert_for("math") == "small"
    assert not editor.can_undo


def test_undo_redo_groups_an_optimise(editor):
    start = editor.mapping.assignments
    changed = editor.optimize(budget_b=4.0)
    assert len(changed) >= 2  # several rows change in one action
    optimised = editor.mapping.assignments
    editor.undo()
    assert editor.mapping.assignments == start
    editor.redo()
    assert editor.mapping.assignments == optimised
    editor.undo()
    with pytest.raises(MappingError, match="nothing to undo"):
        editor.undo()
    editor.redo()
    with pytest.raises(MappingError, match="nothing to redo"):
        editor.redo()


def test_optimise_matches_the_optimizer_and_keeps_locked_rows(editor, bundle):
    editor.set_expert("law", "mid")
    editor.optimize(budget_b=3.5, locked=["law"])
    m = editor.metrics
    assert m.average_active_params_b <= 3.5 + 1e-9
    assert editor.mapping.expert_for("law") == "mid"
    assert editor.locked == ["law"]
    direct = optimize_mapping(bundle.scores, None, bundle.registry, budget_active_b=3.5,
                              locked={"law": "mid"}, fallback_expert="big")
    assert editor.mapping.assignments == direct.assignments
    # the current map sits on the frontier shown with it
    best = max(p.expected_score for p in editor.frontier if p.average_active_params_b <= 3.5 + 1e-9)
    assert m.expected_score == pytest.approx(best)


def test_optimise_below_the_smallest_budget_says_which(editor):
    before = editor.mapping.assignments
    with pytest.raises(InfeasibleBudgetError, match="smallest feasible"):
        editor.optimize(budget_b=0.1)
    assert editor.mapping.assignments == before


def test_autosave_follows_every_edit(editor):
    path = editor.autosave_path
    editor.set_expert("code", "mid")
    assert CategoryExpertMap.load(path).assignments == editor.mapping.assignments
    editor.undo()
    assert CategoryExpertMap.load(path).expert_for("code") == "small"


def test_autosave_crash_leaves_the_previous_file_whole(editor, monkeypatch):
    path = editor.autosave_path
    editor.set_expert("code", "mid")
    good = path.read_text()

    def crash(src, dst):  # the rename step dies: the temp file must not replace the map
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    editor.set_expert("math", "big")
    monkeypatch.undo()
    assert path.read_text() == good
    assert json.loads(good)["assignments"]["math"] == "small"
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert editor.status.startswith("error: autosave")
    assert editor.mapping.expert_for("math") == "big"  # the edit stays in the session


def test_save_and_load_round_trip(editor, tmp_path):
    editor.set_expert("math", "big")
    out = editor.save(tmp_path / "mine.yaml")
    editor.set_expert("math", "mid")
    changed = editor.load(out)
    assert changed == ["math: mid -> big"]
    editor.undo()
    assert editor.mapping.expert_for("math") == "mid"


def test_load_rejects_other_categories_with_file_and_line(editor, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("math: big\nlaw: small\ncode: small\nchat: small\npoetry: big\nfallback: big\n")
    with pytest.raises(MappingError, match=r"bad.yaml.*'poetry'.*line 5"):
        editor.load(bad)
    assert editor.mapping.expert_for("math") == "small"


def test_from_bundle_names_missing_parts():
    with pytest.raises(MappingError, match="no scores, registry"):
        MappingEditorModel.from_bundle(SimpleNamespace(mapping=object(), scores=None, registry=None))


def test_table_escapes_category_names(bundle, tmp_path):
    cats = ["<img src=x onerror=alert(1)>", "law"]
    mapping = CategoryExpertMap({cats[0]: "small", "law": "mid", "fallback": "big"},
                                experts=bundle.registry)
    scores = ExpertScores(np.ones((4, 3)), list("abcd"), EXPERTS, [cats[0], cats[0], "law", "law"])
    ed = MappingEditorModel(mapping, scores, bundle.registry, autosave=False)
    table = ed.table()
    assert "<img" not in "".join(table["category"])
    assert table["category"][0] == "&lt;img src=x onerror=alert(1)&gt;"
    panel = MappingEditorPanel(ed)
    assert "<img" not in "".join(panel._table.value["category"])
    assert panel._table.formatters["category"] == {"type": "html"}


def test_panel_cell_edit_changes_metrics_and_frontier_marker(editor):
    panel = MappingEditorPanel(editor)
    panel.__panel__()
    old_metrics = panel._metrics.object
    old_star = panel._plot.object.data[-1]
    assert old_star.name == "current map"
    row = editor.categories.index("math")
    panel._on_edit(SimpleNamespace(column="expert", row=row, value="big", old="small"))
    assert editor.mapping.expert_for("math") == "big"
    assert panel._metrics.object != old_metrics
    star = panel._plot.object.data[-1]
    assert (star.x[0], star.y[0]) == pytest.approx(editor.current_marker)
    assert star.x[0] > old_star.x[0]
    assert panel._table.value.loc[row, "expert"] == "big"
    assert not panel._undo.disabled
    # a bad value from the browser is reported, not raised, and the table shows the truth
    panel._on_edit(SimpleNamespace(column="expert", row=row, value="nope", old="big"))
    assert editor.status.startswith("error:") and "nope" in panel._status.object
    assert panel._table.value.loc[row, "expert"] == "big"
    panel._on_edit(SimpleNamespace(column="locked", row=row, value=True, old=False))
    assert editor.locked == ["math"]
    panel._undo.clicks += 1
    assert editor.mapping.expert_for("math") == "small"


def test_ipywidget_dropdown_drives_the_model(editor):
    box = mapping_editor_widget(model=editor)
    assert box.model is editor
    cells = box.children[1].children  # the grid: label, dropdown, lock per row
    dropdown = cells[3 * editor.categories.index("math") + 1]
    metrics_before = box.children[0].value
    dropdown.value = "big"
    assert editor.mapping.expert_for("math") == "big"
    assert box.children[0].value != metrics_before
    editor.undo()
    assert dropdown.value == "small"


@pytest.mark.parametrize("budget", [-3, 0, float("nan"), "abc"])
def test_a_budget_that_is_not_positive_is_refused_with_a_message_not_replaced(editor, budget):
    before, budget_b = dict(editor.mapping.items()), editor.budget_b
    with pytest.raises(MappingError, match="budget .*(must be positive|not a number)"):
        editor.optimize(budget)
    assert dict(editor.mapping.items()) == before and editor.budget_b == budget_b


def test_ipywidget_refuses_a_negative_budget_in_its_status_line(editor):
    box = mapping_editor_widget(model=editor)
    budget, optimise = box.children[2].children[:2]
    budget.value = -3
    assert budget.value == -3  # not clamped
    optimise.click()
    assert "must be positive" in box.children[3].value and "crimson" in box.children[3].value


def test_metrics_say_what_the_expected_score_measures(editor):
    parts = dict(editor.metrics_parts())
    assert len(parts["Expected score"].split(".")[-1]) == 3
    assert "Expected score:" in editor.metrics_note()


def test_notebook_03_runs_top_to_bottom(shared_data, tmp_path):
    """notebooks/03_edit_mapping.ipynb through nbclient on the real MMLU-Pro scores (~25 s)."""
    import sys
    from pathlib import Path

    pytest.importorskip("nbclient")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers_notebooks import outputs_text, run_notebook

    path = Path(__file__).resolve().parent.parent / "notebooks" / "03_edit_mapping.ipynb"
    nb = run_notebook(path, {"COE_NB_FAST": "1", "COE_NB_MAPPING_SOURCE": "mmlu-pro",
                             "COE_NB_OUT": str(tmp_path)})
    text = outputs_text(nb)
    assert "ERROR" not in text
    assert "the other session still has Phi-3-mini-4k-instruct" in text
    assert "loaded back: [" in text and "MappingError : mapping file" in text
    assert (tmp_path / "my_map.yaml").exists()
