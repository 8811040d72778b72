"""What the CoE runtime returns: :class:`Trace` (how one prompt was answered), :class:`Answer`,
:class:`Route` (where a prompt would go) and :class:`Explanation` (the routing a view shows).
Plain dataclasses; :mod:`workbench.coe` re-exports them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "Explanation", "Route", "Trace"]


@dataclass
class Trace:
    """How one prompt was answered.

    Attributes
    ----------
    prompt : str
    category : str
        The routed category (``"fallback"`` when the router was unsure).
    confidence : float
        The router's confidence (probability of the predicted category under the default rule).
    is_fallback : bool
        True when the low-confidence rule sent the prompt to the fallback category.
    expert : str
        The expert whose answer is returned (the fallback expert after a failure).
    tier_found : str
        Where that expert was when asked for: ``gpu``, ``cpu``, ``disk`` or ``cold``.
    switch_s, embed_s, route_s, generate_s : float
        Seconds to switch the expert in, embed the prompt, route it, and generate.
    adapter_s : float
        Of ``switch_s``: seconds spent merging a LoRA expert's adapter into its shared base (0 when
        the adapter was already merged or the expert has none).
    new_tokens : int
    tokens_per_s : float
    error : str or None
        What went wrong with the routed expert (load error, exception mid-generation), if
        anything.
    used_fallback_expert : bool
        True when the fallback expert answered because the routed expert failed.
    predicted : str or None
        The router's top category before the low-confidence rule.
    routed_expert : str or None
        The expert the map chose (differs from ``expert`` after a failure).
    total_s : float
        Wall time of the whole request.
    stop_reason : str
        Why the answer ended: ``"stop"`` (the expert finished) or ``"length"`` (it reached
        ``max_new_tokens``); OpenAI's ``finish_reason``.
    turn_rule : str
        In a conversation, what decided the expert of this turn (a key of
        :data:`workbench.conversation.RULES`: routed, same, kept, switched, forced); empty for a
        single prompt.
    """

    prompt: str
    category: str
    confidence: float
    is_fallback: bool
    expert: str
    tier_found: str = ""
    switch_s: float = 0.0
    embed_s: float = 0.0
    route_s: float = 0.0
    generate_s: float = 0.0
    new_tokens: int = 0
    tokens_per_s: float = 0.0
    error: str | None = None
    used_fallback_expert: bool = False
    predicted: str | None = None
    routed_expert: str | None = None
    total_s: float = 0.0
    adapter_s: float = 0.0
    stop_reason: str = ""
    turn_rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field."""
        return dataclasses.asdict(self)

    def summary(self) -> str:
        """One line for terminals and logs."""
        route = f"{self.category} ({self.confidence:.2f}" + (", low confidence" if self.is_fallback else "") + ")"
        parts = [f"route: {route}", f"expert: {self.expert} [{self.tier_found or '?'}]",
                 f"switch {self.switch_s * 1e3:.1f} ms", f"embed {self.embed_s * 1e3:.1f} ms",
                 f"route {self.route_s * 1e3:.1f} ms", f"generate {self.generate_s:.2f} s",
                 f"{self.new_tokens} tok @ {self.tokens_per_s:.1f} tok/s"
                 + (" (max new tokens)" if self.stop_reason == "length" else ""),
                 f"total {self.total_s:.2f} s"]
        if self.error:
            parts.append(f"ERROR: {self.error}")
        if self.turn_rule:
            parts.append(f"turn: {self.turn_rule}")
        if self.used_fallback_expert:
            parts.append(f"answered by fallback expert {self.expert} instead of {self.routed_expert}")
        return " | ".join(parts)


@dataclass
class Answer:
    """An answer and how it was produced."""

    text: str
    trace: Trace

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Route:
    """Where :meth:`CoE.route` sends a prompt (no generation)."""

    category: str
    confidence: float
    is_fallback: bool
    expert: str

    def __iter__(self):  # allows ``category, confidence, is_fallback, expert = coe.route(p)``
        return iter((self.category, self.confidence, self.is_fallback, self.expert))


@dataclass(frozen=True)
class Explanation:
    """How one prompt is routed, as a view shows it (:meth:`CoE.explain`, :func:`explain_routing`).

    Attributes
    ----------
    prompt : str
    category : str
        The routed category, after the low-confidence rule (the fallback category when unsure).
    confidence : float
    is_fallback : bool
        True when the low-confidence rule sent the prompt to the fallback category.
    predicted : str
        The router's most probable category (before the rule).
    expert : str
        The expert the map sends ``category`` to (``""`` when no map was given).
    probabilities : tuple of (str, float)
        Every category with its probability, most probable first; empty when the router gives
        no probabilities.
    embedding : numpy.ndarray or None
        The prompt's embedding row (shape ``(d,)``), for neighbours and map placement.
    """

    prompt: str
    category: str
    confidence: float
    is_fallback: bool
    predicted: str
    expert: str
    probabilities: tuple[tuple[str, float], ...] = ()
    embedding: Any = dataclasses.field(default=None, repr=False, compare=False)

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable categories with their probabilities."""
        return list(self.probabilities[:k])

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (without the embedding)."""
        return {"prompt": self.prompt, "category": self.category, "confidence": self.confidence,
                "is_fallback": self.is_fallback, "predicted": self.predicted,
                "expert": self.expert, "probabilities": [list(p) for p in self.probabilities]}
