"""HTML rendering the Panel and ipywidgets views share (no Panel or ipywidgets import).

Everything a user or a model wrote (prompts, answers, category and expert names, errors) is
HTML-escaped: a prompt such as ``<img src=x onerror=alert(1)>`` is displayed as text, never run.

- :func:`escape_frame`: a table with its text columns escaped (for ``html`` formatters).
- :func:`text_html`, :func:`trace_rows`, :func:`trace_html`: a chat answer and its trace card.
- :func:`tiers_html`: the GPU / CPU / disk columns of a :class:`~workbench.ui.models.TierModel`.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.placement import TIERS, format_bytes

__all__ = ["escape_frame", "format_bytes", "text_html", "tiers_html", "trace_html", "trace_rows"]

_TIER_LABELS = {"gpu": "GPU", "cpu": "CPU", "disk": "disk"}


def escape_frame(df: Any, columns: Sequence[str] | None = None) -> Any:
    """A copy of ``df`` with its text columns (all object columns by default) HTML-escaped.

    Views show these with an ``html`` formatter, so ``<script>`` reads as text, never runs.
    """
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    out = df.copy()
    if columns is None:  # text columns: object or pandas' string dtype (the default in pandas 3)
        columns = [c for c in out.columns
                   if not (is_numeric_dtype(out[c].dtype) or is_bool_dtype(out[c].dtype))]
    for c in columns:
        out[c] = _object_array([html.escape(str(v)) if v is not None else "" for v in out[c]])
    return out


def _object_array(values: list[str]) -> Any:
    """A list of strings as an object array (keeps pandas from guessing a dtype)."""
    return np.array(values, dtype=object)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def text_html(text: str, *, css_class: str = "coe-text") -> str:
    """``text`` as escaped HTML that keeps line breaks (``<div class="coe-text">...</div>``)."""
    return f'<div class="{css_class}">{_esc(text)}</div>'


def _seconds(value: Any) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


def trace_rows(trace: Any) -> list[tuple[str, str]]:
    """The trace card's rows as ``(label, plain text value)`` pairs (not escaped yet)."""
    get = (trace.get if isinstance(trace, dict) else lambda k, d=None: getattr(trace, k, d))
    conf = get("confidence")
    rows = [
        ("category", str(get("category", "–"))),
        ("confidence", f"{float(conf):.2f}" if conf is not None else "–"),
        ("fallback", ("yes (low confidence" + (f"; router's top: {get('predicted')}"
                                               if get("predicted") else "") + ")")
         if get("is_fallback") else "no"),
        ("expert", str(get("expert", "–")) + ("  (fallback expert after an error)"
                                              if get("used_fallback_expert") else "")),
        ("tier found", str(get("tier_found", "–"))),
        ("switch", _seconds(get("switch_s")) + (f" (adapter merge {_seconds(get('adapter_s'))})"
                                                 if get("adapter_s") else "")),
        ("embed + route", _seconds((get("embed_s") or 0) + (get("route_s") or 0))),
        ("generation", _seconds(get("generate_s"))),
    ]
    tokens, tps = get("new_tokens"), get("tokens_per_s")
    if tokens is not None:
        ended = {"length": "; stopped at max new tokens", "stop": "; the expert finished"}.get(
            str(get("stop_reason") or ""), "")
        rows.append(("tokens", f"{int(tokens)}" + (f" at {float(tps):.1f} tok/s" if tps else "")
                     + ended))
    total = get("total_s")
    if total:
        parts = sum(float(get(k) or 0) for k in ("switch_s", "embed_s", "route_s", "generate_s"))
        rows.append(("total", _seconds(total) + f" (other: chat rendering, prompt encoding, streaming "
                                                f"{_seconds(max(0.0, float(total) - parts))})"))
    if get("turn_rule"):
        from workbench.conversation import RULES

        rule = str(get("turn_rule"))
        rows.append(("turn", f"{rule}: {RULES.get(rule, '')}".rstrip(": ")))
    if get("error"):
        rows.append(("error", str(get("error"))))
    return rows


def trace_html(trace: Any) -> str:
    """An HTML card for one :class:`~workbench.coe.Trace` (or its ``to_dict()``); every value escaped."""
    get = (trace.get if isinstance(trace, dict) else lambda k, d=None: getattr(trace, k, d))
    cells = []
    for key, value in trace_rows(trace):
        cls = ""
        if key == "fallback" and get("is_fallback"):
            cls = ' class="fallback"'
        elif key == "error":
            cls = ' class="error"'
        cells.append(f'<tr><td class="k">{_esc(key)}</td><td{cls} data-field="{_esc(key)}">'
                     f"{_esc(value)}</td></tr>")
    prompt = str(get("prompt", "") or "")
    short = prompt if len(prompt) <= 120 else prompt[:117] + "..."
    return (f'<div class="coe-trace" data-expert="{_esc(get("expert", ""))}" '
            f'data-category="{_esc(get("category", ""))}">'
            f'<div class="k">trace for: <span class="coe-trace-prompt">{_esc(short)}</span></div>'
            f"<table>{''.join(cells)}</table></div>")


def tiers_html(model: Any) -> str:
    """Three columns (GPU / CPU / disk) of a :class:`~workbench.ui.models.TierModel`, an escaped card
    per expert."""
    groups, totals, budgets = model.by_tier(), model.totals(), model.budgets()
    cols = []
    for t in TIERS:
        budget = budgets[t]
        if t == "gpu" and not budget:
            budget_text = "no GPU tier (no CUDA device or gpu_memory=None)"
            bar = ""
        elif budget:
            share = min(1.0, totals[t] / budget) if budget else 0
            budget_text = f"{format_bytes(totals[t])} of {format_bytes(budget)}"
            bar = f'<div class="bar"><div style="width:{share * 100:.1f}%"></div></div>'
        else:
            budget_text = f"{format_bytes(totals[t])} to read from checkpoints / offload"
            bar = ""
        cards = []
        for item in sorted(groups[t], key=lambda d: -d["bytes"]):
            tags = [item["tier"]] + (["pinned"] if item["pinned"] else []) + (["in use"] if item["in_use"] else [])
            if item.get("base"):
                tags.append(f"LoRA on {item['base']}" + (", merged" if item.get("merged") else ""))
            if item.get("hidden"):
                tags.append("shared base")
            note = model.expert_notes.get(item["expert"])
            if note:
                tags.append(note)
            cls = "coe-expert in-use" if item["in_use"] else "coe-expert"
            cards.append(f'<div class="{cls}" data-expert="{html.escape(item["expert"])}" data-tier="{t}">'
                         f'<span class="name">{html.escape(item["expert"])}</span>'
                         f'<span class="bytes">{format_bytes(item["bytes"])}</span>'
                         f'<div class="tags">{html.escape(", ".join(tags))}</div></div>')
        body = "".join(cards) or '<div class="coe-empty">empty</div>'
        cols.append(f'<div class="coe-tier" data-tier="{t}"><h3>{_TIER_LABELS[t]}</h3>'
                    f'<div class="budget">{html.escape(budget_text)}</div>{bar}{body}</div>')
    return f'<div class="coe-tiers">{"".join(cols)}</div>'
