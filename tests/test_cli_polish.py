"""The command line as a new user meets it: hints in its own flag syntax, each skipped row reported
once, quiet means quiet, progress in logs, small-CPU defaults."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from workbench.cli import _small_cpu_defaults, flag_syntax, main


def _parser():
    p = argparse.ArgumentParser()
    p.add_argument("--on-error", dest="on_error")
    p.add_argument("--text")
    p.add_argument("--id")
    return p


@pytest.mark.parametrize("message, expected", [
    ("load with on_error='skip' to leave bad rows out", "load with --on-error skip to leave"),
    ("map the columns (text=, id=, category=)", "map the columns (--text, --id, category=)"),
    ('pass text="<column>"', "pass --text <column>"),
    ("use text=... here", "use --text here"),
    ("budget_b=3 is unknown", "budget_b=3 is unknown"),  # no such flag: left alone
])
def test_library_hints_are_rewritten_as_the_commands_flags(message, expected):
    assert expected in flag_syntax(message, _parser())


def _keep_env(monkeypatch):
    for key in ("OMP_NUM_THREADS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)


def test_embed_error_names_its_flags_and_each_skip_is_reported_once(tmp_path, capsys, monkeypatch):
    _keep_env(monkeypatch)  # main() sets process defaults; give them back after the test
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nhello,a\n,b\nworld,a\n")
    out = tmp_path / "x.npz"
    assert main(["embed", str(bad), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--on-error skip" in err and "on_error=" not in err and "--text" in err
    assert err.count("\n") == 1  # one line

    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "workbench", "embed", str(bad), "--out", str(out),
                          "--on-error", "skip", "--quiet"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("row 2") == 1, run.stderr  # not again as a raw UserWarning
    assert "UserWarning" not in run.stderr
    assert "Loading weights" not in run.stderr  # --quiet silences transformers' bars too
    assert "1 rows skipped" in run.stdout


def test_small_cpu_defaults_keep_a_users_thread_setting(monkeypatch):
    _keep_env(monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    _small_cpu_defaults(quiet=False)
    assert os.environ["OMP_NUM_THREADS"] == "3"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    _small_cpu_defaults(quiet=True)
    assert os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_progress_in_a_log_is_periodic_plain_lines(capsys):
    from workbench.progress import LogProgress, format_duration, progress_bar

    now = [0.0]
    bar = LogProgress(100, "embedding", "prompt", interval_s=10, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 3
        bar.update(10)
    bar.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3  # every 10 s or more (at 12 s and 24 s), then the close at 30 s
    assert lines[0].startswith("embedding: 40/100 prompts (40%), 12s elapsed, about 18s left")
    assert lines[-1].startswith("embedding: 100/100 prompts (100%), 30s elapsed")
    assert "\r" not in "".join(lines)
    assert format_duration(75) == "1m 15s" and format_duration(3725) == "1h 02m"
    # stderr is captured (not a terminal) here: the log form, not tqdm
    assert isinstance(progress_bar(5, "x"), LogProgress)
    off = progress_bar(5, "x", enabled=False)
    off.update(5)
    off.close()
    assert capsys.readouterr().err == ""


def test_frontier_says_what_it_does_on_stderr_when_it_is_a_log(tmp_path, capsys, monkeypatch):
    _keep_env(monkeypatch)
    rows = ["prompt_id,category,model,score"]
    for i in range(12):
        cat = "math" if i % 2 else "law"
        rows += [f"p{i},{cat},small,{i % 3 == 0:d}", f"p{i},{cat},big,{i % 4 != 0:d}"]
    table = tmp_path / "results.csv"
    table.write_text("\n".join(rows) + "\n")
    params = tmp_path / "params.yaml"
    params.write_text("- {name: small, total_params_b: 1, active_params_b: 1}\n"
                      "- {name: big, total_params_b: 8, active_params_b: 8}\n")
    assert main(["frontier", "--results", str(table), "--params", str(params),
                 "--budgets", "2,8"]) == 0
    err = capsys.readouterr().err  # captured: not a terminal, as in a log
    assert "frontier: fitting the maps at 2 budgets" in err


def test_quiet_conversion_disables_the_gguf_readers_own_bar(capsys):
    """transformers' GGUF reader calls tqdm itself; ``progress=False`` turns that bar off for the
    conversion only, and the reader's own tqdm is back afterwards."""
    pytest.importorskip("transformers")
    from transformers import modeling_gguf_pytorch_utils as reader

    from workbench.demo.real import _gguf_bar

    original = reader.tqdm
    with _gguf_bar(False):
        list(reader.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert reader.tqdm is original
    with _gguf_bar(True):
        assert reader.tqdm is original
        list(reader.tqdm(range(3), desc="shown"))
    err = capsys.readouterr().err
    assert "de-quantizing" not in err and "shown" in err
