"""ExpertScores: per-prompt, per-expert results and their per-category summaries.

An :class:`ExpertScores` is a dense ``(n_prompts, n_experts)`` matrix of scores (1/0 correctness or
judge scores), the prompts' ids and, optionally, each prompt's category. It feeds the
category-to-expert map: :meth:`ExpertScores.category_means` is the matrix the optimizer maximises
over, :meth:`ExpertScores.category_weights` the category frequencies, and
:meth:`ExpertScores.best_expert` the per-prompt labels of the paper's "best-expert map".

Scores must be complete: a NaN or a missing (prompt, expert) pair raises :class:`ScoresError`
(use ``on_missing="drop"`` in the table readers to keep only fully scored prompts).

Examples
--------
>>> import numpy as np
>>> s = ExpertScores(np.array([[1., 0.], [0., 1.], [1., 1.]]), ["p1", "p2", "p3"],
...                  ["small", "large"], categories=["math", "law", "math"])
>>> float(s.category_means().loc["math", "small"])
1.0
>>> s.category_weights()["math"]
0.6666666666666666
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.errors import ScoresError
from workbench.safeio import short, short_list

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ExpertScores", "mmlu_pro_model_files"]

def mmlu_pro_model_files(directory: str | os.PathLike) -> dict[str, Path]:
    """Map model name -> result file for ``model_outputs_<name>_5shots.(zip|json)`` in ``directory``.

    See :func:`workbench.mmlu_pro.result_files`; a missing folder or one without result files
    raises :class:`ScoresError`.
    """
    from workbench import mmlu_pro

    return mmlu_pro.result_files(directory, error=ScoresError)


def _wilson(mean: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    denom = 1 + z**2 / n
    centre = (mean + z**2 / (2 * n)) / denom
    half = z * np.sqrt(mean * (1 - mean) / n + z**2 / (4 * n**2)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


class ExpertScores:
    """Per-prompt, per-expert scores with optional prompt categories.

    Parameters
    ----------
    values : array-like, shape (n_prompts, n_experts)
        Finite scores (higher is better): 1/0 correctness or judge scores.
    prompt_ids : sequence of str
        Unique prompt ids, one per row (converted to ``str``).
    experts : sequence of str
        Unique expert names, one per column.
    categories : sequence of str, optional
        Each prompt's category (needed by the per-category summaries).

    Attributes
    ----------
    values : numpy.ndarray of float, shape (n_prompts, n_experts)
    prompt_ids : list of str
    experts : list of str
    categories : numpy.ndarray of str or None

    Examples
    --------
    >>> s = ExpertScores([[1, 0], [1, 1]], ["a", "b"], ["x", "y"], ["law", "law"])
    >>> s.expert_means()
    {'x': 1.0, 'y': 0.5}
    """

    def __init__(
        self,
        values: np.ndarray,
        prompt_ids: Sequence[str],
        experts: Sequence[str],
        categories: Sequence[str] | None = None,
    ) -> None:
        try:
            arr = np.array(values, dtype=float)  # a copy: it is made read-only below
        except (TypeError, ValueError) as exc:
            raise ScoresError(f"scores must be numbers: {exc}") from None
        if arr.ndim != 2:
            raise ScoresError(f"scores must be a 2-D (n_prompts, n_experts) array, got shape {arr.shape}")
        ids = [str(p) for p in prompt_ids]
        names = [str(e) for e in experts]
        if arr.shape != (len(ids), len(names)):
            raise ScoresError(
                f"scores have shape {arr.shape} but there are {len(ids)} prompt ids and "
                f"{len(names)} experts; they must line up as (n_prompts, n_experts)"
            )
        if len(names) == 0:
            raise ScoresError("scores need at least one expert")
        _check_unique(ids, "prompt id")
        _check_unique(names, "expert")
        bad = ~np.isfinite(arr)
        if bad.any():
            rows, cols = np.nonzero(bad)
            examples = ", ".join(f"({short(ids[r])}, {short(names[c])})" for r, c in zip(rows[:5], cols[:5]))
            raise ScoresError(
                f"{int(bad.sum())} scores are NaN or infinite, e.g. (prompt, expert) = {examples}. "
                "Fill them (e.g. 0.0 for unanswered) or drop those prompts/experts first."
            )
        cats = None
        if categories is not None:
            cats = np.asarray([None if c is None else str(c) for c in categories], dtype=object)
            if len(cats) != len(ids):
                raise ScoresError(
                    f"got {len(cats)} categories for {len(ids)} prompts; give one category per prompt"
                )
            missing = [ids[i] for i, c in enumerate(cats) if c is None or c == "" or c == "nan"]
            if missing:
                raise ScoresError(
                    f"{len(missing)} prompts have no category, e.g. {missing[:5]}; "
                    "give every prompt a category or pass categories=None"
                )
            cats = cats.astype(str)
        arr.setflags(write=False)
        self.values: np.ndarray = arr
        self.prompt_ids: list[str] = ids
        self.experts: list[str] = names
        self.categories: np.ndarray | None = cats
        self._index = {p: i for i, p in enumerate(ids)}

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_ids)

    @property
    def n_experts(self) -> int:
        return len(self.experts)

    @property
    def category_names(self) -> list[str]:
        """Sorted distinct categories (raises if there are none)."""
        return sorted(set(self._require_categories("category_names").tolist()))

    def __repr__(self) -> str:
        cats = "no categories" if self.categories is None else f"{len(set(self.categories))} categories"
        return f"ExpertScores({self.n_prompts} prompts x {self.n_experts} experts, {cats})"

    def _require_categories(self, what: str) -> np.ndarray:
        if self.categories is None:
            raise ScoresError(
                f"{what} needs each prompt's category, but these scores have none; build them with "
                "categories=... (or use with_categories(router.predict(...)))"
            )
        return self.categories

    def _expert_index(self, name: str) -> int:
        try:
            return self.experts.index(name)
        except ValueError:
            raise ScoresError(
                f"no scores for expert {short(name)}; scored experts: {short_list(self.experts)}"
            ) from None

    def require_experts(self, names, *, context: str = "scores") -> None:
        """Raise :class:`ScoresError` naming every expert in ``names`` without scores."""
        missing = [n for n in dict.fromkeys(names) if n not in self.experts]
        if missing:
            raise ScoresError(
                f"{context}: no scores for expert(s) {short_list(missing, quote=True)}; "
                f"scored experts: {short_list(self.experts)}. Score them or map their categories "
                "to a scored expert."
            )

    # ------------------------------------------------------------------ readers
    @classmethod
    def from_mmlu_pro(
        cls,
        dir: str | os.PathLike,
        *,
        models: Sequence[str] | None = None,
        common_only: bool = True,
        cache: bool = True,
    ) -> "ExpertScores":
        """Correctness (1.0 if ``pred == answer`` else 0.0) of each model on each MMLU-Pro question.

        Parameters
        ----------
        dir : path
            Folder with ``model_outputs_<model>_5shots.zip`` (or ``.json``) files.
        models : sequence of str, optional
            Model names (the ``<model>`` part) to read; default all, in file-name order.
        common_only : bool
            Keep only questions every model answered (12,002 of 12,032 in the shared data).
            With ``False`` a question missing from a model's file scores 0.0 for that model.
        cache : bool
            Keep the parsed matrix in the workbench cache (``.npz``, keyed by the files' names,
            sizes and modification times) so the next call skips parsing ~200 MB of JSON.

        Returns
        -------
        ExpertScores
            Prompt ids are ``str(question_id)``; categories are MMLU-Pro's 14 categories.

        Examples
        --------
        >>> s = ExpertScores.from_mmlu_pro("../shared/data/mmlu-pro")  # doctest: +SKIP
        >>> round(s.expert_means()["Meta-Llama-3_1-70B-Instruct"], 2)   # doctest: +SKIP
        0.63
        """
        from workbench import mmlu_pro

        files = mmlu_pro_model_files(dir)
        if models is not None:
            models = [str(m) for m in models]
            unknown = [m for m in models if m not in files]
            if unknown:
                raise ScoresError(
                    f"no MMLU-Pro result file for model(s) {short(unknown)} in {dir}; "
                    f"available: {short_list(files)}"
                )
            files = {m: files[m] for m in models}
        table = mmlu_pro.correctness(files, common_only=common_only, cache=cache, error=ScoresError)
        return cls(table.values, table.question_ids, table.models, table.categories)

    @classmethod
    def from_long(
        cls,
        df: "pd.DataFrame",
        *,
        prompt: str = "prompt_id",
        expert: str = "expert",
        score: str = "score",
        category: str | None = "category",
        on_missing: str = "raise",
    ) -> "ExpertScores":
        """Build from a long table with one row per (prompt, expert) score.

        Parameters
        ----------
        df : pandas.DataFrame
            Columns ``prompt``, ``expert``, ``score`` and optionally ``category``.
        on_missing : {"raise", "drop"}
            What to do with prompts that lack a score from some expert.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"prompt_id": ["a", "a", "b", "b"], "expert": ["x", "y", "x", "y"],
        ...                    "score": [1, 0, 0, 1], "category": ["law", "law", "math", "math"]})
        >>> ExpertScores.from_long(df).values.tolist()
        [[1.0, 0.0], [0.0, 1.0]]
        """
        import pandas as pd

        _check_columns(df, [prompt, expert, score], "long score table")
        has_cat = category is not None and category in df.columns
        sub = df[[prompt, expert, score] + ([category] if has_cat else [])].copy()
        sub[prompt] = sub[prompt].astype(str)
        sub[expert] = sub[expert].astype(str)
        sub[score] = pd.to_numeric(sub[score], errors="coerce")
        dup = sub.duplicated([prompt, expert], keep=False)
        if dup.any():
            first = sub.loc[dup, [prompt, expert]].iloc[0].tolist()
            raise ScoresError(
                f"{int(dup.sum())} rows repeat a (prompt, expert) pair, e.g. {tuple(first)}; "
                "aggregate them first (e.g. df.groupby([prompt, expert]).score.mean())"
            )
        nan_rows = sub[score].isna()
        if nan_rows.any():
            ex = sub.loc[nan_rows, [prompt, expert]].head(3).values.tolist()
            raise ScoresError(
                f"{int(nan_rows.sum())} scores in column {short(score)} are NaN or not numbers, e.g. "
                f"(prompt, expert) = {short([tuple(e) for e in ex])}; fill or drop them"
            )
        wide = sub.pivot(index=prompt, columns=expert, values=score)
        order = list(dict.fromkeys(sub[prompt]))
        experts = list(dict.fromkeys(sub[expert]))
        wide = wide.loc[order, experts]
        wide = _handle_missing(wide, on_missing, "long score table")
        cats = None
        if has_cat:
            cat_by_prompt = sub.groupby(prompt, sort=False)[category].agg(lambda s: s.dropna().unique().tolist())
            conflicting = [p for p, c in cat_by_prompt.items() if len(c) > 1]
            if conflicting:
                raise ScoresError(
                    f"prompt {short(conflicting[0])} has several categories {short(cat_by_prompt[conflicting[0]])}; "
                    "give each prompt one category"
                )
            cats = [(cat_by_prompt[p] or [None])[0] for p in wide.index]
        return cls(wide.to_numpy(dtype=float), list(wide.index), experts, cats)

    @classmethod
    def from_wide(
        cls,
        df: "pd.DataFrame",
        *,
        prompt: str = "prompt_id",
        category: str | None = "category",
        experts: Sequence[str] | None = None,
        on_missing: str = "raise",
    ) -> "ExpertScores":
        """Build from a wide table: one row per prompt, one score column per expert.

        ``experts`` defaults to every numeric column other than ``prompt`` and ``category``.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"prompt_id": ["a", "b"], "category": ["law", "math"],
        ...                    "x": [1.0, 0.0], "y": [0.5, 1.0]})
        >>> ExpertScores.from_wide(df).experts
        ['x', 'y']
        """
        import pandas as pd

        _check_columns(df, [prompt], "wide score table")
        has_cat = category is not None and category in df.columns
        if experts is None:
            experts = [
                c for c in df.columns
                if c not in (prompt, category) and pd.api.types.is_numeric_dtype(df[c])
            ]
            if not experts:
                raise ScoresError(
                    f"wide score table has no numeric expert columns besides {short(prompt)}; "
                    f"columns: {short_list(df.columns)}"
                )
        else:
            experts = list(experts)
            _check_columns(df, experts, "wide score table")
        wide = df[experts].apply(pd.to_numeric, errors="coerce")
        wide.index = df[prompt].astype(str).to_numpy()
        bad = df[experts].notna() & wide.isna()
        if bad.to_numpy().any():
            r, c = np.argwhere(bad.to_numpy())[0]
            raise ScoresError(
                f"wide score table: value {short(df[experts].iat[r, c])} for prompt {short(wide.index[r])}, "
                f"expert {short(experts[c])} is not a number"
            )
        cats = df[category].to_numpy() if has_cat else None
        if cats is not None:
            keep = _handle_missing(wide, on_missing, "wide score table").index
            mask = wide.index.isin(keep)
            cats = cats[mask]
            wide = wide.loc[mask]
        else:
            wide = _handle_missing(wide, on_missing, "wide score table")
        cats_list = None if cats is None else [None if pd.isna(c) else c for c in cats]
        return cls(wide.to_numpy(dtype=float), list(wide.index), [str(e) for e in experts], cats_list)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> "ExpertScores":
        """Read a long (``prompt_id, expert, score[, category]``) or wide table from CSV/Parquet/JSONL."""
        import pandas as pd

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            df = pd.read_csv(path, dtype={kwargs.get("prompt", "prompt_id"): str})
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".jsonl", ".json"):
            df = pd.read_json(path, lines=suffix == ".jsonl", dtype={kwargs.get("prompt", "prompt_id"): str})
        else:
            raise ScoresError(f"cannot read scores from {path}: use .csv, .parquet or .jsonl")
        long_keys = {"prompt", "expert", "score", "category", "on_missing"}
        if kwargs.get("expert", "expert") in df.columns and kwargs.get("score", "score") in df.columns:
            return cls.from_long(df, **{k: v for k, v in kwargs.items() if k in long_keys})
        return cls.from_wide(df, **kwargs)

    def to_long(self) -> "pd.DataFrame":
        """The long table ``prompt_id, expert, score[, category]`` (inverse of :meth:`from_long`)."""
        import pandas as pd

        n, m = self.values.shape
        data = {
            "prompt_id": np.repeat(np.asarray(self.prompt_ids, dtype=object), m),
            "expert": np.tile(np.asarray(self.experts, dtype=object), n),
            "score": self.values.reshape(-1),
        }
        if self.categories is not None:
            data["category"] = np.repeat(self.categories, m)
        return pd.DataFrame(data)

    # ------------------------------------------------------------------ selection
    def subset(self, prompt_ids: Sequence[str]) -> "ExpertScores":
        """Scores of ``prompt_ids`` in the given order; unknown ids raise :class:`ScoresError`."""
        ids = [str(p) for p in prompt_ids]
        missing = [p for p in ids if p not in self._index]
        if missing:
            raise ScoresError(
                f"{len(missing)} prompt ids have no scores, e.g. {missing[:5]}; "
                f"score them or drop them (these scores cover {self.n_prompts} prompts)"
            )
        rows = np.fromiter((self._index[p] for p in ids), dtype=int, count=len(ids))
        cats = None if self.categories is None else self.categories[rows]
        return ExpertScores(self.values[rows], ids, self.experts, cats)

    def select_experts(self, experts: Sequence[str]) -> "ExpertScores":
        """Scores of only ``experts`` (in that order)."""
        experts = [str(e) for e in experts]
        self.require_experts(experts, context="select_experts")
        cols = [self.experts.index(e) for e in experts]
        return ExpertScores(self.values[:, cols], self.prompt_ids, experts, self.categories)

    def with_categories(self, categories: Sequence[str]) -> "ExpertScores":
        """The same scores with other per-prompt categories (e.g. a router's predictions)."""
        return ExpertScores(self.values, self.prompt_ids, self.experts, categories)

    # ------------------------------------------------------------------ summaries
    def per_category(self, confidence: float = 0.95) -> "pd.DataFrame":
        """Long table of per-(category, expert) mean, count and confidence interval.

        Binary (0/1) scores get a Wilson score interval; other scores a Student-t interval on the
        mean (``NaN`` bounds for a category with a single prompt).

        Returns
        -------
        pandas.DataFrame
            Columns ``category, expert, mean, count, ci_low, ci_high``, categories sorted.
        """
        import pandas as pd
        from scipy import stats

        if not 0 < confidence < 1:
            raise ScoresError(f"confidence must be in (0, 1), got {short(confidence)}")
        cats = self._require_categories("per_category")
        names, inverse = np.unique(cats, return_inverse=True)
        binary = bool(np.isin(self.values, (0.0, 1.0)).all())
        rows = []
        for k, cat in enumerate(names):
            block = self.values[inverse == k]
            n = block.shape[0]
            mean = block.mean(axis=0)
            if binary:
                z = stats.norm.ppf(0.5 + confidence / 2)
                lo, hi = _wilson(mean, np.full_like(mean, n), z)
            elif n > 1:
                sem = block.std(axis=0, ddof=1) / np.sqrt(n)
                t = stats.t.ppf(0.5 + confidence / 2, df=n - 1)
                lo, hi = mean - t * sem, mean + t * sem
            else:
                lo = hi = np.full_like(mean, np.nan)
            for j, e in enumerate(self.experts):
                rows.append((cat, e, float(mean[j]), int(n), float(lo[j]), float(hi[j])))
        return pd.DataFrame(rows, columns=["category", "expert", "mean", "count", "ci_low", "ci_high"])

    def category_means(self, categories: Sequence[str] | None = None) -> "pd.DataFrame":
        """Mean score per category (rows, sorted or in the given order) and expert (columns).

        Unknown names in ``categories`` raise :class:`ScoresError` (no silent empty rows).
        """
        import pandas as pd

        cats = self._require_categories("category_means")
        names, inverse = np.unique(cats, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(names)).astype(float)
        sums = np.zeros((len(names), self.n_experts))
        np.add.at(sums, inverse, self.values)
        df = pd.DataFrame(sums / counts[:, None], index=pd.Index(names.tolist(), name="category"),
                          columns=list(self.experts))
        if categories is not None:
            categories = [str(c) for c in categories]
            unknown = [c for c in categories if c not in df.index]
            if unknown:
                raise ScoresError(
                    f"no scored prompts in category {short_list(unknown, quote=True)}; "
                    f"scored categories: {short_list(df.index)}"
                )
            df = df.loc[categories]
        return df

    def category_weights(self) -> dict[str, float]:
        """Share of prompts in each category (sums to 1), categories sorted."""
        cats = self._require_categories("category_weights")
        names, counts = np.unique(cats, return_counts=True)
        total = counts.sum()
        return {str(n): float(c / total) for n, c in zip(names, counts)}

    def category_counts(self) -> dict[str, int]:
        """Number of prompts per category, categories sorted."""
        cats = self._require_categories("category_counts")
        names, counts = np.unique(cats, return_counts=True)
        return {str(n): int(c) for n, c in zip(names, counts)}

    def expert_means(self) -> dict[str, float]:
        """Mean score of each expert over all prompts (the monolithic baseline)."""
        means = self.values.mean(axis=0)
        return {e: float(m) for e, m in zip(self.experts, means)}

    def best_expert(self, costs: Mapping[str, float] | None = None) -> np.ndarray:
        """Per-prompt best expert; ties go to the cheapest (by ``costs``), then by name.

        Parameters
        ----------
        costs : mapping expert -> cost, optional
            E.g. active parameters (``{e: registry.active(e) for e in scores.experts}``). Without
            it ties go to the alphabetically first expert.

        Returns
        -------
        numpy.ndarray of str, shape (n_prompts,)

        Examples
        --------
        >>> s = ExpertScores([[1, 1], [0, 1]], ["a", "b"], ["big", "small"])
        >>> s.best_expert({"big": 70, "small": 7}).tolist()
        ['small', 'small']
        """
        if costs is not None:
            missing = [e for e in self.experts if e not in costs]
            if missing:
                raise ScoresError(
                    f"best_expert: no cost for expert(s) {short(missing)}; give a cost for every expert "
                    f"({short_list(self.experts)})"
                )
            cost = np.array([float(costs[e]) for e in self.experts])
        else:
            cost = np.zeros(self.n_experts)
        # order experts by (cost, name); argmax over that order returns the first maximum
        order = sorted(range(self.n_experts), key=lambda j: (cost[j], self.experts[j]))
        reordered = self.values[:, order]
        best = np.asarray(order)[np.argmax(reordered, axis=1)]
        return np.asarray(self.experts, dtype=object)[best].astype(str)

    def oracle_score(self) -> float:
        """Mean of the per-prompt best score (the upper bound of any router and map)."""
        return float(self.values.max(axis=1).mean())


def _check_unique(items: list[str], what: str) -> None:
    if len(set(items)) != len(items):
        seen: set[str] = set()
        dups = [x for x in items if x in seen or seen.add(x)]
        raise ScoresError(f"duplicate {what}s: {sorted(set(dups))[:5]}; each {what} must appear once")


def _check_columns(df, columns, what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ScoresError(
            f"{what} lacks column(s) {missing}; its columns are {list(df.columns)} "
            "(pass the column names as keyword arguments)"
        )


def _handle_missing(wide, on_missing: str, what: str):
    if on_missing not in ("raise", "drop"):
        raise ScoresError(f"on_missing must be 'raise' or 'drop', got {short(on_missing)}")
    holes = wide.isna()
    if not holes.to_numpy().any():
        return wide
    if on_missing == "drop":
        kept = wide.loc[~holes.any(axis=1)]
        if kept.empty:
            raise ScoresError(f"{what}: no prompt has a score from every expert; nothing left after dropping")
        return kept
    per_expert = holes.sum(axis=0)
    per_expert = per_expert[per_expert > 0]
    detail = short_list([f"{short(e)} lacks {int(n)}" for e, n in per_expert.items()], limit=10)
    r, c = np.argwhere(holes.to_numpy())[0]
    raise ScoresError(
        f"{what}: scores are missing for some (prompt, expert) pairs ({detail}), e.g. prompt "
        f"{short(wide.index[r])} and expert {short(wide.columns[c])}. Score them, or pass on_missing='drop' "
        "to keep only prompts scored by every expert."
    )
