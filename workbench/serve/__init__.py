"""Serving a built CoE: a portable bundle folder and an OpenAI-compatible HTTP API.

* :mod:`workbench.serve.bundle`: :func:`save_coe` / :func:`load_coe` (``CoE.save`` / ``CoE.load``),
  a versioned manifest, no pickle;
* :mod:`workbench.conversation` (re-exported here): which expert answers a turn of a multi-turn conversation;
* :mod:`workbench.serve.api`: :func:`create_api`, the FastAPI app (``coe-workbench serve-api``),
  over :mod:`~workbench.serve.protocol` (the wire format), :mod:`~workbench.serve.engine`
  (generation, limits, cancellation) and :mod:`~workbench.serve.metrics`.

Importing this package imports nothing heavy; FastAPI and uvicorn are imported by
:func:`create_api` and :func:`serve_api` only (``pip install 'coe-workbench[serve]'``).

Examples
--------
>>> coe.save("my-coe")                                     # doctest: +SKIP
>>> coe = CoE.load("my-coe")                               # doctest: +SKIP
>>> app = create_api(coe, api_key="secret")                # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "ConversationRouter", "TurnDecision", "create_api",
           "decide_turn", "load_coe", "read_manifest", "save_coe", "serve_api"]

_WHERE = {
    "BUNDLE_FORMAT": "bundle", "BUNDLE_VERSION": "bundle", "load_coe": "bundle",
    "read_manifest": "bundle", "save_coe": "bundle",
    "ConversationRouter": "conversation", "TurnDecision": "conversation", "decide_turn": "conversation",
    "create_api": "api", "serve_api": "api",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"workbench.serve.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
