"""Shared browser-test helpers: Playwright drives Debian's Chromium against a served app.

Every request the page makes to a host other than the app's own is recorded and aborted
(``Browser.external``), so tests can assert the app is offline.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("COE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts" / "browser"
XSS = '<img src=x onerror="window.__coe_xss=1"><script>window.__coe_xss=2</script>'

#: visible text of an element whose content lives in its shadow root (Panel panes)
SHADOW_TEXT = ("el => [...(el.shadowRoot || el).children].filter(c => !['STYLE', 'LINK']"
               ".includes(c.tagName)).map(c => c.innerText).join(' ').trim()")

#: in-page watcher: distinct texts of the newest answer until a new trace card appears
WATCH_STREAM = """
async (nTraces) => {
  const deep = (root, sel, out = []) => {
    root.querySelectorAll(sel).forEach(e => out.push(e));
    root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
    return out;
  };
  const seen = [];
  const t0 = Date.now();
  const panel = deep(document, '.coe-chat-panel')[0];  // search only the chat (the page is big)
  const scope = panel.shadowRoot || panel;
  while (Date.now() - t0 < 120000) {
    const answers = deep(scope, '.coe-answer');
    if (answers.length) {
      const texts = deep(answers[answers.length - 1].shadowRoot || answers[answers.length - 1], '.coe-text');
      const t = texts.length ? texts[0].innerText : null;
      if (t !== null && (seen.length === 0 || seen[seen.length - 1] !== t)) seen.push(t);
    }
    if (deep(scope, '.coe-trace').length > nTraces) return seen;
    await new Promise(r => setTimeout(r, 2));
  }
  return seen;
}
"""


#: in-page timer of one reply: milliseconds from the Enter key press to the new trace card being
#: visible, both read on the page's clock (Playwright's own waits poll every 500 ms after their
#: first 270 ms, which would add up to half a second to what they measure). Until the new
#: answer's card host exists it searches the chat every 50 ms; then it checks only that host.
TIME_REPLY = """
async () => {
  const deep = (root, sel, out = []) => {
    root.querySelectorAll(sel).forEach(e => out.push(e));
    root.querySelectorAll('*').forEach(e => { if (e.shadowRoot) deep(e.shadowRoot, sel, out); });
    return out;
  };
  const panel = deep(document, '.coe-chat-panel')[0];
  const scope = panel.shadowRoot || panel;
  const before = deep(scope, '.coe-trace-card').length;
  let t0 = null;
  const onKey = e => { if (e.key === 'Enter' && t0 === null) t0 = performance.now(); };
  window.addEventListener('keydown', onKey, true);
  const wait = ms => new Promise(r => setTimeout(r, ms));
  try {
    while (t0 === null) await wait(5);
    let host = null;
    while (performance.now() - t0 < 120000) {
      if (host === null || !host.isConnected) {
        const hosts = deep(scope, '.coe-trace-card');
        host = hosts.length > before ? hosts[hosts.length - 1] : null;
        if (host === null) { await wait(50); continue; }
      }
      const card = (host.shadowRoot || host).querySelector('.coe-trace');
      if (card && card.checkVisibility()) return performance.now() - t0;
      await wait(10);
    }
    return null;
  } finally {
    window.removeEventListener('keydown', onKey, true);
  }
}
"""

@contextlib.contextmanager
def served(bundle):
    """Serve ``bundle`` on a free localhost port; yields the URL once the page answers."""
    import urllib.request

    from workbench.app import serve

    port = _free_port()
    server = serve(port=port, bundle=bundle, threaded=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url, timeout=60).read()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def playwright():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) "
                    "to run the browser tests")
    sync_playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip package playwright is not installed").sync_playwright

    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def app_url(tiny_experts):
    if os.environ.get("COE_BROWSER_BUNDLE") == "demo":
        from workbench.demo import build_demo_bundle

        bundle, close = build_demo_bundle(progress=False), None
    else:
        from helpers_chat import build_mini_bundle

        bundle = build_mini_bundle(tiny_experts)
        close = bundle.pool.close
    try:
        with served(bundle) as url:
            yield url
    finally:
        if close:
            close()


class Browser:
    """A Chromium with a fresh user-data-dir; records and aborts requests to other hosts."""

    def __init__(self, pw, url: str, *, open_app: bool = True):
        self.external: list[str] = []
        self.errors: list[str] = []
        self._dir = tempfile.TemporaryDirectory(prefix="coe-chromium-")
        self.context = pw.chromium.launch_persistent_context(
            self._dir.name, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        origin = url.rstrip("/")

        def route(r):
            if r.request.url.startswith(origin) or r.request.url.startswith(("data:", "blob:")):
                r.continue_()
            else:
                self.external.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.set_default_timeout(60_000)
        self.origin = origin
        if open_app:  # the workbench app; JupyterLab tests open their own pages
            self.page.goto(url, wait_until="domcontentloaded", timeout=180_000)
            self.page.wait_for_selector(".coe-tabs", timeout=180_000)

    def tab(self, name: str) -> None:
        self.page.locator(".bk-tab", has_text=name).first.click()
        self.page.wait_for_timeout(300)

    def text(self, selector: str) -> str:
        return self.page.locator(selector).first.evaluate(SHADOW_TEXT)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        self.context.close()
        self._dir.cleanup()

    # -- the mapping editor ---------------------------------------------------------------
    def mapping_rows(self) -> dict[str, str]:
        rows = {}
        table = self.page.locator(".coe-mapping-table")
        table.locator(".tabulator-row").first.wait_for()
        for row in table.locator(".tabulator-row").all():
            cat = row.locator('.tabulator-cell[tabulator-field="category"]').inner_text().strip()
            rows[cat] = row.locator('.tabulator-cell[tabulator-field="expert"]').inner_text().strip()
        return rows

    def marker(self):
        plot = self.page.locator(".coe-frontier-plot .js-plotly-plot")
        return plot.evaluate("el => el.data.filter(t => /current/i.test(t.name || ''))"
                             ".map(t => [t.x[0], t.y[0]])[0]")

    def set_expert(self, category: str, expert: str) -> None:
        row = self.page.locator(".coe-mapping-table .tabulator-row").filter(
            has=self.page.locator('.tabulator-cell[tabulator-field="category"]', has_text=category)).first
        row.locator('.tabulator-cell[tabulator-field="expert"]').click()
        self.page.locator(".tabulator-edit-list-item", has_text=expert).first.click()

    def editable_options(self, category: str) -> list[str]:
        row = self.page.locator(".coe-mapping-table .tabulator-row").filter(
            has=self.page.locator('.tabulator-cell[tabulator-field="category"]', has_text=category)).first
        row.locator('.tabulator-cell[tabulator-field="expert"]').click()
        items = self.page.locator(".tabulator-edit-list-item")
        items.first.wait_for()
        options = [t.strip() for t in items.all_inner_texts()]
        self.page.keyboard.press("Escape")
        self.page.wait_for_timeout(200)
        return options

    # -- the chat -------------------------------------------------------------------------
    def send_chat(self, text: str) -> list[str]:
        """Send ``text``; returns the distinct texts the answer showed until its trace appeared."""
        box = self.page.locator(".coe-chat-panel textarea").first
        n_traces = self.page.locator(".coe-trace").count()
        box.fill(text)
        self.page.evaluate(f"n => {{ window.__coeWatch = ({WATCH_STREAM})(n); }}", n_traces)
        box.press("Enter")
        seen = self.page.evaluate("() => window.__coeWatch")
        self.page.locator(".coe-trace").nth(n_traces).wait_for()
        return seen
