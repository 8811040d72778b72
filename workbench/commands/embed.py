"""``coe-workbench embed SOURCE --out FILE``: embed a prompt file into an ``.npz``."""
from __future__ import annotations

NAME = "embed"
ORDER = 10
HELP = "embed a prompt set (JSONL/CSV/Parquet, MMLU-Pro, MT-Bench, Arena-Hard, or 'demo')"
DESCRIPTION = """\
Embed every prompt of SOURCE with a Hugging Face encoder and write an .npz holding the vectors
with the prompts' ids, texts and categories (read by `coe-workbench map`).

SOURCE is a prompt file (.jsonl, .json, .csv, .tsv, .parquet), an MMLU-Pro result zip or folder of
them, an MT-Bench or Arena-Hard question.jsonl, or the word `demo` for the built-in demo set.
Vectors are cached on disk, so embedding the same texts again is near-instant.

example:
  coe-workbench embed demo --out demo.npz
  coe-workbench embed ../shared/data/mmlu-pro --out mmlu.npz
  coe-workbench embed prompts.csv --text question --category topic --out p.npz
"""


def register(parser) -> None:
    parser.add_argument("source", metavar="SOURCE", help="prompt file or folder, or 'demo'")
    parser.add_argument("--out", required=True, metavar="FILE", help="output .npz")
    parser.add_argument("--model", default=None,
                        help="HF id or local folder (default: all-MiniLM-L6-v2, offline)")
    parser.add_argument("--pooling", choices=["mean", "cls", "last"], default="mean")
    parser.add_argument("--instruction", default=None,
                        help="prefix for every prompt; '{text}' marks where the prompt goes")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--format", default=None, help="force the input format (jsonl, csv, ...)")
    parser.add_argument("--text", default="text", help="column holding the prompt text")
    parser.add_argument("--id", default="id", help="column holding the prompt id")
    parser.add_argument("--category", default="category", help="column holding the category")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="'skip' leaves bad rows out and reports them")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_source(args):
    from workbench.prompts import PromptSet, load_demo_prompts

    import warnings

    if args.source == "demo":
        return load_demo_prompts()
    with warnings.catch_warnings():  # the command reports each skipped row itself, once
        warnings.filterwarnings("ignore", message=r".*skipped \d+ bad rows", category=UserWarning)
        return PromptSet.read(args.source, args.format, text=args.text, id=args.id,
                              category=args.category, on_error=args.on_error)


def run(args) -> int:
    import sys
    import time

    from workbench.embed import Embedder, save_embeddings
    from workbench.errors import EmbedderError, PromptSetError
    from workbench.safeio import short

    if not args.out.endswith(".npz"):
        raise EmbedderError(f"--out must end in .npz, got {short(args.out)}")
    prompts = load_source(args)  # an empty file is a PromptSetError ("... holds no prompts ...")
    for row in prompts.skipped:
        print(f"skipped: {row}", file=sys.stderr)
    if len(prompts) == 0:  # pragma: no cover - the loaders refuse empty files already
        raise PromptSetError(f"{args.source} holds no prompts; there is nothing to embed")
    emb = Embedder(args.model, pooling=args.pooling, instruction=args.instruction,
                   max_length=args.max_length, batch_size=args.batch_size, device=args.device,
                   cache=not args.no_cache, progress=False if args.quiet else None)
    t0 = time.perf_counter()
    X = emb.embed(prompts)
    seconds = time.perf_counter() - t0
    meta = {"model": args.model or "all-MiniLM-L6-v2", "pooling": args.pooling,
            "instruction": args.instruction, "max_length": args.max_length,
            "fingerprint": emb.fingerprint, "source": args.source, "name": prompts.name}
    save_embeddings(args.out, X, prompts, meta)
    unlabelled = 0
    if prompts.has_categories:  # partly labelled: the missing ones are written as missing, not "nan"
        unlabelled = sum(c is None for c in prompts.categories)
    print(f"embedded {len(prompts)} prompts ({X.shape[1]} dims) in {seconds:.1f}s -> {args.out}"
          + (f"; {len(prompts.skipped)} rows skipped" if prompts.skipped else "")
          + (f"; {unlabelled} prompts without a category" if unlabelled else ""))
    return 0
