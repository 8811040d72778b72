"""Live CoE chat (old import path): the per-session chat model and its Panel view.

The model is :mod:`workbench.ui.models.chat` (no Panel needed), the HTML helpers
:mod:`workbench.ui.render`, the Panel view :mod:`workbench.ui.panel.chat` (``ChatPanel`` loads
Panel when first asked for).

Examples
--------
>>> from workbench.ui.chat import ChatModel, ChatPanel        # doctest: +SKIP
>>> chat = ChatModel.from_bundle(bundle, max_new_tokens=32)   # doctest: +SKIP
>>> ChatPanel(chat).servable()                                # doctest: +SKIP
"""
from __future__ import annotations

from workbench.errors import ChatError
from workbench._lazy import lazy_getattr
from workbench.ui.models.chat import ChatModel
from workbench.ui.render import text_html, trace_html, trace_rows

__all__ = ["ChatError", "ChatModel", "text_html", "trace_html", "trace_rows"]  # + lazy ChatPanel

__getattr__ = lazy_getattr(__name__, {"ChatPanel": "workbench.ui.panel.chat"}, globals())
