"""Embedder: pooling, instruction, normalisation, cache hits and invalidation, clear errors."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from workbench.embed import Embedder, load_embeddings, model_fingerprint, save_embeddings
from workbench.errors import EmbedderError, ModelNotFoundError
from workbench.prompts import PromptSet

TEXTS = ["What is the derivative of x^2?", "¿Dónde está la estación?", "Write a haiku", "short"]


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A tiny random BERT with MiniLM's tokenizer, saved like any HF checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from workbench.embed import default_model_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(folder, safe_serialization=True)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(folder)
    return folder


def counting(emb: Embedder):
    """Wrap _compute to count how many texts reach the model."""
    calls = []
    real = emb._compute

    def wrapped(texts, progress):
        calls.append(list(texts))
        return real(texts, progress)

    emb._compute = wrapped
    return calls


def test_default_model_is_offline_minilm():
    emb = Embedder()
    X = emb.encode(TEXTS)
    assert X.shape == (4, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    # semantically close texts are closer than unrelated ones
    a, b, c = emb.encode(["How do I differentiate x squared?", "derivative of x^2", "best pizza in Naples"])
    assert a @ b > a @ c


def test_matches_sentence_transformers_numerics():
    st = pytest.importorskip("sentence_transformers")
    from workbench.embed import default_model_path

    ours = Embedder(cache=False).encode(TEXTS)
    theirs = st.SentenceTransformer(default_model_path(), device="cpu").encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_cache_hit_skips_the_model(tiny_encoder, tmp_path):
    emb = Embedder(tiny_encoder, cache=tmp_path)
    first = emb.encode(TEXTS)
    fresh = Embedder(tiny_encoder, cache=tmp_path)  # new object, same settings: served from disk
    calls = counting(fresh)
    again = fresh.encode(TEXTS)
    assert calls == [] and np.array_equal(first, again)


def test_changed_text_is_recomputed_only(tiny_encoder, tmp_path):
    emb = Embedder(tiny_encoder, cache=tmp_path)
    emb.encode(TEXTS)
    calls = counting(emb)
    out = emb.encode(TEXTS[:3] + ["short!"])
    assert calls == [["short!"]]
    assert not np.allclose(out[3], emb.encode(["short"])[0])


def test_changed_model_weights_invalidate_cache(tiny_encoder, tmp_path):
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "model"
    shutil.copytree(tiny_encoder, copy)
    cache = tmp_path / "cache"
    before = Embedder(copy, cache=cache).encode(TEXTS)
    fp_before = model_fingerprint(copy)
    weights = load_file(copy / "model.safetensors")
    name = next(k for k in weights if "word_embeddings" in k)
    weights[name] = weights[name] * 1.5 + 0.1
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    emb = Embedder(copy, cache=cache)
    assert emb.fingerprint != fp_before
    calls = counting(emb)
    after = emb.encode(TEXTS)
    assert len(calls) == 1 and not np.allclose(before, after)


def test_settings_change_the_key_and_vectors(tiny_encoder, tmp_path):
    base = Embedder(tiny_encoder, cache=tmp_path)
    variants = [Embedder(tiny_encoder, cache=tmp_path, pooling="cls"),
                Embedder(tiny_encoder, cache=tmp_path, pooling="last"),
                Embedder(tiny_encoder, cache=tmp_path, instruction="query: {text}"),
                Embedder(tiny_encoder, cache=tmp_path, max_length=4)]
    keys = {base.settings_key} | {v.settings_key for v in variants}
    assert len(keys) == 5
    X = base.encode(TEXTS)
    for v in variants:
        assert not np.allclose(X, v.encode(TEXTS))
    raw = Embedder(tiny_encoder, cache=False, normalize=False).encode(TEXTS)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)


def test_batching_by_length_keeps_input_order(tiny_encoder):
    texts = [("word " * n).strip() for n in (1, 30, 5, 60, 2, 12, 7)]
    batched = Embedder(tiny_encoder, cache=False, batch_size=2).encode(texts)
    single = np.stack([Embedder(tiny_encoder, cache=False).encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_duplicates_are_embedded_once(tiny_encoder, tmp_path):
    emb = Embedder(tiny_encoder, cache=tmp_path)
    calls = counting(emb)
    out = emb.encode(["a b", "a b", "c"])
    assert calls == [["a b", "c"]] and np.array_equal(out[0], out[1])


def test_errors_are_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"not a local folder.*huggingface-cli download"):
        Embedder("no-such-org/no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        Embedder(tmp_path / "empty")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Embedder("./missing/folder")
    with pytest.raises(EmbedderError, match="pooling must be"):
        Embedder(pooling="max")
    with pytest.raises(EmbedderError, match=r"text 1 is a int"):
        Embedder().encode(["ok", 3])


def test_embedding_file_round_trip(tmp_path):
    ps = PromptSet.from_records([{"id": "a", "text": "x", "category": "c"}, {"id": "b", "text": "y", "category": "d"}])
    X = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    save_embeddings(tmp_path / "e.npz", X, ps, {"model": "m"})
    f = load_embeddings(tmp_path / "e.npz")
    assert np.array_equal(f.embeddings, X) and f.ids == ["a", "b"] and f.categories == ["c", "d"]
    assert f.meta == {"model": "m"}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EmbedderError, match="cannot read embeddings"):
        load_embeddings(tmp_path / "bad.npz")
    with pytest.raises(EmbedderError, match="coe-workbench embed"):
        load_embeddings(tmp_path / "none.npz")


def test_embed_cli(tmp_path, capsys):
    from workbench.cli import main

    src = tmp_path / "p.jsonl"
    src.write_text('{"id": "1", "text": "hello", "category": "chat"}\n{"id": "2", "text": "  "}\n')
    assert main(["embed", str(src), "--out", str(tmp_path / "o.npz")]) == 2
    assert "row 2" in capsys.readouterr().err
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the command reports skips itself, once
        assert main(["embed", str(src), "--out", str(tmp_path / "o.npz"), "--on-error", "skip", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "embedded 1 prompts" in out.out and out.err.count("skipped") == 1
    assert load_embeddings(tmp_path / "o.npz").embeddings.shape == (1, 384)
