"""What the API does with a validated request, without a web framework: pick the expert, check the
prompt fits its context, generate through the CoE (stop sequences, cancellation), and build the
``coe_trace`` and ``usage`` of the answer.

:class:`ServeEngine` is synchronous and thread-safe; :mod:`workbench.serve.api` runs it in worker
threads under a bounded number of concurrent generations. A generation stops within one token when
its ``cancel`` event is set (the client went away) or a stop sequence appears: a transformers
stopping criterion watches both, so the expert is released right away.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from workbench.errors import ExpertError, RequestError, WorkbenchError
from workbench.conversation import RULES, ConversationMemory, ConversationRouter, TurnDecision
from workbench.serve.metrics import Metrics
from workbench.serve.protocol import COE_MODEL, ChatRequest

__all__ = ["ExpertInfo", "Plan", "Result", "ServeEngine", "StopFilter", "halt_criteria"]

#: Default generation length when neither the request nor the expert's spec says.
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass
class ExpertInfo:
    """What the engine needs to count an expert's tokens: its tokenizer and context length."""

    tokenizer: Any
    context: int | None
    chat_template: bool | None


@dataclass
class Plan:
    """A request with its expert chosen and its prompt measured (:meth:`ServeEngine.prepare`)."""

    request: ChatRequest
    decision: TurnDecision
    chat: list[dict]
    prompt_tokens: int | None
    max_new_tokens: int
    gen: dict = field(default_factory=dict)


@dataclass
class Result:
    """A finished generation: the text the client got, why it ended, the trace and token counts."""

    text: str
    finish_reason: str
    trace: dict
    usage: dict
    cancelled: bool = False


class StopFilter:
    """Cuts streamed text at the first stop sequence, holding back what might begin one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, chunk: str) -> str:
        """The text that is safe to send after ``chunk`` arrived."""
        if self.stopped:
            return ""
        start = max(0, self.sent - self.hold)
        self.text += chunk
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self.text = self.text[:min(hits)]
            return self.flush()
        safe = len(self.text) - self.hold
        if safe > self.sent:
            out, self.sent = self.text[self.sent:safe], safe
            return out
        return ""

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


_HALT_CLASS: list = []  # the StoppingCriteria subclass, built once on first use (imports transformers)


def halt_criteria(*events: threading.Event):
    """A ``StoppingCriteriaList`` that ends generation as soon as one of ``events`` is set."""
    if not _HALT_CLASS:
        import torch
        from transformers import StoppingCriteria

        class Halt(StoppingCriteria):
            def __init__(self, watched) -> None:
                self.watched = watched

            def __call__(self, input_ids, scores, **kwargs):
                flag = any(e.is_set() for e in self.watched)
                return torch.full((input_ids.shape[0],), flag, dtype=torch.bool, device=input_ids.device)

        _HALT_CLASS.append(Halt)
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList([_HALT_CLASS[0]([e for e in events if e is not None])])


class ServeEngine:
    """Answer validated chat requests with a CoE.

    Parameters
    ----------
    coe : CoE
    switch_confidence : float, optional
        The conversation rule's threshold (:class:`~workbench.serve.conversation.ConversationRouter`).
    memory_size : int
        How many answered turns are remembered for conversation-aware routing.
    max_tokens_limit : int
        The largest ``max_tokens`` a request may ask for.
    """

    def __init__(self, coe: Any, *, switch_confidence: float | None = None, memory_size: int = 10_000,
                 max_tokens_limit: int = 4096) -> None:
        self.coe = coe
        self.router = ConversationRouter(coe, threshold=switch_confidence,
                                         memory=ConversationMemory(memory_size))
        self.metrics = Metrics()
        self.max_tokens_limit = int(max_tokens_limit)
        self.recent: deque[Result] = deque(maxlen=64)
        self._info: dict[str, ExpertInfo] = {}
        self._info_lock = threading.Lock()

    @property
    def models(self) -> list[str]:
        """``coe`` and every expert of the pool."""
        return [COE_MODEL, *getattr(self.coe.pool, "names", [])]

    # ------------------------------------------------------------------------------ experts
    def expert_info(self, name: str) -> ExpertInfo:
        """The expert's tokenizer and context length, read once from its checkpoint (no weights)."""
        with self._info_lock:
            info = self._info.get(name)
        if info is not None:
            return info
        spec = self.coe.pool.specs[name]
        tokenizer, context = None, None
        try:
            import json

            from transformers import AutoTokenizer

            from workbench.placement import resolve_model_path

            path = resolve_model_path(spec.model, expert=name)
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.trust_remote_code)
            with open(path / "config.json") as fh:
                config = json.load(fh)
            context = config.get("max_position_embeddings") or config.get("n_positions") or None
        except Exception:  # noqa: BLE001 - no check then; the pool reports a broken expert itself
            pass
        info = ExpertInfo(tokenizer, int(context) if context else None, spec.chat_template)
        with self._info_lock:
            self._info[name] = info
        return info

    def _prompt_tokens(self, expert: str, chat: list[dict]) -> int | None:
        from workbench.chat_format import prompt_token_ids

        info = self.expert_info(expert)
        if info.tokenizer is None:
            return None
        try:
            return len(prompt_token_ids(info.tokenizer, chat, chat_template=info.chat_template))
        except Exception:  # noqa: BLE001 - the expert itself will say what is wrong
            return None

    def text_tokens(self, expert: str, text: str) -> int | None:
        """How many tokens ``text`` is for ``expert``'s tokenizer (None when it has none)."""
        tokenizer = self.expert_info(expert).tokenizer
        if tokenizer is None:
            return None
        try:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])
        except Exception:  # noqa: BLE001 - a count is informative; never fail an answer for it
            return None

    def tier_of(self, expert: str) -> str:
        """Where ``expert`` sits now (``gpu``, ``cpu``, ``disk``, ...)."""
        try:
            for row in self.coe.pool.residency():
                if row.get("expert") == expert:
                    return str(row.get("tier") or "disk")
        except Exception:  # noqa: BLE001 - informative only
            pass
        return "disk"

    # ------------------------------------------------------------------------------ requests
    def prepare(self, request: ChatRequest) -> Plan:
        """Choose the expert (conversation rule) and check the prompt fits its context.

        Raises
        ------
        RequestError
            The latest user turn cannot be routed (too long, empty), or the prompt (with
            ``max_tokens``) is longer than the expert's context.
        """
        try:
            decision = self.router.decide(request.messages, forced=request.forced_expert)
        except RequestError:
            raise
        except WorkbenchError as exc:
            raise RequestError(f"the latest user message cannot be routed: {exc}", param="messages") from None
        chat = [{"role": m["role"], "content": m["content"]} for m in request.messages]
        spec = self.coe.pool.specs[decision.expert]
        default_new = int(spec.generation.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        max_new = request.max_tokens or default_new
        prompt_tokens = self._prompt_tokens(decision.expert, chat)
        context = self.expert_info(decision.expert).context
        if prompt_tokens is not None and context is not None:
            if prompt_tokens >= context:
                raise RequestError(
                    f"the messages are {prompt_tokens} tokens, longer than the context of expert "
                    f"{decision.expert!r} ({context} tokens); shorten the conversation (drop early "
                    "turns)", param="messages", code="context_length_exceeded")
            if prompt_tokens + max_new > context:
                if request.max_tokens is not None:
                    raise RequestError(
                        f"the messages ({prompt_tokens} tokens) plus max_tokens ({max_new}) exceed the "
                        f"context of expert {decision.expert!r} ({context} tokens); ask for at most "
                        f"{context - prompt_tokens} new tokens", param="max_tokens",
                        code="context_length_exceeded")
                max_new = context - prompt_tokens
        gen = request.generation()
        gen["max_new_tokens"] = max_new
        return Plan(request, decision, chat, prompt_tokens, max_new, gen)

    def run(self, plan: Plan, cancel: threading.Event | None = None,
            on_text: Callable[[str], None] | None = None) -> Result:
        """Generate the answer of ``plan``; ``on_text`` receives the text as it is generated.

        Raises
        ------
        RequestError
            Status 502 when the expert and the fallback expert both failed (the message is the
            trace's error).
        """
        request, decision = plan.request, plan.decision
        halt = threading.Event()  # a stop sequence was seen
        gen = dict(plan.gen, stopping_criteria=halt_criteria(halt, cancel))
        t0 = time.perf_counter()
        stops = StopFilter(request.stop)
        try:
            answer, text = self._generate(plan, gen, stops, halt, on_text)
        except ExpertError as exc:  # a CoE with on_error="raise"
            self.metrics.error("expert_failed")
            raise RequestError(f"the expert failed: {exc}", status=502, type="server_error",
                               code="expert_failed") from None
        assert answer is not None
        trace = answer.trace.to_dict()
        cancelled = cancel is not None and cancel.is_set()
        if stops.stopped:
            finish = "stop"
        elif cancelled:
            finish = "cancelled"
        else:
            finish = "length" if trace["new_tokens"] >= plan.max_new_tokens else "stop"
        trace.update(rule=decision.rule, rule_reason=RULES[decision.rule],
                     map_expert=decision.routed_expert, previous_expert=decision.previous_expert,
                     switch_confidence=decision.threshold, finish_reason=finish)
        self.metrics.answer(trace, rule=decision.rule, cancelled=cancelled)
        if trace.get("error") and not cancelled and (not text or not trace.get("used_fallback_expert")):
            # nothing answered, or the answer broke off and no fallback expert took over
            self.metrics.error("expert_failed")
            what = "the expert failed mid-answer" if text else "no expert could answer"
            raise RequestError(f"{what}: {trace['error']}", status=502,
                               type="server_error", code="expert_failed")
        usage = self._usage(plan, trace, text, stops.stopped)
        result = Result(text, finish, trace, usage, cancelled)
        trace["total_s"] = max(float(trace.get("total_s") or 0.0), time.perf_counter() - t0)
        if not cancelled:
            self.router.remember(request.messages, text, trace["expert"])
        self.recent.append(result)
        return result

    def _generate(self, plan: Plan, gen: dict, stops: StopFilter, halt: threading.Event,
                  on_text: Callable[[str], None] | None):
        expert = plan.decision.expert
        if on_text is None and not plan.request.stop:
            answer = self.coe.generate(plan.chat, expert=expert, **gen)
            return answer, answer.text
        answer = None
        for item in self.coe.stream(plan.chat, expert=expert, **gen):
            if isinstance(item, str):
                out = stops.feed(item)
                if stops.stopped:
                    halt.set()  # the criterion ends generation at the next token
                if out and on_text is not None:
                    on_text(out)
            else:
                answer = item
        rest = stops.flush()
        if rest and on_text is not None:
            on_text(rest)
        return answer, stops.text

    def _usage(self, plan: Plan, trace: dict, text: str, truncated: bool) -> dict:
        prompt = plan.prompt_tokens
        if trace["expert"] != plan.decision.expert:  # the fallback expert answered
            prompt = self._prompt_tokens(trace["expert"], plan.chat)
        completion = int(trace.get("new_tokens") or 0)
        if truncated:
            counted = self.text_tokens(trace["expert"], text)
            completion = completion if counted is None else counted
        prompt = int(prompt or 0)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}
