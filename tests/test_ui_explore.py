"""Explore UI: EmbedModel and ClusterMapModel driven directly, plus thin checks of their views.

Small seeded data: a word-hash encoder (deterministic, no model download) over a toy prompt set
with three categories, a real kNN CategoryRouter, real ExpertScores and a real map.
"""
from __future__ import annotations

import hashlib
import json
import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from workbench.errors import MapError, PromptSetError
from workbench.mapping import CategoryExpertMap
from workbench.prompts import PromptSet
from workbench.registry import ModelRegistry
from workbench.router import CategoryRouter
from workbench.scores import ExpertScores

pytest.importorskip("param")  # the models are param objects (param is not a core dependency yet)
from workbench.ui.models import ClusterMapModel, EmbedModel  # noqa: E402  (no Panel needed)


def _panel_views():
    """The Panel views (the test skips where the app extra is absent)."""
    pytest.importorskip("panel")
    from workbench.ui.panel.explore import ClusterMapPanel, EmbedPanel

    return EmbedPanel, ClusterMapPanel


def _explore_widget():
    pytest.importorskip("ipywidgets")
    from workbench.ui.widgets.explore import explore_widget

    return explore_widget

DIM = 48
XSS = "<script>alert('x')</script> integral solve"
VOCAB = {"math": "integral derivative solve equation algebra number",
         "law": "contract court tort statute judge lawsuit",
         "code": "python function bug compile loop variable"}


def encode(texts):
    """Bag of hashed words, L2-normalised: a tiny deterministic text encoder."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in str(t).lower().split():
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % DIM] += 1.0
        out[i] /= max(np.linalg.norm(out[i]), 1e-9)
    return out


class WordEncoder:
    def encode(self, texts):
        return encode(list(texts))

    def embed(self, prompts):
        return encode(prompts.texts)


@pytest.fixture(scope="module")
def bundle():
    rng = np.random.default_rng(0)
    recs = []
    for c, words in VOCAB.items():
        ws = words.split()
        for i in range(12):
            recs.append({"id": f"{c}-{i}", "text": " ".join(rng.choice(ws, 5)), "category": c})
    recs[0]["text"] = XSS
    prompts = PromptSet(pd.DataFrame(recs), name="toy")
    X = encode(prompts.texts)
    router = CategoryRouter(head="knn", n_neighbors=5).fit(X, prompts.categories)
    vals = (rng.random((len(recs), 3)) < np.array([0.4, 0.6, 0.8])).astype(float)
    scores = ExpertScores(vals, prompts.ids, ["small", "mid", "big"], prompts.categories)
    registry = ModelRegistry({"small": 1.0, "mid": 3.0, "big": 10.0})
    mapping = CategoryExpertMap({"math": "mid", "law": "small", "code": "big", "fallback": "big"},
                                experts=registry)
    return SimpleNamespace(prompts=prompts, embedder=WordEncoder(), router=router, scores=scores,
                           registry=registry, mapping=mapping)


@pytest.fixture
def cluster(bundle):
    return ClusterMapModel.from_bundle(bundle, warm=False)


@pytest.fixture
def embed(bundle, cluster):
    return EmbedModel.from_bundle(bundle, map=cluster.map)


# ------------------------------------------------------------------------------- EmbedModel
def test_embed_routes_a_prompt(embed, bundle):
    embed.text = "solve the integral equation"
    assert embed.category == "math" and embed.predicted == "math"
    assert embed.expert == bundle.mapping.expert_for("math") == "mid"
    p = embed.probabilities
    assert list(p.columns) == ["category", "probability"]
    assert p["probability"].sum() == pytest.approx(1.0)
    assert p["probability"].is_monotonic_decreasing and p["category"].iloc[0] == "math"
    n = embed.neighbors
    assert len(n) == 5 and n["similarity"].is_monotonic_decreasing
    assert set(n["category"]) == {"math"}
    assert embed.position is not None and embed.error == ""


def test_embed_a_known_prompt_lands_on_it(embed, cluster, bundle):
    row = 20
    res = embed.embed(bundle.prompts.texts[row])
    top = res["neighbors"].iloc[0]
    assert top["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert bundle.prompts.texts[top["row"]] == bundle.prompts.texts[row]
    np.testing.assert_allclose(res["position"], cluster.map.coords[top["row"]], atol=1e-4)


def test_embed_follows_the_map_it_is_given(embed, bundle):
    embed.text = "python function bug"
    assert embed.expert == "big"
    edited = bundle.mapping.copy()
    edited.assign("code", "small")
    embed.mapping = edited  # e.g. the mapping editor's map in the app
    assert embed.expert == "small"


def test_embed_empty_text_clears_and_errors_are_reported(bundle, cluster):
    em = EmbedModel.from_bundle(bundle, map=cluster.map)
    em.text = "court contract"
    em.text = "   "
    assert em.probabilities is None and em.category == "" and em.position is None

    def broken(texts):
        return np.zeros((1, 3), dtype=np.float32)

    bad = EmbedModel(bundle.prompts, encode(bundle.prompts.texts), bundle.router, encode=broken)
    bad.text = "anything"
    assert "expected (1, 48)" in bad.error and bad.category == ""
    with pytest.raises(MapError, match="one embedding row per prompt"):
        EmbedModel(bundle.prompts, np.zeros((3, DIM)), bundle.router, encode=encode)


# --------------------------------------------------------------------------- ClusterMapModel
def test_color_by_every_option(cluster, bundle):
    n = len(bundle.prompts)
    cats = cluster.color_values("category")
    assert list(cats) == list(bundle.prompts.categories)
    best = cluster.color_values("best_expert")
    costs = {e: bundle.registry.active(e) for e in bundle.scores.experts}
    assert list(best) == list(bundle.scores.best_expert(costs))
    err = cluster.color_values("router_error")
    assert len(err) == n and set(err) <= {"correct", "wrong", "fallback (unsure)"}
    pred = bundle.router.predict(encode(bundle.prompts.texts))
    assert (err == "correct").sum() == (pred == bundle.prompts.categories).sum()
    disc = cluster.color_values("discovered")
    assert len(disc) == n and len(set(disc)) == 3
    cluster.color_by = "best_expert"
    fig = cluster.figure()
    assert {t.name for t in fig.data} == set(best)
    with pytest.raises(MapError, match="unknown color_by 'size'"):
        cluster.color_values("size")


def test_color_by_without_the_inputs_says_what_is_missing(bundle):
    X = encode(bundle.prompts.texts)
    cm = ClusterMapModel(bundle.prompts, X, warm=False)
    cm.color_by = "router_error"
    assert cm.status.startswith("error") and "needs a router" in cm.status
    with pytest.raises(MapError, match="needs scores"):
        cm.color_values("best_expert")


def test_hover_text_is_escaped_and_points_carry_their_row(cluster, bundle):
    fig = cluster.figure()
    rows = np.concatenate([np.asarray(t.customdata) for t in fig.data])
    assert sorted(rows.tolist()) == list(range(len(bundle.prompts)))
    hovers = [h for t in fig.data for h in t.text]
    assert not any("<script" in h for h in hovers)
    assert any("&lt;script&gt;" in h for h in hovers)


def test_selection_from_a_plotly_event_comes_back_as_prompts(cluster, bundle):
    fig = cluster.figure()
    event = {"points": [
        {"curveNumber": 0, "pointNumber": 1, "customdata": int(fig.data[0].customdata[1])},
        {"curveNumber": 1, "pointNumber": 0, "customdata": [int(fig.data[1].customdata[0])]},
        {"curveNumber": 3, "pointNumber": 0},  # a marker without a row is ignored
    ]}
    rows = cluster.select_from_event(event)
    expected = sorted([int(fig.data[0].customdata[1]), int(fig.data[1].customdata[0])])
    assert rows == expected == cluster.selection
    sel = cluster.selected
    assert isinstance(sel, PromptSet)
    assert sel.ids == [bundle.prompts.ids[r] for r in expected]
    assert cluster.select_from_event(None) == [] and cluster.selected.ids == []


def test_unselected_points_stay_visible(cluster, bundle):
    cluster.select(["math-0", "law-3"])
    assert cluster.selection == [0, 15]
    fig = cluster.figure()
    assert sum(len(t.x) for t in fig.data) == len(bundle.prompts)
    chosen = []
    for t in fig.data:
        assert t.unselected.marker.opacity > 0
        chosen += [int(t.customdata[j]) for j in t.selectedpoints]
    assert sorted(chosen) == [0, 15]


def test_bad_selections_are_rejected(cluster):
    with pytest.raises(MapError, match="out of range"):
        cluster.select([0, 999])
    with pytest.raises(MapError, match=r"ids \['nope'\] are not in the prompt set"):
        cluster.select(["nope"])


def test_relabel_save_and_load_labels(cluster, bundle, tmp_path):
    cluster.select([0, 1])
    assert cluster.relabel(" law ") == 2
    assert list(cluster.labels[:3]) == ["law", "law", "math"]
    assert cluster.selected.categories.tolist() == ["law", "law"]
    assert cluster.labelled_prompts().categories[0] == "law"
    assert bundle.prompts.categories[0] == "math"  # the source prompt set is untouched
    out = cluster.save_labels(tmp_path / "labels.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines == [{"id": "math-0", "category": "law", "previous_category": "math"},
                     {"id": "math-1", "category": "law", "previous_category": "math"}]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # a new session picks the labels up again
    fresh = ClusterMapModel.from_bundle(bundle, warm=False)
    assert fresh.load_labels(out) == 2
    assert list(fresh.labels[:2]) == ["law", "law"]
    # CSV works too, and relabelling back to the original removes the entry
    cluster.relabel("math", rows=[1])
    csv_out = cluster.save_labels(tmp_path / "labels.csv")
    assert csv_out.read_text().splitlines() == ["id,category,previous_category",
                                                "math-0,law,math"]


def test_labels_never_overwrite_the_prompt_file(cluster, bundle, tmp_path):
    source = tmp_path / "prompts.jsonl"
    bundle.prompts.save(source)
    original = source.read_text()
    cm = ClusterMapModel.from_bundle(bundle, warm=False, source_path=source)
    cm.relabel("code", rows=[2])
    with pytest.raises(PromptSetError, match="is the prompt file itself"):
        cm.save_labels(source)
    other = tmp_path / "other.jsonl"
    bundle.prompts.save(other)
    with pytest.raises(PromptSetError, match="refusing to overwrite .*other.jsonl.*not a labels file"):
        cm.save_labels(other)
    assert source.read_text() == original
    with pytest.raises(PromptSetError, match=r"\.jsonl or \.csv"):
        cm.save_labels(tmp_path / "labels.txt")
    default = cm.save_labels()
    assert default.name == "toy-labels.jsonl" and "labels" in default.parent.name


def test_relabel_needs_a_selection_and_a_name(cluster, tmp_path):
    cluster.clear_selection()
    with pytest.raises(PromptSetError, match="nothing is selected"):
        cluster.relabel("math")
    with pytest.raises(PromptSetError, match="non-empty name"):
        cluster.relabel("  ", rows=[0])
    bad = tmp_path / "l.jsonl"
    bad.write_text('{"id": "zzz", "category": "math"}\n')
    with pytest.raises(PromptSetError, match=r"'zzz' \(line 1\)"):
        cluster.load_labels(bad)


class FakeBuilder:
    """Stands in for MapBuilder: hands out PCA, 'computes' other maps when told to."""

    def __init__(self, first_map, fail=None):
        self._first = first_map
        self.warmed = []
        self.callbacks = []
        self.fail = fail

    def first(self):
        return self._first

    def cached(self, method, **params):
        return None

    def warm(self, method, **params):
        if self.fail:
            raise self.fail
        self.warmed.append((method, params))
        return self

    def on_ready(self, cb, method=None, on_error=None):
        self.callbacks.append((cb, method))
        return self

    def finish(self, m):
        for cb, method in self.callbacks:
            if method == m.method:
                cb(m)


def test_slow_maps_come_in_the_background(bundle, cluster):
    from workbench.maps import Map

    builder = FakeBuilder(cluster.map)
    cm = ClusterMapModel(bundle.prompts, encode(bundle.prompts.texts), builder=builder,
                         warm=True)
    assert builder.warmed[0][0] == "umap"  # UMAP warms at once, PCA is on show
    assert cm.shown_method == "pca"
    cm.method = "tsne"
    assert cm.shown_method == "pca" and "computing the t-SNE map" in cm.status
    assert builder.warmed[-1] == ("tsne", {"perplexity": 11.0})  # shrunk for 36 prompts
    v = cm.version
    coords = np.random.default_rng(1).normal(size=(len(bundle.prompts), 2))
    t = threading.Thread(target=builder.finish, args=(Map(coords, "tsne"),))
    t.start()
    t.join()
    assert cm.shown_method == "tsne" and cm.version > v
    np.testing.assert_allclose(cm.map.coords, coords.astype(np.float32))
    assert cm.figure().layout.title.text == "t-SNE map"
    cm.method = "pca"
    assert cm.shown_method == "pca"


def test_a_failing_map_is_reported_and_the_old_one_stays(bundle, cluster):
    builder = FakeBuilder(cluster.map, fail=MapError("umap-learn is not installed"))
    cm = ClusterMapModel(bundle.prompts, encode(bundle.prompts.texts), builder=builder,
                         warm=False)
    cm.method = "umap"
    assert cm.status.startswith("error") and "umap-learn is not installed" in cm.status
    assert cm.shown_method == "pca"


@pytest.mark.slow
def test_real_background_tsne_map(bundle):
    cm = ClusterMapModel.from_bundle(bundle, warm=False)
    cm.method = "tsne"
    m = cm.wait(timeout=300)
    assert m.method == "tsne" and cm.shown_method == "tsne" and m.coords.shape == (36, 2)


# ------------------------------------------------------------------------------------ views
def test_views_show_prompt_text_escaped(bundle, cluster, embed):
    EmbedPanel, ClusterMapPanel = _panel_views()
    explore_widget = _explore_widget()
    embed.text = XSS
    panel = EmbedPanel(embed)
    panel.__panel__()
    neigh = panel._neigh.value
    assert neigh["text"].iloc[0] == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; integral solve"
    assert panel._neigh.formatters["text"] == {"type": "html"}
    assert "<script" not in panel._result.object
    hovers = [str(h) for t in embed.figure().data for h in (t.text if t.hovertext is None
                                                           else t.hovertext)]
    assert not any("<script" in h for h in hovers)

    cmp = ClusterMapPanel(cluster)
    cmp.__panel__()
    cmp._on_select(SimpleNamespace(new={"points": [{"customdata": 0}, {"customdata": 5}]}))
    assert cluster.selection == [0, 5]
    table = cmp._table.value
    assert list(table["row"]) == [0, 5]
    assert not any("<script" in str(v) for v in table["text"])
    assert "&lt;script&gt;" in table["text"].iloc[0]
    assert "<b>2</b> selected" in cmp._count.object

    box = explore_widget(cluster=cluster, embed=embed)
    html_parts = [c.value for c in box.children if hasattr(c, "value") and isinstance(c.value, str)]
    selection_html = box.parts["selection"].value
    assert "&lt;script&gt;" in selection_html and "<script" not in selection_html
    assert not any("<script" in h for h in html_parts)


def test_cluster_panel_relabel_button_and_python_selection(bundle, tmp_path):
    _, ClusterMapPanel = _panel_views()
    cm = ClusterMapModel.from_bundle(bundle, warm=False)
    panel = ClusterMapPanel(cm)
    cm.select([3, 4])  # selecting from Python redraws the figure with the selection
    assert sorted(int(t.customdata[j]) for t in panel._plot.object.data
                  for j in (t.selectedpoints or [])) == [3, 4]
    panel._relabel_name.value = "law"
    panel._relabel.clicks += 1
    assert cm.relabels == {"math-3": "law", "math-4": "law"}
    panel._path.value = str(tmp_path / "x.jsonl")
    panel._save.clicks += 1
    assert (tmp_path / "x.jsonl").exists() and "saved 2 relabel(s)" in cm.status
    panel._relabel_name.value = ""
    panel._relabel.clicks += 1
    assert "error" in panel._status.object


def test_explore_widget_selection_and_embed(bundle, cluster, embed):
    explore_widget = _explore_widget()
    box = explore_widget(cluster=cluster, embed=embed)
    assert box.cluster is cluster and box.embed is embed
    fig = box.parts["figure"]
    n_traces = len(fig.data)
    embed.embed("contract court judge")
    assert "law" in box.parts["result"].value
    assert len(fig.data) == n_traces + 1 and fig.data[-1].name == "your prompt"
    cluster.select([1, 2, 3])
    assert "<b>3</b> selected" in box.parts["count"].value
    # a lasso in the notebook: plotly calls each trace's on_selection with its point indices
    trace = next(t for t in fig.data if t.customdata is not None)
    on_sel = trace._select_callbacks[0]
    on_sel(trace, SimpleNamespace(point_inds=[0, 1]), None)
    assert set(cluster.selection) >= {int(trace.customdata[0]), int(trace.customdata[1])}
    with pytest.raises(MapError, match="needs a bundle"):
        explore_widget()


def test_embed_follows_the_session_cluster_map_and_editor(bundle, tmp_path):
    from workbench.maps import Map
    from workbench.ui.models import MappingEditorModel

    builder = FakeBuilder(ClusterMapModel.from_bundle(bundle, warm=False).map)
    cm = ClusterMapModel(bundle.prompts, encode(bundle.prompts.texts), builder=builder, warm=False)
    editor = MappingEditorModel.from_bundle(bundle, autosave_path=tmp_path / "a.json")
    em = EmbedModel.from_bundle(bundle, map=cm, mapping=editor)
    em.text = "python function bug"
    assert em.expert == "big" and em.map is cm.map
    editor.set_expert("code", "small")
    assert em.expert == "small"
    cm.method = "tsne"
    builder.finish(Map(np.zeros((len(bundle.prompts), 2)) + 7.0, "tsne"))
    assert em.map is cm.map and em.position == pytest.approx((7.0, 7.0))
    with pytest.raises(MapError, match="follow\\(\\) takes"):
        em.follow(object())


def test_importing_workbench_ui_is_light():
    import subprocess
    import sys

    code = ("import sys, workbench.ui as ui; assert 'MappingEditorModel' in dir(ui); "
            "heavy = [m for m in ('panel', 'plotly', 'ipywidgets', 'torch', 'umap') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
