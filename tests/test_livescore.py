"""Live scoring through transformers on tiny random-init Llama models built from a config."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from workbench.errors import ExpertError, ScoresError

PROMPTS = pd.DataFrame({
    "id": ["m1", "m2", "l1", "l2", "l3"],
    "text": ["Solve for x: 3 x + 5 = 20", "What is the derivative of x squared?",
             "The court ruled that the contract was valid", "Is the contract valid?",
             "Hello, how are you today?"],
    "category": ["math", "math", "law", "law", "law"],
    "answer": ["x = 5", "It is two x.", "under state law .", "The court ruled that the contract "
               "was valid under state law , so yes", "I am fine, thank you."],
})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from helpers_models import write_tiny_llama

    root = tmp_path_factory.mktemp("livescore")
    return {"a": write_tiny_llama(root / "a", hidden_size=32, num_layers=2, seed=1),
            "b": write_tiny_llama(root / "b", hidden_size=32, num_layers=2, seed=2)}


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(tiny["a"]).eval(),
            AutoTokenizer.from_pretrained(tiny["a"]))


def manual_loglik(model, tokenizer, prompt, answer, chat_template=True):
    """Reference: one unpadded forward pass, sum of the answer tokens' log-probabilities."""
    import torch

    from workbench.livescore import encode_pair

    p, a = encode_pair(tokenizer, prompt, answer, max_length=512, chat_template=chat_template)
    ids = torch.tensor([p + a])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(p) + j - 1, t]) for j, t in enumerate(a)), len(a)


def test_batched_scores_match_an_unpadded_reference(tiny, model_and_tokenizer):
    from workbench.livescore import loglik_frame

    model, tok = model_and_tokenizer
    df = loglik_frame(tiny["a"], PROMPTS, batch_size=3, name="a", device="cpu")
    assert list(df.columns) == ["prompt_id", "category", "expert", "loglik", "n_tokens",
                                "mean_loglik", "token_prob", "mc_correct"]
    assert df["prompt_id"].tolist() == PROMPTS["id"].tolist() and set(df["expert"]) == {"a"}
    for row, rec in zip(df.itertuples(), PROMPTS.itertuples()):
        ll, n = manual_loglik(model, tok, rec.text, rec.answer)
        assert row.n_tokens == n == len(tok(rec.answer, add_special_tokens=False)["input_ids"]) + 1
        assert row.loglik == pytest.approx(ll, abs=1e-4)
        assert row.mean_loglik == pytest.approx(ll / n, abs=1e-5)
        assert row.token_prob == pytest.approx(math.exp(ll / n), rel=1e-5)
        assert 0 < row.token_prob <= 1 and math.isnan(row.mc_correct)
    # batch size does not change the numbers (left padding + position ids are right)
    one = loglik_frame(model, PROMPTS, tokenizer=tok, batch_size=1, name="a")
    np.testing.assert_allclose(one["loglik"], df["loglik"], atol=1e-4)


def test_chat_template_is_used_when_present(tiny, model_and_tokenizer):
    from workbench.livescore import loglik_frame

    model, tok = model_and_tokenizer
    with_t = loglik_frame(model, PROMPTS, tokenizer=tok, name="a")
    without = loglik_frame(model, PROMPTS, tokenizer=tok, name="a", chat_template=False)
    ll, _ = manual_loglik(model, tok, PROMPTS.text[0], PROMPTS.answer[0], chat_template=False)
    assert without["loglik"][0] == pytest.approx(ll, abs=1e-4)
    assert not np.allclose(with_t["loglik"], without["loglik"])


def test_truncation_keeps_the_answer(tiny):
    from workbench.livescore import encode_pair, load_scoring_model, loglik_frame

    tok = load_scoring_model(tiny["a"], device="cpu").tokenizer
    p, a = encode_pair(tok, "word " * 200, "It is two x.", max_length=24)
    n_answer = len(tok("It is two x.", add_special_tokens=False)["input_ids"]) + 1
    assert len(p) + len(a) == 24 and a[-1] == tok.eos_token_id and len(a) == n_answer
    p, a = encode_pair(tok, "word " * 200, "two " * 40, max_length=24)
    assert len(p) == len(a) == 12 and a[-1] != tok.eos_token_id   # the answer keeps half
    df = loglik_frame(tiny["a"], PROMPTS.assign(text=["word " * 300] * 5), max_length=32)
    assert np.isfinite(df["loglik"]).all()


def test_multiple_choice_accuracy(tiny, model_and_tokenizer):
    from workbench.livescore import loglik_frame

    model, tok = model_and_tokenizer
    options = ["x = 5", "x = 3", "It is two x."]
    prompts = pd.DataFrame({"id": ["q1", "q2", "q3", "q4"], "category": ["math"] * 4,
                            "text": ["Solve for x: 3 x + 5 = 20"] * 4,
                            "options": [options] * 4,
                            "answer": ["x = 5", "B", 2, "0"]})
    df = loglik_frame(model, prompts, tokenizer=tok, name="a")
    lls = [manual_loglik(model, tok, prompts.text[0], o)[0] for o in options]
    best = int(np.argmax(lls))
    assert df["mc_correct"].tolist() == [float(best == c) for c in (0, 1, 2, 0)]
    assert df["loglik"][1] == pytest.approx(lls[1], abs=1e-4)    # the correct option's loglik
    bad = prompts.assign(answer=["x = 7"] * 4)
    with pytest.raises(ScoresError, match=r"prompt 'q1': answer 'x = 7' is neither one of its 3"):
        loglik_frame(model, bad, tokenizer=tok)
    with pytest.raises(ScoresError, match="points outside its 3 options"):
        loglik_frame(model, prompts.assign(answer=["E"] * 4), tokenizer=tok)


def test_score_models_returns_expert_scores(tiny):
    from workbench.livescore import score_model, score_models

    one = score_model(tiny["a"], PROMPTS, name="a")
    assert one.experts == ["a"] or list(one.experts) == ["a"]
    scores, frame = score_models({"a": tiny["a"], "b": tiny["b"]}, PROMPTS, return_frame=True)
    assert scores.values.shape == (5, 2) and list(scores.experts) == ["a", "b"]
    np.testing.assert_allclose(scores.values[:, 0], one.values[:, 0], rtol=1e-6)
    means = scores.category_means()
    assert set(means.index) == {"math", "law"}
    expected = frame[frame.expert == "b"].groupby("category").token_prob.mean()
    assert means.loc["law", "b"] == pytest.approx(expected["law"])
    ll = score_models({"a": tiny["a"]}, PROMPTS, score="mean_loglik")
    assert (ll.values < 0).all()
    with pytest.raises(ScoresError, match="needs options on every prompt"):
        score_models({"a": tiny["a"]}, PROMPTS, score="mc_correct")
    with pytest.raises(ScoresError, match="is not one of"):
        score_models({"a": tiny["a"]}, PROMPTS, score="accuracy")


def test_scoring_through_the_expert_pool(tiny):
    from workbench.experts import ExpertPool, ExpertSpec
    from workbench.livescore import score_models

    pool = ExpertPool([ExpertSpec("a", tiny["a"]), ExpertSpec("b", tiny["b"])], gpu_memory=None,
                      cpu_memory="64MiB", prefetch=False)
    direct = score_models({"a": tiny["a"], "b": tiny["b"]}, PROMPTS)
    via_pool = score_models(pool, PROMPTS)
    np.testing.assert_allclose(via_pool.values, direct.values, rtol=1e-5)
    assert all(not r["in_use"] for r in pool.residency())
    pool.close()


def test_bad_inputs_are_clear_errors(tiny, model_and_tokenizer, tmp_path):
    from workbench.livescore import loglik_frame

    model, tok = model_and_tokenizer
    with pytest.raises(ScoresError, match="needs a 'answer' column.*pass answers="):
        loglik_frame(tiny["a"], PROMPTS.drop(columns="answer"))
    with pytest.raises(ScoresError, match="prompt 'm2' has no reference answer"):
        loglik_frame(tiny["a"], PROMPTS.assign(answer=["x", "  ", "a", "b", "c"]))
    with pytest.raises(ExpertError, match="pass tokenizer="):
        loglik_frame(model, PROMPTS)
    with pytest.raises(ExpertError, match="cannot load the causal LM .*missing"):
        loglik_frame(str(tmp_path / "missing"), PROMPTS)
    with pytest.raises(ExpertError, match="cannot score int"):
        loglik_frame(42, PROMPTS)
    with pytest.raises(ScoresError, match="batch_size=0"):
        loglik_frame(tiny["a"], PROMPTS, batch_size=0)
