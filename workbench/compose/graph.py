"""The query graph: sub-queries, their dependencies, assigned experts and answer placeholders.

A :class:`QueryGraph` is a directed acyclic graph of :class:`SubQuery` nodes. A node's text may
hold placeholders ``{{id}}`` that are replaced by the answer of node ``id`` before it runs, so a
dependent sub-query sees what its upstream nodes said. A placeholder implies a dependency: it
does not have to be listed in ``depends_on`` as well.

Examples
--------
>>> g = QueryGraph.from_dict({"query": "Capital of France, and its population?", "nodes": [
...     {"id": "q1", "text": "What is the capital of France?"},
...     {"id": "q2", "text": "What is the population of {{q1}}?"}]})
>>> g.order()
['q1', 'q2']
>>> g.fill("q2", {"q1": "Paris"})
'What is the population of Paris?'
>>> g.depth, g.width
(2, 1)
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import GraphError
from workbench.safeio import short, short_list

__all__ = ["SubQuery", "QueryGraph", "PLACEHOLDER", "critical_path"]

#: ``{{id}}`` in a sub-query's text: replaced by the answer of node ``id``.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
_ID = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class SubQuery:
    """One node of a :class:`QueryGraph`.

    Parameters
    ----------
    id : str
        Unique node id (letters, digits, ``_``, ``-``, ``.``), e.g. ``"q1"``.
    text : str
        The sub-query; may hold ``{{other_id}}`` placeholders for upstream answers.
    depends_on : list of str
        Ids of nodes whose answers this one needs (placeholders are added automatically).
    expert : str, optional
        The expert assigned to answer it (set by a node router or by hand).
    category : str, optional
        The category the router saw, when routing went through the CoE router.
    meta : dict
        Anything else (routing scores, decomposer notes); kept in the JSON round trip.
    """

    id: str
    text: str
    depends_on: list[str] = field(default_factory=list)
    expert: str | None = None
    category: str | None = None
    meta: dict = field(default_factory=dict)

    @property
    def placeholders(self) -> list[str]:
        """Node ids referenced as ``{{id}}`` in the text, in order of first use."""
        return list(dict.fromkeys(PLACEHOLDER.findall(self.text)))

    @property
    def dependencies(self) -> list[str]:
        """``depends_on`` plus every placeholder, without duplicates."""
        return list(dict.fromkeys([*self.depends_on, *self.placeholders]))

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "text": self.text, "depends_on": list(self.depends_on)}
        if self.expert is not None:
            out["expert"] = self.expert
        if self.category is not None:
            out["category"] = self.category
        if self.meta:
            out["meta"] = dict(self.meta)
        return out


class QueryGraph:
    """A validated DAG of sub-queries.

    Parameters
    ----------
    nodes : iterable of SubQuery or dict
        The nodes, in the order they were written (kept for display and ties).
    query : str
        The original query the graph decomposes.
    validate : bool
        Check the graph now (default); raises :class:`~workbench.errors.GraphError` with the node
        and the fix for empty sub-queries, duplicate ids, unknown references and cycles.

    Examples
    --------
    >>> g = QueryGraph([SubQuery("a", "2+2?"), SubQuery("b", "Double {{a}}.")], query="...")
    >>> QueryGraph.from_json(g.to_json()).to_dict() == g.to_dict()
    True
    """

    def __init__(self, nodes: Iterable[SubQuery | Mapping], query: str = "", *, validate: bool = True) -> None:
        self.query = str(query or "")
        self.nodes: dict[str, SubQuery] = {}
        for i, node in enumerate(nodes):
            node = node if isinstance(node, SubQuery) else _node_from_dict(node, i)
            if node.id in self.nodes:
                raise GraphError(f"two nodes have the id {short(node.id)}; node ids must be unique (rename one, e.g. {short(node.id)}-2)")
            self.nodes[node.id] = node
        if validate:
            self.validate()

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping) -> "QueryGraph":
        """Build from ``{"query": ..., "nodes": [{"id", "text", "depends_on", "expert"?}, ...]}``.

        A bare list of node dicts is accepted too.
        """
        if isinstance(data, list):
            data = {"nodes": data}
        if not isinstance(data, Mapping):
            raise GraphError(f"a query graph must be a JSON object with a 'nodes' list, got {type(data).__name__}")
        if "nodes" not in data:
            raise GraphError(f"a query graph needs a 'nodes' list; got keys {short_list(sorted(map(str, data)), quote=True)}")
        nodes = data["nodes"]
        if not isinstance(nodes, list):
            raise GraphError(f"'nodes' must be a list of sub-query objects, got {type(nodes).__name__}")
        return cls(nodes, query=str(data.get("query") or ""))

    @classmethod
    def from_json(cls, text: str) -> "QueryGraph":
        """Parse :meth:`to_json` output (or any JSON of the same shape)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GraphError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        return cls.from_dict(data)

    @classmethod
    def single(cls, query: str, *, id: str = "q1") -> "QueryGraph":
        """A one-node graph that answers ``query`` as is."""
        return cls([SubQuery(id, query)], query=query)

    def to_dict(self) -> dict:
        return {"query": self.query, "nodes": [n.to_dict() for n in self.nodes.values()]}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def copy(self) -> "QueryGraph":
        return QueryGraph.from_dict(self.to_dict())

    # -- validation -----------------------------------------------------------------------------

    def validate(self) -> "QueryGraph":
        """Raise :class:`GraphError` unless the graph is a non-empty DAG of non-empty sub-queries."""
        if not self.nodes:
            raise GraphError("the query graph has no nodes; a graph needs at least one sub-query")
        known = list(self.nodes)
        for node in self.nodes.values():
            if not _ID.match(node.id):
                raise GraphError(f"node id {short(node.id)} is not allowed; use letters, digits, '_', '-' or '.' (e.g. 'q1')")
            if not isinstance(node.text, str) or not node.text.strip():
                raise GraphError(f"node {short(node.id)} has an empty sub-query; give it the question it should answer")
            if not isinstance(node.depends_on, list) or not all(isinstance(d, str) for d in node.depends_on):
                raise GraphError(f"node {short(node.id)}: depends_on must be a list of node ids, got {short(node.depends_on)}")
            for dep in node.depends_on:
                if dep not in self.nodes:
                    raise GraphError(f"node {short(node.id)} depends on unknown node {short(dep)}; known nodes: {short_list(known)}")
            for ref in node.placeholders:
                if ref not in self.nodes:
                    raise GraphError(f"node {short(node.id)} uses placeholder {{{{{ref}}}}} but there is no node {short(ref)}; "
                                     f"known nodes: {short_list(known)}")
            if node.id in node.dependencies:
                raise GraphError(f"node {short(node.id)} depends on itself; remove {short(node.id)} from its depends_on/placeholders")
        cycle = self._find_cycle()
        if cycle:
            raise GraphError(f"the query graph has a cycle: {' needs '.join(cycle)}; a sub-query cannot (indirectly) "
                             "need its own answer, so remove one of these dependencies")
        return self

    def _find_cycle(self) -> list[str] | None:
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(nid: str) -> list[str] | None:
            state[nid] = 1
            stack.append(nid)
            for dep in self.nodes[nid].dependencies:
                if dep not in self.nodes:
                    continue
                if state.get(dep) == 1:
                    return stack[stack.index(dep):] + [dep]
                if dep not in state:
                    found = visit(dep)
                    if found:
                        return found
            stack.pop()
            state[nid] = 2
            return None

        for nid in self.nodes:
            if nid not in state:
                found = visit(nid)
                if found:
                    # report in dependency direction: a needs b needs ... needs a
                    return found
        return None

    # -- structure ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self):
        return iter(self.nodes.values())

    def __getitem__(self, node_id: str) -> SubQuery:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphError(f"no node {short(node_id)}; known nodes: {short_list(self.nodes)}") from None

    def __repr__(self) -> str:
        return f"QueryGraph({len(self)} nodes, depth={self.depth}, width={self.width}, query={self.query[:40]!r})"

    @property
    def ids(self) -> list[str]:
        return list(self.nodes)

    def dependencies(self) -> dict[str, list[str]]:
        """Node id -> ids it needs (``depends_on`` and placeholders); the input ``graphlib`` wants."""
        return {nid: n.dependencies for nid, n in self.nodes.items()}

    def dependents(self) -> dict[str, list[str]]:
        """Node id -> ids of the nodes that need it."""
        out: dict[str, list[str]] = {nid: [] for nid in self.nodes}
        for nid, deps in self.dependencies().items():
            for d in deps:
                out[d].append(nid)
        return out

    def edges(self) -> list[tuple[str, str]]:
        """``(upstream, downstream)`` pairs."""
        return [(d, nid) for nid, deps in self.dependencies().items() for d in deps]

    def order(self) -> list[str]:
        """A topological order (stable: ties keep the written order)."""
        return [nid for level in self.levels() for nid in level]

    def levels(self) -> list[list[str]]:
        """Nodes grouped by depth: level 0 has no dependencies, level k needs something at level k-1."""
        level = self.level_of()
        out: list[list[str]] = [[] for _ in range(max(level.values()) + 1)] if level else []
        for nid in self.nodes:
            out[level[nid]].append(nid)
        return out

    def level_of(self) -> dict[str, int]:
        deps = self.dependencies()
        memo: dict[str, int] = {}

        def lvl(nid: str) -> int:
            if nid not in memo:
                memo[nid] = 1 + max((lvl(d) for d in deps[nid]), default=-1)
            return memo[nid]

        for nid in self.nodes:
            lvl(nid)
        return memo

    @property
    def depth(self) -> int:
        """Number of levels (the longest chain of dependent sub-queries)."""
        return len(self.levels())

    @property
    def width(self) -> int:
        """Size of the largest level (how many nodes can run at once at most, level by level)."""
        return max((len(level) for level in self.levels()), default=0)

    def ancestors(self, node_id: str) -> set[str]:
        """Every node ``node_id`` depends on, directly or through others."""
        return _reachable(node_id, self.dependencies())

    def descendants(self, node_id: str) -> set[str]:
        """Every node that depends on ``node_id``, directly or through others."""
        return _reachable(node_id, self.dependents())

    def sinks(self) -> list[str]:
        """Nodes nothing depends on (their answers are what the aggregator leans on most)."""
        down = self.dependents()
        return [nid for nid in self.nodes if not down[nid]]

    def experts(self) -> dict[str, str | None]:
        return {nid: n.expert for nid, n in self.nodes.items()}

    # -- placeholders ---------------------------------------------------------------------------

    def fill(self, node_id: str, answers: Mapping[str, str]) -> str:
        """The text of ``node_id`` with every ``{{id}}`` replaced by ``answers[id]``.

        Raises
        ------
        GraphError
            When an upstream answer is missing (the node would run too early).
        """
        node = self[node_id]

        def sub(match: re.Match) -> str:
            ref = match.group(1)
            if ref not in answers:
                raise GraphError(f"node {short(node_id)} needs the answer of {short(ref)}, which is not available yet; "
                                 "run nodes in dependency order (QueryGraph.order())")
            return str(answers[ref]).strip()

        return PLACEHOLDER.sub(sub, node.text)

    # -- timing ---------------------------------------------------------------------------------

    def critical_path(self, durations: Mapping[str, float]) -> tuple[float, list[str]]:
        """The longest dependency chain weighted by ``durations`` (seconds per node id).

        Returns
        -------
        (seconds, path)
            The chain's total duration and its node ids from first to last. No parallel schedule
            of these nodes can finish faster than this.
        """
        return critical_path(self.dependencies(), durations)


def critical_path(dependencies: Mapping[str, Iterable[str]], durations: Mapping[str, float]) -> tuple[float, list[str]]:
    """Longest path through a DAG given per-node ``durations`` (missing nodes count as 0 s).

    >>> critical_path({"a": [], "b": ["a"], "c": ["a"]}, {"a": 1.0, "b": 2.0, "c": 0.5})
    (3.0, ['a', 'b'])
    """
    from graphlib import CycleError, TopologicalSorter

    deps = {k: list(v) for k, v in dependencies.items()}
    try:
        order = list(TopologicalSorter(deps).static_order())
    except CycleError as exc:
        raise GraphError(f"cannot compute a critical path: the graph has a cycle {exc.args[1]}") from None
    finish: dict[str, float] = {}
    best_prev: dict[str, str | None] = {}
    for nid in order:
        prev = max(deps.get(nid, []), key=lambda d: finish[d], default=None)
        start = finish[prev] if prev is not None else 0.0
        finish[nid] = start + float(durations.get(nid, 0.0) or 0.0)
        best_prev[nid] = prev
    if not finish:
        return 0.0, []
    end = max(finish, key=lambda k: finish[k])
    path = [end]
    while best_prev[path[-1]] is not None:
        path.append(best_prev[path[-1]])
    return float(finish[end]), path[::-1]


def _node_from_dict(data: Any, index: int) -> SubQuery:
    if not isinstance(data, Mapping):
        raise GraphError(f"node #{index + 1} must be an object with 'id' and 'text', got {type(data).__name__}: {short(data)}")
    nid = data.get("id", f"q{index + 1}")
    nid = str(nid).strip()
    text = data.get("text", data.get("query", data.get("question")))
    if text is None:
        raise GraphError(f"node {short(nid)} (#{index + 1}) has no 'text'; give each node the sub-query it should answer")
    if not isinstance(text, str):
        raise GraphError(f"node {short(nid)}: 'text' must be a string, got {type(text).__name__}")
    deps = data.get("depends_on", data.get("dependencies", []))
    if deps is None:
        deps = []
    if isinstance(deps, (str, int)):
        deps = [deps]
    if not isinstance(deps, list):
        raise GraphError(f"node {short(nid)}: depends_on must be a list of node ids, got {short(deps)}")
    known = {"id", "text", "query", "question", "depends_on", "dependencies", "expert", "category", "meta"}
    meta = dict(data.get("meta") or {})
    meta.update({k: v for k, v in data.items() if k not in known})
    expert = data.get("expert")
    category = data.get("category")
    return SubQuery(nid, text, [str(d) for d in deps], None if expert is None else str(expert),
                    None if category is None else str(category), meta)


def _reachable(start: str, edges: Mapping[str, Iterable[str]]) -> set[str]:
    """Nodes reachable from ``start`` along ``edges`` (``start`` itself excluded unless on a cycle)."""
    seen: set[str] = set()
    todo = list(edges[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    return seen
