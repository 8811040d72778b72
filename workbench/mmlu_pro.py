"""The one MMLU-Pro reader: result files in a folder, their per-question records, model names.

MMLU-Pro's per-question evaluation results ship as ``model_outputs_<model>_5shots.zip`` files (a
JSON list of question records inside) or as that JSON itself. :meth:`PromptSet.from_mmlu_pro
<workbench.prompts.PromptSet.from_mmlu_pro>` takes the questions from them and
:meth:`ExpertScores.from_mmlu_pro <workbench.scores.ExpertScores.from_mmlu_pro>` each model's
correctness; both read them through this module. Every function takes the exception class its
caller raises (``error=``), as :mod:`workbench.safeio` does.

Examples
--------
>>> model_name("model_outputs_Yi-34B_5shots.zip")
'Yi-34B'
>>> model_name("README.md") is None
True
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["PREFIX", "QUESTION_COLUMNS", "SHOTS_SUFFIX", "Correctness", "correctness",
           "is_result_record", "model_name", "question_rows", "read_records", "result_files"]

#: Result files are named ``PREFIX + <model> + SHOTS_SUFFIX + (".zip" | ".json")``.
PREFIX = "model_outputs_"
SHOTS_SUFFIX = "_5shots"
EXTENSIONS = (".zip", ".json")
#: Keys every per-question record holds.
REQUIRED_KEYS = ("question_id", "question", "category")
#: The record keys a prompt set keeps (``question`` becomes the text, ``question_id`` the id).
QUESTION_COLUMNS = ("question_id", "question", "category", "options", "answer", "answer_index", "src")

_CACHE_KEY = b"mmlu-pro-scores-v1"


def model_name(file_name: str) -> str | None:
    """The ``<model>`` of a result file name ``model_outputs_<model>_5shots.(zip|json)``.

    ``None`` for any other name; the ``_5shots`` part is optional.
    """
    for ext in EXTENSIONS:
        if file_name.endswith(ext):
            stem = file_name[: -len(ext)]
            break
    else:
        return None
    if not stem.startswith(PREFIX) or stem == PREFIX:
        return None
    name = stem[len(PREFIX):]
    if name.endswith(SHOTS_SUFFIX):
        name = name[: -len(SHOTS_SUFFIX)]
    return name or None


def result_files(
    directory: str | os.PathLike,
    *,
    error: type[Exception] = WorkbenchError,
    required: bool = True,
) -> dict[str, Path]:
    """Model name -> result file for every ``model_outputs_<model>_5shots.(zip|json)`` in a folder.

    Models are in file-name order; where a model has both a ``.json`` and a ``.zip`` the ``.json``
    is used (it is what the zip holds). A missing folder raises ``error``; so does a folder without
    result files unless ``required=False`` (then the answer is ``{}``).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise error(f"MMLU-Pro results folder {str(directory)!r} does not exist")
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        name = model_name(path.name)
        if name is not None and path.is_file():
            files.setdefault(name, path)
    if required and not files:
        raise error(f"no MMLU-Pro result files (model_outputs_<model>_5shots.zip) in {directory}")
    return files


def read_records(path: str | os.PathLike, *, error: type[Exception] = WorkbenchError) -> list[dict]:
    """The per-question records of one result file (a ``.zip`` holding one JSON, or the JSON).

    Raises ``error`` naming the file for a missing or damaged file, text that is not UTF-8 JSON
    (duplicate keys are refused), or records that are not MMLU-Pro question records.
    """
    import zipfile

    from workbench.safeio import load_json

    path = Path(path)
    if not path.exists():
        raise error(f"MMLU-Pro result file {str(path)!r} does not exist")
    source = str(path)
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                members = [n for n in zf.namelist() if n.lower().endswith(".json")]
                if not members:
                    raise error(f"{path} holds no .json file of MMLU-Pro records "
                                f"(found {zf.namelist()[:5]})")
                raw = zf.read(members[0])
            source = f"{path} ({members[0]})"
        else:
            raw = path.read_bytes()
    except zipfile.BadZipFile:
        raise error(f"{path} is not a valid zip file (truncated download?)") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{source} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    data = load_json(text, source, error=error)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise error(f"{source}: expected a JSON list of MMLU-Pro question records, "
                    f"got {type(data).__name__}")
    if data and not set(REQUIRED_KEYS) <= set(data[0]):
        raise error(
            f"{source}: records lack {sorted(set(REQUIRED_KEYS) - set(data[0]))}; is this an "
            "MMLU-Pro per-question result file (model_outputs_<model>_5shots)?"
        )
    return data


def is_result_record(record: Mapping[str, Any]) -> bool:
    """Whether one JSON record looks like an MMLU-Pro per-question result."""
    return "question_id" in record and "pred" in record


def question_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The questions of result records: :data:`QUESTION_COLUMNS` of each (``None`` where absent)."""
    return [{k: r.get(k) for k in QUESTION_COLUMNS} for r in records]


@dataclass(frozen=True)
class Correctness:
    """1/0 correctness of each model (columns) on each question (rows)."""

    values: np.ndarray
    question_ids: list[str]
    models: list[str]
    categories: list[str] | None


def _question_order(qid: str) -> tuple[float, str]:
    return (int(qid) if qid.isdigit() else float("inf"), qid)


def correctness(
    files: Mapping[str, Path],
    *,
    common_only: bool = True,
    cache: bool = True,
    error: type[Exception] = WorkbenchError,
) -> Correctness:
    """Correctness (1.0 if ``pred == answer`` else 0.0) of each model in ``files`` on each question.

    Questions are ordered by numeric id. With ``common_only`` only questions every model answered
    are kept; otherwise a question missing from a model's file scores 0.0 for it. With ``cache``
    the matrix is kept in the workbench cache (``.npz``, keyed by the files' names, sizes and
    modification times) so the next call skips parsing the JSON.
    """
    cache_path = _cache_path(files, common_only) if cache else None
    if cache_path is not None and cache_path.exists():
        try:
            with np.load(cache_path, allow_pickle=False) as z:
                cats = z["categories"].tolist() if z["has_categories"] else None
                return Correctness(z["values"], z["prompt_ids"].tolist(), z["experts"].tolist(), cats)
        except Exception:  # a damaged cache entry is rebuilt below
            pass
    per_model: dict[str, dict[str, float]] = {}
    category_of: dict[str, str] = {}
    for name, path in files.items():
        correct: dict[str, float] = {}
        for rec in read_records(path, error=error):
            qid = str(rec.get("question_id"))
            pred, answer = rec.get("pred"), rec.get("answer")
            correct[qid] = 1.0 if (pred is not None and pred == answer) else 0.0
            if qid not in category_of and rec.get("category") is not None:
                category_of[qid] = str(rec["category"])
        per_model[name] = correct
    if not per_model:
        raise error("no MMLU-Pro result files given")
    id_sets = [set(d) for d in per_model.values()]
    ids = sorted(set.intersection(*id_sets) if common_only else set.union(*id_sets),
                 key=_question_order)
    if not ids:
        folders = sorted({str(p.parent) for p in files.values()})
        raise error(f"the MMLU-Pro files in {', '.join(folders)} share no question ids")
    models = list(per_model)
    values = np.array([[per_model[m].get(q, 0.0) for m in models] for q in ids], dtype=float)
    categories: list[str] | None = [category_of.get(q) for q in ids]  # type: ignore[misc]
    if any(c is None for c in categories):
        categories = None
    if cache_path is not None:
        _save_npz(cache_path, values=values, prompt_ids=np.asarray(ids, dtype=str),
                  experts=np.asarray(models, dtype=str),
                  categories=np.asarray(categories or [], dtype=str),
                  has_categories=np.asarray(categories is not None))
    return Correctness(values, ids, models, categories)


def _cache_path(files: Mapping[str, Path], common_only: bool) -> Path | None:
    import hashlib

    from workbench._paths import cache_dir

    h = hashlib.sha256(_CACHE_KEY)
    h.update(str(common_only).encode())
    for name, path in files.items():
        st = path.stat()
        h.update(f"|{name}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    try:
        return cache_dir("scores") / f"mmlu-pro-{h.hexdigest()[:20]}.npz"
    except OSError:  # read-only home etc.: no cache
        return None


def _save_npz(path: Path, **arrays) -> None:
    import io

    from workbench._paths import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError:  # the cache is an optimisation; a full disk must not fail the read
        pass
