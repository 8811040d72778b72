"""The prompt length limit: refuse an oversized prompt before it is tokenized or sent.

Examples
--------
>>> from workbench.embed import check_prompt_length
>>> check_prompt_length("What is 2+2?")
'What is 2+2?'
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from workbench.errors import EmbedderError
from workbench.safeio import short

#: Longest prompt (in characters) embedded by default; longer ones are refused before tokenizing
#: (a 50 MB prompt took minutes and gigabytes). Override with ``Embedder(max_chars=...)`` or the
#: environment variable ``COE_MAX_PROMPT_CHARS``.
MAX_PROMPT_CHARS = 100_000
MAX_PROMPT_CHARS_ENV = "COE_MAX_PROMPT_CHARS"


def default_max_chars() -> int:
    """The prompt length limit: ``$COE_MAX_PROMPT_CHARS`` when set, else :data:`MAX_PROMPT_CHARS`."""
    raw = os.environ.get(MAX_PROMPT_CHARS_ENV, "").strip()
    if not raw:
        return MAX_PROMPT_CHARS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise EmbedderError(f"the environment variable {MAX_PROMPT_CHARS_ENV}={short(raw)} is not a positive "
                            f"number of characters; set it like {MAX_PROMPT_CHARS_ENV}=200000 or unset it "
                            f"(default {MAX_PROMPT_CHARS:,})")
    return value


def check_max_chars(limit: Any) -> int:
    """``limit`` as an int when it is a positive number of characters, else :class:`EmbedderError`."""
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or int(limit) < 1:
        raise EmbedderError(f"max_chars must be a positive number of characters, got {short(limit)}")
    return int(limit)


def check_prompt_length(text: str, limit: int | None = None, what: str = "prompt") -> str:
    """Refuse a prompt longer than ``limit`` characters (default :func:`default_max_chars`).

    Call it before embedding (or sending) a user's text; returns ``text`` unchanged when it fits.

    Raises
    ------
    EmbedderError
        Naming ``what``, the length, the limit and how to raise it.

    Examples
    --------
    >>> check_prompt_length("What is 2+2?")
    'What is 2+2?'
    >>> check_prompt_length("x" * 11, limit=10)
    Traceback (most recent call last):
    ...
    workbench.errors.EmbedderError: prompt is 11 characters long, over the limit of 10; shorten it, or raise the limit with Embedder(max_chars=...) or the environment variable COE_MAX_PROMPT_CHARS
    """
    limit = default_max_chars() if limit is None else check_max_chars(limit)
    if isinstance(text, str) and len(text) > limit:
        raise EmbedderError(
            f"{what} is {len(text):,} characters long, over the limit of {limit:,}; shorten it, or raise "
            f"the limit with Embedder(max_chars=...) or the environment variable {MAX_PROMPT_CHARS_ENV}"
        )
    return text
