"""Comp-LLM: compose experts *within* one query (arXiv 2511.22955).

A query is split into sub-queries with an explicit dependency graph (:class:`QueryGraph`), each
sub-query is given an expert (by similarity to the experts' descriptions, or through the CoE's
router and category-to-expert map), the nodes whose dependencies are met run in parallel within
what the expert pool can hold (:class:`GraphExecutor`), and an aggregator writes the final answer.

Examples
--------
>>> from workbench.compose import QueryGraph, RuleDecomposer, GraphExecutor
>>> g = RuleDecomposer()("What is 12 * 7? Then translate the result into Spanish.")
>>> g.ids, g.dependencies()["q2"]
(['q1', 'q2'], ['q1'])
>>> for node in g: node.expert = "echo"
>>> GraphExecutor(lambda expert, prompt: prompt.splitlines()[0]).run(g).answers["q2"]
'Translate the result into Spanish.'

With the offline demo (tiny trained experts)::

    from workbench.compose import Composer
    from workbench.demo import build_demo_bundle
    result = Composer.from_bundle(build_demo_bundle()).run("Solve 2x+3=11, and explain it in Spanish.")
    print(result.summary())

This package imports no heavy library at import time (torch only when generating, numpy when
routing by similarity).
"""
from __future__ import annotations

from workbench.compose.aggregate import AGGREGATE_TEMPLATE, Aggregation, LLMAggregator, TemplateAggregator
from workbench.compose.decompose import DECOMPOSE_TEMPLATE, DecomposeError, LLMDecomposer, RuleDecomposer, parse_graph_json
from workbench.compose.execute import (ExecutionResult, GraphExecutor, NodeResult, execute_graph, resolve_torch_threads,
                                      torch_threads)
from workbench.compose.graph import PLACEHOLDER, QueryGraph, SubQuery, critical_path
from workbench.compose.pipeline import ComposeResult, Composer, compose
from workbench.compose.route import CoENodeRouter, NodeRoute, SimilarityNodeRouter, assign_experts, routing_text
from workbench.compose.runner import PoolRunner, ProcessPoolRunner, RunOutput, as_runner, call_runner

__all__ = [
    "QueryGraph", "SubQuery", "PLACEHOLDER", "critical_path",
    "RuleDecomposer", "LLMDecomposer", "DecomposeError", "DECOMPOSE_TEMPLATE", "parse_graph_json",
    "SimilarityNodeRouter", "CoENodeRouter", "NodeRoute", "assign_experts", "routing_text",
    "GraphExecutor", "ExecutionResult", "NodeResult", "execute_graph", "resolve_torch_threads", "torch_threads",
    "TemplateAggregator", "LLMAggregator", "Aggregation", "AGGREGATE_TEMPLATE",
    "Composer", "ComposeResult", "compose",
    "PoolRunner", "ProcessPoolRunner", "RunOutput", "as_runner", "call_runner",
]
