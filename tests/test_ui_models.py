"""The UI models apart from their views: they import without Panel, bokeh or ipywidgets, and the
rules they show live in the core objects (``CoE.explain``, ``Relabels``, ``default_map_params``,
the pool's residency rows)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from workbench.errors import MappingError, PromptSetError
from workbench.mapping import CategoryExpertMap
from workbench.prompts import PromptSet, Relabels, read_labels_file

BLOCKED = ("panel", "bokeh", "ipywidgets")

#: the models are ``param`` objects; param comes with the app extra until it is a core dependency
needs_param = pytest.mark.skipif(__import__("importlib").util.find_spec("param") is None,
                                 reason="the UI models need param")

_BLOCKER = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def _run_blocked(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKER + code], capture_output=True, text=True,
                          timeout=180)


@needs_param
def test_models_import_without_panel_bokeh_or_ipywidgets():
    code = """
import workbench.ui.models as models
for name in models.__all__:
    getattr(models, name)
import workbench.ui.explore, workbench.ui.chat, workbench.ui.tiers, workbench.ui.compose_view
import workbench.ui.mapping_editor, workbench.ui.mapping_editor_views, workbench.ui.render
from workbench.ui.explore import ClusterMapModel, EmbedModel
from workbench.ui.mapping_editor import MappingEditorModel
from workbench.ui.chat import ChatModel, trace_html
from workbench.ui.tiers import TierModel, tiers_html
from workbench.ui.compose_view import ComposeModel, EXAMPLES
try:
    from workbench.ui.explore import EmbedPanel
except ImportError as exc:
    assert "blocked by the test" in str(exc), exc
else:
    raise AssertionError("a Panel view imported with Panel blocked")
print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""
    out = _run_blocked(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_blocker_really_blocks():
    out = _run_blocked("import panel")
    assert out.returncode != 0 and "blocked by the test" in out.stderr


@needs_param
def test_old_mapping_editor_path_is_the_model_module():
    import workbench.ui.mapping_editor as old
    import workbench.ui.models.mapping_editor as new

    assert old is new and old.MappingEditorModel is new.MappingEditorModel


# --------------------------------------------------------------------------- CoE.explain
class StubRouter:
    """Routes every prompt to ``category`` with fixed probabilities (no ``classes_``, so the CoE
    cannot check its categories up front, like a router swapped in after construction)."""

    def __init__(self, category, classes=("math", "law", "code")):
        self.category = category
        self.classes = np.array(classes, dtype=object)

    def route(self, X):
        from workbench.router import Routing

        n = len(X)
        proba = np.tile(np.array([0.2, 0.1, 0.7]), (n, 1))
        cats = np.array([self.category] * n, dtype=object)
        return Routing(category=cats, predicted=cats.copy(), confidence=np.full(n, 0.7),
                       proba=proba, is_fallback=np.zeros(n, dtype=bool), classes=self.classes)


class StubEmbedder:
    def encode(self, texts):
        return np.ones((len(texts), 4), dtype=np.float32)


class StubPool:
    names = ["small", "big"]

    def __contains__(self, name):
        return name in self.names


def _coe(category):
    from workbench.coe import CoE

    mapping = CategoryExpertMap({"math": "small", "law": "small", "fallback": "big"})
    return CoE(StubEmbedder(), StubRouter(category), mapping, StubPool())


def test_explain_shows_the_routing_the_coe_uses():
    coe = _coe("math")
    ex = coe.explain("Solve 2x = 4")
    assert (ex.category, ex.predicted, ex.expert, ex.is_fallback) == ("math", "math", "small", False)
    assert ex.confidence == pytest.approx(0.7)
    assert [c for c, _ in ex.probabilities] == ["code", "math", "law"]
    assert ex.top(1) == [("code", pytest.approx(0.7))]
    assert ex.embedding.shape == (4,)
    assert tuple(coe.route("Solve 2x = 4")) == (ex.category, ex.confidence, ex.is_fallback, ex.expert)
    assert ex.to_dict()["probabilities"][0][0] == "code"


def test_explain_raises_for_an_unmapped_category_like_generate():
    coe = _coe("code")  # the map has no 'code'
    with pytest.raises(MappingError) as explained:
        coe.explain("def f(): pass")
    with pytest.raises(MappingError) as generated:
        coe.generate("def f(): pass")
    assert str(explained.value) == str(generated.value)
    assert "'code' is not in the map" in str(explained.value)


@needs_param
def test_embed_model_reports_an_unmapped_category_instead_of_the_fallback_expert():
    from workbench.coe import explain_routing
    from workbench.ui.models import EmbedModel

    prompts = PromptSet.from_records([{"text": f"p {i}", "category": "math"} for i in range(4)])
    X = np.eye(4, dtype=np.float32)
    mapping = CategoryExpertMap({"math": "small", "law": "small", "fallback": "big"})
    em = EmbedModel(prompts, X, StubRouter("code"), encode=lambda t: np.ones((1, 4)),
                    mapping=mapping)
    em.text = "def f(): pass"
    assert em.expert == "" and em.error.startswith("MappingError") and "'code'" in em.error
    with pytest.raises(MappingError):
        explain_routing(np.ones(4), StubRouter("code"), mapping)

    coe = _coe("math")
    calls = []
    real = coe.explain
    coe.explain = lambda text: calls.append(text) or real(text)
    em = EmbedModel(prompts, X, coe.router, encode=coe.embedder.encode, mapping=coe.mapping,
                    coe=coe)
    em.text = "Solve 2x = 4"
    assert calls == ["Solve 2x = 4"] and em.expert == "small" and em.error == ""
    assert list(em.probabilities["category"]) == ["code", "math", "law"]


# --------------------------------------------------------------------------- other rules
def test_default_map_params_shrinks_for_small_sets():
    from workbench.ui.models import default_map_params

    assert default_map_params("tsne", 31) == {"perplexity": 10.0}
    assert default_map_params("t-SNE", 1000) == {}
    assert default_map_params("umap", 10) == {"n_neighbors": 5}
    assert default_map_params("umap", 16) == {} and default_map_params("pca", 3) == {}


def test_relabels_round_trip_and_refuse_other_files(tmp_path):
    ps = PromptSet.from_records([{"id": "a", "text": "x", "category": "math"},
                                 {"id": "b", "text": "y"}])
    rl = Relabels()
    rl.set("a", "law", previous="math")
    rl.set("b", "code")
    assert rl.labels(ps).tolist() == ["law", "code"] and rl.apply(ps).categories.tolist() == ["law", "code"]
    for name in ("l.jsonl", "l.csv"):
        out = rl.save(tmp_path / name, ps)
        assert [r for _, r in read_labels_file(out)] == [{"id": "a", "category": "law"},
                                                        {"id": "b", "category": "code"}]
        assert Relabels.load(out, ps).to_dict() == {"a": "law", "b": "code"}
    rl.set("a", "math", previous="math")  # back to the file's own category: forgotten
    assert dict(rl.items()) == {"b": "code"}
    other = tmp_path / "notes.jsonl"
    other.write_text('{"id": "a", "text": "keep me"}\n')
    with pytest.raises(PromptSetError, match="refusing to overwrite"):
        rl.save(other, ps)
    with pytest.raises(PromptSetError, match="prompt file itself"):
        rl.save(tmp_path / "l.jsonl", ps, source_path=tmp_path / "l.jsonl")
    (tmp_path / "x.jsonl").write_text('{"id": "zzz", "category": "m"}\n')
    with pytest.raises(PromptSetError, match=r"'zzz' \(line 1\)"):
        Relabels.load(tmp_path / "x.jsonl", ps)


@needs_param
def test_tier_grouping_comes_from_the_pool_rows():
    from workbench.ui.models.tiers import TierModel, group_by_tier

    rows = [{"expert": "a", "tier": "gpu", "gpu_bytes": 10, "cpu_bytes": 0, "disk_bytes": 0},
            {"expert": "b", "tier": "gpu+cpu+disk", "gpu_bytes": 4, "cpu_bytes": 3, "disk_bytes": 2},
            {"expert": "c", "tier": "disk", "gpu_bytes": 0, "cpu_bytes": 0, "disk_bytes": 99}]
    groups = group_by_tier(rows)
    assert [(i["expert"], i["bytes"]) for i in groups["gpu"]] == [("a", 10), ("b", 4)]
    assert [(i["expert"], i["bytes"]) for i in groups["cpu"]] == [("b", 3)]
    assert [(i["expert"], i["bytes"]) for i in groups["disk"]] == [("b", 2), ("c", 99)]

    class Pool:
        gpu_budget, cpu_budget = 100, 50

        def __init__(self):
            self.listeners = []

        def add_listener(self, fn):
            self.listeners.append(fn)

        def residency(self):
            return rows

        def events(self):
            return []

    pool = Pool()
    model = TierModel(pool)
    assert model.totals() == {"gpu": 14, "cpu": 3, "disk": 101}
    assert not model.stale
    pool.listeners[0](SimpleNamespace())
    assert model.stale and model.refresh() and not model.stale
    assert isinstance(model.residency, pd.DataFrame)
