"""Relabels: new categories for some prompts, kept apart from the prompt file, and the labels file.

A labels file is ``.jsonl`` (one ``{"id", "category", "previous_category"}`` record a line) or
``.csv`` with exactly those columns; :meth:`Relabels.save` writes it atomically and never over the
prompt file.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import PromptSetError
from workbench.prompts.rows import is_missing
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    from workbench.prompts.set import PromptSet

__all__ = ["LABEL_COLUMNS", "Relabels", "read_labels_file"]

#: Columns of a labels file (``.jsonl`` records or a ``.csv`` header).
LABEL_COLUMNS = ("id", "category", "previous_category")


class Relabels:
    """New categories for some prompts of a :class:`PromptSet` (``id -> category``), and their
    labels-file format.

    A labels file is ``.jsonl`` (one ``{"id", "category", "previous_category"}`` record a line)
    or ``.csv`` with exactly those columns. It is written atomically and never over the prompt
    file or over any file that is not a labels file.

    Examples
    --------
    >>> from workbench.prompts import PromptSet
    >>> ps = PromptSet.from_records([{"text": "2+2?", "category": "chat"}])
    >>> rl = Relabels()
    >>> rl.set("p-0", "math", previous="chat")
    >>> rl.apply(ps).categories.tolist(), dict(rl)
    (['math'], {'p-0': 'math'})
    """

    def __init__(self, new: Mapping[str, str] | None = None) -> None:
        self._new: dict[str, str] = {str(k): str(v) for k, v in (new or {}).items()}

    def __len__(self) -> int:
        return len(self._new)

    def __iter__(self) -> Iterator[str]:
        return iter(self._new)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._new

    def __getitem__(self, prompt_id: str) -> str:
        return self._new[prompt_id]

    def keys(self):
        return self._new.keys()

    def items(self):
        return self._new.items()

    def to_dict(self) -> dict[str, str]:
        return dict(self._new)

    def __repr__(self) -> str:
        return f"Relabels({len(self._new)} prompt(s))"

    def set(self, prompt_id: str, category: str, previous: Any = None) -> None:
        """Give ``prompt_id`` the category ``category``; back to ``previous`` (the prompt file's
        own category) forgets the relabel."""
        if not isinstance(category, str) or not category.strip():
            raise PromptSetError(f"the new category must be a non-empty name, got {short(category)}")
        if previous is not None and str(previous) == category.strip():
            self._new.pop(str(prompt_id), None)
        else:
            self._new[str(prompt_id)] = category.strip()

    def update(self, other: Mapping[str, str]) -> None:
        self._new.update({str(k): str(v) for k, v in other.items()})

    def labels(self, prompts: PromptSet, missing: str = "(none)") -> np.ndarray:
        """Each prompt's category with the relabels applied (``missing`` where it has none)."""
        df = prompts.df
        if "category" in df.columns:
            out = np.array([missing if is_missing(v) else str(v) for v in df["category"]],
                           dtype=object)
        else:
            out = np.full(len(df), missing, dtype=object)
        if self._new:
            for i, pid in enumerate(df["id"].astype(str)):
                if pid in self._new:
                    out[i] = self._new[pid]
        return out

    def apply(self, prompts: PromptSet) -> PromptSet:
        """``prompts`` with the relabels applied to its ``category`` column."""
        if not self._new:
            return prompts
        return prompts.with_column("category", [None if v == "(none)" else v
                                                for v in self.labels(prompts)])

    def records(self, prompts: PromptSet) -> list[dict[str, Any]]:
        """The labels-file records: ``id, category, previous_category`` (``None`` when none)."""
        df = prompts.df
        prev = (dict(zip(df["id"].astype(str), df["category"])) if "category" in df.columns
                else {})
        return [{"id": pid, "category": cat,
                 "previous_category": None if is_missing(prev.get(pid)) else str(prev[pid])}
                for pid, cat in self._new.items()]

    def save(self, path: str | os.PathLike, prompts: PromptSet, *,
             source_path: str | os.PathLike | None = None) -> Path:
        """Write the relabels atomically to ``path`` (``.jsonl`` or ``.csv``).

        Refuses the prompt file itself (``source_path``) and any existing file that is not a
        labels file.
        """
        import csv

        from workbench._paths import atomic_write_text

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".jsonl", ".csv"):
            raise PromptSetError(f"labels are saved as .jsonl or .csv, got {short(path.name)}")
        if source_path is not None and path.resolve() == Path(source_path).resolve():
            raise PromptSetError(f"{path} is the prompt file itself; labels go to a separate "
                                 "file (e.g. prompts-labels.jsonl), the source is never overwritten")
        if path.exists():
            try:
                read_labels_file(path)
            except PromptSetError as exc:
                raise PromptSetError(f"refusing to overwrite {path}: it is not a labels file "
                                     f"({exc}); choose another file name") from None
        records = self.records(prompts)
        if suffix == ".jsonl":
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        else:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(LABEL_COLUMNS))
            writer.writeheader()
            for r in records:
                writer.writerow({k: "" if v is None else v for k, v in r.items()})
            text = buf.getvalue()
        atomic_write_text(path, text)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, prompts: PromptSet | None = None) -> Relabels:
        """Read a labels file; with ``prompts``, every id must be one of its prompts."""
        records = read_labels_file(path)
        if prompts is not None:
            ids = set(prompts.df["id"].astype(str))
            unknown = [(n, r["id"]) for n, r in records if r["id"] not in ids]
            if unknown:
                where = ", ".join(f"{short(i)} (line {n})" for n, i in unknown[:5])
                raise PromptSetError(f"{path}: ids not in the prompt set: {where}; was it saved "
                                     "for another prompt set?")
        return cls({r["id"]: r["category"] for _, r in records})


def read_labels_file(path: str | os.PathLike) -> list[tuple[int, dict[str, str]]]:
    """The ``(line number, {"id", "category"})`` records of a labels file (see :class:`Relabels`).

    Raises :class:`~workbench.errors.PromptSetError` naming the file and line for anything that
    is not a labels file.
    """
    import csv

    path = Path(path)
    if not path.exists():
        raise PromptSetError(f"labels file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise PromptSetError(f"labels files are .jsonl or .csv, got {short(path.name)}")
    text = path.read_text(encoding="utf-8")
    keys = set(LABEL_COLUMNS)
    rows: list[tuple[int, Any]] = []
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except ValueError as exc:
                raise PromptSetError(f"{path} line {n} is not JSON: {exc}") from None
    else:
        reader = csv.DictReader(io.StringIO(text))
        rows = [(n, dict(r)) for n, r in enumerate(reader, start=2)]
        if reader.fieldnames and set(reader.fieldnames) - keys:
            raise PromptSetError(f"{path} has columns {reader.fieldnames}; a labels file has "
                                 "only id, category, previous_category")
    out: list[tuple[int, dict[str, str]]] = []
    for n, rec in rows:
        if not isinstance(rec, dict) or set(rec) - keys or not {"id", "category"} <= set(rec):
            found = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
            raise PromptSetError(f"{path} line {n} has keys {found}; a labels file has only "
                                 "id, category, previous_category")
        if not str(rec["category"] or "").strip():
            raise PromptSetError(f"{path} line {n}: empty category for id {short(rec['id'])}")
        out.append((n, {"id": str(rec["id"]), "category": str(rec["category"])}))
    return out
