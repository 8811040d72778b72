"""``coe-workbench map EMBEDDINGS --method {pca,tsne,umap} --out FILE``: a 2-D map of embeddings."""
from __future__ import annotations

NAME = "map"
ORDER = 20
HELP = "project embeddings to a 2-D map (PCA, t-SNE or UMAP) and write .npz/.csv/.html"
DESCRIPTION = """\
Project the embeddings in EMBEDDINGS (an .npz from `coe-workbench embed`, or a bare .npy array)
to 2-D and write the map. The output format follows the suffix of --out:

  .npz   coords (n, 2) float32, ids, and meta (JSON)
  .csv   columns id,x,y
  .html  an interactive scatter (coloured by category when the file has categories; hover shows
         the prompt)

Maps are cached on disk (keyed by the embeddings, method, parameters and seed), so running the
same command again is instant. UMAP compiles its kernels on first use (~40 s).

example:
  coe-workbench embed demo --out demo.npz
  coe-workbench map demo.npz --method umap --out demo_map.csv --html demo_map.html
"""

SUFFIXES = (".npz", ".csv", ".html")


def register(parser) -> None:
    parser.add_argument("embeddings", metavar="EMBEDDINGS", help="embeddings .npz or .npy")
    parser.add_argument("--method", choices=["pca", "tsne", "umap"], default="umap",
                        help="projection (default: umap)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output file: .npz, .csv or .html (by suffix)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--html", metavar="FILE", default=None,
                        help="also write the interactive scatter to this .html file")
    parser.add_argument("--n-neighbors", type=int, default=None, help="UMAP n_neighbors (15)")
    parser.add_argument("--min-dist", type=float, default=None, help="UMAP min_dist (0.1)")
    parser.add_argument("--perplexity", type=float, default=None, help="t-SNE perplexity (30)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _check_out(path: str, flag: str) -> None:
    from pathlib import Path

    from workbench.errors import MapError

    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise MapError(f"{flag} {path!r} has an unknown suffix {suffix or '(none)'!r}; use one "
                       f"of {', '.join(SUFFIXES)}")


def run(args) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    import numpy as np

    from workbench.errors import MapError, WorkbenchError

    _check_out(args.out, "--out")
    if args.html is not None and Path(args.html).suffix.lower() != ".html":
        raise MapError(f"--html {args.html!r} must end in .html")
    src = Path(args.embeddings)
    if not src.exists():
        raise MapError(f"embeddings file {str(src)!r} does not exist; create it with "
                       "`coe-workbench embed SOURCE --out FILE.npz`")

    def say(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    with open(src, "rb") as fh:
        magic = fh.read(6)
    expected = {".npz": b"PK", ".npy": b"\x93NUMPY"}.get(src.suffix.lower())
    if expected is None:
        raise MapError(f"embeddings file {str(src)!r} should be an .npz (from `coe-workbench "
                       "embed`) or a bare .npy array")
    if not magic.startswith(expected):
        raise MapError(f"embeddings file {str(src)!r} is not a valid {src.suffix} file (corrupt "
                       "or truncated); write it again with `coe-workbench embed SOURCE --out "
                       "FILE.npz`")

    from workbench.embed import load_embeddings

    try:
        data = load_embeddings(src)
    except WorkbenchError as exc:
        raise MapError(str(exc)) from None
    except Exception as exc:  # anything else a corrupt file may throw
        raise MapError(f"cannot read embeddings {str(src)!r} ({type(exc).__name__}: {exc}); "
                       "is it an .npz from `coe-workbench embed` or a bare .npy?") from None
    X = data.embeddings
    n = len(X)
    ids = list(data.ids) if data.ids is not None else [str(i) for i in range(n)]
    params = {k: v for k, v in (("n_neighbors", args.n_neighbors), ("min_dist", args.min_dist),
                                ("perplexity", args.perplexity)) if v is not None}
    if args.method != "umap":
        for k in ("n_neighbors", "min_dist"):
            if k in params:
                raise MapError(f"--{k.replace('_', '-')} applies to --method umap only")
    if args.method != "tsne" and "perplexity" in params:
        raise MapError("--perplexity applies to --method tsne only")

    from workbench.maps import cached_map, project

    hit = None if args.no_cache else cached_map(X, args.method, seed=args.seed, **params)
    if hit is not None:
        say(f"map: {n} points, {args.method} found in the cache")
        m = hit
    else:
        note = " (the first UMAP call compiles its kernels, ~40 s)" if args.method == "umap" else ""
        say(f"map: projecting {n} points ({X.shape[1]} dims) with {args.method}{note} ...")
        t0 = time.perf_counter()
        m = project(X, args.method, seed=args.seed, cache=not args.no_cache,
                    verbose=not args.quiet and args.method != "pca", **params)
        say(f"map: done in {time.perf_counter() - t0:.1f}s")

    def write(path: Path) -> None:
        from workbench._paths import atomic_write_text

        suffix = path.suffix.lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            import io

            from workbench._paths import atomic_write_bytes

            meta = {"method": m.method, "params": m.params, "seed": m.seed,
                    "source": str(src), "key": m.key}
            buf = io.BytesIO()
            np.savez(buf, coords=m.coords, ids=np.asarray(ids, dtype=str),
                     meta=np.asarray(json.dumps(meta, default=repr)))
            atomic_write_bytes(path, buf.getvalue())
        elif suffix == ".csv":
            import pandas as pd

            atomic_write_text(path, pd.DataFrame({"id": ids, "x": m.coords[:, 0],
                                                  "y": m.coords[:, 1]}).to_csv(index=False))
        else:
            import pandas as pd

            from workbench.plots.maps import scatter_map

            table = {"id": ids}
            if data.texts is not None:
                table["text"] = list(data.texts)
            if data.categories is not None:
                table["category"] = list(data.categories)
            fig = scatter_map(m, pd.DataFrame(table), color="category",
                              title=f"{m.method} map of {src.name} ({n} prompts)")
            atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))
        say(f"map: wrote {path}")

    write(Path(args.out))
    if args.html is not None and Path(args.html) != Path(args.out):
        write(Path(args.html))
    return 0
