"""Hardening of data inputs: safetensors headers, memory sizes, LLM decomposer replies, the
embedding cache and memo, embeddings files, prompt length, missing categories, empty prompt files.

Every test checks the message (what is wrong, where, what to do), not only the exception type;
cache tests check that a damaged cache gives exactly what a fresh computation gives.
"""
from __future__ import annotations

import io
import json
import re
import warnings

import numpy as np
import pytest

from workbench.errors import (
    DecomposeError,
    EmbedderError,
    ExpertError,
    GraphError,
    PlacementError,
    PromptSetError,
)

# ----------------------------------------------------------------------------------------------
# 1. safetensors headers


def _safetensors(path, header: bytes, payload: bytes = b"") -> None:
    path.write_bytes(len(header).to_bytes(8, "little") + header + payload)


@pytest.mark.parametrize("header, problem", [
    (b"[1, 2, 3]", r"header is a JSON list, not an object"),
    (b'"just a string"', r"header is a JSON str, not an object"),
    (b"{not json", r"header is not valid JSON"),
    (b"[" * 100_000, r"header is not valid JSON \(nested too deeply\)"),
    (b"{\"\x80\": 1}", r"header is not UTF-8 JSON \(byte 2\)"),
    (json.dumps({"w": {"shape": [1], "data_offsets": [0, 4]}}).encode(), r"tensor 'w' .* has no dtype"),
    (json.dumps({"w": {"dtype": "F32", "data_offsets": [0, 4]}}).encode(), r"tensor 'w' .* has no shape"),
    (json.dumps({"w": 3}).encode(), r"tensor 'w' .* is a int, not an object"),
    (json.dumps({"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}).encode(),
     r"tensor 'w' .* has shape '1', not a list of non-negative integers"),
    (json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}).encode(),
     r"tensor 'w' .* has data_offsets \[4, 0\]"),
    (json.dumps({"__metadata__": [1], "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode(),
     r"__metadata__ is a list"),
])
def test_malformed_safetensors_header_is_a_placement_error(tmp_path, header, problem):
    from workbench.placement import read_safetensors_header

    f = tmp_path / "model.safetensors"
    _safetensors(f, header, b"\0" * 4)
    with pytest.raises(PlacementError, match=rf"expert 'e': .*model\.safetensors.*{problem}.*re-save or re-download") as info:
        read_safetensors_header(f, expert="e")
    assert isinstance(info.value, ExpertError)  # callers catching ExpertError still do
    assert len(str(info.value)) < 600           # a huge header is never quoted whole


def test_safetensors_header_length_beyond_the_file(tmp_path):
    from workbench.placement import read_safetensors_header

    f = tmp_path / "model.safetensors"
    f.write_bytes((4096).to_bytes(8, "little") + b"{}")
    with pytest.raises(PlacementError, match=r"model\.safetensors declares a 4096-byte header but holds 10 bytes"):
        read_safetensors_header(f)


def test_valid_safetensors_header_still_reads(tmp_path):
    from workbench.placement import read_safetensors_header

    f = tmp_path / "model.safetensors"
    _safetensors(f, json.dumps({"__metadata__": {"format": "pt"},
                                "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode(), b"\0" * 4)
    assert read_safetensors_header(f)["w"]["shape"] == [1]


@pytest.mark.parametrize("index", ['[1, 2]', '{"weight_map": [1]}', '{"weight_map": {"w": 3}}', "{oops"])
def test_malformed_safetensors_index_is_a_clear_error(tmp_path, index):
    from workbench.placement import inspect_checkpoint

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ExpertError, match=r"model\.safetensors\.index\.json is not a valid safetensors index.*re-save"):
        inspect_checkpoint(tmp_path, expert="x")


@pytest.mark.parametrize("name", ["../elsewhere/model.safetensors", "/etc/model.safetensors",
                                  "shards/../../model.safetensors"])
def test_safetensors_index_naming_files_outside_its_folder_is_refused(tmp_path, name):
    from workbench.placement import inspect_checkpoint

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": name}}))
    with pytest.raises(ExpertError, match=r"index\.json names weight files outside its folder \(.*"
                                          r"model\.safetensors\); it may only list files inside .*ckpt"):
        inspect_checkpoint(folder, expert="x")


# ----------------------------------------------------------------------------------------------
# 2. parse_size


@pytest.mark.parametrize("value, problem", [
    ("1e999GB", r"memory size '1e999GB' is not a finite number of bytes"),
    ("1e99GB", r"memory size '1e99GB' is absurdly large \(over 1 EiB"),
    (float("nan"), r"memory size nan is not a finite number"),
    (float("inf"), r"memory size inf is not a finite number"),
    (-1.5, r"memory size -1.5 must be a non-negative number"),
    (2**61, rf"memory size {2**61} is absurdly large"),
    ("2048PiB", r"unknown unit 'PiB' in memory size '2048PiB'"),
    ("x" * 500, r"cannot parse memory size 'xxxx"),
])
def test_parse_size_rejects_non_finite_negative_and_absurd(value, problem):
    from workbench.placement import parse_size

    with pytest.raises(PlacementError, match=problem) as info:
        parse_size(value)
    assert "20GiB" in str(info.value) and len(str(info.value)) < 300


def test_parse_size_accepts_up_to_one_exbibyte():
    from workbench.placement import MAX_SIZE_BYTES, parse_size

    assert MAX_SIZE_BYTES == 2**60
    assert parse_size(2**60) == 2**60 and parse_size("1024TiB") == 2**50
    assert parse_size("20GiB") == 20 * 2**30


# ----------------------------------------------------------------------------------------------
# 3. LLM decomposer replies that break the JSON parser

GOOD = '{"nodes": [{"id": "q1", "text": "2+2?"}, {"id": "q2", "text": "Square {{q1}}"}]}'


def test_deeply_nested_reply_is_retried_then_recovers():
    from workbench.compose import LLMDecomposer

    replies = iter(["[" * 100_000, GOOD])
    prompts = []

    def runner(expert, prompt):
        prompts.append(prompt)
        return next(replies)

    dec = LLMDecomposer(runner, "g", max_attempts=2)
    graph = dec("What is 2+2 and what is it squared?")
    assert graph.dependencies() == {"q1": [], "q2": ["q1"]}
    assert "nests brackets too deeply" in dec.attempts[0]["error"]
    assert "could not be used: the decomposer's reply nests brackets too deeply" in prompts[1]


def test_deeply_nested_reply_every_time_is_a_decompose_error():
    from workbench.compose import LLMDecomposer

    dec = LLMDecomposer(lambda e, p: "[" * 100_000, "g", max_attempts=3)
    with pytest.raises(DecomposeError, match=r"no valid query graph in 3 attempt\(s\); last error: .*nests brackets "
                                             r"too deeply.*last reply: '\[\[\[") as info:
        dec("What is 2+2 and what is it squared?")
    assert len(info.value.attempts) == 3 and len(str(info.value)) < 1500


def test_odd_json_shapes_are_malformed_output_not_crashes():
    from workbench.compose.decompose import parse_graph_json

    # an unhashable dependency inside the keyed form used to raise a raw TypeError
    with pytest.raises(GraphError, match=r"not a usable query graph \(TypeError"):
        parse_graph_json('{"q1": {"text": "a b c", "depends_on": [[1]]}}')
    with pytest.raises(GraphError, match=r"no JSON object with a 'nodes' list"):
        parse_graph_json("{" * 100_000)  # bounded scan: fast, and a plain error


@pytest.mark.parametrize("exc", [RecursionError("deep"), ValueError("bad"), TypeError("odd"), KeyError("k")])
def test_any_parse_failure_is_retried(monkeypatch, exc):
    from workbench.compose import decompose

    calls = []

    def broken(text, query):
        calls.append(text)
        if len(calls) == 1:
            raise exc
        return decompose.QueryGraph.from_dict(json.loads(GOOD))

    monkeypatch.setattr(decompose, "_parse_graph_json", broken)
    dec = decompose.LLMDecomposer(lambda e, p: "whatever", "g", max_attempts=2)
    assert dec("What is 2+2 and what is it squared?").ids == ["q1", "q2"]
    assert dec.attempts[0]["error"] and dec.attempts[1]["error"] is None

    monkeypatch.setattr(decompose, "_parse_graph_json", lambda text, query: (_ for _ in ()).throw(exc))
    with pytest.raises(DecomposeError, match=r"in 2 attempt\(s\); last error: the decomposer's reply"):
        decompose.LLMDecomposer(lambda e, p: "whatever", "g", max_attempts=2)("x?")


# ----------------------------------------------------------------------------------------------
# 4. embedding cache, fingerprint memo, embeddings files

TEXTS = ["What is 2+2?", "Translate hello into Spanish", "Write a haiku about rain"]


@pytest.fixture(scope="module")
def minilm():
    """The default embedder (all-MiniLM-L6-v2), loaded once; its model is shared by the tests."""
    from workbench.embed import Embedder

    emb = Embedder(cache=False)
    emb._load()
    return emb


@pytest.fixture(scope="module")
def fresh_vectors(minilm):
    return minilm.encode(TEXTS)


def embedder(minilm, cache, **kwargs):
    """A new Embedder on ``cache`` reusing the loaded model; ``.calls`` lists texts that reach it."""
    from workbench.embed import Embedder

    emb = Embedder(cache=cache, **kwargs)
    emb._tokenizer, emb._model, emb._device, emb._dim = minilm._tokenizer, minilm._model, minilm._device, minilm._dim
    emb.calls = []
    real = emb._compute

    def counted(texts, progress):
        emb.calls.append(list(texts))
        return real(texts, progress)

    emb._compute = counted
    return emb


def _shards(emb):
    return sorted(emb._cache_store().folder.glob("shard-*.npz"))


def _rewrite_shard(path, **arrays):
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    for k in [k for k, v in arrays.items() if v is None]:
        del data[k]
    buf = io.BytesIO()
    np.savez(buf, **data)
    path.write_bytes(buf.getvalue())


def _populated(minilm, tmp_path):
    first = embedder(minilm, tmp_path)
    first.encode(TEXTS)
    (shard,) = _shards(first)
    return shard


def _served_equals_fresh(minilm, tmp_path, fresh_vectors, warn: str | None):
    emb = embedder(minilm, tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = emb.encode(TEXTS)
    np.testing.assert_allclose(out, fresh_vectors, atol=1e-6)
    assert emb.calls == [TEXTS]                       # recomputed, not served
    messages = [str(w.message) for w in caught]
    if warn is None:
        assert not messages
    else:
        assert any(warn in m and "shard-" in m and "embedded again" in m for m in messages), messages
    # rewritten: the next embedder is served from the new shard, the bad one is gone
    again = embedder(minilm, tmp_path)
    np.testing.assert_allclose(again.encode(TEXTS), fresh_vectors, atol=1e-6)
    assert again.calls == [] and len(_shards(again)) == 1


def test_cache_shard_of_the_wrong_width_is_recomputed(minilm, fresh_vectors, tmp_path):
    from workbench.embed import shard_checksum

    shard = _populated(minilm, tmp_path)
    with np.load(shard) as z:
        keys = z["keys"]
    narrow = np.ones((len(keys), 10), np.float32)
    _rewrite_shard(shard, vectors=narrow, checksum=np.asarray(shard_checksum(keys, narrow)))
    _served_equals_fresh(minilm, tmp_path, fresh_vectors, "10 wide but the model gives 384")


def test_edited_cache_shard_of_the_right_width_is_recomputed(minilm, fresh_vectors, tmp_path):
    shard = _populated(minilm, tmp_path)
    with np.load(shard) as z:
        edited = z["vectors"].copy()
    edited[0] = -edited[0]
    _rewrite_shard(shard, vectors=edited)
    _served_equals_fresh(minilm, tmp_path, fresh_vectors, "checksum does not match")


def test_truncated_cache_shard_is_recomputed(minilm, fresh_vectors, tmp_path):
    shard = _populated(minilm, tmp_path)
    shard.write_bytes(shard.read_bytes()[:100])
    _served_equals_fresh(minilm, tmp_path, fresh_vectors, "cannot be read")


def test_old_cache_format_without_checksum_is_a_plain_miss(minilm, fresh_vectors, tmp_path):
    shard = _populated(minilm, tmp_path)
    with np.load(shard) as z:
        keys = z["keys"]
    _rewrite_shard(shard, vectors=np.zeros((len(keys), 384), np.float32), checksum=None)  # the old layout
    _served_equals_fresh(minilm, tmp_path, fresh_vectors, None)


def test_corrupt_fingerprint_memo_is_ignored_and_rebuilt(tmp_path, monkeypatch):
    from workbench.embed import Embedder, default_model_path, model_fingerprint

    monkeypatch.setenv("COE_WORKBENCH_CACHE", str(tmp_path))
    expected = model_fingerprint(default_model_path())   # builds a good memo
    memo = tmp_path / "fingerprints" / "index.json"
    for bad in ("[1, 2, 3]", "{not json", '{"some|key": 42}', "\xff"):
        memo.write_text(bad, encoding="latin-1")
        with pytest.warns(UserWarning, match=rf"fingerprint memo {re.escape(str(memo))}"):
            assert model_fingerprint(default_model_path()) == expected
        rebuilt = json.loads(memo.read_text())
        assert isinstance(rebuilt, dict) and all(isinstance(v, str) for v in rebuilt.values())
    memo.write_text("[]")
    with pytest.warns(UserWarning, match="holds a JSON list"):
        assert Embedder(cache=False).fingerprint == expected   # every Embedder works again


def test_load_embeddings_of_a_truncated_file_names_it_and_the_fix(tmp_path):
    from workbench.embed import load_embeddings, save_embeddings

    path = tmp_path / "emb.npz"
    save_embeddings(path, np.ones((3, 4), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EmbedderError, match=rf"cannot read embeddings from {re.escape(str(path))} \(truncated or not a zip "
                                            r"archive.*recreate it with `coe-workbench embed SOURCE --out FILE\.npz`"):
        load_embeddings(path)
    buf = io.BytesIO()
    np.savez(buf, embeddings=np.ones((3, 4), np.float32), ids=np.asarray(["a", "b"]))
    path.write_bytes(buf.getvalue())
    with pytest.raises(EmbedderError, match=r"emb\.npz: 2 ids for 3 embeddings; the file is damaged: recreate it"):
        load_embeddings(path)


# ----------------------------------------------------------------------------------------------
# 5. prompt length


def test_prompt_longer_than_max_chars_is_refused_before_tokenizing(minilm, tmp_path):
    emb = embedder(minilm, False, max_chars=50)
    with pytest.raises(EmbedderError, match=r"prompt 1 is 51 characters long, over the limit of 50; shorten it, or "
                                            r"raise the limit with Embedder\(max_chars=\.\.\.\) or the environment "
                                            r"variable COE_MAX_PROMPT_CHARS"):
        emb.encode(["fine", "x" * 51])
    assert emb.calls == []
    from workbench.prompts import PromptSet

    ps = PromptSet.from_records([{"id": "short", "text": "ok"}, {"id": "long-one", "text": "y" * 60}])
    with pytest.raises(EmbedderError, match=r"prompt 1 \(id 'long-one'\) is 60 characters long"):
        emb.embed(ps)
    assert emb.encode(["x" * 50]).shape == (1, 384)


def test_prompt_length_default_env_and_helper(monkeypatch):
    from workbench.embed import MAX_PROMPT_CHARS, Embedder, check_prompt_length

    assert MAX_PROMPT_CHARS == 100_000
    monkeypatch.delenv("COE_MAX_PROMPT_CHARS", raising=False)
    assert Embedder(cache=False).max_chars == 100_000
    assert check_prompt_length("x" * 100_000) == "x" * 100_000
    with pytest.raises(EmbedderError, match=r"message is 100,001 characters long, over the limit of 100,000"):
        check_prompt_length("x" * 100_001, what="message")
    monkeypatch.setenv("COE_MAX_PROMPT_CHARS", "20")
    assert Embedder(cache=False).max_chars == 20
    with pytest.raises(EmbedderError, match=r"prompt is 21 characters long, over the limit of 20"):
        check_prompt_length("x" * 21)
    monkeypatch.setenv("COE_MAX_PROMPT_CHARS", "lots")
    with pytest.raises(EmbedderError, match=r"COE_MAX_PROMPT_CHARS='lots' is not a positive number"):
        Embedder(cache=False)
    with pytest.raises(EmbedderError, match=r"max_chars must be a positive number of characters, got 0"):
        Embedder(cache=False, max_chars=0)


# ----------------------------------------------------------------------------------------------
# 6. missing categories stay missing


def test_nan_none_and_empty_categories_are_missing(tmp_path):
    from workbench.prompts import PromptSet

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"text": "a", "category": NaN}\n{"text": "b", "category": null}\n'
                     '{"text": "c", "category": ""}\n{"text": "d", "category": "math"}\n{"text": "e"}\n')
    csv = tmp_path / "p.csv"
    csv.write_text("text,category\na,\nb,math\n")
    for path, expected in ((jsonl, [None, None, None, "math", None]), (csv, [None, "math"])):
        ps = PromptSet.read(path)
        assert list(ps.categories) == expected
        assert ps.category_names == ["math"]
        assert list(ps.subset(list(range(len(ps)))).categories) == expected
    with pytest.raises(PromptSetError, match=r"4 prompts have no category \(rows 0, 1, 2, 4"):
        PromptSet.read(jsonl).require_categories()


def test_embed_cli_writes_missing_categories_as_missing(tmp_path, capsys):
    from workbench.cli import main
    from workbench.embed import load_embeddings

    src = tmp_path / "p.jsonl"
    src.write_text('{"id": "1", "text": "What is 2+2?", "category": "math"}\n'
                   '{"id": "2", "text": "Say hi", "category": NaN}\n{"id": "3", "text": "Say bye"}\n')
    out = tmp_path / "o.npz"
    assert main(["embed", str(src), "--out", str(out), "--quiet"]) == 0
    assert "2 prompts without a category" in capsys.readouterr().out
    loaded = load_embeddings(out)
    assert loaded.categories == ["math", None, None]
    with np.load(out) as z:
        raw = z["categories"].tolist()
    assert "nan" not in raw and "None" not in raw


# ----------------------------------------------------------------------------------------------
# 7. empty prompt files


@pytest.mark.parametrize("name, content", [("e.jsonl", ""), ("blank.jsonl", "\n\n"), ("h.csv", "text,category\n"),
                                           ("l.json", "[]")])
def test_empty_prompt_file_is_an_error_unless_allowed(tmp_path, name, content):
    from workbench.prompts import PromptSet

    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PromptSetError, match=rf"{name} holds no prompts; add at least one .*allow_empty=True"):
        PromptSet.read(path)
    assert len(PromptSet.read(path, allow_empty=True)) == 0


def test_prompt_file_with_every_row_skipped_is_an_error(tmp_path):
    from workbench.prompts import PromptSet

    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "  "}\n{"text": ""}\n')
    with pytest.warns(UserWarning), pytest.raises(PromptSetError, match=r"bad\.jsonl holds no usable prompts: all 2 "
                                                                           r"rows were left out \(first: .*row 1"):
        PromptSet.read(path, on_error="skip")


def test_embed_cli_refuses_an_empty_prompt_file(tmp_path, capsys):
    from workbench.cli import main

    src = tmp_path / "empty.jsonl"
    src.write_text("")
    out = tmp_path / "o.npz"
    assert main(["embed", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coe-workbench embed: error: ") and "empty.jsonl holds no prompts" in err
    assert not out.exists()


def test_helpers_do_not_quote_huge_values():
    from workbench.placement import parse_size

    with pytest.raises(PlacementError) as info:
        parse_size("9" * 10_000 + "parsecs")
    assert len(str(info.value)) < 400


def test_graph_errors_quote_model_output_in_bounded_form():
    """A model's reply can be huge: graph errors quote its ids and lists in ~80 characters."""
    from workbench.compose.graph import QueryGraph
    from workbench.errors import GraphError

    long_id = "q" * 5000
    cases = [
        {"nodes": [{"id": "q1", "text": "a"}, {"id": "q2", "text": "b", "depends_on": [long_id]}]},
        {"nodes": [{"id": "q1", "text": "a", "depends_on": "x" * 5000}]},
        {"nodes": [["not", "an", "object"] * 2000]},
        {"nodes": [{"id": long_id, "text": "a"}, {"id": long_id, "text": "b"}]},
    ]
    for data in cases:
        with pytest.raises(GraphError) as err:
            QueryGraph.from_dict(data)
        msg = str(err.value)
        assert len(msg) < 400, msg[:200]
        assert "qqqqqqqqqq" * 20 not in msg and "xxxxxxxxxx" * 20 not in msg
