"""Category discovery: clustering, c-TF-IDF names (incl. Chinese), renaming, assigning."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.discover import Discovery, ctfidf_terms, discover_categories, tokenize
from workbench.errors import MapError

TOPICS = {
    "cooking": ["recipe", "garlic", "oven", "soup", "bake", "flour"],
    "law": ["contract", "court", "tort", "lawsuit", "judge", "statute"],
    "space": ["planet", "orbit", "rocket", "galaxy", "telescope", "comet"],
}
FILLER = ["the", "a", "about", "please", "what", "is", "how", "do", "i", "me", "tell", "explain"]


def corpus(n_per=20, seed=0, dim=24):
    rng = np.random.default_rng(seed)
    texts, truth, X = [], [], []
    centers = rng.normal(size=(len(TOPICS), dim)) * 3
    for t, (topic, words) in enumerate(TOPICS.items()):
        for _ in range(n_per):
            ws = list(rng.choice(words, size=3, replace=False)) + list(rng.choice(FILLER, 4))
            rng.shuffle(ws)
            texts.append(" ".join(ws).capitalize() + "?")
            truth.append(topic)
            X.append(centers[t] + 0.2 * rng.normal(size=dim))
    return np.asarray(X, dtype=np.float32), texts, np.asarray(truth)


def test_tokenize_stop_words_and_cjk_bigrams():
    assert tokenize("What is the Statute of limitations?", {"what", "is", "the", "of"}) == [
        "statute", "limitations"]
    assert tokenize("番茄炒蛋怎么做") == ["番茄", "茄炒", "炒蛋", "蛋怎"]  # 怎么, 么做 are stop bigrams
    toks = tokenize("番茄炒蛋 hello")
    assert toks == ["番茄", "茄炒", "炒蛋", "hello"]
    assert "什么" not in tokenize("这是什么")  # common question bigram dropped
    assert tokenize("x 42 ab") == ["ab"]  # single letters and numbers are not terms


def test_ctfidf_picks_distinctive_terms():
    texts = ["apple banana common", "apple cherry common", "banana apple common",
             "engine wheel common", "wheel brake common", "engine brake common"]
    terms = ctfidf_terms(texts, [0, 0, 0, 1, 1, 1], n_terms=2, stop_words=False)
    assert terms[0] == ["apple", "banana"]
    assert len(terms[1]) == 2 and set(terms[1]) <= {"engine", "wheel", "brake"}
    assert "common" not in terms[0] + terms[1]  # in every cluster: not distinctive
    with pytest.raises(MapError, match="got 2 texts for 1 cluster ids"):
        ctfidf_terms(["a", "b"], [0])


def test_kmeans_discovery_names_clusters_by_their_topic_words():
    X, texts, truth = corpus()
    d = discover_categories(X, texts, n_clusters=3, n_terms=3)
    assert isinstance(d, Discovery) and d.n_clusters == 3 and len(d) == len(texts)
    # each discovered cluster is one true topic, and its name uses that topic's words
    for c, name in d.names.items():
        topics = set(truth[d.cluster_ids == c])
        assert len(topics) == 1
        topic = topics.pop()
        assert set(d.terms[c]) <= set(TOPICS[topic]), (d.terms[c], topic)
        assert name == "-".join(d.terms[c]) and len(d.terms[c]) == 3
    assert set(d.labels) == set(d.names.values())
    assert not any(w in " ".join(d.names.values()) for w in ("the", "please", "tell"))
    frame = d.to_frame()
    assert list(frame.columns) == ["cluster", "name", "size", "terms"]
    assert frame["size"].sum() == len(texts)


def test_n_clusters_none_picks_k_by_silhouette():
    X, texts, _ = corpus()
    d = discover_categories(X, texts, k_range=(2, 6))
    assert d.n_clusters == 3
    assert set(d.k_scores) == {2, 3, 4, 5, 6}
    assert max(d.k_scores, key=d.k_scores.get) == 3
    assert d.silhouette == pytest.approx(d.k_scores[3])


def test_same_seed_same_result():
    X, texts, _ = corpus()
    a = discover_categories(X, texts, n_clusters=3, seed=5)
    b = discover_categories(X, texts, n_clusters=3, seed=5)
    np.testing.assert_array_equal(a.cluster_ids, b.cluster_ids)
    assert a.names == b.names


def test_hdbscan_finds_the_topics_and_names_noise():
    X, texts, truth = corpus()
    X = np.vstack([X, np.random.default_rng(9).normal(size=(3, X.shape[1])) * 20])
    texts = texts + ["random outlier one", "random outlier two", "random outlier three"]
    d = discover_categories(X, texts, method="hdbscan", min_cluster_size=5)
    assert d.n_clusters == 3
    if -1 in d.names:
        assert d.names[-1] == "unclustered"
    with pytest.raises(MapError, match="chooses the number of clusters itself"):
        discover_categories(X, texts, method="hdbscan", n_clusters=3)


def test_chinese_texts_get_character_ngram_names():
    rng = np.random.default_rng(0)
    food = ["番茄炒蛋怎么做", "番茄炒蛋要放糖吗", "番茄炒蛋好吃的做法", "怎样做番茄炒蛋"]
    sky = ["天空为什么是蓝色", "蓝色的天空", "天空的颜色为什么是蓝色", "晚上天空为什么黑"]
    texts = food * 3 + sky * 3
    X = np.r_[rng.normal(size=(12, 8)) + 5, rng.normal(size=(12, 8)) - 5].astype(np.float32)
    d = discover_categories(X, texts, n_clusters=2, n_terms=2)
    names = set(d.names.values())
    assert any("番茄" in n or "炒蛋" in n for n in names), names
    assert any("天空" in n or "蓝色" in n for n in names), names


def test_rename_and_clash():
    X, texts, _ = corpus()
    d = discover_categories(X, texts, n_clusters=3)
    first, second = d.names[0], d.names[1]
    d.rename(first, "cooking?")
    assert d.names[0] == "cooking?" and "cooking?" in set(d.labels)
    d.rename(1, "  law  ")
    assert d.names[1] == "law"
    assert (d.labels[d.cluster_ids == 1] == "law").all()
    with pytest.raises(MapError, match="name 'law' is already used by another category"):
        d.rename(2, "law")
    with pytest.raises(MapError, match="no discovered category 'nope'"):
        d.rename("nope", "x")
    with pytest.raises(MapError, match="non-empty string"):
        d.rename("law", " ")
    # swapping two names in one call is allowed
    d.rename({"law": "cooking?", "cooking?": "law"})
    assert d.names[0] == "law" and d.names[1] == "cooking?"
    assert second not in d.names.values()


def test_assign_to_prompt_set():
    from workbench.prompts import PromptSet

    X, texts, _ = corpus()
    ps = PromptSet(pd.DataFrame({"id": [f"q{i}" for i in range(len(texts))], "text": texts}))
    d = discover_categories(X, ps, n_clusters=3)
    d.rename(0, "alpha")
    out = d.assign_to(ps)
    assert "discovered" in out.columns and "discovered" not in ps.columns
    assert list(out.column("discovered")) == list(d.labels)
    routed = d.assign_to(ps, column="category")
    assert routed.has_categories and "alpha" in routed.category_names
    with pytest.raises(MapError, match="the prompt set has 5 prompts but the discovery was made on 60"):
        d.assign_to(ps.subset(list(range(5))))


def test_bad_inputs():
    X, texts, _ = corpus()
    with pytest.raises(MapError, match="got 60 embeddings for 59 texts"):
        discover_categories(X, texts[:-1])
    with pytest.raises(MapError, match="unknown discovery method 'dbscan'"):
        discover_categories(X, texts, method="dbscan")
    with pytest.raises(MapError, match="n_clusters must be an integer"):
        discover_categories(X, texts, n_clusters=0)
    Xn = X.copy()
    Xn[2, 2] = np.nan
    with pytest.raises(MapError, match="NaN"):
        discover_categories(Xn, texts)
