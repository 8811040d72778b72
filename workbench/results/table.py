"""The checked results table (:class:`ResultsTable`), the long layout and the column mapping."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.errors import ScoresError, UsageError
from workbench.safeio import short, short_list

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.prompts import PromptSet
    from workbench.scores import ExpertScores

__all__ = ["LONG_COLUMNS", "MISSING_CHOICES", "ResultsTable", "long_frame", "parse_columns"]

LONG_COLUMNS = ("prompt_id", "prompt", "category", "model", "score")
#: What to do with (prompt, model) pairs without a score (``--missing``).
MISSING_CHOICES = ("error", "drop")
#: File suffix -> format.


@dataclass
class ResultsTable:
    """A results table read and checked: the scores, the prompt texts and where each row came from.

    Attributes
    ----------
    scores : ExpertScores
        One row per kept prompt (first-appearance order), one column per model.
    texts : list of str or None
        Each kept prompt's text (rows like ``scores``), ``None`` when the table has no prompt text.
    source : str
        The file (or ``"<table>"``).
    layout : {"long", "wide"}
    missing_pairs : dict
        Model -> number of prompts it has no score for (before any dropping).
    dropped : list of str
        Prompt ids left out by ``missing="drop"``.
    """

    scores: "ExpertScores"
    texts: list[str] | None
    source: str
    layout: str
    missing_pairs: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    prompt_rows: dict[str, int] = field(default_factory=dict, repr=False)
    model_rows: dict[str, int] = field(default_factory=dict, repr=False)
    row_word: str = "row"

    @property
    def has_text(self) -> bool:
        return self.texts is not None

    @property
    def has_categories(self) -> bool:
        return self.scores.categories is not None

    def where(self, prompt_id: str | None = None, *, model: str | None = None) -> str:
        """``"<file> row N"``: where a prompt (or a model) first appears."""
        n = self.prompt_rows.get(str(prompt_id)) if model is None else self.model_rows.get(str(model))
        return self.source if n is None else f"{self.source} {self.row_word} {n}"

    def prompt_set(self) -> "PromptSet":
        """The kept prompts as a :class:`~workbench.prompts.PromptSet` (needs prompt text)."""
        import pandas as pd

        from workbench.prompts import PromptSet

        if self.texts is None:
            raise ScoresError(f"{self.source} has no prompt text; map its text column with "
                              "--columns prompt=<column>")
        data = {"id": self.scores.prompt_ids, "text": self.texts}
        if self.scores.categories is not None:
            data["category"] = list(self.scores.categories)
        return PromptSet(pd.DataFrame(data), name=Path(self.source).stem, source=self.source)

    def to_long(self) -> "pd.DataFrame":
        """The kept scores as a long table with :data:`LONG_COLUMNS` (empty text/category if none)."""
        return long_frame(self.scores, self.texts)

    def summary(self) -> str:
        """One line: prompts, models, layout, and what was missing or dropped."""
        s = self.scores
        text = (f"{self.source}: {self.layout} table, {s.n_prompts} prompts x {s.n_experts} models"
                f", {'no categories' if s.categories is None else f'{len(set(s.categories))} categories'}"
                f", {'prompt text' if self.has_text else 'no prompt text'}")
        lacking = {m: n for m, n in self.missing_pairs.items() if n}
        if lacking:
            text += ("; missing pairs: " + short_list([f"{m} lacks {n}" for m, n in lacking.items()],
                                                      limit=8))
            text += f"; dropped {len(self.dropped)} prompts (--missing drop)"
        return text


def long_frame(scores: "ExpertScores", texts: Sequence[str] | None = None) -> "pd.DataFrame":
    """A long table (:data:`LONG_COLUMNS`) of ``scores``, prompt-major, models in their order."""
    import pandas as pd

    n, m = scores.values.shape
    return pd.DataFrame({
        "prompt_id": np.repeat(np.asarray(scores.prompt_ids, dtype=object), m),
        "prompt": np.repeat(np.asarray(list(texts) if texts is not None else [""] * n, dtype=object), m),
        "category": np.repeat(np.asarray(scores.categories if scores.categories is not None
                                         else [""] * n, dtype=object), m),
        "model": np.tile(np.asarray(scores.experts, dtype=object), n),
        "score": scores.values.reshape(-1),
    })


# ------------------------------------------------------------------------------------ columns
def parse_columns(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"prompt=question,category=task"`` -> ``{"prompt": "question", "category": "task"}``.

    Keys are the canonical names (:data:`LONG_COLUMNS`; ``id`` means ``prompt_id``, ``expert``
    means ``model``); values the table's own column names.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        pairs = list(text.items())
    else:
        pairs = []
        for part in str(text).split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise UsageError(f"--columns takes NAME=COLUMN pairs separated by commas, e.g. "
                                 f"prompt=question,category=task; got {short(part.strip())}")
            key, _, value = part.partition("=")
            pairs.append((key, value))
    out: dict[str, str] = {}
    for key, value in pairs:
        key = {"id": "prompt_id", "expert": "model", "text": "prompt"}.get(str(key).strip(), str(key).strip())
        if key not in LONG_COLUMNS:
            raise UsageError(f"--columns: {short(key)} is not one of {', '.join(LONG_COLUMNS)}; "
                             "write the canonical name before '=' and your column after it, "
                             "e.g. prompt=question")
        if not str(value).strip():
            raise UsageError(f"--columns: {key}= needs a column name after '='")
        if key in out:
            raise UsageError(f"--columns maps {key} twice; give each name once")
        out[key] = str(value).strip()
    return out
