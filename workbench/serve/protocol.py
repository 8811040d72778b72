"""OpenAI's chat-completions wire format: request validation, responses, stream chunks, errors.

Pure functions over dicts (no web framework), so every rule is tested without a server. A bad
request raises :class:`~workbench.errors.RequestError` naming the field (``param``) and the fix;
:func:`error_body` turns it into OpenAI's ``{"error": {...}}`` object.

The CoE's extras never change a standard field: the routing decision travels in ``x-coe-*``
headers (:func:`coe_headers`) and a ``coe_trace`` object beside ``choices``.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import RequestError
from workbench.safeio import short

__all__ = ["COE_MODEL", "MAX_STOP", "ChatRequest", "chunk", "coe_headers", "completion",
           "error_body", "parse_chat_request", "sse"]

#: The model name that routes (every other model name is an expert, which it forces).
COE_MODEL = "coe"
#: At most this many stop sequences (as OpenAI).
MAX_STOP = 4
ROLES = ("system", "developer", "user", "assistant")  # no "tool": the experts call no tools


@dataclass
class ChatRequest:
    """A validated ``POST /v1/chat/completions`` body."""

    model: str
    messages: list[dict]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    @property
    def forced_expert(self) -> str | None:
        """The expert the request names (None for the routing model ``coe``)."""
        return None if self.model == COE_MODEL else self.model

    def generation(self) -> dict[str, Any]:
        """``generate`` settings: greedy unless a temperature above 0 is asked for."""
        gen: dict[str, Any] = {}
        if self.max_tokens is not None:
            gen["max_new_tokens"] = self.max_tokens
        if self.temperature is not None:
            if self.temperature > 0:
                gen.update(do_sample=True, temperature=self.temperature)
                if self.top_p is not None:
                    gen["top_p"] = self.top_p
            else:
                gen["do_sample"] = False
        elif self.top_p is not None and self.top_p < 1:
            gen.update(do_sample=True, top_p=self.top_p)
        if self.seed is not None and gen.get("do_sample"):
            gen["seed"] = self.seed
        return gen


def _number(body: dict, key: str, low: float, high: float, *, low_open: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and (value < low or value > high or (low_open and value == low)):
        ok = False
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise RequestError(f"'{key}' must be a number in {interval}, got {short(value)}", param=key)
    return float(value)


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    where = f"messages[{i}].content"
    if isinstance(content, str):
        return content
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, list):  # content parts: text ones only
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise RequestError(f"{where}[{j}] must be a text part ({{'type': 'text', 'text': "
                                   f"'...'}}); the CoE experts read text only, got {short(part)}",
                                   param=f"{where}[{j}]")
            texts.append(part["text"])
        return "".join(texts)
    raise RequestError(f"{where} must be a string (the message text), got "
                       f"{type(content).__name__} {short(content)}", param=where)


def _messages(body: dict) -> list[dict]:
    if "messages" not in body:
        raise RequestError("'messages' is required: a list of {'role', 'content'} messages ending "
                           "with the user's turn", param="messages")
    raw = body["messages"]
    if not isinstance(raw, list) or not raw:
        raise RequestError(f"'messages' must be a non-empty list of {{'role', 'content'}} messages, "
                           f"got {short(raw)}", param="messages")
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object with 'role' and 'content', got "
                               f"{short(message)}", param=f"messages[{i}]")
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {short(role)}",
                               param=f"messages[{i}].role")
        item = {"role": "system" if role == "developer" else role, "content": _content(message, i)}
        if isinstance(message.get("name"), str):
            item["name"] = message["name"]
        out.append(item)
    if not any(m["role"] == "user" for m in out):
        raise RequestError("'messages' holds no message with role 'user'; the latest user turn is "
                           "what the CoE routes and answers", param="messages")
    last_user = max(i for i, m in enumerate(out) if m["role"] == "user")
    if not out[last_user]["content"].strip():
        raise RequestError(f"messages[{last_user}].content is empty; the latest user turn must hold "
                           "text to route", param=f"messages[{last_user}].content")
    return out


def _stop(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_STOP or \
            not all(isinstance(s, str) and s for s in items):
        raise RequestError(f"'stop' must be a non-empty string or a list of 1 to {MAX_STOP} non-empty "
                           f"strings, got {short(stop)}", param="stop")
    return list(items)


def parse_chat_request(raw: bytes | str, models: list[str], *, max_tokens_limit: int = 4096) -> ChatRequest:
    """Validate a chat-completions body against the served ``models`` (``coe`` first).

    Raises
    ------
    RequestError
        400 for a malformed body or field (``param`` names it), 404 for an unknown model.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"the request body is not UTF-8 (byte {exc.start}); send UTF-8 JSON") from None
    if not raw.strip():
        raise RequestError("the request body is empty; send a JSON object with 'model' and 'messages'")
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestError(f"the request body is not valid JSON (line {exc.lineno} column {exc.colno}: "
                           f"{exc.msg}); send a JSON object with 'model' and 'messages'") from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, got {type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError(f"'model' is required: {COE_MODEL!r} routes each request, an expert's "
                           f"name forces it ({', '.join(models)}); got {short(model)}", param="model")
    if model not in models:
        raise RequestError(f"the model {short(model)} does not exist; this server has: "
                           f"{', '.join(models)} (GET /v1/models)", param="model", status=404,
                           code="model_not_found")
    messages = _messages(body)
    key = "max_completion_tokens" if body.get("max_tokens") is None else "max_tokens"
    max_tokens = body.get(key)
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or not 1 <= max_tokens <= max_tokens_limit):
        raise RequestError(f"'{key}' must be an integer from 1 to {max_tokens_limit}, got "
                           f"{short(max_tokens)}", param=key)
    n = body.get("n")
    if n not in (None, 1):
        raise RequestError(f"'n' must be 1 (one answer per request), got {short(n)}", param="n")
    if body.get("tools") or body.get("functions"):
        param = "tools" if body.get("tools") else "functions"
        raise RequestError(f"'{param}' is not supported: the CoE experts answer with text only",
                           param=param)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError(f"'stream' must be true or false, got {short(stream)}", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(f"'stream_options' must be an object, got {short(options)}",
                           param="stream_options")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise RequestError(f"'seed' must be an integer, got {short(seed)}", param="seed")
    return ChatRequest(model=model, messages=messages, stream=bool(stream), seed=seed,
                       include_usage=bool(options.get("include_usage", False)),
                       max_tokens=max_tokens,
                       temperature=_number(body, "temperature", 0.0, 2.0),
                       top_p=_number(body, "top_p", 0.0, 1.0, low_open=True), stop=_stop(body))


# ---------------------------------------------------------------------------------- responses
def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def completion(cid: str, model: str, text: str, finish_reason: str, usage: dict, coe_trace: dict,
               created: int | None = None) -> dict:
    """A ``chat.completion`` object with the ``coe_trace`` extension."""
    return {"id": cid, "object": "chat.completion", "created": created or int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage, "coe_trace": coe_trace}


def chunk(cid: str, model: str, created: int, delta: dict | None, finish_reason: str | None = None,
          **extra: Any) -> dict:
    """A ``chat.completion.chunk``; ``delta=None`` makes the usage-only chunk (no choices)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish_reason}]
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices, **extra}


def sse(obj: Any) -> str:
    """One server-sent event line (``data: ...`` and a blank line)."""
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def error_body(exc: BaseException) -> dict:
    """OpenAI's error object for ``exc`` (its message only: never a traceback)."""
    return {"error": {"message": str(exc), "type": getattr(exc, "type", "server_error"),
                      "param": getattr(exc, "param", None), "code": getattr(exc, "code", None)}}


def coe_headers(trace: dict) -> dict[str, str]:
    """The routing decision as ``x-coe-*`` response headers (ASCII-safe values)."""
    def clean(value: Any) -> str:
        return str(value).encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ")[:200]

    headers = {
        "x-coe-category": clean(trace.get("category", "")),
        "x-coe-expert": clean(trace.get("expert", "")),
        "x-coe-confidence": f"{float(trace.get('confidence', 0.0)):.4f}",
        "x-coe-fallback": "true" if trace.get("is_fallback") else "false",
        "x-coe-tier": clean(trace.get("tier_found", "") or ""),
    }
    if trace.get("rule"):
        headers["x-coe-rule"] = clean(trace["rule"])
    if trace.get("used_fallback_expert"):
        headers["x-coe-fallback-expert"] = "true"
    return headers
