"""Counters behind ``GET /metrics``, written in Prometheus' text exposition format (no client
library): requests and errors, per-expert answers, tokens, generation time, tokens/s and switch
times, requests in flight and queued."""
from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

__all__ = ["Metrics"]


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters; :meth:`render` gives the Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str], int] = defaultdict(int)      # (model, status code)
        self.errors: dict[str, int] = defaultdict(int)                    # error type
        self.expert_answers: dict[str, int] = defaultdict(int)
        self.expert_tokens: dict[str, int] = defaultdict(int)
        self.expert_seconds: dict[str, float] = defaultdict(float)
        self.switch_seconds: dict[str, float] = defaultdict(float)
        self.switch_max: dict[str, float] = defaultdict(float)
        self.switches: dict[tuple[str, str], int] = defaultdict(int)      # (expert, tier found)
        self.fallbacks: dict[str, int] = defaultdict(int)                 # failed routed expert
        self.rules: dict[str, int] = defaultdict(int)
        self.cancelled = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.queued = 0
        self.request_seconds = 0.0
        self.request_count = 0

    def request(self, model: str, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[(model, str(status))] += 1
            if seconds is not None:
                self.request_seconds += seconds
                self.request_count += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def answer(self, trace: dict, rule: str | None = None, cancelled: bool = False) -> None:
        expert = str(trace.get("expert", ""))
        with self._lock:
            self.expert_answers[expert] += 1
            self.expert_tokens[expert] += int(trace.get("new_tokens") or 0)
            self.expert_seconds[expert] += float(trace.get("generate_s") or 0.0)
            switch = float(trace.get("switch_s") or 0.0)
            self.switch_seconds[expert] += switch
            self.switch_max[expert] = max(self.switch_max[expert], switch)
            self.switches[(expert, str(trace.get("tier_found") or "?"))] += 1
            if trace.get("used_fallback_expert"):
                self.fallbacks[str(trace.get("routed_expert") or "")] += 1
            if rule:
                self.rules[rule] += 1
            if cancelled:
                self.cancelled += 1

    def gauge(self, name: str, delta: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + delta)
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def render(self) -> str:
        """The Prometheus text (``text/plain; version=0.0.4``)."""
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, rows: list[tuple[dict, float]]) -> None:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for labels, value in rows:
                lab = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
                out.append(f"{name}{{{lab}}} {value:g}" if lab else f"{name} {value:g}")

        with self._lock:
            family("coe_requests_total", "counter", "Chat-completion requests by model and HTTP status.",
                   [({"model": m, "status": s}, n) for (m, s), n in sorted(self.requests.items())])
            family("coe_request_errors_total", "counter", "Failed requests by error type.",
                   [({"type": k}, n) for k, n in sorted(self.errors.items())])
            family("coe_request_seconds", "summary", "Wall time of answered requests.",
                   [])
            out.append(f"coe_request_seconds_sum {self.request_seconds:g}")
            out.append(f"coe_request_seconds_count {self.request_count}")
            family("coe_expert_answers_total", "counter", "Answers per expert.",
                   [({"expert": e}, n) for e, n in sorted(self.expert_answers.items())])
            family("coe_expert_tokens_total", "counter", "New tokens generated per expert.",
                   [({"expert": e}, n) for e, n in sorted(self.expert_tokens.items())])
            family("coe_expert_generate_seconds_total", "counter", "Seconds spent generating per expert.",
                   [({"expert": e}, s) for e, s in sorted(self.expert_seconds.items())])
            family("coe_expert_tokens_per_second", "gauge",
                   "Tokens per second of each expert over its answers so far.",
                   [({"expert": e}, self.expert_tokens[e] / s if s > 0 else 0.0)
                    for e, s in sorted(self.expert_seconds.items())])
            family("coe_expert_switch_seconds_total", "counter",
                   "Seconds spent switching each expert in (loads, copies, adapter merges).",
                   [({"expert": e}, s) for e, s in sorted(self.switch_seconds.items())])
            family("coe_expert_switch_seconds_max", "gauge", "Longest switch-in per expert.",
                   [({"expert": e}, s) for e, s in sorted(self.switch_max.items())])
            family("coe_expert_switches_total", "counter", "Answers per expert by the tier it was found in.",
                   [({"expert": e, "tier_found": t}, n) for (e, t), n in sorted(self.switches.items())])
            family("coe_fallback_answers_total", "counter",
                   "Answers given by the fallback expert after the routed one failed (by routed expert).",
                   [({"expert": e}, n) for e, n in sorted(self.fallbacks.items())])
            family("coe_routing_rule_total", "counter", "Which conversation rule chose the expert.",
                   [({"rule": r}, n) for r, n in sorted(self.rules.items())])
            family("coe_cancelled_total", "counter", "Generations stopped because the client went away.",
                   [({}, self.cancelled)])
            family("coe_in_flight", "gauge", "Generations running now.", [({}, self.in_flight)])
            family("coe_in_flight_peak", "gauge", "Most generations that ran at once.",
                   [({}, self.peak_in_flight)])
            family("coe_queued", "gauge", "Requests waiting for a generation slot.", [({}, self.queued)])
        return "\n".join(out) + "\n"
