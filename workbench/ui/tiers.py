"""The tier view: which experts sit in GPU, CPU and disk, with their bytes, updating as the pool changes.

:class:`TierModel` observes an :class:`~workbench.experts.ExpertPool` (a listener marks it stale on
every pool event; :meth:`TierModel.refresh` re-reads ``pool.residency()`` and the recent events).
:class:`TierPanel` renders three columns (GPU / CPU / disk) with one card per expert, the tier
budgets, and the latest pool events, refreshing itself from a periodic callback on the session's
own event loop (pool events fire in worker threads).

Examples
--------
>>> from workbench.ui.tiers import TierModel, TierPanel      # doctest: +SKIP
>>> tiers = TierModel(bundle.pool)                           # doctest: +SKIP
>>> tiers.by_tier()["cpu"]                                   # doctest: +SKIP
>>> TierPanel(tiers)                                         # doctest: +SKIP
"""
from __future__ import annotations

import html
import threading
import weakref
from typing import Any

import panel as pn
import param

from workbench.errors import WorkbenchError

TIERS = ("gpu", "cpu", "disk")
_LABELS = {"gpu": "GPU", "cpu": "CPU", "disk": "disk"}

_STYLES = """
.coe-tiers { display: flex; gap: 12px; width: 100%; }
.coe-tier { flex: 1; border: 1px solid #d0d7de; border-radius: 8px; padding: 8px; min-height: 120px; }
.coe-tier h3 { margin: 0 0 4px 0; font-size: 15px; }
.coe-tier .budget { color: #57606a; font-size: 12px; margin-bottom: 6px; }
.coe-tier .bar { height: 6px; background: #eaeef2; border-radius: 3px; margin-bottom: 8px; }
.coe-tier .bar div { height: 6px; background: #0969da; border-radius: 3px; }
.coe-expert { border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 6px; margin: 4px 0;
              font-size: 13px; background: #fff; }
.coe-expert.in-use { border-color: #1a7f37; box-shadow: 0 0 0 1px #1a7f37; }
.coe-expert .bytes { float: right; font-variant-numeric: tabular-nums; }
.coe-expert .tags { color: #57606a; font-size: 11px; }
.coe-empty { color: #8c959f; font-style: italic; font-size: 12px; }
"""


def format_bytes(n: float) -> str:
    """Human-readable bytes: ``format_bytes(1536) == '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class _PoolWatcher:
    """One listener per pool that fans out to weakly held subscribers (sessions come and go)."""

    _by_pool: "weakref.WeakKeyDictionary[Any, _PoolWatcher]" = weakref.WeakKeyDictionary()
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.subscribers: "weakref.WeakSet[TierModel]" = weakref.WeakSet()
        self.count = 0

    @classmethod
    def of(cls, pool: Any) -> "_PoolWatcher":
        with cls._guard:
            watcher = cls._by_pool.get(pool)
            if watcher is None:
                watcher = cls()
                ref = weakref.ref(watcher)

                def listener(event: Any) -> None:
                    w = ref()
                    if w is not None:
                        w.notify(event)

                pool.add_listener(listener)
                cls._by_pool[pool] = watcher
            return watcher

    def notify(self, event: Any) -> None:
        self.count += 1
        for model in list(self.subscribers):
            model._stale = True


class TierModel(param.Parameterized):
    """Residency of a pool's experts per tier, re-read on pool events.

    Parameters
    ----------
    pool : ExpertPool
        The pool to observe (shared by every session).
    max_events : int
        How many of the latest pool events :attr:`events` keeps.

    Attributes
    ----------
    residency : pandas.DataFrame
        ``pool.residency()``: expert, tier, gpu_bytes, cpu_bytes, disk_bytes, pinned, in_use, ...
    events : pandas.DataFrame
        The latest pool events, newest first.
    version : int
        Bumped by every :meth:`refresh` that saw a change.
    """

    residency = param.DataFrame(default=None, allow_None=True)
    events = param.DataFrame(default=None, allow_None=True)
    max_events = param.Integer(default=12, bounds=(1, 1000))
    version = param.Integer(default=0)

    def __init__(self, pool: Any, *, expert_notes: dict[str, str] | None = None, **params: Any) -> None:
        if not hasattr(pool, "residency"):
            raise WorkbenchError(f"TierModel needs an ExpertPool (with residency()), got "
                                 f"{type(pool).__name__}")
        super().__init__(**params)
        self.pool = pool
        #: expert -> a short line shown on its card (size and held-out score; see from_bundle)
        self.expert_notes = dict(expert_notes or {})
        self._stale = True
        self._watcher = _PoolWatcher.of(pool)
        self._watcher.subscribers.add(self)
        self.refresh()

    @classmethod
    def from_bundle(cls, bundle: Any, **params: Any) -> "TierModel":
        """The tier view of ``bundle.pool``, each card noting the expert's size and held-out score."""
        return cls(bundle.pool, expert_notes=expert_notes(bundle), **params)

    @property
    def stale(self) -> bool:
        """True when a pool event arrived after the last :meth:`refresh`."""
        return self._stale

    def refresh(self, force: bool = False) -> bool:
        """Re-read the pool when it changed (or ``force``); returns whether anything was re-read."""
        if not (self._stale or force):
            return False
        import pandas as pd

        self._stale = False
        rows = self.pool.residency()
        frame = pd.DataFrame(rows, columns=["expert", "tier", "gpu_bytes", "cpu_bytes", "disk_bytes",
                                            "size_bytes", "pinned", "in_use", "loading", "last_used"]
                             if not rows else None)
        events = self.pool.events()[-self.max_events:][::-1]
        ev = pd.DataFrame([e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in events])
        with param.parameterized.batch_call_watchers(self):
            self.residency = frame
            self.events = ev
            self.version += 1
        return True

    def by_tier(self) -> dict[str, list[dict]]:
        """Experts per tier: ``{"gpu": [...], "cpu": [...], "disk": [...]}``.

        Each item is ``{"expert", "bytes", "tier", "pinned", "in_use"}``. A split expert appears in
        every tier holding part of it; an expert not in memory is on disk with its full size.
        """
        out: dict[str, list[dict]] = {t: [] for t in TIERS}
        if self.residency is None or self.residency.empty:
            return out
        for row in self.residency.to_dict("records"):
            tier = str(row.get("tier", ""))
            parts = tier.split("+")
            for t in TIERS:
                nbytes = int(row.get(f"{t}_bytes") or 0)
                if t == "disk" and tier == "disk" and not nbytes:
                    nbytes = self._checkpoint_bytes(row["expert"])
                if t in parts or (t != "disk" and nbytes > 0):
                    base = row.get("base")
                    out[t].append({"expert": row["expert"], "bytes": nbytes, "tier": tier,
                                   "pinned": bool(row.get("pinned")), "in_use": bool(row.get("in_use")),
                                   "base": base if isinstance(base, str) else None,
                                   "merged": bool(row.get("adapter_merged")),
                                   "hidden": bool(row.get("hidden"))})
        return out

    def _checkpoint_bytes(self, name: str) -> int:
        """Size of an expert's weight files on disk (before the pool has read its checkpoint)."""
        cache = self.__dict__.setdefault("_ckpt_bytes", {})
        if name not in cache:
            from pathlib import Path

            spec = getattr(self.pool, "specs", {}).get(name)
            folder = Path(str(getattr(spec, "model", ""))) if spec is not None else None
            total = 0
            if folder is not None and folder.is_dir():
                total = sum(f.stat().st_size for f in folder.iterdir()
                            if f.suffix in (".safetensors", ".bin") and f.is_file())
            cache[name] = total
        return cache[name]

    def totals(self) -> dict[str, int]:
        """Bytes per tier, summed over :meth:`by_tier`."""
        return {t: sum(item["bytes"] for item in items) for t, items in self.by_tier().items()}

    def budgets(self) -> dict[str, int | None]:
        """The pool's tier budgets in bytes (``None`` for disk: unbounded)."""
        return {"gpu": int(getattr(self.pool, "gpu_budget", 0) or 0),
                "cpu": int(getattr(self.pool, "cpu_budget", 0) or 0), "disk": None}


def expert_notes(bundle: Any) -> dict[str, str]:
    """Per expert: ``"134.5M params · held-out 0.083"`` from the bundle's registry and live scores."""
    from workbench.registry import format_params

    notes: dict[str, str] = {}
    registry, scores = getattr(bundle, "registry", None), getattr(bundle, "scores", None)
    means = None
    try:
        means = scores.category_means().mean(axis=0) if scores is not None else None
    except Exception:  # noqa: BLE001 - notes are informative only
        means = None
    for name in getattr(bundle.pool, "names", []):
        parts = []
        try:
            parts.append(f"{format_params(registry.total(name))} params")
        except Exception:  # noqa: BLE001 - an expert missing from the registry gets no size note
            pass
        if means is not None and name in means.index:
            parts.append(f"held-out score {means[name]:.3f}")
        if parts:
            notes[name] = " · ".join(parts)
    return notes


def tiers_html(model: TierModel) -> str:
    """Three columns (GPU / CPU / disk) with an escaped card per expert."""
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
        cols.append(f'<div class="coe-tier" data-tier="{t}"><h3>{_LABELS[t]}</h3>'
                    f'<div class="budget">{html.escape(budget_text)}</div>{bar}{body}</div>')
    return f'<div class="coe-tiers">{"".join(cols)}</div>'


class TierPanel(pn.viewable.Viewer):
    """GPU / CPU / disk columns with the experts in each and their bytes, plus the latest pool events.

    Parameters
    ----------
    model : TierModel
    period_ms : int
        How often the panel checks the model for pool events (only re-reads when something changed).
    """

    def __init__(self, model: TierModel, *, period_ms: int = 500, **params: Any) -> None:
        super().__init__(**params)
        self.model = model
        self._columns = pn.pane.HTML(tiers_html(model), stylesheets=[_STYLES],
                                     sizing_mode="stretch_width", css_classes=["coe-tier-view"])
        self._events = pn.widgets.Tabulator(self._events_frame(), disabled=True, show_index=False,
                                            sizing_mode="stretch_width", height=260)
        refresh = pn.widgets.Button(label="Refresh", width=90)
        refresh.on_click(lambda _e: self.model.refresh(force=True))
        model.param.watch(self._update, "version")
        self._period_ms = period_ms
        self._callback = None
        self._layout = pn.Column(
            pn.Row(pn.pane.Markdown("Where each expert lives now. The card of the expert that is "
                                    "generating is outlined; tiers update on every load, switch and "
                                    "eviction.", sizing_mode="stretch_width"), refresh),
            self._columns,
            pn.pane.Markdown("**Latest pool events** (newest first)"),
            self._events,
            sizing_mode="stretch_width",
        )
        try:
            self._callback = pn.state.add_periodic_callback(self._poll, period=period_ms)
        except Exception:  # no event loop (plain Python): call model.refresh() by hand
            self._callback = None

    def _events_frame(self):
        frame = self.model.events
        if frame is None or frame.empty:
            import pandas as pd

            return pd.DataFrame(columns=["time", "expert", "action", "from_tier", "to_tier", "bytes", "seconds"])
        frame = frame.copy()
        import pandas as pd

        frame["time"] = pd.to_datetime(frame["time"], unit="s").dt.strftime("%H:%M:%S")
        frame["bytes"] = frame["bytes"].map(format_bytes)
        frame["seconds"] = frame["seconds"].round(3)
        return frame[[c for c in ["time", "expert", "action", "from_tier", "to_tier", "bytes", "seconds",
                                  "detail"] if c in frame]]

    def _poll(self) -> None:
        self.model.refresh()

    def _update(self, *_: Any) -> None:
        self._columns.object = tiers_html(self.model)
        self._events.value = self._events_frame()

    def __panel__(self):
        return self._layout
