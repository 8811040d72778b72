"""Response aggregators: sub-answers in, one final answer out.

:class:`LLMAggregator` asks an expert to synthesise the final answer from the sub-questions and
their answers; when that fails (the expert errors, or returns nothing) it falls back to
:class:`TemplateAggregator`, which lays the sub-answers out deterministically and says what is
missing. The :class:`Aggregation` records which method produced the text and why.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from workbench.compose.execute import ExecutionResult
from workbench.compose.route import routing_text
from workbench.compose.runner import Runner, call_runner
from workbench.errors import GraphError

__all__ = ["Aggregation", "TemplateAggregator", "LLMAggregator", "AGGREGATE_TEMPLATE", "get_aggregator"]


@dataclass
class Aggregation:
    """The final answer and how it was made."""

    text: str
    method: str                 # "llm" | "template"
    expert: str | None = None
    seconds: float = 0.0
    prompt: str = ""
    note: str = ""              # e.g. why the LLM aggregator fell back

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class TemplateAggregator:
    """Lay out each sub-question with its answer; list what is missing and why.

    A one-node graph returns that node's answer as is.
    """

    name = "template"

    def __call__(self, query: str, execution: ExecutionResult) -> Aggregation:
        return self.aggregate(query, execution)

    def aggregate(self, query: str, execution: ExecutionResult, *, note: str = "") -> Aggregation:
        t0 = time.perf_counter()
        graph = execution.graph
        nodes = execution.nodes
        if len(graph) == 1 and execution.complete:
            only = next(iter(nodes.values()))
            return Aggregation(only.text.strip(), "template", None, time.perf_counter() - t0, "", note)
        lines = []
        for i, nid in enumerate(graph.order(), 1):
            r = nodes[nid]
            question = routing_text(graph[nid].text)
            if r.status == "ok":
                lines.append(f"{i}. {question}\n   {r.text.strip() or '(empty answer)'}")
            else:
                lines.append(f"{i}. {question}\n   [missing: {r.status} - {r.error}]")
        text = "\n".join(lines)
        if execution.missing:
            text += (f"\n\nIncomplete: {len(execution.missing)} of {len(graph)} sub-questions have no answer "
                     f"({', '.join(execution.missing)}).")
        return Aggregation(text, "template", None, time.perf_counter() - t0, "", note)


AGGREGATE_TEMPLATE = """\
Answer the question using the answers to its parts below. Write one clear, complete answer.

Question: {query}

{parts}

Answer:"""


class LLMAggregator:
    """Synthesise the final answer with an expert; fall back to a template on failure.

    Parameters
    ----------
    runner : callable
        ``run(expert, prompt) -> text``.
    expert : str
        The expert that writes the final answer (a generalist is a good choice).
    template : str
        Prompt with ``{query}`` and ``{parts}``.
    fallback : TemplateAggregator, optional
        Used when the expert fails or returns less than ``min_chars`` characters.
    min_chars : int
        Shorter replies count as a failure.
    max_part_chars : int
        Each sub-answer is cut to this many characters in the prompt (small experts have short
        context windows; the template fallback always shows the full answers).
    """

    name = "llm"

    def __init__(self, runner: Runner, expert: str, *, template: str = AGGREGATE_TEMPLATE,
                 fallback: TemplateAggregator | None = None, min_chars: int = 1, max_part_chars: int = 600) -> None:
        for key in ("{query}", "{parts}"):
            if key not in template:
                raise GraphError(f"the aggregator template must contain {key!r}")
        self.runner = runner
        self.expert = expert
        self.template = template
        self.fallback = fallback or TemplateAggregator()
        self.min_chars = int(min_chars)
        self.max_part_chars = int(max_part_chars)

    def prompt(self, query: str, execution: ExecutionResult) -> str:
        graph = execution.graph
        parts = []
        for i, nid in enumerate(graph.order(), 1):
            r = execution.nodes[nid]
            answer = r.text.strip() if r.status == "ok" else f"(no answer: {r.status})"
            if len(answer) > self.max_part_chars:
                answer = answer[: self.max_part_chars - 1] + "…"
            parts.append(f"Part {i}: {routing_text(graph[nid].text)}\nAnswer {i}: {answer}")
        return self.template.replace("{query}", query).replace("{parts}", "\n\n".join(parts))

    def __call__(self, query: str, execution: ExecutionResult) -> Aggregation:
        return self.aggregate(query, execution)

    def aggregate(self, query: str, execution: ExecutionResult) -> Aggregation:
        if not execution.answers:
            return self.fallback.aggregate(query, execution, note="no sub-question was answered; nothing to synthesise")
        prompt = self.prompt(query, execution)
        t0 = time.perf_counter()
        try:
            text = call_runner(self.runner, self.expert, prompt).text.strip()
        except Exception as exc:
            return self.fallback.aggregate(query, execution, note=f"LLM aggregation by {self.expert!r} failed "
                                           f"({type(exc).__name__}: {exc}); used the template")
        seconds = time.perf_counter() - t0
        if len(text) < self.min_chars:
            return self.fallback.aggregate(query, execution, note=f"LLM aggregation by {self.expert!r} returned "
                                           f"{len(text)} characters; used the template")
        note = ""
        if execution.missing:
            note = f"sub-questions {', '.join(execution.missing)} had no answer"
        return Aggregation(text, "llm", self.expert, seconds, prompt, note)


def get_aggregator(spec: Any, *, runner: Runner | None = None, expert: str | None = None):
    """Resolve ``"llm"`` / ``"template"`` / an aggregator object / a callable ``(query, execution)``."""
    if spec in (None, "template"):
        return TemplateAggregator()
    if spec == "llm":
        if runner is None or expert is None:
            raise GraphError("aggregator='llm' needs a runner and an expert to write the final answer")
        return LLMAggregator(runner, expert)
    if isinstance(spec, str):
        raise GraphError(f"unknown aggregator {spec!r}; use 'llm' (with template fallback) or 'template'")
    if callable(spec):
        return spec
    raise GraphError(f"an aggregator must be 'llm', 'template' or a callable, got {type(spec).__name__}")
