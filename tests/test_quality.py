"""Cluster quality: kNN purity (overall and per label) and silhouette."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.errors import MapError
from workbench.quality import knn_purity, knn_purity_by_label, neighbour_agreement, silhouette


def blobs(n_per=30, n_blobs=4, dim=12, seed=0, noise=0.2):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_blobs, dim)) * 3
    X = np.concatenate([c + noise * rng.normal(size=(n_per, dim)) for c in centers])
    return X.astype(np.float32), np.repeat([f"c{i}" for i in range(n_blobs)], n_per)


def test_separable_labels_are_pure_random_labels_are_near_chance():
    X, y = blobs()
    assert knn_purity(X, y, k=10) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    shuffled = rng.permutation(y)
    p = knn_purity(X, shuffled, k=10)
    assert 0.1 < p < 0.45  # chance is 0.25 for 4 balanced labels
    assert silhouette(X, y) > 0.5
    assert abs(silhouette(X, shuffled)) < 0.1


def test_self_is_excluded_from_its_neighbours():
    # two points per label, far apart pairs: each point's single neighbour is its partner
    X = np.array([[1, 0], [1, 0.01], [0, 1], [0.01, 1], [-1, 0], [-1, 0.01]], dtype=float)
    y = ["a", "a", "b", "b", "c", "c"]
    assert knn_purity(X, y, k=1) == 1.0
    # with k=2 the second neighbour is from another label: purity 0.5 exactly
    assert knn_purity(X, y, k=2) == pytest.approx(0.5)
    np.testing.assert_allclose(neighbour_agreement(X, y, k=2), 0.5)


def test_purity_by_label_worst_first():
    X, y = blobs()
    y = y.copy()
    # mix half of c3 into c2 territory: c2/c3 become impure, c0/c1 stay pure
    idx_c2 = np.flatnonzero(y == "c2")
    y[idx_c2[::2]] = "c3"
    df = knn_purity_by_label(X, y, k=5)
    assert list(df.columns) == ["label", "n", "purity", "chance"]
    assert set(df["label"]) == {"c0", "c1", "c2", "c3"}
    assert df["purity"].is_monotonic_increasing
    assert set(df["label"].iloc[:2]) == {"c2", "c3"}
    pure = df.set_index("label").loc[["c0", "c1"], "purity"]
    assert (pure == 1.0).all()
    assert df["n"].sum() == len(y)
    assert df.set_index("label").loc["c0", "chance"] == pytest.approx(30 / 120)


def test_prompt_set_labels_are_its_categories():
    from workbench.prompts import PromptSet

    X, y = blobs()
    ps = PromptSet(pd.DataFrame({"id": [str(i) for i in range(len(y))],
                                 "text": [f"t{i}" for i in range(len(y))], "category": y}))
    assert knn_purity(X, ps) == knn_purity(X, y)


@pytest.mark.parametrize("bad", [None, np.nan])
def test_missing_labels_raise_with_rows(bad):
    X, y = blobs()
    labels = list(y)
    labels[3] = bad
    labels[17] = bad
    with pytest.raises(MapError, match=r"2 label\(s\) are missing \(None/NaN\) at row\(s\) \[3, 17\]"):
        knn_purity(X, labels)
    with pytest.raises(MapError, match="missing"):
        silhouette(X, labels)


def test_bad_inputs():
    X, y = blobs()
    with pytest.raises(MapError, match="got 119 labels for 120 embeddings"):
        knn_purity(X, y[:-1])
    with pytest.raises(MapError, match="k=120 needs more than 120 points"):
        knn_purity(X, y, k=120)
    with pytest.raises(MapError, match="positive integer"):
        knn_purity(X, y, k=0)
    with pytest.raises(MapError, match="2-D"):
        knn_purity(X[0], y[:1])
    with pytest.raises(MapError, match="sequence"):
        knn_purity(X, "c0")
    with pytest.raises(MapError, match="between 2 and n-1"):
        silhouette(X, ["same"] * len(X))
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(MapError, match="NaN"):
        knn_purity(Xn, y)


def test_silhouette_sampling_is_seeded():
    X, y = blobs(n_per=100)
    a = silhouette(X, y, sample_size=100, seed=3)
    assert a == silhouette(X, y, sample_size=100, seed=3)
    assert silhouette(X, y, sample_size=None) == pytest.approx(silhouette(X, y, sample_size=10**6))
