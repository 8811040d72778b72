"""Small view helpers shared by the Panel views."""
from __future__ import annotations

import html
from typing import Any

import panel as pn

__all__ = ["labelled"]


def labelled(widget: Any, label: str, tooltip: str = "") -> Any:
    """``widget`` under a visible label (Panel's button groups draw none), with ``tooltip`` as
    the label's hover text."""
    title = f' title="{html.escape(tooltip, quote=True)}"' if tooltip else ""
    mark = " ⓘ" if tooltip else ""
    head = pn.pane.HTML(f'<label class="coe-label"{title} style="font-size: 13px">'
                        f"{html.escape(label)}{mark}</label>", margin=(5, 10, 0, 10))
    return pn.Column(head, widget, margin=0)
