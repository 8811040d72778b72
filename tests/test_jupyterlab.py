"""Notebooks 01-06 rendered in a real JupyterLab, in a real browser, offline.

Opt-in (``pytest -m browser``; slow: each notebook runs its cells in a kernel). A JupyterLab
server runs on 127.0.0.1 with the repository's notebooks; Chromium opens each one, runs all cells
and the test asserts that no cell raised, that the page requested nothing from another host
(the ipywidgets, plotly and Panel outputs load from the local server) and saves a screenshot to
``artifacts/jupyterlab/`` (git-ignored) for reading.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers_browser import Browser, playwright  # noqa: E402,F401  (the playwright fixture)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
ARTIFACTS = REPO / "artifacts" / "jupyterlab"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    pytest.importorskip("jupyterlab")
    home = tmp_path_factory.mktemp("lab-home")
    port = _free_port()
    env = dict(os.environ, COE_NB_FAST="1", COE_NB_OUT=str(home), OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
           f"--port={port}", "--ServerApp.token=", "--ServerApp.password=",
           "--ServerApp.disable_check_xsrf=True", "--LabApp.news_url=", "--LabApp.collaborative=False",
           "--LabServerApp.notebook_starts_kernel=True", f"--ServerApp.root_dir={REPO / 'notebooks'}"]
    settings = home / "lab-settings"  # never save the notebooks (they are the repository's), no news
    settings.mkdir()
    (settings / "overrides.json").write_text(json.dumps({
        "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
        "@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                        "checkForUpdates": False}}))
    cmd.append(f"--LabApp.app_settings_dir={settings}")
    log = open(home / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import urllib.request

    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/api", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(home / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Lab(Browser):
    """A Browser on JupyterLab (its page has no ``.coe-tabs``)."""

    def __init__(self, pw, url: str) -> None:
        super().__init__(pw, url, open_app=False)

    def run_all(self, name: str, timeout_s: float = 900) -> None:
        page = self.page
        # ?reset: a fresh workspace, so the notebooks of earlier tests are not restored as tabs
        page.goto(f"{self.origin}/lab/tree/{name}?reset", wait_until="domcontentloaded",
                  timeout=180_000)
        panel = page.locator(".jp-NotebookPanel:visible")
        panel.locator(".jp-Notebook").first.wait_for(timeout=180_000)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']:visible")
        idle.first.wait_for(timeout=180_000)
        panel.locator(".jp-Notebook").first.click()
        page.keyboard.press("Escape")
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        deadline = time.time() + timeout_s
        page.wait_for_timeout(2000)
        while time.time() < deadline:
            busy = panel.locator(".jp-InputPrompt", has_text="[*]").count()
            if busy == 0 and idle.count():
                break
            page.wait_for_timeout(1000)
        else:
            pytest.fail(f"{name}: cells still running after {timeout_s:.0f} s")
        page.wait_for_timeout(3000)  # widget and plotly views render after the kernel is idle
        self.panel = panel


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_renders_offline_in_jupyterlab(playwright, lab, name):
    b = Lab(playwright, lab)
    try:
        b.run_all(name)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        b.page.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}.png"), full_page=True)
        views = b.panel.locator(".jp-OutputArea-output .widget-vbox, .jp-OutputArea-output .bk-Column")
        for i in range(min(3, views.count())):  # each widget / Panel view, for reading
            view = views.nth(i)
            view.scroll_into_view_if_needed()
            view.screenshot(path=str(ARTIFACTS / f"{Path(name).stem}-view{i}.png"))
        errors = b.panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                 has_text="Traceback").count()
        tracebacks = b.panel.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count()
        assert errors == 0 and tracebacks == 0, f"{name}: a cell raised"
        assert b.external == [], f"{name} reached for the internet: {sorted(set(b.external))}"
    finally:
        b.close()
