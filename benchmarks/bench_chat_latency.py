"""Does the Chat tab's trace account for the reply time a user sees?

Serves the app on the offline demo bundle (from the cache), opens it in Debian's Chromium
(Playwright, headless) and sends ``--n`` messages in the Chat tab. For each reply it reads the
trace card's ``total`` (the server's span, from the message's arrival to the last token) and
measures the reply on the page's own clock, from the Enter key press to the trace card being
visible (``TIME_REPLY`` in ``tests/helpers_browser.py``). Beside it, the obvious way to time it
from a test: a wall clock around Playwright's ``locator.wait_for``, whose polling backs off to
500 ms and so adds up to half a second to what it measures.

    python benchmarks/bench_chat_latency.py            # 6 messages at the Chat tab's default length
    python benchmarks/bench_chat_latency.py --n 3 --tiny

The last line is JSON: ``max_gap_pct`` / ``mean_gap_pct`` (page clock minus trace total, in % of
the page-measured reply), the same for the Playwright-timed alternative, and ``within_10pct``.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

from _common import summary, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

PROMPTS = ["Solve 2x + 3 = 11 for x.", "Write a short poem about the sea.",
           "What did the court decide in a lease dispute?", "Explain what a Python list is.",
           "Wie spät ist es in Berlin?", "Tell me about the history of Rome."]


def _total_s(card) -> float:
    text = card.locator('td[data-field="total"]').inner_text()
    value = float(re.match(r"([\d.]+) (ms|s)", text).group(1))
    return value / 1000 if " ms" in text.split("(")[0] else value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=6, help="messages to send")
    ap.add_argument("--tiny", action="store_true", help="the tiny demo experts instead of SmolLM2")
    args = ap.parse_args()

    from helpers_browser import CHROMIUM, TIME_REPLY, Browser, served
    from playwright.sync_api import sync_playwright

    from workbench.demo import build_demo_bundle

    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is absent: apt-get install chromium")
    bundle = build_demo_bundle(progress=False, kind="tiny" if args.tiny else None)
    rows = []
    try:
        with served(bundle) as url, sync_playwright() as pw:
            b = Browser(pw, url)
            b.tab("Chat")
            box = b.page.locator(".coe-chat-panel textarea").first
            for i in range(args.n):
                n = b.page.locator(".coe-trace").count()
                box.fill(PROMPTS[i % len(PROMPTS)])
                b.page.evaluate(f"() => {{ window.__coeTime = ({TIME_REPLY})(); }}")
                t0 = time.perf_counter()
                box.press("Enter")
                card = b.page.locator(".coe-trace").nth(n)
                card.wait_for(timeout=300_000)  # the alternative: Playwright's polling wait
                waited = time.perf_counter() - t0
                page = b.page.evaluate("() => window.__coeTime") / 1000
                total = _total_s(card)
                rows.append({"reply": i + 1, "trace_total_s": total, "page_s": page,
                             "gap_ms": (page - total) * 1000,
                             "gap_pct": 100 * (page - total) / page,
                             "playwright_s": waited,
                             "playwright_gap_pct": 100 * (waited - total) / waited})
            external, errors = b.external, b.errors
            b.close()
    finally:
        bundle.pool.close()
    table(rows, "trace total vs the reply time measured in the browser")
    gaps = [abs(r["gap_pct"]) for r in rows]
    alt = [abs(r["playwright_gap_pct"]) for r in rows]
    summary("chat_latency", n=len(rows), kind="tiny" if args.tiny else "real",
            max_gap_pct=round(max(gaps), 2), mean_gap_pct=round(statistics.mean(gaps), 2),
            max_gap_ms=round(max(abs(r["gap_ms"]) for r in rows), 1),
            playwright_max_gap_pct=round(max(alt), 2), playwright_mean_gap_pct=round(statistics.mean(alt), 2),
            within_10pct=max(gaps) <= 10.0, external_requests=len(external), page_errors=len(errors))


if __name__ == "__main__":
    main()
