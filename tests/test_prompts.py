"""PromptSet: loaders, validation of every bad input, skip reports, round trips, splits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench.errors import PromptSetError, UnknownFormatError
from workbench.prompts import PromptSet, load_demo_prompts, mmlu_pro_result_files


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


ROWS = [
    {"id": "a", "text": "What is 2+2?", "category": "math", "source": "x"},
    {"id": "b", "text": "¿Qué hora es?", "category": "spanish", "source": "y"},
    {"id": "c", "text": "Write a haiku about rain", "category": "creative", "source": "z"},
]


def test_read_jsonl_keeps_meta_columns(tmp_path):
    ps = PromptSet.read(write_jsonl(tmp_path / "p.jsonl", ROWS))
    assert ps.ids == ["a", "b", "c"]
    assert ps.texts[1] == "¿Qué hora es?"
    assert list(ps.categories) == ["math", "spanish", "creative"]
    assert "source" in ps.columns


def test_column_mapping_csv(tmp_path):
    path = tmp_path / "p.csv"
    pd.DataFrame({"qid": [1, 2], "question": ["hi there", "second"], "topic": ["t1", "t2"]}).to_csv(path, index=False)
    ps = PromptSet.read(path, text="question", id="qid", category="topic")
    assert ps.ids == ["1", "2"] and ps.texts == ["hi there", "second"]
    assert list(ps.categories) == ["t1", "t2"]


def test_missing_ids_are_generated(tmp_path):
    ps = PromptSet.read(write_jsonl(tmp_path / "noid.jsonl", [{"text": "one"}, {"text": "two"}]))
    assert ps.ids == ["noid-0", "noid-1"]


def test_missing_text_column_names_file_and_fix(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "prompt": "hi"}])
    with pytest.raises(PromptSetError, match=r"p\.jsonl has no text column 'text'.*columns: \['id', 'prompt'\].*text="):
        PromptSet.read(path)


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None])
def test_empty_prompt_names_row(tmp_path, bad):
    rows = [ROWS[0], {"id": "x", "text": bad, "category": "math"}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(PromptSetError, match=r"row 2: (empty or whitespace-only|missing) prompt.*on_error='skip'"):
        PromptSet.read(path)


def test_duplicate_ids_raise_with_first_row(tmp_path):
    rows = [ROWS[0], {**ROWS[1], "id": "a"}]
    with pytest.raises(PromptSetError, match=r"row 2: duplicate id 'a' \(first at row 1\)"):
        PromptSet.read(write_jsonl(tmp_path / "p.jsonl", rows))


def test_undecodable_bytes_name_line_and_fix(tmp_path):
    path = tmp_path / "p.jsonl"
    good = json.dumps(ROWS[0]).encode()
    path.write_bytes(good + b"\n" + b'{"id": "z", "text": "caf\xe9"}\n')
    with pytest.raises(PromptSetError, match=r"line 2: bytes b'\\xe9' are not valid utf-8.*UTF-8"):
        PromptSet.read(path)
    with pytest.warns(UserWarning, match=r"skipped 1 bad rows.*line 2|skipped 1 bad rows.*row 2"):
        ps = PromptSet.read(path, on_error="skip")
    assert ps.ids == ["a"]
    assert len(ps.skipped) == 1 and ps.skipped[0].row == 2 and "utf-8" in ps.skipped[0].reason


def test_undecodable_csv(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"id,text\n1,hello\n2,caf\xe9\n")
    with pytest.raises(PromptSetError, match=r"line 3: .*not valid utf-8"):
        PromptSet.read(path)
    with pytest.warns(UserWarning, match="skipped 1"):
        ps = PromptSet.read(path, on_error="skip")
    assert ps.texts == ["hello"] and "line 3" in str(ps.skipped[0])


def test_invalid_json_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(PromptSetError, match=r"line 2 is not valid JSON"):
        PromptSet.read(path)


@pytest.mark.parametrize("missing", [None, float("nan"), ""])
def test_missing_category_when_required(tmp_path, missing):
    rows = [ROWS[0], {"id": "q", "text": "no cat", "category": missing}]
    path = write_jsonl(tmp_path / "p.jsonl", rows) if missing is not None and missing == missing else None
    df = pd.DataFrame(rows)
    with pytest.raises(PromptSetError, match=r"row 2: missing category in column 'category'"):
        PromptSet.from_dataframe(df, require_category=True, source="t.csv")
    if path is not None:
        with pytest.raises(PromptSetError, match="missing category"):
            PromptSet.read(path, require_category=True)
    # not required: loads, but require_categories() names the row and id
    ps = PromptSet.from_dataframe(df)
    with pytest.raises(PromptSetError, match=r"1 prompts have no category \(rows 1, ids \['q'\]\)"):
        ps.require_categories()


def test_no_category_column_when_required(tmp_path):
    with pytest.raises(PromptSetError, match="no category column 'category'"):
        PromptSet.read(write_jsonl(tmp_path / "p.jsonl", [{"text": "x"}]), require_category=True)


def test_unknown_format(tmp_path):
    path = tmp_path / "p.docx"
    path.write_text("whatever")
    with pytest.raises(UnknownFormatError, match=r"cannot tell the format.*'\.docx'.*jsonl"):
        PromptSet.read(path)
    with pytest.raises(UnknownFormatError, match="format"):
        PromptSet.read(path, format="yaml")
    ps = PromptSet.from_records(ROWS)
    with pytest.raises(UnknownFormatError, match=r"\.jsonl, \.csv"):
        ps.save(tmp_path / "out.xlsx")


def test_missing_file_and_bad_on_error(tmp_path):
    with pytest.raises(PromptSetError, match="does not exist"):
        PromptSet.read(tmp_path / "nope.jsonl")
    with pytest.raises(PromptSetError, match="on_error must be"):
        PromptSet.read(write_jsonl(tmp_path / "p.jsonl", ROWS), on_error="ignore")


def test_skip_reports_every_bad_row_and_warns(tmp_path):
    rows = [ROWS[0], {"id": "e", "text": "  "}, {**ROWS[1], "id": "a"}, ROWS[2],
            {"id": "n", "text": "fine", "category": None}]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.warns(UserWarning, match=r"skipped 3 bad rows"):
        ps = PromptSet.read(path, on_error="skip", require_category=True)
    assert ps.ids == ["a", "c"]
    reasons = {s.row: s.reason for s in ps.skipped}
    assert set(reasons) == {2, 3, 5}
    assert "whitespace" in reasons[2] and "duplicate id 'a'" in reasons[3] and "category" in reasons[5]
    assert "3 rows skipped" in repr(ps)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_save_load_round_trip(tmp_path, suffix):
    rows = [dict(r, score=i + 0.5) for i, r in enumerate(ROWS)]
    if suffix != ".csv":
        rows[0]["options"] = ["A", "B"]
    ps = PromptSet.from_records(rows)
    back = PromptSet.read(ps.save(tmp_path / f"out{suffix}"))
    assert back.ids == ps.ids and back.texts == ps.texts
    assert list(back.categories) == list(ps.categories)
    if suffix == ".csv":
        assert [float(v) for v in back.df["score"]] == [0.5, 1.5, 2.5]
    else:
        assert list(back.df["score"]) == [0.5, 1.5, 2.5]
        assert list(back.df["options"].iloc[0]) == ["A", "B"]


def test_save_is_atomic_no_temp_left(tmp_path):
    ps = PromptSet.from_records(ROWS)
    ps.save(tmp_path / "x.jsonl")
    assert [p.name for p in tmp_path.iterdir()] == ["x.jsonl"]


def test_split_is_seeded_and_stratified():
    rows = [{"id": str(i), "text": f"prompt {i}", "category": f"c{i % 3}"} for i in range(90)]
    ps = PromptSet.from_records(rows)
    a, b = ps.split(0.5, seed=0)
    a2, b2 = ps.split(0.5, seed=0)
    a3, _ = ps.split(0.5, seed=1)
    assert a.ids == a2.ids and b.ids == b2.ids and a.ids != a3.ids
    assert set(a.ids).isdisjoint(b.ids) and len(a) + len(b) == 90
    assert b.counts().tolist() == [15, 15, 15]
    with pytest.raises(PromptSetError, match="test_size"):
        ps.split(1.5)


def test_subset_by_ids_mask_positions():
    ps = PromptSet.from_records(ROWS)
    assert ps.subset(["c", "a"]).ids == ["c", "a"]
    assert ps.subset(np.array([True, False, True])).ids == ["a", "c"]
    assert ps.subset([1]).ids == ["b"]
    with pytest.raises(PromptSetError, match=r"ids \['zz'\] are not in"):
        ps.subset(["zz"])


def test_mt_bench_and_arena_hard_formats(tmp_path):
    mt = write_jsonl(tmp_path / "question.jsonl",
                     [{"question_id": 81, "category": "writing", "turns": ["Write a blog post", "Rewrite it"]}])
    ps = PromptSet.read(mt)
    assert ps.ids == ["81"] and ps.texts == ["Write a blog post"] and ps.df["n_turns"][0] == 2
    ah = write_jsonl(tmp_path / "ah.jsonl", [{"uid": "u1", "category": "hard_prompt",
                                              "subcategory": "coding", "prompt": "Fix my code"}])
    ps = PromptSet.from_arena_hard(ah)
    assert ps.ids == ["u1"] and list(ps.categories) == ["coding"]
    assert ps.df["arena_category"][0] == "hard_prompt"


def test_demo_prompt_set_meets_the_brief():
    ps = load_demo_prompts()
    counts = ps.counts()
    assert len(ps) >= 720 and len(counts) >= 12 and counts.min() >= 60
    assert ps.df["answer"].map(lambda a: isinstance(a, str) and len(a.strip()) > 0).all()
    assert len(set(ps.texts)) == len(ps)
    # varied wording: no opening three words shared by more than a handful of prompts
    openings = pd.Series([" ".join(t.lower().split()[:3]) for t in ps.texts]).value_counts()
    assert openings.iloc[0] <= 8


@pytest.mark.shared_data
def test_real_mmlu_pro_mt_bench_arena_hard(shared_data, mmlu_pro_dir):
    files = mmlu_pro_result_files(mmlu_pro_dir)
    assert len(files) == 13 and "Meta-Llama-3_1-70B-Instruct" in files
    ps = PromptSet.from_mmlu_pro(mmlu_pro_dir)
    assert len(ps) == 12032 and len(ps.category_names) == 14
    assert {"options", "answer", "src"} <= set(ps.columns)
    mt = PromptSet.read(shared_data / "mt-bench" / "question.jsonl")
    assert len(mt) == 80 and len(mt.category_names) == 8
    ah = PromptSet.read(shared_data / "arena-hard-v2.0" / "question.jsonl")
    assert len(ah) == 750 and set(ah.category_names) == {"coding", "math", "creative_writing"}


def test_atomic_write_gives_ordinary_file_mode(tmp_path):
    import os

    from workbench._paths import atomic_write_text

    atomic_write_text(tmp_path / "m.yaml", "a: 1\n")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "m.yaml").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "m.yaml").read_text() == "a: 1\n"


def test_one_mmlu_pro_reader_for_prompts_and_scores(tmp_path):
    """PromptSet and ExpertScores find and parse MMLU-Pro files through workbench.mmlu_pro."""
    import zipfile

    from workbench import mmlu_pro
    from workbench.errors import ScoresError
    from workbench.scores import ExpertScores, mmlu_pro_model_files

    def write(name, records):
        with zipfile.ZipFile(tmp_path / f"model_outputs_{name}_5shots.zip", "w") as zf:
            zf.writestr(f"model_outputs_{name}_5shots.json", json.dumps(records))

    recs = [{"question_id": q, "question": f"q{q}?", "category": "math", "options": ["1", "2"],
             "answer": "A", "answer_index": 0, "src": "s", "pred": "A"} for q in (10, 2)]
    write("alpha", recs)
    write("beta", recs[:1])
    (tmp_path / "model_outputs_gamma_5shots.json").write_text(json.dumps(recs))
    (tmp_path / "model_outputs_gamma_5shots.zip").write_bytes(b"not a zip")  # the .json wins
    (tmp_path / "notes.txt").write_text("x")
    assert mmlu_pro.model_name("model_outputs_Yi-34B_5shots.zip") == "Yi-34B"
    assert mmlu_pro.model_name("notes.txt") is None
    files = mmlu_pro_result_files(tmp_path)
    assert files == mmlu_pro_model_files(tmp_path) == mmlu_pro.result_files(tmp_path)
    assert list(files) == ["alpha", "beta", "gamma"] and files["gamma"].suffix == ".json"
    ps = PromptSet.from_mmlu_pro(tmp_path)
    assert ps.ids == ["10", "2"] and ps.df["answer_index"].tolist() == [0, 0]
    s = ExpertScores.from_mmlu_pro(tmp_path, cache=False)
    assert s.prompt_ids == ["10"] and s.experts == ["alpha", "beta", "gamma"]
    assert ExpertScores.from_mmlu_pro(tmp_path, common_only=False, cache=False).prompt_ids == ["2", "10"]
    assert PromptSet.read(tmp_path).ids == ps.ids  # a folder of result files reads as MMLU-Pro
    # the same damaged file is the caller's error class, naming the file
    bad = tmp_path / "model_outputs_gamma_5shots.zip"
    with pytest.raises(PromptSetError, match="not a valid zip"):
        PromptSet.from_mmlu_pro(bad)
    (tmp_path / "model_outputs_gamma_5shots.json").unlink()
    with pytest.raises(ScoresError, match="model_outputs_gamma_5shots.zip is not a valid zip"):
        ExpertScores.from_mmlu_pro(tmp_path, cache=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert mmlu_pro_result_files(empty) == {}
    with pytest.raises(ScoresError, match="no MMLU-Pro result files"):
        mmlu_pro_model_files(empty)
    with pytest.raises(PromptSetError, match="no MMLU-Pro result files"):
        PromptSet.from_mmlu_pro(empty)
