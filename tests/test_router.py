"""CategoryRouter and DirectRouter: sklearn contract, fallback rule, thresholds, pickle-free files."""
from __future__ import annotations

import json
import pickle
import warnings
import zipfile

import numpy as np
import pytest

from workbench.errors import InfeasibleBudgetError, RouterError, WorkbenchError
from workbench.router import (
    CategoryRouter,
    DirectRouter,
    RouterNotFittedError,
    cross_val_proba,
)


def _blobs(n_per=60, k=4, d=16, spread=1.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.6, (k, d))
    X = np.vstack([c + rng.normal(0, spread, (n_per, d)) for c in centres])
    y = np.repeat([f"cat{i}" for i in range(k)], n_per)
    return X, y


# ----------------------------------------------------------------------- scikit-learn's own checks
def _check_estimator(est, expected_failed=None, min_passed=40):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, expected_failed_checks=expected_failed or {},
                                  on_fail=None, on_skip=None)
    failed = [(r["check_name"], str(r["exception"])[:300]) for r in results
              if r["status"] == "failed"]
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= min_passed


# kNN has no solver iterations, so the n_iter_ check (it applies to estimators with max_iter)
# does not apply to the kNN head.
KNN_SKIPS = {"check_non_transformer_estimators_n_iter": "the kNN head has no solver iterations"}


def test_sklearn_estimator_checks_default_knn():
    _check_estimator(CategoryRouter(), KNN_SKIPS)


def test_sklearn_estimator_checks_logreg():
    _check_estimator(CategoryRouter(head="logreg"))


@pytest.mark.slow
def test_sklearn_estimator_checks_other_knn_weights_and_temperature():
    _check_estimator(CategoryRouter(knn_weights="distance", n_neighbors=5), KNN_SKIPS)
    _check_estimator(CategoryRouter(knn_weights="uniform"), KNN_SKIPS)
    _check_estimator(CategoryRouter(head="logreg", calibration="temperature"))
    _check_estimator(CategoryRouter(head="knn+logreg"))


@pytest.mark.slow
def test_sklearn_estimator_checks_mlp():
    _check_estimator(CategoryRouter(head="mlp", hidden_layer_sizes=(64,), alpha=1e-4, normalize=False))


def test_get_params_and_clone_roundtrip():
    from sklearn.base import clone

    r = CategoryRouter(head="knn", n_neighbors=7, threshold=0.4)
    p = r.get_params()
    assert p["head"] == "knn" and p["n_neighbors"] == 7 and p["threshold"] == 0.4
    c = clone(r)
    assert c.get_params() == p and not hasattr(c, "classes_")


# ------------------------------------------------------------------------------ fitting and heads
@pytest.mark.parametrize("head,kw", [("logreg", {}), ("knn", {}), ("knn", {"knn_weights": "distance"}),
                                     ("knn", {"knn_weights": "uniform"}), ("mlp", {}),
                                     ("knn+logreg", {})])
def test_heads_learn_separable_blobs(head, kw):
    X, y = _blobs()
    r = CategoryRouter(head=head, n_neighbors=5, **kw).fit(X[::2], y[::2])
    assert list(r.classes_) == ["cat0", "cat1", "cat2", "cat3"]
    P = r.predict_proba(X[1::2])
    assert P.shape == (len(X) // 2, 4)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-9)
    assert r.score(X[1::2], y[1::2]) > 0.9
    np.testing.assert_array_equal(r.predict(X[1::2]), r.classes_[P.argmax(axis=1)])


def test_blend_mixes_knn_and_logreg_probabilities():
    X, y = _blobs(spread=2.0)
    knn = CategoryRouter().fit(X, y).predict_proba(X)
    lr = CategoryRouter(head="logreg").fit(X, y).predict_proba(X)
    mix = CategoryRouter(head="knn+logreg", blend=0.25).fit(X, y)
    np.testing.assert_allclose(mix.predict_proba(X), 0.75 * knn + 0.25 * lr, atol=1e-9)
    with pytest.raises(RouterError, match="blend=1.5 must be a number in"):
        CategoryRouter(head="knn+logreg", blend=1.5).fit(X, y)


def test_fine_labels_are_summed_into_categories():
    X, y = _blobs(k=4)
    # two fine labels per category; the head learns 8 classes, predicts 4
    fine = np.array([f"{c}-{i % 2}" for i, c in enumerate(y)])
    r = CategoryRouter(head="logreg").fit(X, y, fine_labels=fine)
    assert len(r.fine_classes_) == 8 and len(r.classes_) == 4
    P = r.predict_proba(X)
    assert P.shape == (len(X), 4)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-9)
    assert r.score(X, y) > 0.9
    with pytest.raises(RouterError, match="fine_labels has shape"):
        CategoryRouter().fit(X, y, fine_labels=fine[:-1])


def test_temperature_calibration_reduces_overconfidence():
    # overlapping classes: a weakly regularised head is overconfident; temperature > 1 fixes it
    X, y = _blobs(n_per=150, k=3, d=32, spread=3.0, seed=1)
    from workbench.router import router_report

    raw = CategoryRouter(head="logreg", C=1e4, calibration=None)
    cal = CategoryRouter(head="logreg", C=1e4, calibration="temperature")
    Xtr, ytr, Xte, yte = X[::2], y[::2], X[1::2], y[1::2]
    raw.fit(Xtr, ytr)
    cal.fit(Xtr, ytr)
    assert cal.temperature_ > 1.0
    e_raw = router_report(yte, raw.predict_proba(Xte), raw.classes_).expected_calibration_error
    e_cal = router_report(yte, cal.predict_proba(Xte), cal.classes_).expected_calibration_error
    assert e_cal < e_raw
    np.testing.assert_array_equal(raw.predict(Xte), cal.predict(Xte))  # argmax unchanged


def test_report_has_accuracy_f1_confusion():
    X, y = _blobs()
    r = CategoryRouter().fit(X[::2], y[::2])
    rep = r.report(X[1::2], y[1::2])
    assert rep.confusion.shape == (4, 4)
    assert rep.confusion.to_numpy().sum() == len(y) // 2
    assert rep.accuracy == pytest.approx(np.trace(rep.confusion.to_numpy()) / (len(y) // 2))
    assert 0 < rep.macro_f1 <= 1
    d = rep.to_dict()
    assert json.loads(json.dumps(d))["labels"] == ["cat0", "cat1", "cat2", "cat3"]


def test_cross_val_proba_is_out_of_fold():
    X, y = _blobs(n_per=40, spread=2.5)
    r = CategoryRouter(head="knn", n_neighbors=1)
    P = cross_val_proba(r, X, y, cv=4)
    # 1-NN in-sample would be perfect; out of fold it cannot be
    assert (P.argmax(axis=1) == np.searchsorted(np.unique(y), y)).mean() < 1.0
    np.testing.assert_allclose(P.sum(axis=1), 1.0)


def test_cross_validate_report_matches_out_of_fold_predictions():
    X, y = _blobs(n_per=40, spread=2.5)
    r = CategoryRouter(head="knn", n_neighbors=5)
    rep = r.cross_validate(X, y, cv=4)
    P = cross_val_proba(r, X, y, cv=4, random_state=0)
    assert rep.accuracy == pytest.approx((np.unique(y)[P.argmax(1)] == y).mean())
    assert rep.n == len(y) and rep.confusion.to_numpy().sum() == len(y)
    assert not hasattr(r, "classes_")  # self stays unfitted


# ---------------------------------------------------------------------------------- routing rule
def test_route_sends_low_confidence_to_fallback():
    X, y = _blobs(spread=2.0)
    r = CategoryRouter(threshold=0.9).fit(X, y)
    routing = r.route(X)
    low = routing.confidence < 0.9
    assert low.any() and (~low).any()
    np.testing.assert_array_equal(routing.is_fallback, low)
    assert set(routing.category[low]) == {"fallback"}
    np.testing.assert_array_equal(routing.category[~low], routing.predicted[~low])
    assert routing.fallback_rate == pytest.approx(low.mean())
    none = r.set_params(threshold=None).route(X)
    assert not none.is_fallback.any()


def test_entropy_confidence_in_unit_interval():
    X, y = _blobs(spread=2.0)
    r = CategoryRouter(confidence="entropy").fit(X, y)
    c = r.route(X).confidence
    assert c.min() >= 0 and c.max() <= 1 + 1e-12
    assert r.confidence_scores(np.full((1, 4), 0.25))[0] == pytest.approx(0.0)
    assert r.confidence_scores(np.array([[1.0, 0, 0, 0]]))[0] == pytest.approx(1.0)


@pytest.mark.parametrize("confidence", ["max_proba", "entropy"])
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.25])
def test_choose_threshold_hits_target_fallback_rate(confidence, rate):
    X, y = _blobs(n_per=100, spread=2.5, seed=3)
    r = CategoryRouter(confidence=confidence).fit(X[::2], y[::2])
    t = r.choose_threshold(X[1::2], y[1::2], target_fallback_rate=rate)
    assert r.threshold == t
    got = r.route(X[1::2]).fallback_rate
    assert got <= rate + 1e-12
    assert got >= rate - 0.01  # continuous confidences: the rate is met, not undershot


def test_choose_threshold_hits_target_accuracy():
    X, y = _blobs(n_per=150, spread=2.5, seed=4)
    r = CategoryRouter().fit(X[::2], y[::2])
    base = r.score(X[1::2], y[1::2])
    target = min(0.99, base + 0.05)
    r.choose_threshold(X[1::2], y[1::2], target_accuracy=target)
    routing = r.route(X[1::2])
    kept = ~routing.is_fallback
    assert (routing.predicted[kept] == y[1::2][kept]).mean() >= target
    assert 0 < routing.fallback_rate < 1
    # smallest fallback: lowering the threshold one step would miss the target
    conf = routing.confidence
    below = conf[conf < r.threshold]
    if len(below):
        keep_more = conf >= below.max()
        assert (routing.predicted[keep_more] == y[1::2][keep_more]).mean() < target


def test_choose_threshold_bad_inputs():
    X, y = _blobs()
    r = CategoryRouter().fit(X, y)
    with pytest.raises(RouterError, match="exactly one"):
        r.choose_threshold(X, y)
    with pytest.raises(RouterError, match="exactly one"):
        r.choose_threshold(X, y, target_fallback_rate=0.1, target_accuracy=0.9)
    with pytest.raises(RouterError, match=r"target_fallback_rate=1.5 must be in \[0, 1\)"):
        r.choose_threshold(X, y, target_fallback_rate=1.5)
    yy = np.array(["cat0"] * len(y))  # mostly wrong labels: unreachable accuracy
    yy[:] = np.where(y == "cat0", "cat1", "cat0")
    with pytest.raises(RouterError, match="no threshold reaches target_accuracy"):
        r.choose_threshold(X, yy, target_accuracy=0.99)


# ------------------------------------------------------------------------------------ bad inputs
def test_unfitted_use_raises_router_error():
    r = CategoryRouter()
    for call in (lambda: r.predict(np.zeros((2, 3))), lambda: r.predict_proba(np.zeros((2, 3))),
                 lambda: r.route(np.zeros((2, 3))), lambda: r.save("x.npz")):
        with pytest.raises(RouterNotFittedError, match="not fitted yet: call fit"):
            call()
    with pytest.raises(WorkbenchError):
        DirectRouter().quality(np.zeros((1, 3)))


def test_wrong_dimension_names_both_dims():
    X, y = _blobs(d=16)
    r = CategoryRouter().fit(X, y)
    with pytest.raises(RouterError, match="X has 8 features, but CategoryRouter is expecting 16"):
        r.predict(np.zeros((3, 8)))
    d = DirectRouter(n_neighbors=3).fit(X, np.ones((len(X), 2)))
    with pytest.raises(RouterError, match=r"X has 8 features, but DirectRouter is expecting 16"):
        d.predict(np.zeros((3, 8)))


def test_bad_params_and_labels():
    X, y = _blobs()
    with pytest.raises(RouterError, match="knn_weights='cosine' must be 'softmax'"):
        CategoryRouter(knn_weights="cosine").fit(X, y)
    with pytest.raises(RouterError, match="head='svm' is not one of"):
        CategoryRouter(head="svm").fit(X, y)
    with pytest.raises(RouterError, match=r"hidden_layer_sizes=\(0,\) must be positive"):
        CategoryRouter(head="mlp", hidden_layer_sizes=(0,)).fit(X, y)
    with pytest.raises(RouterError, match="threshold=2 must be None or a number in"):
        CategoryRouter(threshold=2).fit(X, y)
    with pytest.raises(RouterError, match="only 1 class"):
        CategoryRouter().fit(X, np.array(["a"] * len(X)))
    with pytest.raises(RouterError, match="fallback category 'cat0' is also a training category"):
        CategoryRouter(fallback_category="cat0").fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        CategoryRouter().fit(np.full_like(X, np.nan), y)


# ------------------------------------------------------------------------- pickle-free persistence
@pytest.mark.parametrize("kwargs", [
    {}, {"head": "logreg"}, {"head": "knn", "n_neighbors": 4, "knn_weights": "distance"}, {"head": "mlp", "hidden_layer_sizes": (16, 8)},
    {"head": "logreg", "calibration": "temperature", "standardize": True, "threshold": 0.5},
    {"head": "knn+logreg", "blend": 0.5},
])
def test_save_load_roundtrip(tmp_path, kwargs):
    X, y = _blobs()
    fine = np.array([f"{c}-{i % 3}" for i, c in enumerate(y)])
    r = CategoryRouter(**kwargs).fit(X, y, fine_labels=fine)
    path = r.save(tmp_path / "router")
    assert path.suffix == ".npz"
    with zipfile.ZipFile(path) as zf:  # every member is a plain .npy array, no pickled objects
        for name in zf.namelist():
            head = zf.read(name)[:128]
            assert b"'descr': '|O'" not in head and b"'descr': '<O'" not in head
    back = CategoryRouter.load(path)
    assert back.get_params() == r.get_params()
    np.testing.assert_array_equal(back.classes_, r.classes_)
    np.testing.assert_allclose(back.predict_proba(X), r.predict_proba(X), rtol=0, atol=0)
    a, b = r.route(X), back.route(X)
    np.testing.assert_array_equal(a.category, b.category)


def test_save_load_int_labels(tmp_path):
    X, _ = _blobs()
    y = np.repeat([3, 1, 2, 0], 60)
    r = CategoryRouter().fit(X, y)
    back = CategoryRouter.load(r.save(tmp_path / "r.npz"))
    assert back.classes_.dtype.kind == "i"
    np.testing.assert_array_equal(back.predict(X), r.predict(X))


def _rewrite(path, out, *, meta=None, drop=None, replace=None):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if meta is not None:
        m = json.loads(str(arrays["__meta__"]))
        meta(m)
        arrays["__meta__"] = np.asarray(json.dumps(m))
    for k in drop or ():
        arrays.pop(k)
    arrays.update(replace or {})
    np.savez(out, **arrays)
    return out


def test_load_rejects_tampered_and_foreign_files(tmp_path):
    X, y = _blobs()
    good = CategoryRouter(head="logreg").fit(X, y).save(tmp_path / "good.npz")

    # a pickle (could run code on load) is refused without being unpickled
    evil = tmp_path / "evil.npz"
    evil.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(RouterError, match="is not a CategoryRouter file"):
        CategoryRouter.load(evil)
    # an .npz holding an object array (needs pickle) is refused
    obj = tmp_path / "obj.npz"
    np.savez(obj, __meta__=np.asarray("{}"), x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RouterError, match="no pickle"):
        CategoryRouter.load(obj)
    # someone else's .npz (e.g. an embeddings file)
    other = tmp_path / "emb.npz"
    np.savez(other, embeddings=np.zeros((2, 3)))
    with pytest.raises(RouterError, match="no '__meta__' header"):
        CategoryRouter.load(other)
    with pytest.raises(RouterError, match="does not exist"):
        CategoryRouter.load(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_text("hello")
    with pytest.raises(RouterError, match="not a CategoryRouter file"):
        CategoryRouter.load(junk)

    cases = [
        ({"meta": lambda m: m.update(format="something-else")}, "not a CategoryRouter"),
        ({"meta": lambda m: m.update(version=99)}, "format version 99"),
        ({"meta": lambda m: m["params"].update(head="svm")}, "head='svm'"),
        ({"meta": lambda m: m["params"].update(evil_param=1)}, "malformed router header"),
        ({"meta": lambda m: m.pop("classes")}, "malformed router header"),
        ({"meta": lambda m: m.update(classes=["a"])}, "at least 2 distinct"),
        ({"meta": lambda m: m["params"].update(knn_temperature=-1)}, "knn_temperature=-1"),
        ({"drop": ["head_coef"]}, "missing the array 'head_coef'"),
        ({"replace": {"head_coef": np.zeros((4, 5))}}, r"'head_coef' has shape \(4, 5\)"),
        ({"replace": {"head_intercept": np.array([np.nan, 0, 0, 0])}}, "NaN"),
        ({"replace": {"head_coef": np.array([["a"] * 16] * 4)}}, "expected numbers"),
        ({"replace": {"fine_to_class": np.array([0, 1, 2, 9])}}, "outside the classes"),
        ({"replace": {"__meta__": np.asarray("{not json")}}, "not valid JSON"),
    ]
    for i, (kw, msg) in enumerate(cases):
        bad = _rewrite(good, tmp_path / f"bad{i}.npz", **kw)
        with pytest.raises(RouterError, match=msg):
            CategoryRouter.load(bad)


def test_load_rejects_bad_knn_and_mlp_files(tmp_path):
    X, y = _blobs()
    knn = CategoryRouter(head="knn").fit(X, y).save(tmp_path / "knn.npz")
    bad = _rewrite(knn, tmp_path / "k1.npz", replace={"head_labels": np.array([0, 99])})
    with pytest.raises(RouterError, match="kNN labels"):
        CategoryRouter.load(bad)
    mlp = CategoryRouter(head="mlp", hidden_layer_sizes=(8,)).fit(X, y).save(tmp_path / "mlp.npz")
    bad = _rewrite(mlp, tmp_path / "m1.npz", replace={"head_b0": np.zeros(3)})
    with pytest.raises(RouterError, match="layer 0 bias"):
        CategoryRouter.load(bad)
    bad = _rewrite(mlp, tmp_path / "m2.npz", replace={"head_n_layers": np.asarray(1000)})
    with pytest.raises(RouterError, match="implausible MLP depth"):
        CategoryRouter.load(bad)


# ----------------------------------------------------------------------------------- DirectRouter
def _direct_data(seed=0):
    """Two regions; the cheap expert is good on region A, only the big one on region B."""
    rng = np.random.default_rng(seed)
    XA = rng.normal(0, 0.3, (200, 6)) + np.eye(6)[0] * 3
    XB = rng.normal(0, 0.3, (200, 6)) + np.eye(6)[1] * 3
    X = np.vstack([XA, XB])
    small = np.r_[rng.random(200) < 0.9, rng.random(200) < 0.2].astype(float)
    big = np.r_[rng.random(200) < 0.92, rng.random(200) < 0.9].astype(float)
    return X, np.c_[small, big]


def test_direct_router_estimates_quality_and_picks_best_per_cost():
    X, S = _direct_data()
    d = DirectRouter(n_neighbors=20, shrinkage=0).fit(X, S, experts=["small", "big"],
                                                       costs={"small": 7, "big": 70})
    Q = d.quality(X)
    assert Q.shape == (400, 2)
    assert Q[:200, 0].mean() > 0.8 and Q[200:, 0].mean() < 0.3
    free = d.predict(X)  # cost_weight 0: best quality
    assert (free[200:] == "big").mean() > 0.95
    # with a price on cost, region A goes to the cheap expert, region B stays on the big one
    priced = d.set_params(cost_weight=0.005).predict(X)
    assert (priced[:200] == "small").mean() > 0.9 and (priced[200:] == "big").mean() > 0.9


def test_direct_router_budget():
    X, S = _direct_data()
    d = DirectRouter(n_neighbors=20).fit(X, S, experts=["small", "big"], costs=[7.0, 70.0])
    for budget in (10.0, 40.0, 70.0):
        lam = d.cost_weight_for_budget(budget)
        chosen = d.choose(d.loo_quality_, lam)
        assert d.costs_[chosen].mean() <= budget + 1e-9
    mid = d.predict(X, budget=40.0)
    assert 0.3 < (mid == "big").mean() < 0.7  # spends the budget on region B
    assert d.cost_weight_for_budget(1000.0) == 0.0
    with pytest.raises(InfeasibleBudgetError, match="smallest feasible budget is 7"):
        d.cost_weight_for_budget(5.0)


def test_direct_router_accepts_expert_scores_and_validates():
    from workbench.scores import ExpertScores

    X, S = _direct_data()
    es = ExpertScores(S, [str(i) for i in range(len(S))], ["small", "big"])
    d = DirectRouter(n_neighbors=10).fit(X, es, costs={"small": 7, "big": 70})
    assert list(d.experts_) == ["small", "big"]
    with pytest.raises(RouterError, match="costs has no entry for experts"):
        DirectRouter().fit(X, es, costs={"small": 7})
    with pytest.raises(RouterError, match="same n"):
        DirectRouter().fit(X[:5], S)
    with pytest.raises(RouterError, match="NaN"):
        DirectRouter().fit(X, np.where(S > 0, np.nan, 0))


# ----------------------------------------------------------------------------------------- figure
def test_confusion_figure_rows_are_shares_and_counts_hover():
    from workbench.plots.router import confusion_figure

    X, y = _blobs(spread=2.5)
    rep = CategoryRouter().fit(X[::2], y[::2]).report(X[1::2], y[1::2])
    fig = confusion_figure(rep)
    heat = fig.data[0]
    z = np.asarray(heat.z)
    assert z.shape == (4, 4)
    np.testing.assert_allclose(z.sum(axis=1), 1.0)
    np.testing.assert_array_equal(np.asarray(heat.customdata), rep.confusion.to_numpy())
    assert list(heat.y) == ["cat0", "cat1", "cat2", "cat3"]
    assert f"{rep.accuracy:.3f}" in fig.layout.title.text
    counts = confusion_figure(np.array([[3, 1], [0, 4]]), ["a", "b"], normalize=False)
    assert np.asarray(counts.data[0].z).tolist() == [[3, 1], [0, 4]]
    with pytest.raises(RouterError, match="square matrix with one label per row"):
        confusion_figure(np.ones((2, 3)), ["a", "b"])


# DirectRouter.predict returns expert names; these sklearn checks compare predictions with
# assert_allclose, which cannot compare strings. The same properties are asserted below with
# string equality (order and subset invariance, idempotent fit, pickling).
DIRECT_STRING_OUTPUT = {name: "predict returns expert names; the check compares numbers"
                        for name in ("check_estimators_pickle", "check_methods_sample_order_invariance",
                                     "check_methods_subset_invariance", "check_fit_idempotent")}


def test_sklearn_estimator_checks_direct_router():
    # no classifier/regressor tags: sklearn runs its 41 generic checks (35 pass, 4 opted out)
    _check_estimator(DirectRouter(n_neighbors=3), DIRECT_STRING_OUTPUT, min_passed=35)


def test_direct_router_string_predictions_keep_the_checked_properties():
    import pickle

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    S = rng.random((40, 3))
    d = DirectRouter(n_neighbors=5).fit(X, S, experts=["a", "b", "c"], costs=[1, 2, 3])
    p = d.predict(X)
    order = rng.permutation(len(X))
    assert (d.predict(X[order]) == p[order]).all()                       # sample order
    assert (np.concatenate([d.predict(X[:13]), d.predict(X[13:])]) == p).all()  # subsets
    again = DirectRouter(n_neighbors=5).fit(X, S, experts=["a", "b", "c"], costs=[1, 2, 3])
    assert (again.predict(X) == p).all()                                 # idempotent fit
    assert (pickle.loads(pickle.dumps(d)).predict(X) == p).all()         # pickling
    one = DirectRouter(n_neighbors=5).fit(X, S[:, 0])                    # 1-D scores: one expert
    assert set(one.predict(X)) == {"expert_0"}
