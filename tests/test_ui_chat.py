"""Live CoE chat and the tier view: the models are driven directly; the Panel views are exercised
without a browser (the real-browser checks are in test_browser.py).

The CoE under test is the real :class:`~workbench.coe.CoE` (MiniLM embedder, a ``CategoryRouter``
fitted on a dozen prompts, a ``CategoryExpertMap``) streaming real generations from tiny random-init
Llama experts in a real :class:`~workbench.experts.ExpertPool` (nothing canned).
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_chat import CATEGORY_PROMPTS, make_coe, make_pool  # noqa: E402,F401

XSS = '<img src=x onerror="window.__coe_xss=1"><script>window.__coe_xss=2</script>'

@pytest.fixture(scope="module")
def pool(tiny_experts):
    pool = make_pool(tiny_experts)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def coe(pool):
    return make_coe(pool)


# ----------------------------------------------------------------------------------------------
# ChatModel


def test_send_streams_chunks_then_answer_and_records_history(coe):
    from workbench.ui.chat import ChatModel

    chat = ChatModel(coe, max_new_tokens=8)
    items = list(chat.send("What is 2 + 2?"))  # tiny-a answers this with words
    chunks, answer = items[:-1], items[-1]
    assert chunks and all(isinstance(c, str) for c in chunks)
    assert not isinstance(answer, str) and "".join(chunks) == answer.text
    assert answer.trace.expert in ("tiny-a", "tiny-b")
    assert answer.trace.new_tokens > 0
    assert [m["role"] for m in chat.history] == ["user", "assistant"]
    assert chat.history[1]["content"] == answer.text
    assert chat.traces == [answer.trace] and not chat.busy
    frame = chat.traces_frame()
    assert list(frame["expert"]) == [answer.trace.expert]
    chat.clear()
    assert chat.history == [] and chat.traces == []


def test_routes_by_category_to_the_mapped_expert(coe):
    from workbench.ui.chat import ChatModel

    chat = ChatModel(coe, max_new_tokens=4)
    law = chat.ask("Can a landlord keep the deposit under state law?")
    math = chat.ask("What is the derivative of x squared?")
    assert (law.trace.category, law.trace.expert) == ("law", "tiny-b")
    assert (math.trace.category, math.trace.expert) == ("math", "tiny-a")
    assert len(chat.traces) == 2


def test_a_follow_up_keeps_its_expert_unless_confidently_different(coe):
    from workbench.ui.chat import ChatModel, trace_rows

    sticky = ChatModel(coe, max_new_tokens=4, switch_confidence=1.0)  # never confident enough
    law = sticky.ask("Can a landlord keep the deposit under state law?")
    math = sticky.ask("What is the derivative of x squared?")
    assert law.trace.turn_rule == "" and law.trace.expert == "tiny-b"
    assert (math.trace.category, math.trace.expert, math.trace.turn_rule) == ("math", "tiny-b", "kept")
    assert dict(trace_rows(math.trace))["turn"].startswith("kept: kept the previous turn's expert")
    moving = ChatModel(coe, max_new_tokens=4, switch_confidence=0.0)
    moving.ask("Can a landlord keep the deposit under state law?")
    assert moving.ask("What is the derivative of x squared?").trace.turn_rule == "switched"


@pytest.mark.parametrize("bad", ["", "   ", None, 42])
def test_send_rejects_empty_or_non_text(coe, bad):
    from workbench.ui.chat import ChatError, ChatModel

    chat = ChatModel(coe)
    with pytest.raises(ChatError, match="non-empty text"):
        list(chat.send(bad))
    assert chat.history == []


def test_needs_a_streaming_coe_and_a_final_answer(coe):
    from workbench.ui.chat import ChatError, ChatModel

    with pytest.raises(ChatError, match="stream"):
        ChatModel(object())

    class DropsAnswer:  # real chunks, but the final Answer is lost
        def stream(self, prompt, **gen):
            yield from (item for item in coe.stream(prompt, **gen) if isinstance(item, str))

    chat = ChatModel(DropsAnswer(), max_new_tokens=4)
    with pytest.raises(ChatError, match="without a final Answer"):
        list(chat.send("What is 2 + 2?"))
    assert chat.last_error and "without a final Answer" in chat.last_error
    assert chat.traces == [] and not chat.busy


def test_trace_card_and_text_escape_html(coe):
    from workbench.ui.chat import ChatModel, text_html, trace_html
    from workbench.ui.panel.chat import _escaped_renderer

    chat = ChatModel(coe, max_new_tokens=4)
    answer = chat.ask(XSS)
    card = trace_html(answer.trace)
    for html in (card, text_html(XSS), _escaped_renderer(XSS).object):
        assert "<script" not in html and "<img" not in html
        assert "&lt;script&gt;" in html or "&lt;img" in html
    assert "&lt;img src=x onerror=&quot;window.__coe_xss=1&quot;&gt;" in text_html(XSS)
    assert f'data-expert="{answer.trace.expert}"' in card
    for label in ("category", "confidence", "fallback", "expert", "tier found", "switch", "generation"):
        assert f'data-field="{label}"' in card
    hostile = {"prompt": "p", "category": "<b>x</b>", "expert": '"><script>1</script>',
               "confidence": 0.2, "is_fallback": True, "error": "<i>boom</i>"}
    card = trace_html(hostile)
    assert "<script>" not in card and "<b>x" not in card and "<i>boom" not in card
    assert 'class="fallback"' in card and 'class="error"' in card


def _drive(panel, text):
    """Run ChatPanel's async-generator callback to the end; return the last yielded column."""
    async def go():
        last = None
        async for value in panel._respond(text, "You", panel.interface):
            last = value
        return last

    return asyncio.run(go())


def test_chat_panel_streams_answer_and_shows_escaped_trace_card(coe):
    from workbench.ui.chat import ChatModel, ChatPanel

    model = ChatModel(coe, max_new_tokens=6)
    panel = ChatPanel(model)
    assert panel.interface.renderers[0].__name__ == "_escaped_renderer"
    column = _drive(panel, XSS)
    answer_pane, card = column.objects
    answer = model.traces[-1]
    assert card.visible and "coe-trace" in card.object and "&lt;script&gt;" in card.object
    assert "<script" not in card.object
    assert model.history[-1]["content"] and answer.expert in card.object
    assert answer_pane.object.startswith('<div class="coe-text">')
    # an error is shown in the message (escaped), not raised into the server loop
    column = _drive(panel, "   ")
    assert "non-empty text" in column.objects[0].object


# ----------------------------------------------------------------------------------------------
# TierModel / TierPanel


def test_tier_model_follows_the_pool(tiny_experts):
    from workbench.ui.tiers import TierModel, TierPanel, tiers_html

    pool = make_pool(tiny_experts)
    try:
        tiers = TierModel(pool)
        groups = tiers.by_tier()
        assert groups["gpu"] == [] and groups["cpu"] == []
        assert sorted(i["expert"] for i in groups["disk"]) == ["tiny-a", "tiny-b"]
        assert all(i["bytes"] > 0 for i in groups["disk"])  # checkpoint size before first load
        panel = TierPanel(tiers)
        before = panel._columns.object
        assert not tiers.stale and tiers.refresh() is False  # nothing changed: no re-read

        pool.generate("tiny-a", "hello", max_new_tokens=2)
        assert tiers.stale  # the pool's listener marked it
        version = tiers.version
        assert tiers.refresh() is True and tiers.version == version + 1
        groups = tiers.by_tier()
        assert [i["expert"] for i in groups["cpu"]] == ["tiny-a"] and groups["cpu"][0]["bytes"] > 0
        assert [i["expert"] for i in groups["disk"]] == ["tiny-b"]
        assert tiers.totals()["cpu"] == pool.tracked_bytes("cpu")
        assert set(tiers.events["action"]) >= {"load"}
        assert panel._columns.object != before  # the view re-rendered on the model's version bump
        assert 'data-tier="cpu"' in panel._columns.object and "tiny-a" in panel._columns.object
        assert len(panel._events.value) == len(tiers.events)

        pool.evict("tiny-a")
        tiers.refresh()
        assert tiers.by_tier()["cpu"] == []
        assert "evict" in set(tiers.events["action"])
        html = tiers_html(tiers)
        assert "no GPU tier" in html and "of 256.0 MiB" in html
    finally:
        pool.close()


def test_tier_evict_button_and_in_use_cards_clear_after_release(tiny_experts):
    from workbench.ui.tiers import TierModel, TierPanel

    pool = make_pool(tiny_experts)
    try:
        tiers = TierModel(pool)
        panel = TierPanel(tiers)
        with pool.use("tiny-a"):
            tiers.refresh()
            assert int(tiers.residency.set_index("expert").at["tiny-a", "in_use"]) == 1
            panel._victim.value = "tiny-a"
            panel._on_evict()  # in use: refused, with the pool's message
            assert "in use" in panel._status.object and "crimson" in panel._status.object
        # the release fires no pool event; the periodic refresh still re-reads while a card is busy
        assert not tiers.stale and tiers.refresh() is True
        assert int(tiers.residency.set_index("expert").at["tiny-a", "in_use"]) == 0
        assert tiers.refresh() is False  # idle again: no re-reading
        panel._on_evict()
        assert "evicted tiny-a" in panel._status.object
        assert tiers.by_tier()["cpu"] == [] and "evict" in set(tiers.events["action"])
    finally:
        pool.close()


def test_tier_model_rejects_non_pool():
    from workbench.errors import WorkbenchError
    from workbench.ui.tiers import TierModel

    with pytest.raises(WorkbenchError, match="needs an ExpertPool"):
        TierModel(object())


def test_tier_watchers_are_shared_per_pool(tiny_experts):
    from workbench.ui.models.tiers import TierModel, _PoolWatcher

    pool = make_pool(tiny_experts)
    try:
        models = [TierModel(pool) for _ in range(5)]
        assert len(pool._listeners) == 1  # one listener however many sessions watch the pool
        assert len(_PoolWatcher.of(pool).subscribers) == 5
        del models
        import gc

        gc.collect()
        assert len(_PoolWatcher.of(pool).subscribers) == 0
    finally:
        pool.close()


def test_chat_panel_hands_the_coe_the_raw_typed_text(coe):
    """Panel gives the callback the rendered (escaped) HTML; the CoE must get what was typed."""
    from workbench.ui.chat import ChatModel, ChatPanel

    model = ChatModel(coe, max_new_tokens=2)
    panel = ChatPanel(model)
    panel.interface.send(XSS, user="You", respond=False)
    rendered = panel.interface.objects[-1]._object_panel.object
    assert "&lt;img" in rendered and "<img" not in rendered  # shown escaped in the feed
    assert ChatPanel._raw_text(rendered, panel.interface) == XSS
    assert ChatPanel._raw_text(rendered, None) == XSS  # fallback: undo our own wrapper only
    _drive(panel, rendered)
    assert model.history[0]["content"] == XSS and model.traces[0].prompt == XSS


def test_chat_panel_shows_a_conversation_the_model_already_holds(coe):
    from workbench.ui.chat import ChatModel, ChatPanel

    model = ChatModel(coe, max_new_tokens=2)
    answer = model.ask("What is 2 + 2?")
    panel = ChatPanel(model)
    messages = panel.interface.objects
    assert [m.user for m in messages] == ["You", "CoE"]
    assert messages[0].object == "What is 2 + 2?"
    answer_pane, card = messages[1].object.objects
    assert card.visible and answer.trace.expert in card.object
    panel.interface.clear()
    assert model.history == [] and model.traces == []


@pytest.mark.gpu
def test_tier_view_shows_experts_on_the_gpu(tiny_experts):
    from workbench.experts import ExpertPool, ExpertSpec
    from workbench.ui.tiers import TierModel, tiers_html

    specs = [ExpertSpec(name=name, model=path) for name, path in tiny_experts.items()]
    pool = ExpertPool(specs, gpu_memory="256MiB", cpu_memory="256MiB")
    try:
        tiers = TierModel(pool)
        pool.generate("tiny-a", "hello", max_new_tokens=2)
        tiers.refresh()
        groups = tiers.by_tier()
        assert [i["expert"] for i in groups["gpu"]] == ["tiny-a"] and groups["gpu"][0]["bytes"] > 0
        assert tiers.totals()["gpu"] == pool.tracked_bytes("gpu")
        html = tiers_html(tiers)
        assert 'data-expert="tiny-a" data-tier="gpu"' in html and "of 256.0 MiB" in html
    finally:
        pool.close()
