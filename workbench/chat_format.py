"""How a prompt becomes token ids for a causal LM: chat template or raw text, written once.

Generation (:mod:`workbench.experts.generation`) and live scoring (:mod:`workbench.livescore`)
both encode prompts here, so an expert is scored on exactly the tokens it answers from.
"""
from __future__ import annotations

from typing import Any

from workbench.errors import ExpertError

__all__ = ["uses_chat_template", "as_messages", "prompt_token_ids"]


def uses_chat_template(tokenizer: Any, chat_template: bool | None, *, who: str = "") -> bool:
    """Whether to format with the tokenizer's chat template: ``chat_template`` when given (an
    error if the tokenizer has none), else whether it has one."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template is None:
        return has
    if chat_template and not has:
        raise ExpertError(f"{who}chat_template=True but the tokenizer has no chat template; pass "
                          "chat_template=False to use the raw prompt text")
    return bool(chat_template)


def as_messages(prompt: Any, *, who: str = "") -> list[dict]:
    """``"text"`` -> ``[{"role": "user", "content": "text"}]``; a list of messages is kept."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and all(isinstance(m, dict) and "content" in m for m in prompt):
        return prompt
    raise ExpertError(f"{who}prompt must be a string or a list of {{'role', 'content'}} dicts, got "
                      f"{type(prompt).__name__}")


def prompt_token_ids(tokenizer: Any, prompt: Any, *, chat_template: bool | None = None,
                     who: str = "") -> list[int]:
    """Token ids of ``prompt`` (text or chat messages) ready for generation.

    With a chat template: the messages plus the assistant's generation prompt. Without: the text
    (messages joined by newlines) with the tokenizer's special tokens.
    """
    messages = as_messages(prompt, who=who)
    if uses_chat_template(tokenizer, chat_template, who=who):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return [int(i) for i in ids]
    text = prompt if isinstance(prompt, str) else "\n".join(str(m["content"]) for m in messages)
    return [int(i) for i in tokenizer(text, add_special_tokens=True)["input_ids"]]
