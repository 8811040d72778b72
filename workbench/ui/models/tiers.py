"""The tier model: which experts sit in GPU, CPU and disk, with their bytes, updating as the pool
changes.

:class:`TierModel` observes an :class:`~workbench.experts.ExpertPool` (a listener marks it stale on
every pool event; :meth:`TierModel.refresh` re-reads ``pool.residency()`` and the recent events).
Tier membership is the pool's own (:meth:`ExpertPool.residency_by_tier`, :func:`group_by_tier`); the sizes are
the pool's (``disk_bytes`` is what would be read from disk). No Panel, bokeh or ipywidgets import;
the view is :class:`workbench.ui.panel.tiers.TierPanel` (HTML in :func:`workbench.ui.render.tiers_html`).

Examples
--------
>>> from workbench.ui.models import TierModel      # doctest: +SKIP
>>> tiers = TierModel(bundle.pool)                  # doctest: +SKIP
>>> tiers.by_tier()["cpu"]                          # doctest: +SKIP
"""
from __future__ import annotations

import threading
import weakref
from typing import Any

import param

from workbench.errors import ExpertError
from workbench.experts.residency import group_by_tier
from workbench.placement import TIERS

__all__ = ["TIERS", "TierModel", "expert_notes", "group_by_tier"]


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
            model.mark_stale()


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
            raise ExpertError(f"TierModel needs an ExpertPool (with residency()), got "
                                 f"{type(pool).__name__}")
        super().__init__(**params)
        self.pool = pool
        #: expert -> a short line shown on its card (size and held-out score; see from_bundle)
        self.expert_notes = dict(expert_notes or {})
        self.mark_stale()
        self._watcher = _PoolWatcher.of(pool)
        self._watcher.subscribers.add(self)
        self.refresh()

    @classmethod
    def from_bundle(cls, bundle: Any, **params: Any) -> "TierModel":
        """The tier view of ``bundle.pool``, each card noting the expert's size and held-out score."""
        return cls(bundle.pool, expert_notes=expert_notes(bundle), **params)

    def mark_stale(self) -> None:
        """Note that the pool changed (what the pool listener calls); the next refresh re-reads."""
        self._stale = True

    @property
    def stale(self) -> bool:
        """True when a pool event arrived after the last :meth:`refresh`."""
        return self._stale

    def _busy_shown(self) -> bool:
        """True while a card shows an expert in use or loading: its release fires no pool event,
        so the periodic refresh keeps re-reading until the cards are idle again."""
        frame = self.residency
        if frame is None or frame.empty:
            return False
        return bool((frame["in_use"] > 0).any() or frame["loading"].astype(bool).any())

    def refresh(self, force: bool = False) -> bool:
        """Re-read the pool when it changed, while a shown expert is busy, or on ``force``;
        returns whether anything was re-read."""
        if not (self._stale or force or self._busy_shown()):
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

    def evict(self, name: str) -> str:
        """Evict ``name`` from memory (the Tiers tab's button: watch the next request load it
        back); returns a message for the status line. An expert in use is refused by the pool
        with a message saying so."""
        self.pool.evict(name)
        self.refresh(force=True)
        return f"evicted {name}: its next request loads it again (see the events below)"

    def by_tier(self) -> dict[str, list[dict]]:
        """Experts per tier: ``{"gpu": [...], "cpu": [...], "disk": [...]}`` (:func:`group_by_tier`)."""
        if self.residency is None or self.residency.empty:
            return {t: [] for t in TIERS}
        return group_by_tier(self.residency.to_dict("records"))  # the pool's rule, on the rows shown

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


