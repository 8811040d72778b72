"""Panel view of a :class:`~workbench.ui.models.ChatModel`: ``pn.chat.ChatInterface`` with the
answer streaming into the message as it is generated (the model runs in a worker thread, off the
server's event loop) and a trace card under every answer (category, router confidence, fallback,
expert, tier it was found in, switch and generation time). Every text is shown HTML-escaped.
"""
from __future__ import annotations

import asyncio
import contextlib
import html
import queue
import threading
import time
from typing import Any

import panel as pn

from workbench.errors import ChatError
from workbench.ui.models.chat import ChatModel
from workbench.ui.render import text_html, trace_html

__all__ = ["ChatPanel"]

_DONE = object()
#: seconds between two updates of a streaming answer in the browser
_TICK_S = 0.1

#: CSS for the answer text and the trace card (shadow-DOM safe: passed as pane stylesheets).
_STYLES = """
.coe-text { white-space: pre-wrap; word-break: break-word; font-size: 14px; margin: 0; }
.coe-trace { font-size: 12px; border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 8px;
             margin-top: 6px; background: #f6f8fa; }
.coe-trace table { border-collapse: collapse; }
.coe-trace td { padding: 1px 8px 1px 0; vertical-align: top; }
.coe-trace td.k { color: #57606a; }
.coe-trace .fallback { color: #9a6700; font-weight: 600; }
.coe-trace .error { color: #cf222e; font-weight: 600; }
"""


def _svg(path: str) -> str:
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="18" height="18" viewBox="0 0 24 24" '
            'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" '
            f'stroke-linejoin="round">{path}</svg>')


#: Inline SVG icons for the chat buttons (Panel's default icon names load a font from a CDN).
ICONS = {
    "send": _svg('<path d="M10 14l11 -11"/><path d="M21 3l-6.5 18a.55 .55 0 0 1 -1 0l-3.5 -7l-7 -3.5a.55 .55 0 0 1 0 -1l18 -6.5"/>'),
    "stop": _svg('<rect x="6" y="6" width="12" height="12" rx="1"/>'),
    "rerun": _svg('<path d="M4 12v-3a3 3 0 0 1 3 -3h13m-3 -3l3 3l-3 3"/><path d="M20 12v3a3 3 0 0 1 -3 3h-13m3 3l-3 -3l3 -3"/>'),
    "undo": _svg('<path d="M9 11l-4 4l4 4m-4 -4h11a4 4 0 0 0 0 -8h-1"/>'),
    "clear": _svg('<path d="M4 7l16 0"/><path d="M10 11l0 6"/><path d="M14 11l0 6"/><path d="M5 7l1 12a2 2 0 0 0 2 2h8a2 2 0 0 0 2 -2l1 -12"/><path d="M9 7v-3a1 1 0 0 1 1 -1h4a1 1 0 0 1 1 1v3"/>'),
}


def _escaped_renderer(value: Any):
    """ChatInterface renderer: plain text as escaped HTML (never markdown/HTML)."""
    if isinstance(value, str):
        return pn.pane.HTML(text_html(value), stylesheets=[_STYLES], sizing_mode="stretch_width")
    return pn.panel(value)


class ChatPanel(pn.viewable.Viewer):
    """``pn.chat.ChatInterface`` over a :class:`ChatModel`: streamed answers with a trace card each.

    Parameters
    ----------
    model : ChatModel
        The conversation (one per browser session).
    height : int
        Height of the chat feed in pixels.
    """

    def __init__(self, model: ChatModel, *, height: int = 560, **params: Any) -> None:
        super().__init__(**params)
        self.model = model
        self.tokens = pn.widgets.IntSlider.from_param(
            model.param.max_new_tokens, name="max new tokens", start=8, end=1024, step=8,
            value=model.max_new_tokens or 64)
        # when a message reaches the server, before ChatInterface renders it and calls back: the
        # trace's total starts there, so it matches the reply time the user sees. The input is
        # made here so this watcher runs before the interface's own (registration order).
        self._received: float | None = None
        box = pn.chat.ChatAreaInput(placeholder="Send a message")
        box.param.watch(self._on_received, "value")
        self.interface = pn.chat.ChatInterface(
            widgets=[box],
            callback=self._respond,
            callback_user="CoE",
            user="You",
            renderers=[_escaped_renderer],
            show_rerun=False,
            show_undo=False,
            placeholder_threshold=0.3,
            button_properties={name: {"icon": svg} for name, svg in ICONS.items()},
            message_params={"show_reaction_icons": False, "show_copy_icon": False,
                            "show_edit_icon": False},
            height=height,
            sizing_mode="stretch_width",
        )
        self._replay_history()
        self.interface.param.watch(self._on_clear, "objects")

        help_text = pn.pane.Markdown(
            "Ask anything: the prompt is embedded, the router picks a category, the map picks an "
            "expert and the pool switches it in. The card under each answer is its trace.",
            sizing_mode="stretch_width")
        self._layout = pn.Column(help_text, self.tokens, self.interface, sizing_mode="stretch_width",
                                 css_classes=["coe-chat-panel"])

    @staticmethod
    def _answer_view(text: str = "", trace: Any = None):
        """The response message: the (escaped) answer and, once known, its trace card."""
        answer_pane = pn.pane.HTML(text_html(text), stylesheets=[_STYLES], sizing_mode="stretch_width",
                                   css_classes=["coe-answer"])
        card = pn.pane.HTML(trace_html(trace) if trace is not None else "", stylesheets=[_STYLES],
                            sizing_mode="stretch_width", visible=trace is not None,
                            css_classes=["coe-trace-card"])
        return pn.Column(answer_pane, card, sizing_mode="stretch_width")

    def _replay_history(self) -> None:
        """Show a conversation the model already holds (e.g. one driven from notebook code)."""
        traces = iter(self.model.traces)
        for message in self.model.history:
            if message["role"] == "user":
                self.interface.send(message["content"], user="You", respond=False)
            else:
                self.interface.send(self._answer_view(message["content"], next(traces, None)),
                                    user="CoE", respond=False)

    def _on_clear(self, event) -> None:
        if not event.new:
            self.model.clear()

    @staticmethod
    def _raw_text(contents: Any, instance: Any) -> str:
        """The text the user typed (Panel hands the callback the *rendered*, escaped HTML)."""
        try:
            message = instance.objects[-1]
            if isinstance(message.object, str):
                return message.object
        except (AttributeError, IndexError):
            pass
        text = contents if isinstance(contents, str) else str(contents)
        prefix, suffix = '<div class="coe-text">', "</div>"
        if text.startswith(prefix) and text.endswith(suffix):
            text = html.unescape(text[len(prefix):-len(suffix)])
        return text

    def _on_received(self, event: Any) -> None:
        if event.new:
            self._received = time.perf_counter()

    async def _respond(self, contents: Any, user: str, instance: Any):
        started, self._received = self._received or time.perf_counter(), None
        text = self._raw_text(contents, instance)
        column = self._answer_view()
        answer_pane, card = column.objects
        try:
            stream = self.model.send(text, started=started)
        except ChatError as exc:
            answer_pane.object = text_html(str(exc), css_class="coe-text coe-error")
            yield column
            return
        # the stream is drained in its own thread; the view wakes every _TICK_S and shows what
        # arrived, so a busy event loop never holds tokens back and the browser gets one update
        # per tick (each update re-sends the whole answer); the end of the stream wakes it at
        # once, so the finished answer and its trace are not held back until the next tick
        inbox: queue.SimpleQueue = queue.SimpleQueue()
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()

        def pump() -> None:
            try:
                for item in stream:
                    inbox.put(item)
            except Exception as exc:  # noqa: BLE001 - shown in the chat below
                inbox.put(exc)
            inbox.put(_DONE)
            with contextlib.suppress(RuntimeError):  # the session's loop is gone: nobody waits
                loop.call_soon_threadsafe(finished.set)

        threading.Thread(target=pump, name="coe-chat-stream", daemon=True).start()
        parts: list[str] = []
        shown = 0
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(finished.wait(), _TICK_S)
            done, final, failed = False, None, None
            while True:
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    break
                if item is _DONE:
                    done = True
                elif isinstance(item, BaseException):
                    failed = item
                elif isinstance(item, str):
                    parts.append(item)
                else:
                    final = item
            if failed is not None:  # shown escaped in the chat; the session keeps working
                answer_pane.object = text_html("".join(parts) + f"\n[error] {type(failed).__name__}: "
                                               f"{failed}", css_class="coe-text coe-error")
                yield column
                return
            if final is not None:
                answer_pane.object = text_html(final.text)
                card.object = trace_html(final.trace)
                card.visible = True
                yield column
            elif len(parts) != shown:
                answer_pane.object = text_html("".join(parts))
                shown = len(parts)
                yield column
            if done:
                return

    def __panel__(self):
        return self._layout
