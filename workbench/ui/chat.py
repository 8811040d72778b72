"""Live CoE chat: a per-session chat model over a shared :class:`~workbench.coe.CoE`, and its Panel view.

:class:`ChatModel` holds one conversation (history and one trace per answer) and drives
``CoE.stream``; it has no UI and is what tests and notebooks use. :class:`ChatPanel` renders it
with ``pn.chat.ChatInterface``: the answer streams into the message as it is generated (the model
runs in a worker thread, off the server's event loop) and a trace card under every answer shows the
category, router confidence, fallback, expert, tier it was found in, switch and generation time.

Everything a user or a model wrote (prompts, answers, category and expert names, errors) is shown
HTML-escaped: a prompt such as ``<img src=x onerror=alert(1)>`` is displayed as text, never run.

Examples
--------
>>> from workbench.ui.chat import ChatModel, ChatPanel        # doctest: +SKIP
>>> chat = ChatModel.from_bundle(bundle, max_new_tokens=32)   # doctest: +SKIP
>>> for item in chat.send("Solve 2x + 3 = 11"):               # doctest: +SKIP
...     print(item if isinstance(item, str) else item.trace)
>>> ChatPanel(chat).servable()                                # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import html
import threading
import time
from collections.abc import Iterator
from typing import Any

import panel as pn
import param

from workbench.errors import ChatError


_DONE = object()

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


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def text_html(text: str, *, css_class: str = "coe-text") -> str:
    """``text`` as escaped HTML that keeps line breaks (``<div class="coe-text">...</div>``)."""
    return f'<div class="{css_class}">{_esc(text)}</div>'


def _seconds(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def trace_rows(trace: Any) -> list[tuple[str, str]]:
    """The trace card's rows as ``(label, plain text value)`` pairs (not escaped yet)."""
    get = (trace.get if isinstance(trace, dict) else lambda k, d=None: getattr(trace, k, d))
    conf = get("confidence")
    rows = [
        ("category", str(get("category", "–"))),
        ("confidence", f"{float(conf):.2f}" if conf is not None else "–"),
        ("fallback", ("yes (low confidence" + (f"; router's top: {get('predicted')}"
                                               if get("predicted") else "") + ")")
         if get("is_fallback") else "no"),
        ("expert", str(get("expert", "–")) + ("  (fallback expert after an error)"
                                              if get("used_fallback_expert") else "")),
        ("tier found", str(get("tier_found", "–"))),
        ("switch", _seconds(get("switch_s")) + (f" (adapter merge {_seconds(get('adapter_s'))})"
                                                 if get("adapter_s") else "")),
        ("embed + route", _seconds((get("embed_s") or 0) + (get("route_s") or 0))),
        ("generation", _seconds(get("generate_s"))),
    ]
    tokens, tps = get("new_tokens"), get("tokens_per_s")
    if tokens is not None:
        rows.append(("tokens", f"{int(tokens)}" + (f" at {float(tps):.1f} tok/s" if tps else "")))
    if get("error"):
        rows.append(("error", str(get("error"))))
    return rows


def trace_html(trace: Any) -> str:
    """An HTML card for one :class:`~workbench.coe.Trace` (or its ``to_dict()``); every value escaped."""
    get = (trace.get if isinstance(trace, dict) else lambda k, d=None: getattr(trace, k, d))
    cells = []
    for key, value in trace_rows(trace):
        cls = ""
        if key == "fallback" and get("is_fallback"):
            cls = ' class="fallback"'
        elif key == "error":
            cls = ' class="error"'
        cells.append(f'<tr><td class="k">{_esc(key)}</td><td{cls} data-field="{_esc(key)}">'
                     f"{_esc(value)}</td></tr>")
    prompt = str(get("prompt", "") or "")
    short = prompt if len(prompt) <= 120 else prompt[:117] + "..."
    return (f'<div class="coe-trace" data-expert="{_esc(get("expert", ""))}" '
            f'data-category="{_esc(get("category", ""))}">'
            f'<div class="k">trace for: <span class="coe-trace-prompt">{_esc(short)}</span></div>'
            f"<table>{''.join(cells)}</table></div>")


class ChatModel(param.Parameterized):
    """One chat conversation against a (possibly shared) CoE.

    Parameters
    ----------
    coe : CoE
        Anything with ``stream(prompt, **gen)`` yielding text chunks and then an ``Answer``
        (``.text``, ``.trace``). Several models (browser sessions) may share one CoE and its pool.
    max_new_tokens : int, optional
        Passed to ``CoE.stream``; ``None`` keeps each expert's own default.

    Attributes
    ----------
    history : list of dict
        ``{"role": "user" | "assistant", "content": str}`` in order.
    traces : list
        One trace per answered message, in order.

    Examples
    --------
    >>> chat = ChatModel(coe, max_new_tokens=16)                 # doctest: +SKIP
    >>> answer = chat.ask("What is 2 + 2?")                      # doctest: +SKIP
    >>> answer.trace.expert                                      # doctest: +SKIP
    """

    max_new_tokens = param.Integer(default=None, allow_None=True, bounds=(1, 4096),
                                   doc="Token budget per answer (None: the expert's default).")
    history = param.List(default=[], doc="Messages so far: dicts with role and content.")
    traces = param.List(default=[], doc="One trace per answer, in order.")
    busy = param.Boolean(default=False, doc="True while an answer is being generated.")
    last_error = param.String(default=None, allow_None=True, doc="The last error, if any.")

    def __init__(self, coe: Any, **params: Any) -> None:
        if not hasattr(coe, "stream"):
            raise ChatError(f"ChatModel needs a CoE with a stream(prompt) method, got "
                            f"{type(coe).__name__}; build one with workbench.CoE(...) or "
                            "ChatModel.from_bundle(bundle)")
        super().__init__(**params)
        self.coe = coe
        self._lock = threading.Lock()

    @classmethod
    def from_bundle(cls, bundle: Any, **params: Any) -> "ChatModel":
        """A chat over ``bundle.coe`` (the demo bundle of :func:`workbench.demo.build_demo_bundle`)."""
        coe = getattr(bundle, "coe", None)
        if coe is None:
            raise ChatError("the bundle has no 'coe'; build it with workbench.demo.build_demo_bundle()")
        return cls(coe, **params)

    # -- driving -------------------------------------------------------------------------------

    def send(self, text: str) -> Iterator[Any]:
        """Stream an answer to ``text``: yields text chunks, then the final ``Answer``.

        The user message is added to :attr:`history` at once; the answer and its trace when the
        stream ends.

        Raises
        ------
        ChatError
            When ``text`` is not a non-empty string, or the CoE's stream ends without an Answer.
        """
        if not isinstance(text, str) or not text.strip():
            raise ChatError(f"a chat message must be non-empty text, got {text!r}; type a question")
        gen = {} if self.max_new_tokens is None else {"max_new_tokens": int(self.max_new_tokens)}
        with self._lock:
            self.history = [*self.history, {"role": "user", "content": text}]
        self.busy, self.last_error = True, None
        answer = None
        try:
            for item in self.coe.stream(text, **gen):
                if isinstance(item, str):
                    yield item
                elif hasattr(item, "trace"):
                    answer = item
                    yield item
                else:
                    raise ChatError(f"CoE.stream yielded {type(item).__name__}; expected text chunks "
                                    "and a final Answer")
            if answer is None:
                raise ChatError("CoE.stream ended without a final Answer (its trace is missing); "
                                "check the CoE runtime")
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.busy = False
        with self._lock:
            self.history = [*self.history, {"role": "assistant", "content": answer.text}]
            self.traces = [*self.traces, answer.trace]

    def ask(self, text: str) -> Any:
        """Send ``text`` and return the final ``Answer`` (the non-streaming form of :meth:`send`)."""
        answer = None
        for item in self.send(text):
            if not isinstance(item, str):
                answer = item
        return answer

    def clear(self) -> None:
        """Forget the conversation."""
        with self._lock:
            self.history, self.traces = [], []

    def traces_frame(self):
        """The traces as a ``pandas.DataFrame`` (one row per answer)."""
        import pandas as pd

        rows = [t.to_dict() if hasattr(t, "to_dict") else dict(t) for t in self.traces]
        return pd.DataFrame(rows)


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
            model.param.max_new_tokens, name="max new tokens", start=8, end=512, step=8,
            value=model.max_new_tokens or 64)
        self.interface = pn.chat.ChatInterface(
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

    async def _respond(self, contents: Any, user: str, instance: Any):
        text = self._raw_text(contents, instance)
        column = self._answer_view()
        answer_pane, card = column.objects
        try:
            stream = self.model.send(text)
        except ChatError as exc:
            answer_pane.object = text_html(str(exc), css_class="coe-text coe-error")
            yield column
            return
        parts: list[str] = []
        last = 0.0
        while True:
            try:
                item = await asyncio.to_thread(next, stream, _DONE)
            except Exception as exc:  # shown escaped in the chat; the session keeps working
                answer_pane.object = text_html("".join(parts) + f"\n[error] {type(exc).__name__}: {exc}",
                                               css_class="coe-text coe-error")
                yield column
                return
            if item is _DONE:
                break
            if isinstance(item, str):
                parts.append(item)
                now = time.monotonic()
                if now - last > 0.05:  # throttle websocket updates
                    answer_pane.object = text_html("".join(parts))
                    last = now
                    yield column
            else:
                answer_pane.object = text_html(item.text)
                card.object = trace_html(item.trace)
                card.visible = True
                yield column

    def __panel__(self):
        return self._layout
