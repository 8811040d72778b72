"""``coe-workbench score``: live-score experts on a prompt set into a long results table."""
from __future__ import annotations

NAME = "score"
ORDER = 45
HELP = "live-score experts on prompts with reference answers; append to a long results table"
DESCRIPTION = """\
Score every expert of an expert spec file on a prompt file with reference answers (the
log-likelihood of the answer given the prompt, chat-formatted as the expert pool formats it; a
prompt with an `options` list is multiple choice) and write one row per (prompt, model) to a long
results table: prompt_id, prompt, category, model, score. An existing --out table is appended to,
so you can add an expert and rerun `coe-workbench frontier --results TABLE`.

--score picks the score: token_prob (exp of the mean per-token log-likelihood of the answer, in
(0, 1]), mean_loglik, loglik, or mc_correct (1/0 multiple-choice accuracy; needs options on every
prompt). The default, auto, is mc_correct when every prompt has options and token_prob otherwise.

example:
  coe-workbench score --experts experts.yaml --prompts prompts.jsonl --out results.csv
  coe-workbench score --experts new_expert.yaml --prompts prompts.jsonl --out results.csv
  coe-workbench frontier --results results.csv --params params.yaml
"""

SCORES = ("auto", "token_prob", "mean_loglik", "loglik", "mc_correct")


def register(parser) -> None:
    parser.add_argument("--experts", required=True, metavar="FILE",
                        help="expert spec file (YAML/JSON list of {name, model, ...})")
    parser.add_argument("--prompts", required=True, metavar="FILE",
                        help="prompt file (.jsonl/.csv/...) with id, text, category and answers")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="long results table to write or append to (.csv, .tsv, .jsonl, "
                             ".parquet)")
    parser.add_argument("--only", default=None, metavar="A,B,...",
                        help="score only these experts of the spec file")
    parser.add_argument("--answers", default="answer", metavar="COLUMN",
                        help="column of the reference answers (default: answer)")
    parser.add_argument("--score", choices=SCORES, default="auto", help="which score to write")
    parser.add_argument("--replace", action="store_true",
                        help="replace rows of the scored experts already in --out (default: "
                             "refuse to score a (prompt, model) pair twice)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _existing(out, names: list[str], replace: bool):
    """The rows already in ``out`` (``None`` if it does not exist), less replaced experts."""
    from workbench.errors import ScoresError
    from workbench.results import LONG_COLUMNS, read_raw_table
    from workbench.safeio import short

    if not out.exists():
        return None
    df, rows, word = read_raw_table(out)
    lacking = [c for c in ("prompt_id", "model", "score") if c not in df.columns]
    if lacking:
        raise ScoresError(
            f"--out {out} is not a long results table: it lacks column(s) {lacking} (it has "
            f"{list(df.columns)[:10]}); give a new --out file, or a table with the columns "
            f"{', '.join(LONG_COLUMNS)}"
        )
    models = df["model"].astype(str)
    clash = models.isin(names)
    if clash.any() and not replace:
        i = int(clash.to_numpy().nonzero()[0][0])
        raise ScoresError(
            f"{out} {word} {rows[i]} already scores model {short(models.iloc[i])} "
            f"({int(clash.sum())} rows of the experts being scored); pass --replace to replace "
            "them, or give the new expert another name in the --experts file"
        )
    return df.loc[~clash.to_numpy()].reset_index(drop=True)


def _all_multiple_choice(df) -> bool:
    """Whether every prompt has a non-empty ``options`` list (a list, or a JSON list in text)."""
    import json

    if "options" not in df.columns:
        return False
    for value in df["options"]:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return False
        if value is None or isinstance(value, float) or not hasattr(value, "__len__") or not len(value):
            return False
    return True


def run(args) -> int:
    import sys
    from pathlib import Path

    import pandas as pd

    from workbench.errors import ScoresError, UsageError
    from workbench.experts import specs_from_file
    from workbench.prompts import PromptSet
    from workbench.results import FORMATS, LONG_COLUMNS, write_results
    from workbench.safeio import short_list

    out = Path(args.out)
    if FORMATS.get(out.suffix.lower()) is None:
        raise UsageError(f"--out {args.out!r}: use a .csv, .tsv, .jsonl or .parquet file name")
    specs = specs_from_file(args.experts)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {s.name for s in specs}]
        if unknown:
            raise UsageError(f"--only: {short_list(unknown, quote=True)} not in {args.experts}; "
                             f"its experts are {short_list([s.name for s in specs], quote=True)}")
        specs = [s for s in specs if s.name in wanted]
    if not specs:
        raise UsageError(f"{args.experts} lists no experts to score")
    prompts = PromptSet.read(args.prompts)
    if args.answers not in prompts.df.columns:
        raise ScoresError(f"--prompts {args.prompts} has no answers column {args.answers!r} (its "
                          f"columns are {list(prompts.df.columns)}); name it with --answers COLUMN")
    names = [s.name for s in specs]
    existing = _existing(out, names, args.replace)   # checked before minutes of scoring

    from workbench.livescore import loglik_frame

    score = args.score
    if score == "auto":
        score = "mc_correct" if _all_multiple_choice(prompts.df) else "token_prob"
    frames = []
    for spec in specs:
        frame = loglik_frame(spec, prompts, answers=args.answers, batch_size=args.batch_size,
                             max_length=args.max_length, device=args.device, name=spec.name,
                             progress=not args.quiet and sys.stderr.isatty())
        if frame[score].isna().any():
            bad = frame.loc[frame[score].isna(), "prompt_id"].iloc[0]
            raise ScoresError(f"--score {score}: prompt {bad!r} has no {score} (mc_correct needs "
                              "an options list on every prompt); use --score token_prob")
        frames.append(frame)
        print(f"scored {spec.name}: mean {score} {frame[score].mean():.4f} over {len(frame)} "
              "prompts", file=sys.stderr)
    ids = [str(i) for i in prompts.ids]
    text = dict(zip(ids, prompts.texts))
    cats = dict(zip(ids, prompts.df["category"] if "category" in prompts.df.columns
                    else [None] * len(ids)))
    scored = pd.concat(frames, ignore_index=True)
    pid = scored["prompt_id"].astype(str)
    new = pd.DataFrame({
        "prompt_id": pid,
        "prompt": pid.map(text),
        "category": pid.map(lambda p: "" if cats[p] is None else str(cats[p])),
        "model": scored["expert"].astype(str),
        "score": scored[score].astype(float),
    }, columns=list(LONG_COLUMNS))
    table = new if existing is None else pd.concat([existing, new], ignore_index=True, sort=False)
    write_results(table, out)
    print(f"{'appended' if existing is not None else 'wrote'} {len(new)} rows ({len(names)} "
          f"experts x {len(prompts)} prompts, score {score}) -> {out}"
          + (f" ({len(table)} rows in all)" if existing is not None else ""))
    known = [s for s in specs if s.active_params_b is not None or s.total_params_b is not None]
    missing_params = [s.name for s in specs if s not in known]
    if known:
        from workbench.experts import registry_for

        print("parameter counts for your --params file:")
        for m in registry_for(known):  # LoRA experts name their shared base: resident once
            shared = f", base: {m.base}, base_params_b: {m.base_params_b:g}" if m.base else ""
            print(f"  - {{name: {m.name}, total_params_b: {m.total_params_b:g}, "
                  f"active_params_b: {m.active_params_b:g}{shared}}}")
    if missing_params:
        print(f"add parameter counts for {short_list(missing_params, quote=True)} to your --params "
              "file before running frontier")
    return 0
