"""Live scoring: how well does a causal LM answer a prompt set? Measured, not looked up.

For each prompt with a reference answer, the model's log-likelihood of the answer given the
prompt (formatted with the model's chat template when it has one, exactly as the expert pool
formats prompts for generation) is computed in batches through ``transformers``. Where a prompt
has answer options (an ``options`` column), the model picks the option with the highest
log-likelihood and multiple-choice accuracy is recorded as well.

Per prompt, :func:`loglik_frame` reports

``loglik``
    Sum of the answer tokens' log-probabilities (the answer's EOS token included when the
    tokenizer has one, so "stopping here" is scored too).
``n_tokens``
    Number of scored answer tokens.
``mean_loglik``
    ``loglik / n_tokens``: mean per-token log-likelihood (higher is better, at most 0).
``token_prob``
    ``exp(mean_loglik)``: the geometric-mean probability the model gives each answer token, in
    (0, 1]. This is the default score the demo's category-to-expert map maximises: it is bounded,
    comparable across categories, and its category mean behaves like an accuracy.
``mc_correct``
    1.0 / 0.0 where the prompt has options, NaN elsewhere.

:func:`score_model` and :func:`score_models` turn these into :class:`~workbench.scores.ExpertScores`
(via ``ExpertScores.from_long``) for the optimiser and the map editor.

Examples
--------
>>> from workbench.livescore import score_models
>>> scores = score_models({"small": "ckpt/small", "big": "ckpt/big"}, prompts)   # doctest: +SKIP
>>> scores.category_means()                                                       # doctest: +SKIP
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import ExpertError, ScoresError
from workbench.safeio import short

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from workbench.scores import ExpertScores

#: Columns of :func:`loglik_frame` that can serve as the score of :func:`score_model`.
SCORE_COLUMNS = ("token_prob", "mean_loglik", "loglik", "mc_correct")

__all__ = ["SCORE_COLUMNS", "encode_pair", "load_scoring_model", "loglik_frame", "score_model",
           "score_models", "scores_from_frame"]


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------


def encode_pair(tokenizer, prompt: str, answer: str | None, *, max_length: int,
                chat_template: bool | None = None, add_eos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of ``prompt`` (chat-formatted when used) and of ``answer`` (+ EOS).

    The answer is encoded on its own and appended, so its tokens are the same whatever the
    prompt. If the pair is longer than ``max_length`` the prompt is truncated from the left and
    the answer from the right, the answer keeping at least half of ``max_length``.
    """
    from workbench.chat_format import prompt_token_ids

    prompt_ids = prompt_token_ids(tokenizer, prompt, chat_template=chat_template)
    answer_ids: list[int] = []
    if answer is not None:
        answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
        if add_eos and tokenizer.eos_token_id is not None:
            answer_ids.append(int(tokenizer.eos_token_id))
    if len(prompt_ids) + len(answer_ids) > max_length:
        keep_answer = min(len(answer_ids), max(max_length // 2, max_length - len(prompt_ids)))
        answer_ids = answer_ids[:keep_answer]
        room = max_length - keep_answer
        prompt_ids = prompt_ids[-room:] if room > 0 else []
    return prompt_ids, answer_ids


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


@dataclass
class _Scorer:
    model: Any
    tokenizer: Any
    device: str
    name: str
    chat_template: bool | None = None


def _default_device(device: str | None) -> str:
    if device not in (None, "auto"):
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_scoring_model(model_or_path, *, tokenizer=None, device: str | None = "auto",
                       dtype: str | None = None, name: str | None = None,
                       trust_remote_code: bool = False) -> _Scorer:
    """Resolve what :func:`loglik_frame` accepts into a model, its tokenizer and a device.

    ``model_or_path`` may be a checkpoint folder or a Hugging Face id already in the local cache
    (nothing is downloaded when ``HF_HUB_OFFLINE=1``), an :class:`~workbench.experts.ExpertSpec`,
    a loaded expert from ``ExpertPool.use`` (anything with ``.model`` and ``.tokenizer``), or a
    ``PreTrainedModel`` together with ``tokenizer=``.
    """
    chat_template = None
    if hasattr(model_or_path, "model") and hasattr(model_or_path, "tokenizer"):  # LoadedExpert
        loaded = model_or_path
        spec = getattr(loaded, "spec", None)
        chat_template = getattr(spec, "chat_template", None)
        return _Scorer(loaded.model, tokenizer or loaded.tokenizer,
                       str(getattr(loaded, "device", None) or _model_device(loaded.model)),
                       name or getattr(loaded, "name", "model"), chat_template)
    if hasattr(model_or_path, "model") and hasattr(model_or_path, "name") and \
            isinstance(getattr(model_or_path, "model"), (str, Path)):  # ExpertSpec
        spec = model_or_path
        scorer = load_scoring_model(spec.model, tokenizer=tokenizer, device=device,
                                    dtype=dtype or (None if spec.dtype == "auto" else spec.dtype),
                                    name=name or spec.name,
                                    trust_remote_code=spec.trust_remote_code)
        scorer.chat_template = spec.chat_template
        if getattr(spec, "adapter", None):  # base + LoRA: score the merged expert, as the pool runs it
            from workbench.adapters import LoraAdapter

            adapter = LoraAdapter.load(spec.adapter, expert=spec.name)
            adapter.merge(scorer.model, adapter.snapshot(scorer.model, expert=spec.name), expert=spec.name)
        return scorer
    if isinstance(model_or_path, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = str(model_or_path)
        label = name or Path(path).name or path
        dev = _default_device(device)
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if dtype not in (None, "auto"):
            import torch

            kwargs["dtype"] = getattr(torch, str(dtype))
        try:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the path and the fix
            raise ExpertError(
                f"cannot load the causal LM {path!r} for scoring: {type(exc).__name__}: {exc}. "
                "Pass a folder with config.json + *.safetensors, or a Hugging Face id already in "
                "the local cache (nothing is downloaded offline)") from exc
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            except Exception as exc:  # noqa: BLE001
                raise ExpertError(f"cannot load the tokenizer of {path!r}: {exc}; save one there "
                                  "with tokenizer.save_pretrained(folder)") from exc
        model.to(dev)
        model.eval()
        return _Scorer(model, tokenizer, dev, label)
    if hasattr(model_or_path, "forward") and hasattr(model_or_path, "config"):
        if tokenizer is None:
            raise ExpertError(f"score a {type(model_or_path).__name__} object with its tokenizer: "
                              "pass tokenizer=AutoTokenizer.from_pretrained(...)")
        model = model_or_path
        dev = _model_device(model) if device in (None, "auto") else str(device)
        if device not in (None, "auto"):
            model.to(dev)
        return _Scorer(model, tokenizer, dev, name or type(model).__name__)
    raise ExpertError(f"cannot score {type(model_or_path).__name__!s} {model_or_path!r:.80}: pass a "
                      "checkpoint folder, a Hugging Face id, an ExpertSpec, a pool's loaded expert "
                      "or a PreTrainedModel with tokenizer=")


def _model_device(model) -> str:
    try:
        return str(next(p.device for p in model.parameters() if p.device.type != "meta"))
    except StopIteration:
        return "cpu"


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def _frame(prompts) -> pd.DataFrame:
    import pandas as pd

    df = getattr(prompts, "df", prompts)
    if isinstance(df, pd.DataFrame):
        return df.reset_index(drop=True)
    return pd.DataFrame(list(df))


def _option_list(value) -> list[str] | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return None
    try:
        items = [str(v) for v in list(value)]
    except TypeError:
        return None
    return items or None


def _correct_option(answer, options: list[str], where: str) -> int:
    """Index of the correct option from an index, a letter (A, B, ...) or the option's text."""
    if isinstance(answer, (int,)) and not isinstance(answer, bool) or \
            (hasattr(answer, "dtype") and getattr(answer.dtype, "kind", "") in "iu"):
        idx = int(answer)
    else:
        text = str(answer).strip()
        if text in options:
            idx = options.index(text)
        elif len(text) == 1 and text.upper().isalpha():
            idx = ord(text.upper()) - ord("A")
        elif text.isdigit():
            idx = int(text)
        else:
            raise ScoresError(f"{where}: answer {short(answer)} is neither one of its {len(options)} "
                              "options, an option letter (A, B, ...) nor an index")
    if not 0 <= idx < len(options):
        raise ScoresError(f"{where}: answer {short(answer)} points outside its {len(options)} options")
    return idx


def _supports(model, argument: str) -> bool:
    import inspect

    try:
        return argument in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _batched_logliks(scorer: _Scorer, pairs: Sequence[tuple[list[int], list[int]]], *,
                     batch_size: int, progress=None) -> list[tuple[float, int]]:
    """(sum log-prob, n tokens) of each continuation given its context, in input order.

    Batches are left-padded so the continuations line up at the end; only the logits of the last
    ``max continuation length`` positions are computed when the model supports
    ``logits_to_keep``.
    """
    import torch

    model, tok = scorer.model, scorer.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    keep_arg = "logits_to_keep" if _supports(model, "logits_to_keep") else None
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    out: list[tuple[float, int] | None] = [None] * len(pairs)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            seqs = [pairs[i][0] + pairs[i][1] for i in idx]
            width = max(len(s) for s in seqs)
            cont = max(len(pairs[i][1]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, s in enumerate(seqs):
                ids[row, width - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[row, width - len(s):] = 1
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = {"input_ids": ids.to(scorer.device), "attention_mask": mask.to(scorer.device),
                      "position_ids": position_ids.to(scorer.device), "use_cache": False}
            n_logits = min(width, cont + 1)
            if keep_arg:
                kwargs[keep_arg] = n_logits
            logits = model(**kwargs).logits[:, -n_logits:, :].float()
            # logits[:, j] predicts token at position width - n_logits + j + 1
            logp = torch.log_softmax(logits[:, :-1, :], dim=-1)
            targets = ids[:, width - n_logits + 1:].to(logp.device)
            token_lp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
            for row, i in enumerate(idx):
                n = len(pairs[i][1])
                vals = token_lp[row, token_lp.shape[1] - n:] if n else token_lp[row, :0]
                out[i] = (float(vals.sum()), n)
            if progress is not None:
                progress.update(len(idx))
    return out  # type: ignore[return-value]


def loglik_frame(model_or_path, prompts, *, tokenizer=None, answers: str = "answer",
                 options: str = "options", batch_size: int = 8, max_length: int = 512,
                 device: str | None = "auto", dtype: str | None = None, name: str | None = None,
                 chat_template: bool | None = None, progress: bool = False) -> pd.DataFrame:
    """Per-prompt log-likelihood of the reference answers (and multiple-choice accuracy).

    Parameters
    ----------
    model_or_path : str, Path, ExpertSpec, loaded expert or PreTrainedModel
        See :func:`load_scoring_model`.
    prompts : PromptSet or DataFrame
        Needs ``id``, ``text`` and the ``answers`` column; ``category`` is carried along;
        ``options`` (a list of strings per row, or a JSON list) makes a row multiple-choice, its
        answer being the correct option's text, letter or index.
    tokenizer : tokenizer, optional
        Required when ``model_or_path`` is a model object.
    batch_size, max_length : int
        Sequences per forward pass; tokens per prompt + answer (prompt truncated from the left).
    device : str
        ``"auto"``: CUDA when available (or the model's own device for a model object).
    name : str, optional
        The ``expert`` column's value (default: the folder name or the spec's name).
    chat_template : bool, optional
        Format the prompt with the tokenizer's chat template; ``None`` uses it when present.

    Returns
    -------
    pandas.DataFrame
        Columns prompt_id, category, expert, loglik, n_tokens, mean_loglik, token_prob,
        mc_correct; one row per prompt, in the prompts' order.

    Raises
    ------
    ScoresError
        A missing answers column, an empty answer, or a bad multiple-choice answer.
    ExpertError
        The model or tokenizer cannot be loaded.

    Examples
    --------
    >>> df = loglik_frame("ckpt/demo-stem-7m", prompts)       # doctest: +SKIP
    >>> df.groupby("category").token_prob.mean()              # doctest: +SKIP
    """
    import numpy as np
    import pandas as pd
    from workbench.progress import progress_bar

    df = _frame(prompts)
    for col in ("id", "text", answers):
        if col not in df.columns:
            raise ScoresError(f"live scoring needs a {short(col)} column; the prompts have "
                              f"{short(list(df.columns))}" + ("; pass answers=<column with the "
                                                       "reference answers>" if col == answers else ""))
    if max_length < 4:
        raise ScoresError(f"max_length={max_length} is too small to score anything; use >= 64")
    if batch_size < 1:
        raise ScoresError(f"batch_size={batch_size} must be a positive integer")
    scorer = load_scoring_model(model_or_path, tokenizer=tokenizer, device=device, dtype=dtype,
                                name=name)
    if chat_template is None:
        chat_template = scorer.chat_template
    tok = scorer.tokenizer
    has_options = options in df.columns
    pairs: list[tuple[list[int], list[int]]] = []
    owners: list[tuple[int, int]] = []   # (row, option index or -1 for the reference)
    correct: dict[int, int] = {}
    for row, rec in enumerate(df.itertuples(index=False)):
        rec = rec._asdict() if hasattr(rec, "_asdict") else dict(zip(df.columns, rec))
        where = f"prompt {short(rec['id'])}"
        answer = rec[answers]
        opts = _option_list(rec.get(options)) if has_options else None
        if opts:
            c = _correct_option(answer, opts, where)
            correct[row] = c
            for j, opt in enumerate(opts):
                pairs.append(encode_pair(tok, str(rec["text"]), opt, max_length=max_length,
                                         chat_template=chat_template))
                owners.append((row, j))
            continue
        if answer is None or (isinstance(answer, float) and math.isnan(answer)) or \
                not str(answer).strip():
            raise ScoresError(f"{where} has no reference answer in column {short(answers)}; fill it "
                              "or drop the prompt before scoring")
        pairs.append(encode_pair(tok, str(rec["text"]), str(answer), max_length=max_length,
                                 chat_template=chat_template))
        owners.append((row, -1))
    bar = progress_bar(len(pairs), f"scoring {scorer.name}", "seq", enabled=bool(progress))
    try:
        results = _batched_logliks(scorer, pairs, batch_size=batch_size, progress=bar)
    finally:
        bar.close()
    n = len(df)
    loglik = np.full(n, np.nan)
    ntok = np.zeros(n, dtype=int)
    mc = np.full(n, np.nan)
    option_ll: dict[int, list[float]] = {}
    option_n: dict[int, list[int]] = {}
    for (row, j), (ll, k) in zip(owners, results):
        if j < 0:
            loglik[row], ntok[row] = ll, k
        else:
            option_ll.setdefault(row, []).append(ll)
            option_n.setdefault(row, []).append(k)
    for row, lls in option_ll.items():
        c = correct[row]
        mc[row] = 1.0 if int(np.argmax(lls)) == c else 0.0
        loglik[row], ntok[row] = lls[c], option_n[row][c]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ntok > 0, loglik / np.maximum(ntok, 1), np.nan)
    return pd.DataFrame({
        "prompt_id": df["id"].astype(str).to_numpy(),
        "category": (df["category"].astype(str).to_numpy() if "category" in df.columns
                     else np.full(n, None, dtype=object)),
        "expert": scorer.name,
        "loglik": loglik, "n_tokens": ntok, "mean_loglik": mean, "token_prob": np.exp(mean),
        "mc_correct": mc,
    })


def scores_from_frame(frame: pd.DataFrame, *, score: str = "token_prob") -> ExpertScores:
    """:class:`~workbench.scores.ExpertScores` from one or more :func:`loglik_frame` results."""
    from workbench.scores import ExpertScores

    if score not in SCORE_COLUMNS:
        raise ScoresError(f"score={short(score)} is not one of {list(SCORE_COLUMNS)}")
    if score == "mc_correct" and frame["mc_correct"].isna().any():
        bad = frame.loc[frame["mc_correct"].isna(), "prompt_id"].iloc[0]
        raise ScoresError(f"score='mc_correct' needs options on every prompt; prompt {short(bad)} has "
                          "none (use score='token_prob')")
    category = "category" if frame["category"].notna().all() else None
    return ExpertScores.from_long(frame, prompt="prompt_id", expert="expert", score=score,
                                  category=category)


def score_model(model_or_path, prompts, *, answers: str = "answer", score: str = "token_prob",
                batch_size: int = 8, max_length: int = 512, device: str | None = "auto",
                **kwargs) -> ExpertScores:
    """Score one model on a prompt set; an :class:`~workbench.scores.ExpertScores` of one expert.

    ``score`` is a column of :func:`loglik_frame` (default ``token_prob``, the per-token
    probability ``exp(mean log-likelihood)``). Other keywords go to :func:`loglik_frame`.

    Examples
    --------
    >>> s = score_model("ckpt/demo-stem-7m", prompts, name="stem")    # doctest: +SKIP
    >>> s.category_means()                                            # doctest: +SKIP
    """
    frame = loglik_frame(model_or_path, prompts, answers=answers, batch_size=batch_size,
                         max_length=max_length, device=device, **kwargs)
    return scores_from_frame(frame, score=score)


def score_models(models, prompts, *, score: str = "token_prob", return_frame: bool = False,
                 **kwargs):
    """Score several models on the same prompts; one :class:`~workbench.scores.ExpertScores`.

    Parameters
    ----------
    models : mapping name -> model_or_path, list of ExpertSpec, or an ExpertPool
        With a pool, each expert is switched in through ``pool.use(name)`` (the same path as
        generation) and scored in place.
    score : str
        Which :func:`loglik_frame` column becomes the score.
    return_frame : bool
        Also return the concatenated per-prompt frame: ``(scores, frame)``.
    **kwargs
        Passed to :func:`loglik_frame` (``batch_size``, ``max_length``, ``progress`` ...).
    """
    import pandas as pd

    frames = []
    if hasattr(models, "use") and hasattr(models, "names"):  # ExpertPool
        for name in models.names:
            with models.use(name) as loaded:
                frames.append(loglik_frame(loaded, prompts, name=name, **kwargs))
    else:
        if isinstance(models, Mapping):
            items = list(models.items())
        else:
            items = [(getattr(m, "name", None), m) for m in models]
        if not items:
            raise ScoresError("score_models needs at least one model")
        for name, model in items:
            frames.append(loglik_frame(model, prompts, name=name, **kwargs))
    frame = pd.concat(frames, ignore_index=True)
    scores = scores_from_frame(frame, score=score)
    return (scores, frame) if return_frame else scores
