"""Maps: projection, seeding, disk cache, placement, MapBuilder, the `map` command."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.errors import MapError, MissingDependencyError
from workbench.maps import Map, MapBuilder, MapTimeoutError, cached_map, project

REPO = Path(__file__).resolve().parent.parent
FAST_TSNE = {"perplexity": 10, "n_iter": 60, "early_exaggeration_iter": 30}


@pytest.fixture(autouse=True)
def _own_cache(request, tmp_path, monkeypatch):
    """A fresh map cache per test, inherited by subprocesses and spawned workers.

    The session's cache root (shared embeddings, e.g. ``COE_WORKBENCH_CACHE=.cache``) stays
    reachable as ``request.node.session_cache``.
    """
    request.node.session_cache = os.environ.get("COE_WORKBENCH_CACHE")
    monkeypatch.setenv("COE_WORKBENCH_CACHE", str(tmp_path / "cache"))


def blobs(n_per=40, n_blobs=3, dim=16, seed=0, noise=0.15):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_blobs, dim)) * 3
    X = np.concatenate([c + noise * rng.normal(size=(n_per, dim)) for c in centers])
    y = np.repeat(np.arange(n_blobs), n_per)
    return X.astype(np.float32), y


def fake_umap(calls):
    """A stand-in for the UMAP computation (no numba), counting calls."""
    def _fake(X, params, *, seed, verbose):
        calls.append(params)
        rng = np.random.default_rng(seed)
        return (X[:, :2] + 0.001 * rng.normal(size=(len(X), 2))).astype(np.float32), {}
    return _fake


# ------------------------------------------------------------------------------- projection
def test_pca_shape_dtype_and_determinism():
    X, _ = blobs()
    m = project(X, "pca", cache=False)
    assert m.coords.shape == (len(X), 2) and m.coords.dtype == np.float32
    assert m.method == "pca" and m.params == {"metric": "cosine"}
    np.testing.assert_array_equal(m.coords, project(X, "pca", cache=False).coords)
    # first axis carries more variance than the second
    assert m.coords[:, 0].var() >= m.coords[:, 1].var()


def test_tsne_same_seed_same_coords_other_seed_differs():
    X, _ = blobs()
    a = project(X, "tsne", seed=1, cache=False, **FAST_TSNE)
    b = project(X, "tsne", seed=1, cache=False, **FAST_TSNE)
    c = project(X, "tsne", seed=2, cache=False, **FAST_TSNE)
    assert a.coords.shape == (len(X), 2)
    np.testing.assert_allclose(a.coords, b.coords, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a.coords, c.coords)


def test_tsne_native_placement_lands_near_the_original():
    X, y = blobs()
    m = project(X, "tsne", seed=0, cache=False, **FAST_TSNE)
    assert m.can_place_natively
    p = m.place(X[:1] + 0.01, how="native")
    own_blob = m.coords[y == y[0]].mean(axis=0)
    other = m.coords[y != y[0]].mean(axis=0)
    assert np.linalg.norm(p[0] - own_blob) < np.linalg.norm(p[0] - other)


def test_custom_reducer_object_is_accepted():
    from sklearn.decomposition import PCA

    X, _ = blobs()
    m = project(X, PCA(n_components=2, random_state=0))
    assert m.method == "PCA" and m.coords.shape == (len(X), 2)
    np.testing.assert_allclose(m.place(X[:3], how="native"), m.coords[:3], atol=1e-4)
    # auto uses the fitted reducer's transform in this process: exact for points off the data
    off = X[:3] + 0.3
    np.testing.assert_allclose(m.place(off), m.place(off, how="native"))
    assert not np.allclose(m.place(off), m.place(off, how="knn"), atol=1e-3)
    # cached by its get_params: the second call is a cache hit
    assert project(X, PCA(n_components=2, random_state=0)).from_cache
    with pytest.raises(MapError, match="fit_transform"):
        project(X, object())


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("bad, match", [
    (np.zeros(10), "2-D array"),
    (np.zeros((2, 5)), "at least 3 points"),
    (np.array([["a", "b"], ["c", "d"], ["e", "f"]]), "numeric"),
])
def test_bad_shapes_raise(bad, match):
    with pytest.raises(MapError, match=match):
        project(bad, "pca")


def test_nan_rows_are_named():
    X, _ = blobs()
    X[7, 3] = np.nan
    with pytest.raises(MapError, match=r"NaN or inf in 1 row\(s\), first at row\(s\) \[7\]"):
        project(X, "pca")


def test_unknown_method_lists_valid_ones():
    X, _ = blobs()
    with pytest.raises(MapError, match="unknown map method 'tnse'; use one of pca, tsne, umap"):
        project(X, "tnse")


def test_too_few_points_for_perplexity_and_neighbours():
    X, _ = blobs(n_per=10)  # 30 points
    with pytest.raises(MapError, match="perplexity=30 needs more than 90 points, got 30"):
        project(X, "tsne")
    with pytest.raises(MapError, match="n_neighbors=50 needs more than 50 points, got 30"):
        project(X, "umap", n_neighbors=50)


def test_missing_package_names_the_install(monkeypatch):
    X, _ = blobs()
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` raise ImportError
    with pytest.raises(MissingDependencyError, match="umap-learn"):
        project(X, "umap", cache=False)


def test_bad_tsne_parameter_is_a_map_error():
    X, _ = blobs()
    with pytest.raises(MapError, match="bad t-SNE parameter"):
        project(X, "tsne", cache=False, perplexity=10, no_such_option=1)


# ----------------------------------------------------------------------------------- cache
def test_cache_hit_and_invalidation(monkeypatch):
    import workbench.maps.projection as maps

    calls: list = []
    monkeypatch.setattr(maps, "_umap", fake_umap(calls))
    X, _ = blobs()
    a = project(X, "umap")
    assert len(calls) == 1 and not a.from_cache
    b = project(X, "umap")
    assert len(calls) == 1 and b.from_cache
    np.testing.assert_array_equal(a.coords, b.coords)
    assert b.embeddings is not None and b.key == a.key
    # explicit defaults are the same key
    assert project(X, "umap", n_neighbors=15, min_dist=0.1).from_cache
    # verbose/n_jobs do not change the result, so they do not change the key
    assert project(X, "umap", verbose=True).from_cache
    # new params, seed, or embeddings: recomputed
    assert not project(X, "umap", n_neighbors=10).from_cache
    assert not project(X, "umap", seed=1).from_cache
    X2 = X.copy()
    X2[0, 0] += 1e-3
    assert not project(X2, "umap").from_cache
    assert not project(X, "umap", cache=False).from_cache
    assert len(calls) == 5
    assert cached_map(X, "umap") is not None and cached_map(X, "umap", min_dist=0.5) is None


def test_cache_hit_does_not_import_umap_or_opentsne(monkeypatch, tmp_path):
    import workbench.maps.projection as maps

    monkeypatch.setattr(maps, "_umap", fake_umap([]))
    X, _ = blobs()
    np.save(tmp_path / "X.npy", X)
    expected = project(X, "umap").coords
    np.save(tmp_path / "expected.npy", expected)
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from workbench.maps import project
        X = np.load({str(tmp_path / 'X.npy')!r})
        m = project(X, "umap")
        assert m.from_cache, m
        np.testing.assert_array_equal(m.coords, np.load({str(tmp_path / 'expected.npy')!r}))
        print("imported:", sorted(k for k in ("umap", "openTSNE", "numba", "sklearn")
                                  if k in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=os.environ.copy(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "imported: []" in out.stdout


def test_broken_cache_file_is_recomputed(monkeypatch):
    import workbench.maps.projection as maps

    calls: list = []
    monkeypatch.setattr(maps, "_umap", fake_umap(calls))
    X, _ = blobs()
    a = project(X, "umap")
    maps.cache_path(a.key).write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="broken map cache"):
        b = project(X, "umap")
    assert not b.from_cache and len(calls) == 2


# ------------------------------------------------------------------------------- placement
def test_knn_place_existing_point_lands_on_it_and_neighbours_nearby(monkeypatch):
    import workbench.maps.projection as maps

    monkeypatch.setattr(maps, "_umap", fake_umap([]))
    X, y = blobs()
    project(X, "umap")
    m = project(X, "umap")  # from cache: no fitted model, kNN placement
    assert m.from_cache and not m.can_place_natively
    np.testing.assert_allclose(m.place(X[5]), m.coords[5:6], atol=1e-6)
    np.testing.assert_allclose(m.place(X[[3, 50, 100]]), m.coords[[3, 50, 100]], atol=1e-6)
    # a perturbed point lands inside its own blob
    p = m.place(X[5] + 0.05)[0]
    d = np.linalg.norm(m.coords - p, axis=1)
    assert y[np.argmin(d)] == y[5]
    with pytest.raises(MapError, match="no native transform"):
        m.place(X[:1], how="native")
    with pytest.raises(MapError, match="dimension 8 but the map was built from dimension 16"):
        m.place(np.ones((1, 8)))
    with pytest.raises(MapError, match="unknown placement"):
        m.place(X[:1], how="magic")


def test_pca_place_is_exact_linear_transform():
    X, _ = blobs()
    m = project(X, "pca")
    np.testing.assert_allclose(m.place(X[:10]), m.coords[:10], atol=1e-5)
    loaded = project(X, "pca")
    assert loaded.from_cache
    np.testing.assert_allclose(loaded.place(X[:10]), m.coords[:10], atol=1e-5)


def test_place_one_point_is_fast():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 384)).astype(np.float32)
    m = Map(rng.normal(size=(5000, 2)), "umap", embeddings=X)
    m.place(X[0])  # warm-up (unit-normalises the reference once)
    t0 = time.perf_counter()
    for i in range(20):
        m.place(X[i] + 0.01)
    per_call_ms = (time.perf_counter() - t0) / 20 * 1000
    assert per_call_ms < 50, per_call_ms


def test_save_load_round_trip_without_pickle(tmp_path):
    X, _ = blobs()
    m = project(X, "pca", cache=False)
    path = m.save(tmp_path / "m.npz")
    back = Map.load(path)
    np.testing.assert_array_equal(back.coords, m.coords)
    assert back.method == "pca" and back.params == m.params
    np.testing.assert_allclose(back.place(X[:2]), m.coords[:2], atol=1e-5)
    # without embeddings: kNN placement needs them attached
    m2 = Map(m.coords, "umap", embeddings=X)
    m2.save(tmp_path / "u.npz", include_embeddings=False)
    with pytest.raises(MapError, match="no reference embeddings"):
        Map.load(tmp_path / "u.npz").place(X[:1])
    np.testing.assert_allclose(Map.load(tmp_path / "u.npz", embeddings=X).place(X[:1]),
                               m.coords[:1], atol=1e-6)
    # a file with pickled objects is refused
    np.savez(tmp_path / "evil.npz", coords=np.zeros((3, 2)), meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(MapError, match="not a readable map file"):
        Map.load(tmp_path / "evil.npz")
    with pytest.raises(MapError, match="does not exist"):
        Map.load(tmp_path / "missing.npz")
    with pytest.raises(MapError, match=".npz"):
        m.save(tmp_path / "m.pkl")


# ------------------------------------------------------------------------------ MapBuilder
def test_builder_first_is_pca_then_cached_preferred(monkeypatch):
    import workbench.maps.projection as maps

    X, _ = blobs()
    b = MapBuilder(X)
    assert b.first().method == "pca"
    with pytest.raises(MapError, match="call warm\\('umap'\\) first"):
        b.result("umap")
    monkeypatch.setattr(maps, "_umap", fake_umap([]))
    project(X, "umap")
    m = MapBuilder(X).first()
    assert m.method == "umap" and m.from_cache
    assert MapBuilder(X).first(prefer=("tsne",)).method == "pca"
    # warm() on a cached map finishes at once, without a process
    b2 = MapBuilder(X).warm("umap")
    assert b2.ready("umap") and b2.result("umap", timeout=0).method == "umap"
    seen = []
    b2.on_ready(seen.append)
    assert [s.method for s in seen] == ["umap"]


def test_builder_background_process_returns_map_and_fills_cache():
    X, _ = blobs()
    b = MapBuilder(X)
    seen = []
    b.on_ready(seen.append, method="tsne")
    t0 = time.perf_counter()
    b.warm("tsne", **FAST_TSNE)
    assert time.perf_counter() - t0 < 2.0  # returns at once
    assert b.first().method == "pca"  # usable meanwhile
    m = b.result("tsne", timeout=180)
    assert m.method == "tsne" and m.coords.shape == (len(X), 2) and b.ready("tsne")
    np.testing.assert_allclose(m.place(X[4]), m.coords[4:5], atol=1e-6)
    deadline = time.time() + 5
    while not seen and time.time() < deadline:
        time.sleep(0.05)
    assert len(seen) == 1 and seen[0].method == "tsne"
    # the worker wrote the disk cache: same numbers in this process
    hit = cached_map(X, "tsne", **FAST_TSNE)
    assert hit is not None
    np.testing.assert_array_equal(hit.coords, m.coords)
    # a fresh builder finds the cached t-SNE map although its parameters are not the defaults
    assert MapBuilder(X).first(prefer=("umap", "tsne")).method == "tsne"
    assert MapBuilder(X, seed=3).first(prefer=("umap", "tsne")).method == "pca"
    b.close()


def test_builder_worker_error_comes_back_as_map_error():
    X, _ = blobs()
    errors = []
    b = MapBuilder(X).on_ready(lambda m: None, on_error=errors.append)
    b.warm("tsne", perplexity=10, no_such_option=1)
    with pytest.raises(MapError, match="background tsne map failed.*bad t-SNE parameter"):
        b.result("tsne", timeout=180)
    assert len(errors) == 1 and isinstance(errors[0], MapError)


def test_builder_timeout_and_early_checks():
    X, _ = blobs()
    with pytest.raises(MapError, match="n_neighbors=500"):
        MapBuilder(X).warm("umap", n_neighbors=500)
    b = MapBuilder(X).warm("tsne", **FAST_TSNE)
    try:
        with pytest.raises(MapTimeoutError, match="not ready after 0.01 s"):
            b.result("tsne", timeout=0.01)
    finally:
        b.close()
    with pytest.raises(MapError, match="stopped without a result"):
        b.result("tsne", timeout=30)


@pytest.mark.slow
def test_builder_real_umap_in_background_keeps_this_process_responsive(tmp_path):
    X, y = blobs(n_per=60)
    b = MapBuilder(X).warm("umap")
    beats = 0
    t0 = time.perf_counter()
    while not b.ready("umap") and time.perf_counter() - t0 < 300:
        time.sleep(0.05)
        beats += 1
    m = b.result("umap", timeout=1)
    assert m.method == "umap" and m.coords.shape == (len(X), 2)
    assert beats > 20  # the main thread ran while numba compiled elsewhere
    from workbench.quality import knn_purity

    assert knn_purity(m.coords, y, k=10, metric="euclidean") > 0.95
    np.save(tmp_path / "X.npy", X)
    code = ("import sys, numpy as np; from workbench.maps import MapBuilder;"
            f"m = MapBuilder(np.load({str(tmp_path / 'X.npy')!r})).first();"
            "print(m.method, m.from_cache, 'umap' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=os.environ.copy(), timeout=120)
    assert out.stdout.split() == ["umap", "True", "False"], out.stderr


# ----------------------------------------------------------------------------------- CLI
def _write_embeddings(path, n=60, with_prompts=True):
    from workbench.embed import save_embeddings
    from workbench.prompts import PromptSet

    X, y = blobs(n_per=n // 3)
    prompts = None
    if with_prompts:
        prompts = PromptSet(pd.DataFrame({"id": [f"p{i}" for i in range(len(X))],
                                          "text": [f"prompt <b>{i}</b>" for i in range(len(X))],
                                          "category": [f"c{v}" for v in y]}))
    save_embeddings(path, X, prompts)
    return X


def _cli(*args):
    from workbench.cli import main

    return main(["map", *map(str, args)])


def test_cli_round_trip_npz_csv_html(tmp_path, capsys):
    src = tmp_path / "emb.npz"
    X = _write_embeddings(src)
    assert _cli(src, "--method", "pca", "--out", tmp_path / "m.npz", "--html",
                tmp_path / "m.html") == 0
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert z["coords"].shape == (len(X), 2)
        assert z["ids"][0] == "p0"
        assert json.loads(str(z["meta"]))["method"] == "pca"
        np.testing.assert_allclose(z["coords"], project(X, "pca").coords, atol=1e-6)
    page = (tmp_path / "m.html").read_text()
    assert "prompt &lt;b&gt;0&lt;" in page and "prompt <b>0" not in page and '"c2"' in page
    assert _cli(src, "--method", "pca", "--out", tmp_path / "m.csv") == 0
    df = pd.read_csv(tmp_path / "m.csv")
    assert list(df.columns) == ["id", "x", "y"] and len(df) == len(X)
    assert "found in the cache" in capsys.readouterr().err


def test_cli_bare_npy_and_tsne(tmp_path):
    X, _ = blobs()
    np.save(tmp_path / "x.npy", X)
    assert _cli(tmp_path / "x.npy", "--method", "tsne", "--perplexity", "10", "--quiet",
                "--out", tmp_path / "t.csv") == 0
    df = pd.read_csv(tmp_path / "t.csv")
    assert df["id"].tolist()[:2] == [0, 1] and len(df) == len(X)


def test_cli_errors(tmp_path, capsys):
    src = tmp_path / "emb.npz"
    _write_embeddings(src)
    assert _cli(tmp_path / "missing.npz", "--method", "pca", "--out", tmp_path / "a.csv") == 2
    assert "does not exist" in capsys.readouterr().err
    assert _cli(src, "--method", "pca", "--out", tmp_path / "a.txt") == 2
    assert "unknown suffix '.txt'; use one of .npz, .csv, .html" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    assert _cli(tmp_path / "bad.npz", "--method", "pca", "--out", tmp_path / "a.csv") == 2
    assert "not a valid .npz file" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    assert _cli(tmp_path / "bad.npz", "--method", "pca", "--out", tmp_path / "a.csv") == 2
    assert "bad.npz" in capsys.readouterr().err
    assert _cli(src, "--method", "pca", "--perplexity", "5", "--out", tmp_path / "a.csv") == 2
    assert "--perplexity applies to --method tsne only" in capsys.readouterr().err
    assert _cli(src, "--method", "tsne", "--out", tmp_path / "a.csv") == 2
    assert "perplexity=30 needs more than 90 points" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli(src, "--method", "mds", "--out", tmp_path / "a.csv")
    assert "invalid choice: 'mds'" in capsys.readouterr().err


# ------------------------------------------------------------------------ real data (slow)
@pytest.mark.slow
@pytest.mark.shared_data
def test_mmlu_pro_umap_and_tsne_category_purity(mmlu_pro_dir, request):
    from workbench.embed import Embedder
    from workbench.prompts import PromptSet
    from workbench.quality import knn_purity

    prompts = PromptSet.from_mmlu_pro(mmlu_pro_dir)
    assert len(prompts) == 12032 and len(prompts.category_names) == 14
    # embeddings from the session's cache (shared when COE_WORKBENCH_CACHE is exported)
    X = Embedder(cache=Path(request.node.session_cache) / "embeddings").embed(prompts)
    assert X.shape == (12032, 384)
    labels = prompts.categories
    emb_purity = knn_purity(X, labels, k=10)
    results = {"embedding": emb_purity}
    for method in ("umap", "tsne"):
        m = project(X, method, seed=0)
        results[method] = knn_purity(m.coords, labels, k=10, metric="euclidean")
    print("\nMMLU-Pro category kNN purity (k=10):",
          {k: round(v, 3) for k, v in results.items()}, f"(chance ~{1 / 14:.3f})")
    # measured (all-MiniLM-L6-v2, seed 0): embedding 0.702, UMAP 0.671, t-SNE 0.708; chance is
    # the sum of squared category shares, about 0.08. The maps keep the embedding's structure.
    assert emb_purity > 0.6
    assert results["umap"] > 0.55 and results["tsne"] > 0.55
    assert results["umap"] > emb_purity - 0.1 and results["tsne"] > emb_purity - 0.1
