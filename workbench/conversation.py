"""Conversation-aware routing: which expert answers the next turn of a multi-turn chat.

The rule (:func:`decide_turn`): route the latest user turn; if an earlier turn was answered by an
expert, keep that expert unless the new turn is *confidently* about something else (its category's
probability at least ``threshold`` and not the low-confidence fallback). So a follow-up like "and
why?" stays with the expert that answered, while "now write me a poem" moves on. The decision
names the rule that decided (:data:`RULES`), for the trace.

Where the previous expert comes from (:func:`previous_expert`): the latest assistant message's
``name`` when it names an expert (a client may carry it explicitly), else a
:class:`ConversationMemory` of the server's own answers, keyed by a hash of the conversation up to
and including that answer (any client that sends the history back unchanged gets it for free).

Pure Python: no model, no web framework. :class:`ConversationRouter` applies it to a CoE.

Examples
--------
>>> from workbench.coe import Route
>>> decide_turn(Route("law", 0.41, False, "lawyer"), "mathematician").rule
'kept'
>>> decide_turn(Route("law", 0.93, False, "lawyer"), "mathematician").expert
'lawyer'
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from workbench.errors import UsageError

__all__ = ["DEFAULT_SWITCH_CONFIDENCE", "RULES", "ConversationMemory", "ConversationRouter",
           "TurnDecision", "conversation_key", "decide_turn", "previous_expert"]

#: A new turn moves to another expert only when its category is at least this probable.
DEFAULT_SWITCH_CONFIDENCE = 0.6

#: What decided a turn's expert.
RULES = {
    "routed": "no earlier expert in the conversation: the map's expert for the routed category",
    "same": "the routed category maps to the expert that answered the previous turn",
    "kept": "kept the previous turn's expert: the new category is not confidently different",
    "switched": "switched: the new category is confidently different from the previous turn's",
    "forced": "the request named the expert",
}


@dataclass(frozen=True)
class TurnDecision:
    """The expert for one turn and why.

    Attributes
    ----------
    expert : str
        Who answers.
    rule : str
        One of :data:`RULES`.
    category, confidence, is_fallback
        The latest user turn's routing.
    routed_expert : str
        The map's expert for that category (what a single-turn request would get).
    previous_expert : str or None
    threshold : float
    """

    expert: str
    rule: str
    category: str
    confidence: float
    is_fallback: bool
    routed_expert: str
    previous_expert: str | None
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def explain(self) -> str:
        """One line: the rule in words."""
        return f"{self.expert}: {RULES[self.rule]}"


def check_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"the switch confidence must be a probability in [0, 1], got {threshold!r}; "
                         f"the default is {DEFAULT_SWITCH_CONFIDENCE}")
    return value


def decide_turn(route: Any, previous: str | None = None, *,
                threshold: float = DEFAULT_SWITCH_CONFIDENCE, forced: str | None = None) -> TurnDecision:
    """The expert for a turn whose latest user message routed to ``route``.

    Parameters
    ----------
    route : Route or Explanation
        ``category``, ``confidence``, ``is_fallback`` and ``expert`` of the latest user turn.
    previous : str, optional
        The expert that answered the previous turn.
    threshold : float
        Switch away from ``previous`` only when ``route.confidence >= threshold`` and the router
        was not unsure (``is_fallback``).
    forced : str, optional
        An expert the request names: it answers, whatever the routing.
    """
    threshold = check_threshold(threshold)
    routed = str(route.expert)
    common = {"category": str(route.category), "confidence": float(route.confidence),
              "is_fallback": bool(route.is_fallback), "routed_expert": routed,
              "previous_expert": previous, "threshold": threshold}
    if forced is not None:
        return TurnDecision(expert=forced, rule="forced", **common)
    if previous is None:
        return TurnDecision(expert=routed, rule="routed", **common)
    if routed == previous:
        return TurnDecision(expert=routed, rule="same", **common)
    if route.is_fallback or float(route.confidence) < threshold:
        return TurnDecision(expert=previous, rule="kept", **common)
    return TurnDecision(expert=routed, rule="switched", **common)


def _turns(messages: Iterable[dict]) -> list[list[str]]:
    return [[str(m.get("role", "")), m.get("content") if isinstance(m.get("content"), str) else ""]
            for m in messages]


def conversation_key(messages: Sequence[dict]) -> str:
    """A hash of the roles and texts of ``messages`` (what :class:`ConversationMemory` keys on)."""
    blob = json.dumps(_turns(messages), ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(blob.encode("utf-8"), digest_size=16).hexdigest()


class ConversationMemory:
    """Which expert wrote which answer, for the last ``size`` answers (thread-safe LRU)."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = max(1, int(size))
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, messages: Sequence[dict], reply: str, expert: str) -> None:
        """Record that ``expert`` answered ``messages`` with ``reply``."""
        key = conversation_key([*messages, {"role": "assistant", "content": reply}])
        with self._lock:
            self._items[key] = expert
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def recall(self, messages: Sequence[dict]) -> str | None:
        """The expert of the conversation ``messages`` up to its latest assistant turn, if known."""
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None:
            return None
        key = conversation_key(messages[:last + 1])
        with self._lock:
            expert = self._items.get(key)
            if expert is not None:
                self._items.move_to_end(key)
            return expert

    def __len__(self) -> int:
        return len(self._items)


def previous_expert(messages: Sequence[dict], experts: Iterable[str],
                    memory: ConversationMemory | None = None) -> str | None:
    """The expert that answered the conversation's latest assistant turn, if it can be told.

    The assistant message's ``name`` when it is one of ``experts``; else ``memory``'s record.
    """
    names = set(experts)
    for message in reversed(messages):
        if message.get("role") == "assistant":
            name = message.get("name")
            if isinstance(name, str) and name in names:
                return name
            break
    if memory is not None:
        expert = memory.recall(messages)
        if expert in names:
            return expert
    return None


class ConversationRouter:
    """:func:`decide_turn` over a CoE: route a conversation's latest user turn, keep or switch.

    Parameters
    ----------
    coe : CoE
    threshold : float, optional
        Default: the CoE's ``switch_confidence`` when it has one, else
        :data:`DEFAULT_SWITCH_CONFIDENCE`.
    memory : ConversationMemory, optional
        Where answered turns are remembered (:meth:`remember`); a new one by default.

    Examples
    --------
    >>> router = ConversationRouter(coe)                                  # doctest: +SKIP
    >>> d = router.decide(messages)                                       # doctest: +SKIP
    >>> answer = coe.generate(messages, expert=d.expert)                  # doctest: +SKIP
    >>> router.remember(messages, answer.text, answer.trace.expert)       # doctest: +SKIP
    """

    def __init__(self, coe: Any, *, threshold: float | None = None,
                 memory: ConversationMemory | None = None) -> None:
        self.coe = coe
        if threshold is None:
            threshold = getattr(coe, "switch_confidence", DEFAULT_SWITCH_CONFIDENCE)
        self.threshold = check_threshold(threshold)
        self.memory = memory if memory is not None else ConversationMemory()

    def decide(self, messages: Sequence[dict] | str, *, previous: str | None = None,
               forced: str | None = None) -> TurnDecision:
        """The expert for the next answer to ``messages`` (text: a single user turn)."""
        from workbench.coe import routing_text

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        route = self.coe.route(routing_text(list(messages)))
        if previous is None:
            previous = previous_expert(messages, getattr(self.coe.pool, "names", []), self.memory)
        return decide_turn(route, previous, threshold=self.threshold, forced=forced)

    def remember(self, messages: Sequence[dict], reply: str, expert: str) -> None:
        self.memory.remember(messages, reply, expert)
