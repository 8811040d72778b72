"""The chat model: one conversation (history and one trace per answer) over a shared
:class:`~workbench.coe.CoE`, driving ``CoE.stream``. No UI; tests and notebooks use it directly, and
:class:`workbench.ui.panel.chat.ChatPanel` renders it.

Examples
--------
>>> from workbench.ui.models import ChatModel                 # doctest: +SKIP
>>> chat = ChatModel.from_bundle(bundle, max_new_tokens=32)   # doctest: +SKIP
>>> for item in chat.send("Solve 2x + 3 = 11"):               # doctest: +SKIP
...     print(item if isinstance(item, str) else item.trace)
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import param

from workbench.errors import ChatError

__all__ = ["ChatModel"]


class ChatModel(param.Parameterized):
    """One chat conversation against a (possibly shared) CoE.

    Parameters
    ----------
    coe : CoE
        Anything with ``stream(prompt, **gen)`` yielding text chunks and then an ``Answer``
        (``.text``, ``.trace``). Several models (browser sessions) may share one CoE and its pool.
    max_new_tokens : int, optional
        Passed to ``CoE.stream``; ``None`` keeps each expert's own default.
    switch_confidence : float, optional
        The conversation rule's threshold: a follow-up moves to another expert only when its
        category is at least this probable (default
        :data:`workbench.conversation.DEFAULT_SWITCH_CONFIDENCE`); each trace's ``turn_rule``
        says what decided.

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

    def __init__(self, coe: Any, *, switch_confidence: float | None = None, **params: Any) -> None:
        if not hasattr(coe, "stream"):
            raise ChatError(f"ChatModel needs a CoE with a stream(prompt) method, got "
                            f"{type(coe).__name__}; build one with workbench.CoE(...) or "
                            "ChatModel.from_bundle(bundle)")
        super().__init__(**params)
        self.coe = coe
        self._lock = threading.Lock()
        self._turns = None  # the conversation rule, for a real CoE (test doubles stream only)
        if hasattr(coe, "route") and hasattr(coe, "pool"):
            from workbench.conversation import ConversationRouter

            self._turns = ConversationRouter(coe, threshold=switch_confidence)

    @classmethod
    def from_bundle(cls, bundle: Any, **params: Any) -> "ChatModel":
        """A chat over ``bundle.coe`` (the demo bundle of :func:`workbench.demo.build_demo_bundle`)."""
        coe = getattr(bundle, "coe", None)
        if coe is None:
            raise ChatError("the bundle has no 'coe'; build it with workbench.demo.build_demo_bundle()")
        return cls(coe, **params)

    # -- driving -------------------------------------------------------------------------------

    def send(self, text: str, *, started: float | None = None) -> Iterator[Any]:
        """Stream an answer to ``text``: yields text chunks, then the final ``Answer``.

        The user message is added to :attr:`history` at once; the answer and its trace when the
        stream ends. ``started`` (a ``time.perf_counter()`` value) is when the message arrived;
        the trace's ``total_s`` is the whole reply from then (default: from this call).

        Raises
        ------
        ChatError
            When ``text`` is not a non-empty string, or the CoE's stream ends without an Answer.
        """
        if not isinstance(text, str) or not text.strip():
            raise ChatError(f"a chat message must be non-empty text, got {text!r}; type a question")
        started = time.perf_counter() if started is None else float(started)
        gen = {} if self.max_new_tokens is None else {"max_new_tokens": int(self.max_new_tokens)}
        with self._lock:
            self.history = [*self.history, {"role": "user", "content": text}]
            messages = list(self.history)
        self.busy, self.last_error = True, None
        answer = None
        prompt, rule = text, ""
        try:
            if self._turns is not None and len(messages) > 1:
                # a follow-up: the whole conversation goes to the expert, which stays the previous
                # turn's unless the new category is confidently different (workbench.conversation)
                previous = getattr(self.traces[-1], "expert", None) if self.traces else None
                decision = self._turns.decide(messages, previous=previous)
                prompt, rule = messages, decision.rule
                gen = {**gen, "expert": decision.expert}
            for item in self.coe.stream(prompt, **gen):
                if isinstance(item, str):
                    yield item
                elif hasattr(item, "trace"):
                    answer = item
                    if rule and hasattr(item.trace, "turn_rule"):
                        item.trace.turn_rule = rule
                    if hasattr(item.trace, "total_s"):  # the reply as the chat saw it
                        item.trace.total_s = max(item.trace.total_s, time.perf_counter() - started)
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
