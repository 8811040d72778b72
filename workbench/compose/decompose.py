"""Decomposers: a query in, a :class:`~workbench.compose.graph.QueryGraph` out.

* :class:`RuleDecomposer` is deterministic and offline: it splits compound questions on question
  marks, sentence ends and conjunctions ("..., and then ...", "; ", "... and why ...") and turns
  references to earlier parts ("it", "the result", "the first part", "both") into dependencies
  with ``{{id}}`` placeholders.
* :class:`LLMDecomposer` asks an expert (through a runner) for the graph as JSON, parses and
  validates it, retries a bounded number of times with the error fed back, then raises
  :class:`DecomposeError` with the last error and output.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from workbench.compose.graph import PLACEHOLDER, QueryGraph, SubQuery
from workbench.compose.runner import Runner, call_runner
from workbench.errors import DecomposeError, GraphError
from workbench.safeio import short

__all__ = ["RuleDecomposer", "LLMDecomposer", "DecomposeError", "DECOMPOSE_TEMPLATE", "GRAPH_SCHEMA", "graph_schema", "parse_graph_json",
           "get_decomposer"]


# ----------------------------------------------------------------------------------------------
# rule-based

_QUESTION_END = re.compile(r"(?<=[?？])\s*")
_SENTENCE_END = re.compile(r"(?<=[.!。！])\s+(?=[A-Z¿¡\"'(\u4e00-\u9fff])|(?<=[。！])")
# conjunctions that always start a new part
_STRONG = re.compile(
    r"\s*;\s*|,\s*(?:and\s+)?then\s+|\s+and\s+then\s+|,\s*(?:and\s+)?also\s+|\s+and\s+also\s+|"
    r",?\s+after\s+that,?\s+|,?\s+afterwards,?\s+|,?\s+y\s+luego\s+|,?\s+und\s+dann\s+|,?\s+然后",
    re.IGNORECASE,
)
# words that start a clause of their own (a second question or instruction after "and"/", ")
_CLAUSE_STARTERS = (
    "what|how|why|who|whom|whose|when|where|which|is|are|was|were|can|could|should|would|will|does|do|did|"
    "explain|describe|write|translate|list|give|summarize|summarise|compute|calculate|solve|tell|name|"
    "compare|find|show|suggest|recommend|convert|define|estimate|prove|derive|rewrite|make|create|"
    "qué|cómo|por qué|cuál|cuándo|dónde|quién|was|wie|warum|wer|wann|wo|welche|welcher"
)
_QUESTION_WORD = re.compile(
    r"^(?:what|how|why|who|whom|whose|when|where|which|is|are|was|were|can|could|should|would|will|does|do|did|"
    r"qué|cómo|por qué|cuál|cuándo|dónde|quién|was|wie|warum|wer|wann|wo|welche|welcher)\b", re.IGNORECASE)
_SOFT = re.compile(rf"(?:,\s*and|\s+and|,\s*y|\s+y|,\s*und|\s+und|,\s*but|\s+but|,)\s+(?=(?:{_CLAUSE_STARTERS})\b)", re.IGNORECASE)
# expressions that refer back to an earlier part
_REF_ALL = re.compile(r"\b(both|all of (?:them|these|those|the above)|each of (?:them|these)|combine|together|the answers?\s+above)\b", re.IGNORECASE)
_REF_ORDINAL = re.compile(
    r"\b(?:the\s+)?(first|second|third|fourth|fifth|1st|2nd|3rd|4th|5th)\s+(?:part|question|answer|result|step|one)\b|"
    r"\b(?:part|question|step|answer)\s+(\d+)\b", re.IGNORECASE)
_REF_PREV = re.compile(
    r"\b(it|its|it's|that|this|these|those|them|they|their|he|she|his|her|him|hers|the (?:result|answer|above|previous|former|latter|same|output|"
    r"solution|number|value|text|code|function|story|poem|translation|summary|list)|previous|earlier|above|"
    r"eso|esto|ello|dies|diese|dieses)\b|^(?:then|and then|why|how so|so|luego|por qué|dann|warum)\b|它|这个|那个",
    re.IGNORECASE)
_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "fifth": 5, "5th": 5}


_SEQUENTIAL = re.compile(r"\b(?:then|after that|afterwards|luego|dann)\b|然后", re.IGNORECASE)


def _clean(part: str) -> tuple[str, bool]:
    """Strip separators and leading conjunctions; say whether a sequencing word ("then") led in."""
    part = part.strip().strip(",;:-–— ").strip()
    lead = re.match(r"^(?:(?:and|also|then|so|but|y|und|luego|dann)\s+)+", part, flags=re.IGNORECASE)
    sequential = False
    if lead:
        sequential = bool(_SEQUENTIAL.search(lead.group(0)))
        part = part[lead.end():].strip()
    if part and part[0].islower():
        part = part[0].upper() + part[1:]
    return part, sequential


def _split_keep(pattern: re.Pattern, text: str) -> list[tuple[str, str]]:
    """Split ``text`` on ``pattern``; each piece with the separator that preceded it ('' for the first)."""
    out, pos, sep = [], 0, ""
    for m in pattern.finditer(text):
        if m.end() == m.start():
            continue
        out.append((text[pos:m.start()], sep))
        pos, sep = m.end(), m.group(0)
    out.append((text[pos:], sep))
    return out


@dataclass
class RuleDecomposer:
    """Split compound questions deterministically (no model needed; the offline default).

    Parameters
    ----------
    max_parts : int
        At most this many sub-queries; the rest is merged into the last one.
    min_words : int
        Fragments shorter than this are merged into the previous part unless they end in "?".
    context_label : str
        Label written before an injected upstream answer.

    Examples
    --------
    >>> g = RuleDecomposer()("What is 12 * 7? Then translate the result into Spanish.")
    >>> [n.text.splitlines()[0] for n in g], g.dependencies()["q2"]
    (['What is 12 * 7?', 'Translate the result into Spanish.'], ['q1'])
    """

    max_parts: int = 8
    min_words: int = 2
    context_label: str = "Earlier answer"
    name: str = field(default="rule", init=False)

    def split(self, query: str) -> list[str]:
        """The parts of ``query`` (before dependency detection)."""
        return [text for text, _ in self._split(query)]

    def _split(self, query: str) -> list[tuple[str, bool]]:
        text = re.sub(r"\s+", " ", str(query)).strip()
        parts: list[tuple[str, bool]] = []
        for chunk in _QUESTION_END.split(text):
            is_question = chunk.rstrip().endswith(("?", "？"))
            for sentence in _SENTENCE_END.split(chunk):
                for strong, sep in _split_keep(_STRONG, sentence):
                    for soft in _SOFT.split(strong):
                        soft, sequential = _clean(soft)
                        if not soft:
                            continue
                        sequential = sequential or bool(_SEQUENTIAL.search(sep))
                        sep = ""
                        if is_question and soft[-1].isalnum() and _QUESTION_WORD.match(soft):
                            soft += "?"
                        parts.append((soft, sequential))
        merged: list[tuple[str, bool]] = []
        for part, sequential in parts:
            is_short = len(part.split()) < self.min_words and not part.endswith(("?", "？"))
            if merged and is_short:
                merged[-1] = (f"{merged[-1][0]} {part}", merged[-1][1])
            else:
                merged.append((part, sequential))
        if len(merged) > self.max_parts:
            tail = " ".join(p for p, _ in merged[self.max_parts - 1:])
            merged = merged[: self.max_parts - 1] + [(tail, merged[self.max_parts - 1][1])]
        return merged

    def references(self, parts: list[str], sequential: list[bool] | None = None) -> list[list[int]]:
        """For each part, the indices of the earlier parts it refers to.

        ``sequential[i]`` says part ``i`` was introduced by "then" (or similar): it follows the
        part before it even without a pronoun.
        """
        out: list[list[int]] = []
        for i, part in enumerate(parts):
            refs: list[int] = []
            if i > 0 and sequential is not None and sequential[i]:
                refs = [i - 1]
            if i > 0 and not refs:
                if _REF_ALL.search(part):
                    refs = list(range(i))
                else:
                    for m in _REF_ORDINAL.finditer(part):
                        k = _ORDINALS.get((m.group(1) or "").lower()) or int(m.group(2) or 0)
                        refs.append(k - 1 if 1 <= k <= i else i - 1)
                    if not refs and _REF_PREV.search(part):
                        refs = [i - 1]
            out.append(sorted(set(refs)))
        return out

    def __call__(self, query: str) -> QueryGraph:
        return self.decompose(query)

    def decompose(self, query: str) -> QueryGraph:
        """Build the query graph of ``query`` (one node when nothing splits)."""
        if not isinstance(query, str) or not query.strip():
            raise GraphError("the query is empty; give the question to decompose")
        pieces = self._split(query) or [(query.strip(), False)]
        parts = [p for p, _ in pieces]
        refs = self.references(parts, [seq for _, seq in pieces])
        nodes = []
        for i, (part, deps) in enumerate(zip(parts, refs)):
            ids = [f"q{d + 1}" for d in deps]
            text = PLACEHOLDER.sub(lambda m: m.group(0).replace("{", "(").replace("}", ")"), part)
            if ids:
                text += "".join(f"\n{self.context_label}: {{{{{d}}}}}" for d in ids)
            nodes.append(SubQuery(f"q{i + 1}", text, ids, meta={"source": "rule"}))
        return QueryGraph(nodes, query=query)


# ----------------------------------------------------------------------------------------------
# LLM-based

DECOMPOSE_TEMPLATE = """\
Do not answer the question. Split it into the fewest self-contained sub-questions, copying its
words. Reply with JSON only: one entry per sub-question, q1, q2, ... in order, each with its text
and, after the first, depends_on: the earlier entries whose answers it needs.

Question: What is the capital of Italy, and how many people live there?
JSON: {"q1": {"text": "What is the capital of Italy?"}, "q2": {"text": "How many people live in that city?", "depends_on": ["q1"]}}

Question: Write a haiku about autumn and explain what photosynthesis is.
JSON: {"q1": {"text": "Write a haiku about autumn."}, "q2": {"text": "Explain what photosynthesis is.", "depends_on": []}}

Question: {query}
JSON:"""

#: Most sub-questions the LLM decomposer may write (the schema allows 1 to this many).
MAX_LLM_NODES = 4


def graph_schema(max_nodes: int = MAX_LLM_NODES, texts: list[str] | None = None) -> dict:
    """The JSON schema of a decomposition, valid by construction.

    One of ``max_nodes`` object shapes ``{"q1": {...}, ..., "qn": {...}}`` (keys in order), where
    ``qi``'s ``depends_on`` may only name ``q1`` .. ``q(i-1)``. Decoding constrained to it cannot
    produce a cycle, a dangling reference, a duplicate id or malformed JSON (placeholders the model
    writes into a text are neutralised when the reply is read; each dependency's answer is inserted
    after the text instead).

    With ``texts``, each entry's text must be one of them (span selection: the model groups and
    orders given parts of the query and says which need which; it cannot rewrite them).
    """
    def node(i: int) -> dict:
        text = {"type": "string", "enum": list(texts)} if texts else {"type": "string", "minLength": 3, "maxLength": 200}
        if i == 1:  # the first entry depends on nothing: it has no depends_on at all
            return {"type": "object", "properties": {"text": text}, "required": ["text"]}
        earlier = [f"q{k}" for k in range(1, i)]
        deps = {"type": "array", "items": {"type": "string", "enum": earlier}, "maxItems": len(earlier)}
        return {"type": "object", "properties": {"text": text, "depends_on": deps},
                "required": ["text", "depends_on"]}

    shapes = []
    for n in range(1, int(max_nodes) + 1):
        keys = [f"q{i}" for i in range(1, n + 1)]
        shapes.append({"type": "object", "properties": {k: node(i) for i, k in enumerate(keys, 1)},
                       "required": keys})
    return {"anyOf": shapes}


#: The schema the LLM decomposer's decoding is constrained to (see :func:`graph_schema`).
GRAPH_SCHEMA = graph_schema()

#: Generation settings of a constrained decomposition: enough tokens for four entries, greedy, and
#: no repetition penalty (JSON repeats its punctuation by design).
CONSTRAINED_GEN = {"json_schema": GRAPH_SCHEMA, "max_new_tokens": 320, "do_sample": False,
                   "repetition_penalty": 1.0}

RETRY_SUFFIX = "\n\nYour previous reply could not be used: {error}\nReply with the JSON object only.\nJSON:"


_KEYED_ID = re.compile(r"^q[1-9][0-9]*$")


def _nodes_from_keyed(data: dict, context_label: str = "Earlier answer") -> list[dict] | None:
    """``{"q1": {"text", "depends_on"}, ...}`` (the constrained form) as a node list; None if not that form.

    Each dependency's answer is appended to the text as ``<label>: {{id}}`` unless the text already
    holds the placeholder.
    """
    if not data or not all(isinstance(k, str) and _KEYED_ID.match(k) and isinstance(v, dict) for k, v in data.items()):
        return None
    nodes = []
    seen: dict[str, str] = {}   # text -> id of the first entry with it
    alias: dict[str, str] = {}  # id of a repeated entry -> the first one's id
    for key, value in data.items():
        deps = value.get("depends_on") or []
        # placeholders come from depends_on only: braces the model wrote are not references
        text = PLACEHOLDER.sub(lambda m: m.group(0).replace("{", "(").replace("}", ")"), str(value.get("text", "")))
        if text.strip() in seen:  # the same sub-question twice (small models repeat): keep the first
            alias[key] = seen[text.strip()]
            continue
        seen[text.strip()] = key
        deps = list(dict.fromkeys(alias.get(d, d) for d in deps)) if isinstance(deps, list) else deps
        for dep in deps if isinstance(deps, list) else []:
            if f"{{{{{dep}}}}}" not in text:
                text += f"\n{context_label}: {{{{{dep}}}}}"
        nodes.append({"id": key, "text": text, "depends_on": deps})
    return nodes


def parse_graph_json(text: str, query: str = "") -> QueryGraph:
    """Find the first JSON object (or list) in ``text`` and validate it as a :class:`QueryGraph`.

    Accepts ``{"nodes": [...]}`` and the constrained decoder's keyed form ``{"q1": {"text": ...,
    "depends_on": []}, ...}``. Tolerates prose and Markdown code fences around the JSON. Raises
    :class:`GraphError` naming what was wrong.

    >>> parse_graph_json('Sure! ```json\\n{"nodes": [{"id": "q1", "text": "Hi?"}]}\\n```').ids
    ['q1']
    """
    if not isinstance(text, str) or not text.strip():
        raise GraphError("the decomposer's reply is empty; expected a JSON object with a 'nodes' list")
    try:
        return _parse_graph_json(text, query)
    except GraphError:
        raise
    except RecursionError:
        raise GraphError("the decomposer's reply nests brackets too deeply to be a query graph: "
                         f"{short(text.strip())}") from None
    except Exception as exc:  # noqa: BLE001 - whatever else odd JSON makes the graph code raise is malformed
        raise GraphError(f"the decomposer's reply is not a usable query graph ({type(exc).__name__}: "
                         f"{short(str(exc))[1:-1]}): {short(text.strip())}") from None


#: Most brackets of a reply tried as the start of the graph's JSON (prose before it has few).
_MAX_JSON_STARTS = 1000


def _parse_graph_json(text: str, query: str) -> QueryGraph:
    decoder = json.JSONDecoder()
    last_error = None
    for n, m in enumerate(re.finditer(r"[\[{]", text)):
        if n >= _MAX_JSON_STARTS:  # each failed try costs O(len(text)): bound the scan of a runaway reply
            break
        try:
            data, _end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError as exc:
            last_error = exc
            continue
        # a RecursionError (brackets nested past the interpreter's limit) propagates: every later
        # bracket of the same run would hit it again, so the reply is given up at once
        if isinstance(data, dict) and "nodes" not in data:
            keyed = _nodes_from_keyed(data)
            if keyed is None:
                continue
            data = {"nodes": keyed}
        graph = QueryGraph.from_dict(data)
        if query and not graph.query:
            graph.query = query
        return graph
    why = f" (JSON error: {last_error.msg})" if last_error is not None else ""
    raise GraphError(f"no JSON object with a 'nodes' list in the decomposer's reply{why}: "
                     f"{short(text.strip().replace(chr(10), ' '), 120)}")


class LLMDecomposer:
    """Ask an expert to write the query graph as JSON; validate; retry; then fail clearly.

    Parameters
    ----------
    runner : callable
        ``run(expert, prompt) -> text`` (e.g. :class:`~workbench.compose.runner.PoolRunner`).
    expert : str
        The expert that decomposes (any expert in the pool; a strong generalist works best).
    max_attempts : int
        Tries in all (the first plus retries); each retry includes the previous error.
    template : str
        The prompt; ``{query}`` is replaced by the query.
    constrained : bool
        Constrain decoding to :func:`graph_schema` (default), so the reply is always a valid
        graph in well-formed JSON, even from a small model. Needs a runner that takes generation
        settings (``PoolRunner``, ``ProcessPoolRunner``); a plain callable runs unconstrained.
    spans : bool
        With ``constrained``: each sub-question's text must be one of the query's parts as the
        rule-based splitter cuts them (or the whole query), so the model chooses how many nodes,
        which parts and which dependencies, but cannot answer instead of splitting (which small
        models do). ``False`` lets it write free text (better with large models).

    Raises
    ------
    DecomposeError
        After ``max_attempts`` unusable replies; the message gives the last error and reply, and
        ``.attempts`` records every try.

    Examples
    --------
    >>> dec = LLMDecomposer(PoolRunner(pool), expert="demo-generalist-20m")   # doctest: +SKIP
    >>> graph = dec("What is 2+2, and what is it squared?")                   # doctest: +SKIP
    """

    name = "llm"

    def __init__(self, runner: Runner, expert: str, *, max_attempts: int = 3, template: str = DECOMPOSE_TEMPLATE,
                 constrained: bool = True, spans: bool = True) -> None:
        if int(max_attempts) < 1:
            raise GraphError(f"max_attempts must be at least 1, got {max_attempts!r}")
        if "{query}" not in template:
            raise GraphError("the decomposer template must contain '{query}' where the question goes")
        self.runner = runner
        self.expert = expert
        self.max_attempts = int(max_attempts)
        self.template = template
        self.constrained = bool(constrained)
        self.spans = bool(spans)
        self.attempts: list[dict] = []

    def generation(self, query: str) -> dict:
        """The generation settings of one attempt: the schema to decode to (or none)."""
        if not self.constrained:
            return {}
        if not self.spans:
            return dict(CONSTRAINED_GEN)
        parts = [p.replace('"', "'").replace("\\", "/") for p in RuleDecomposer().split(query)]
        whole = re.sub(r"\s+", " ", query).strip().replace('"', "'").replace("\\", "/")
        texts = list(dict.fromkeys([*parts, whole])) if len(parts) > 1 else [whole]
        return {**CONSTRAINED_GEN, "json_schema": graph_schema(min(MAX_LLM_NODES, len(texts)), texts)}

    def prompt(self, query: str, error: str | None = None) -> str:
        base = self.template.replace("{query}", query)
        return base if error is None else base + RETRY_SUFFIX.replace("{error}", error)

    def __call__(self, query: str) -> QueryGraph:
        return self.decompose(query)

    def decompose(self, query: str) -> QueryGraph:
        if not isinstance(query, str) or not query.strip():
            raise GraphError("the query is empty; give the question to decompose")
        self.attempts = []
        error: str | None = None
        reply = ""
        for attempt in range(1, self.max_attempts + 1):
            prompt = self.prompt(query, error)
            t0 = time.perf_counter()
            try:
                reply = call_runner(self.runner, self.expert, prompt, **self.generation(query)).text
            except Exception as exc:  # the expert itself failed: counts as an attempt
                reply, error = "", f"expert {self.expert!r} failed: {short(str(exc), 200)[1:-1]}"
                self.attempts.append({"attempt": attempt, "reply": reply, "error": error, "seconds": time.perf_counter() - t0})
                continue
            try:
                graph = parse_graph_json(reply, query)
            except Exception as exc:  # noqa: BLE001 - any unparsable reply is malformed output: retry
                error = (short(str(exc), 300)[1:-1] if isinstance(exc, GraphError)
                         else f"unusable reply ({type(exc).__name__})")
                self.attempts.append({"attempt": attempt, "reply": reply, "error": error, "seconds": time.perf_counter() - t0})
                continue
            self.attempts.append({"attempt": attempt, "reply": reply, "error": None, "seconds": time.perf_counter() - t0})
            for node in graph:
                node.meta.setdefault("source", f"llm:{self.expert}")
            return graph
        snippet = short(reply.strip().replace("\n", " "), 160)
        raise DecomposeError(
            f"the LLM decomposer (expert {self.expert!r}) gave no valid query graph in {self.max_attempts} "
            f"attempt(s); last error: {error}; last reply: {snippet}. Fix: use a stronger expert for "
            "decomposition, raise max_attempts, or use the rule-based decomposer (decomposer='rule')",
            self.attempts,
        )


def get_decomposer(spec: Any, *, runner: Runner | None = None, expert: str | None = None, **kwargs: Any):
    """Resolve ``"rule"`` / ``"llm"`` / a decomposer object / a callable ``query -> QueryGraph``."""
    if spec is None or spec == "rule":
        return RuleDecomposer(**kwargs)
    if spec == "llm":
        if runner is None or expert is None:
            raise GraphError("decomposer='llm' needs a runner and an expert to ask (e.g. the generalist)")
        return LLMDecomposer(runner, expert, **kwargs)
    if isinstance(spec, str):
        raise GraphError(f"unknown decomposer {spec!r}; use 'rule' (offline, deterministic) or 'llm'")
    if callable(spec):
        return spec
    raise GraphError(f"a decomposer must be 'rule', 'llm' or a callable query -> QueryGraph, got {type(spec).__name__}")
