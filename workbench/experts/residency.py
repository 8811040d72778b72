"""What the pool holds where: tracked bytes per tier and the per-expert residency table (a mixin)."""
from __future__ import annotations

from collections.abc import Iterable

from workbench.errors import ExpertError
from workbench.placement import TIERS, weights_bytes_on_disk


def group_by_tier(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Residency rows (``ExpertPool.residency()``) grouped per tier.

    Each item is ``{"expert", "bytes", "tier", "pinned", "in_use", "base", "merged", "hidden"}``. A
    split expert appears in every tier holding part of it; an expert not in memory is on disk
    with the bytes the pool reports for reading it (``disk_bytes``).
    """
    out: dict[str, list[dict]] = {t: [] for t in TIERS}
    for row in rows:
        tier = str(row.get("tier", ""))
        parts = tier.split("+")
        for t in TIERS:
            nbytes = int(row.get(f"{t}_bytes") or 0)
            if t in parts or (t != "disk" and nbytes > 0):
                base = row.get("base")
                out[t].append({"expert": row["expert"], "bytes": nbytes, "tier": tier,
                               "pinned": bool(row.get("pinned")), "in_use": bool(row.get("in_use")),
                               "base": base if isinstance(base, str) else None,
                               "merged": bool(row.get("adapter_merged")),
                               "hidden": bool(row.get("hidden"))})
    return out


class Residency:
    """Mixed into :class:`~workbench.experts.ExpertPool`."""

    def residency_by_tier(self) -> dict[str, list[dict]]:
        """Experts per tier (``{"gpu": [...], "cpu": [...], "disk": [...]}``, see :func:`group_by_tier`)."""
        return group_by_tier(self.residency())

    def tracked_bytes(self, tier: str) -> int:
        """Bytes the pool holds (or has reserved for a load in progress) on ``tier`` (``gpu``/``cpu``/``disk``)."""
        if tier not in ("gpu", "cpu", "disk"):
            raise ExpertError(f"unknown tier {tier!r}; use 'gpu', 'cpu' or 'disk'")
        with self._lock:
            if tier == "disk":
                return sum(e.placement.bytes_per_tier["disk"] for e in self._entries.values()
                           if e.split_model is not None and e.placement is not None)
            return sum(e.bytes_on(tier) for e in self._entries.values())

    def residency(self) -> list[dict]:
        """Per expert: tier, bytes per tier, which modules each tier holds, pinned, in_use, last_used.

        ``disk_bytes`` counts the bytes that would be read from disk to run the expert now (all of
        it when it is not in memory; the offloaded part of a split expert).

        An adapter expert's row has its base's tier, ``base`` (the shared base's name),
        ``adapter_merged`` (merged into the base now) and the adapter's own bytes; a base that no
        spec names has ``hidden=True``.
        """
        with self._lock:
            rows = []
            for name, e in self._entries.items():
                tier = e.tier
                common = {"base": e.base.spec.name if e.base is not None else None, "hidden": e.hidden,
                          "adapter_merged": e.base is not None and any(w is e for w, _ in e.base.merged.values())}
                if e.base is not None:
                    size = e.adapter.nbytes if e.adapter is not None else weights_bytes_on_disk(e.spec.adapter)
                    rows.append({"expert": name, "tier": tier, "gpu_bytes": 0, "cpu_bytes": e.bytes_on("cpu"),
                                 "disk_bytes": 0 if e.adapter is not None else size, "size_bytes": size,
                                 "pinned": e.pinned, "in_use": e.in_use, "loading": e.base.loading,
                                 "last_used": e.last_used, "modules": {}, **common})
                    continue
                if e.split_model is not None and e.placement is not None:
                    modules = {t: list(v) for t, v in e.placement.modules_per_tier.items() if v}
                    disk = e.placement.bytes_per_tier["disk"]
                elif tier in ("gpu", "cpu"):
                    modules = {t: [""] for t in ("gpu", "cpu") if e.bytes_on(t)}
                    disk = 0
                else:
                    modules = {"disk": [""]}
                    disk = e.nbytes or (e.checkpoint.nbytes if e.checkpoint else weights_bytes_on_disk(str(e.spec.model)))
                rows.append({
                    "expert": name,
                    "tier": tier,
                    "gpu_bytes": e.bytes_on("gpu"),
                    "cpu_bytes": e.bytes_on("cpu"),
                    "disk_bytes": int(disk),
                    "size_bytes": e.nbytes,
                    "pinned": e.pinned,
                    "in_use": e.in_use,
                    "loading": e.loading,
                    "last_used": e.last_used,
                    "modules": modules,
                    **common,
                })
            return rows

    def residency_frame(self):
        """:meth:`residency` as a ``pandas.DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.residency())
