"""``coe-workbench compose "QUERY"``: Comp-LLM in the terminal."""
from __future__ import annotations

NAME = "compose"
ORDER = 60
HELP = "split a query into a graph of sub-queries, route each to an expert, run them in parallel, aggregate"
DESCRIPTION = """\
Comp-LLM (arXiv 2511.22955) over the offline demo experts: decompose QUERY into sub-queries with
a dependency graph, give each sub-query an expert (by similarity to the experts' descriptions, or
through the CoE router and category-to-expert map), run the sub-queries whose dependencies are met
in parallel (upstream answers are filled into the {{id}} placeholders of dependent ones), and
write the final answer (LLM synthesis with a template fallback).

Prints the graph, each node's expert, status and timing, the critical path, and the answer.
--json prints one JSON object as the last line instead; --figure writes the plotly graph (HTML).

example:
  coe-workbench compose "What is 12 * 7? Then translate the result into Spanish."
  coe-workbench compose "Explain recursion, and write a haiku about autumn" --routing coe
  coe-workbench compose --graph graph.json --figure graph.html
  coe-workbench compose "Solve 2x+3=11 and explain why" --decomposer llm   # tiny experts: retries, then a clear error
"""


def register(parser) -> None:
    parser.add_argument("query", nargs="?", default=None, metavar="QUERY", help="the question to compose")
    parser.add_argument("--graph", default=None, metavar="FILE",
                        help="run this query graph (JSON: {query, nodes: [{id, text, depends_on, expert?}]}) "
                             "instead of decomposing QUERY")
    parser.add_argument("--decomposer", choices=["rule", "llm"], default="rule",
                        help="rule: deterministic, offline (default); llm: ask the generalist for JSON")
    parser.add_argument("--routing", choices=["similarity", "coe"], default="similarity",
                        help="similarity to expert descriptions (default) or the CoE router + map")
    parser.add_argument("--aggregator", choices=["llm", "template"], default="llm")
    parser.add_argument("--max-parallel", type=int, default=None, metavar="N",
                        help="most sub-queries at once (default: the graph's width); 1 = one by one")
    parser.add_argument("--max-new-tokens", type=int, default=48, metavar="N")
    parser.add_argument("--attempts", type=int, default=3, help="LLM decomposer attempts before giving up")
    parser.add_argument("--figure", default=None, metavar="FILE.html", help="write the graph figure here")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while the demo loads")
    from workbench.commands.serve import add_demo_arguments

    add_demo_arguments(parser)


def run(args) -> int:
    import json
    import sys
    from pathlib import Path

    from workbench.compose import Composer, QueryGraph
    from workbench.errors import GraphError

    if args.query is None and args.graph is None:
        raise GraphError('give a QUERY (e.g. coe-workbench compose "What is 2+2? Then double it.") or --graph FILE')
    if args.max_parallel is not None and args.max_parallel < 1:
        raise GraphError(f"--max-parallel must be at least 1, got {args.max_parallel}")
    target = args.query
    if args.graph is not None:
        path = Path(args.graph)
        if not path.is_file():
            raise GraphError(f"--graph {args.graph}: no such file")
        try:
            target = QueryGraph.from_json(path.read_text(encoding="utf-8"))
        except GraphError as exc:
            raise GraphError(f"--graph {args.graph}: {exc}") from None
        if args.query:
            target.query = args.query

    from workbench.commands.serve import apply_demo_kind
    from workbench.demo import build_demo_bundle

    apply_demo_kind(args)
    bundle = build_demo_bundle(progress=not args.quiet and not args.json)
    composer = Composer.from_bundle(bundle, routing=args.routing, decomposer=args.decomposer,
                                    aggregator=args.aggregator, max_parallel=args.max_parallel,
                                    decompose_attempts=args.attempts,
                                    gen={"max_new_tokens": args.max_new_tokens})

    def on_node(res) -> None:
        if not args.json and res.end_s is not None:
            print(f"  [{res.end_s:6.2f}s] {res.id} {res.status} on {res.expert} ({res.duration_s:.2f}s)", file=sys.stderr)

    result = composer.run(target, callback=on_node)
    if args.figure:
        from workbench.plots.compose import graph_figure

        graph_figure(result).write_html(args.figure, include_plotlyjs=True)
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
        return 0 if result.complete else 1
    print(result.summary())
    print("\nanswer:\n" + result.answer)
    if args.figure:
        print(f"\nfigure -> {args.figure}")
    return 0 if result.complete else 1
