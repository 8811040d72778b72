"""Map figures: colouring, hover escaping/truncation, customdata rows, selection, markers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from workbench.errors import MapError
from workbench.maps import Map
from workbench.plots.maps import hover_text, mark_points, scatter_map, truncate


@pytest.fixture
def prompts():
    from workbench.prompts import PromptSet

    texts = ["<script>alert('x')</script> & more", "short one", "x" * 500,
             "multi\nline\ttext", "plain", "last"]
    return PromptSet(pd.DataFrame({
        "id": [f"id{i}" for i in range(6)], "text": texts,
        "category": ["law", "math", "law", "math", "chat", "law"],
        "score": np.linspace(0, 1, 6),
    }))


@pytest.fixture
def coords():
    return np.arange(12, dtype=float).reshape(6, 2)


def _all_points(fig):
    """(row index, hover text) for every point of every scatter trace but markers."""
    out = {}
    for tr in fig.data:
        if tr.customdata is None:
            continue
        for row, text in zip(tr.customdata, tr.text):
            out[int(row)] = text
    return out


def test_truncate_and_hover_text():
    assert truncate("abcdefgh", 5) == "abcd…" and len(truncate("abcdefgh", 5)) == 5
    assert truncate("abc", 5) == "abc"
    assert truncate("a\nb\tc", 10) == "a b c"
    h = hover_text("<b>bold</b> & co", ident="<id>", color_name="category", color_value="a<b")
    assert "<b>&lt;id&gt;</b>" in h
    assert "category: a&lt;b" in h
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in h and "<b>bold" not in h


def test_colour_by_category_one_trace_per_value_with_row_customdata(prompts, coords):
    fig = scatter_map(Map(coords, "umap"), prompts, color="category")
    assert isinstance(fig, go.Figure)
    names = [tr.name for tr in fig.data]
    assert names == ["chat", "law", "math"]
    law = fig.data[1]
    assert list(law.customdata) == [0, 2, 5]
    np.testing.assert_array_equal(law.x, coords[[0, 2, 5], 0])
    assert "umap map" in fig.layout.title.text
    # every row appears exactly once
    assert sorted(_all_points(fig)) == list(range(6))


def test_hover_is_escaped_truncated_and_names_id_and_colour(prompts, coords):
    fig = scatter_map(coords, prompts, color="category", hover_chars=40)
    hov = _all_points(fig)
    assert "<script>" not in hov[0] and "&lt;script&gt;" in hov[0] and "&amp; more" in hov[0]
    assert hov[0].startswith("<b>id0</b><br>category: law<br>")
    assert hov[2].endswith("…") and hov[2].count("x") == 39
    assert "\n" not in hov[3] and "\t" not in hov[3]
    for tr in fig.data:
        assert tr.hovertemplate == "%{text}<extra></extra>"


def test_colour_by_numeric_column_or_array(prompts, coords):
    fig = scatter_map(coords, prompts, color="score")
    assert len(fig.data) == 6  # few distinct numbers: one legend entry each
    values = np.linspace(0, 1, 30)
    big = np.random.default_rng(0).normal(size=(30, 2))
    fig = scatter_map(big, None, color=values)
    assert len(fig.data) == 1 and fig.data[0].marker.showscale
    np.testing.assert_allclose(fig.data[0].marker.color, values)
    assert list(fig.data[0].customdata) == list(range(30))
    fig = scatter_map(coords, prompts, color=np.array(["a", "b", "a", "b", "a", "b"]))
    assert [tr.name for tr in fig.data] == ["a", "b"]


def test_no_category_column_is_fine_unknown_column_is_not(coords):
    df = pd.DataFrame({"id": list("abcdef"), "text": list("uvwxyz")})
    fig = scatter_map(coords, df)  # default color="category" is optional
    assert len(fig.data) == 1 and list(fig.data[0].customdata) == list(range(6))
    with pytest.raises(MapError, match="no column 'topic' to colour by"):
        scatter_map(coords, df, color="topic")


def test_selected_points_stay_visible_but_dimmed(prompts, coords):
    fig = scatter_map(coords, prompts, selected=[0, 3])
    by_name = {tr.name: tr for tr in fig.data}
    assert list(by_name["law"].selectedpoints) == [0]  # row 0 is the first law point
    assert list(by_name["math"].selectedpoints) == [1]  # row 3 is the second math point
    assert list(by_name["chat"].selectedpoints) == []
    for tr in fig.data:
        assert tr.unselected.marker.opacity == pytest.approx(0.12)
        assert len(tr.x) > 0  # nothing hidden
    fig_ids = scatter_map(coords, prompts, selected=["id0", "id3"])
    assert [list(t.selectedpoints) for t in fig_ids.data] == \
        [list(t.selectedpoints) for t in fig.data]
    mask = np.zeros(6, dtype=bool)
    mask[[0, 3]] = True
    assert [list(t.selectedpoints) for t in scatter_map(coords, prompts, selected=mask).data] \
        == [list(t.selectedpoints) for t in fig.data]
    with pytest.raises(MapError, match="not among the prompts"):
        scatter_map(coords, prompts, selected=["nope"])
    with pytest.raises(MapError, match="row numbers must be in 0..5"):
        scatter_map(coords, prompts, selected=[9])


def test_mark_points_adds_an_escaped_marker_on_top(prompts, coords):
    fig = scatter_map(coords, prompts)
    n = len(fig.data)
    out = mark_points(fig, np.array([1.5, 2.5]), "your <prompt>", texts=["what is 2+2?"])
    assert out is fig and len(fig.data) == n + 1
    mk = fig.data[-1]
    assert mk.x == (1.5,) and mk.y == (2.5,)
    assert mk.text == ("your &lt;prompt&gt;",)
    assert "what is 2+2?" in mk.hovertext[0]
    assert mk.customdata is None  # markers do not pretend to be prompt rows
    mark_points(fig, [[0, 0], [1, 1]], ["a", "b"])
    assert fig.data[-1].name == "marked"
    with pytest.raises(MapError, match="got 1 labels for 2 points"):
        mark_points(fig, [[0, 0], [1, 1]], ["a"])


def test_length_mismatch_and_webgl(prompts):
    with pytest.raises(MapError, match="the map has 3 points but the prompts have 6 rows"):
        scatter_map(np.zeros((3, 2)), prompts)
    with pytest.raises(MapError, match=r"\(n, 2\)"):
        scatter_map(np.zeros((6, 3)), prompts)
    big = np.random.default_rng(0).normal(size=(6001, 2))
    assert isinstance(scatter_map(big).data[0], go.Scattergl)
    assert isinstance(scatter_map(big[:10]).data[0], go.Scatter)
