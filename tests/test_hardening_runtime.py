"""Hardening of the runtime: atomic files (umask, directory fsync, orphans, crash safety under
SIGKILL), folder replacement without a missing window, broken experts reported in the trace, the
prompt length limit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from workbench._paths import atomic_write_text, clean_orphan_temps, replace_dir
from workbench.errors import WorkbenchError

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------ atomic files
def test_atomic_write_never_touches_the_process_umask(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        def forbidden(mask):  # another thread's files would be created with this mask meanwhile
            raise AssertionError("atomic_write_bytes changed the process umask")

        monkeypatch.setattr(os, "umask", forbidden)
        atomic_write_text(tmp_path / "a.json", "{}")
        monkeypatch.undo()
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640  # 0o666 & ~0o027, like open()


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    import stat

    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_text(tmp_path / "b.json", "{}")
    assert synced == [False, True]  # the file's data, then the folder's entry


def test_orphan_temp_files_of_killed_saves_are_cleaned(tmp_path):
    old = tmp_path / ".map.json.dead0001.tmp"
    young = tmp_path / ".map.json.busy0002.tmp"
    other = tmp_path / ".other.json.dead0003.tmp"
    for p in (old, young, other):
        p.write_text("half a map")
    past = time.time() - 7200
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    atomic_write_text(tmp_path / "map.json", "{}")
    assert not old.exists()       # an hour-old temp of this file: a killed save
    assert young.exists()         # maybe a save in progress in another process: kept
    assert other.exists()         # another file's temps are its own saves' business
    assert clean_orphan_temps(tmp_path, "other.json") == [other]


CHILD = textwrap.dedent("""
    import sys
    from workbench.mapping import CategoryExpertMap
    path = sys.argv[1]
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        cats = {f"category-{k}": ("big" if (i + k) % 2 else "small") for k in range(200)}
        m = CategoryExpertMap({**cats, "fallback": "big"}, experts=["big", "small"])
        m.save(path)
""")


def test_saves_survive_repeated_sigkill(tmp_path):
    """A process saving a map in a loop is SIGKILLed 12 times at random moments: the file on
    disk always loads as a whole map (never empty, never half-written)."""
    from workbench.mapping import CategoryExpertMap

    rng = np.random.default_rng(0)
    path = tmp_path / "map.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    corrupt = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                                env=env, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.02, 0.25)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if path.exists():
            try:
                m = CategoryExpertMap.load(path)
                assert len(m.categories) == 200
            except Exception:  # noqa: BLE001 - counted, reported below
                corrupt += 1
    assert path.exists() and corrupt == 0
    # orphans left by the kills are at most one per kill and young (cleaned after an hour)
    assert len(list(tmp_path.glob(".map.json.*.tmp"))) <= 12


def test_replace_dir_never_leaves_the_folder_missing(tmp_path):
    dest = tmp_path / "demo"
    dest.mkdir()
    (dest / "version").write_text("0")
    seen_missing = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            if not (dest / "version").exists():
                seen_missing.append(time.perf_counter())

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 60):
            tmp = tmp_path / f".demo.tmp-{os.getpid()}"
            tmp.mkdir()
            (tmp / "version").write_text(str(i))
            replace_dir(tmp, dest)
    finally:
        stop.set()
        t.join()
    assert (dest / "version").read_text() == "59"
    assert seen_missing == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_replace_dir_cleans_folders_of_killed_builds(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / f".demo.tmp-{dead.pid}"
    orphan.mkdir()
    alive = tmp_path / f".demo.tmp-{os.getppid()}"  # a live process's build: kept
    alive.mkdir()
    src = tmp_path / "new"
    src.mkdir()
    replace_dir(src, tmp_path / "demo")
    assert not orphan.exists() and alive.exists() and (tmp_path / "demo").is_dir()


# ------------------------------------------------------------------------- broken experts
class KeywordEmbedder:
    def encode(self, texts):
        return np.array([[1.0, 0.0] if "math" in t.lower() else [0.0, 1.0] for t in texts])


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    import torch
    from helpers_models import write_tiny_llama
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("broken-experts")
    good = write_tiny_llama(root / "good", seed=1)
    nan = write_tiny_llama(root / "nan", seed=2)
    weights = load_file(nan / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()},
              str(nan / "model.safetensors"), metadata={"format": "pt"})
    return {"good": good, "nan": nan}


def make_coe(experts, routed="nan"):
    from workbench.coe import CoE
    from workbench.experts import ExpertPool, ExpertSpec
    from workbench.mapping import CategoryExpertMap
    from workbench.router import CategoryRouter

    X = KeywordEmbedder().encode(["math a", "math b", "law a", "law b"])
    router = CategoryRouter(head="logreg", C=100.0, threshold=0.0).fit(
        X, np.array(["math", "math", "law", "law"]))
    pool = ExpertPool([ExpertSpec(name=n, model=p, generation={"max_new_tokens": 6})
                       for n, p in experts.items()], gpu_memory=None, cpu_memory="256MiB",
                      prefetch=False)
    mapping = CategoryExpertMap({"math": routed, "law": "good", "fallback": "good"},
                                experts=list(experts))
    return CoE(KeywordEmbedder(), router, mapping, pool)


def test_expert_with_nan_weights_is_a_failure_in_the_trace_and_the_fallback_answers(experts):
    coe = make_coe(experts)
    answer = coe.generate("math: solve 2x = 4")
    t = answer.trace
    assert t.routed_expert == "nan" and t.used_fallback_expert and t.expert == "good"
    assert "non-finite logits" in t.error and "'nan'" in t.error
    assert answer.text.strip()  # the fallback's real answer
    # streaming: the same report, the fallback's chunks
    *chunks, final = list(coe.stream("math: solve 2x = 4"))
    assert final.trace.used_fallback_expert and "non-finite logits" in final.trace.error
    assert "".join(chunks) == final.text == answer.text
    coe.pool.close()


def test_empty_answer_is_a_failure_and_the_fallback_answers(experts):
    from workbench.experts.records import Generation

    coe = make_coe(experts, routed="nan")
    real = coe.pool.generate

    def silent(name, prompt, **gen):  # the routed expert says nothing (three end tokens)
        if name == "nan":
            return Generation("  ", 3, 0.01, 300.0, "cpu", 0.0, name, [2, 2, 2])
        return real(name, prompt, **gen)

    coe.pool.generate = silent
    answer = coe.generate("math: what is 3 + 4?")
    t = answer.trace
    assert "expert 'nan' returned an empty answer after 3 new token(s)" in t.error
    assert t.used_fallback_expert and t.expert == "good" and answer.text.strip()
    coe.pool.close()


def test_overlong_prompt_is_refused_before_embedding(experts, monkeypatch):
    monkeypatch.setenv("COE_MAX_PROMPT_CHARS", "1000")
    coe = make_coe(experts, routed="good")
    calls = []
    coe.embedder.encode = lambda texts: calls.append(texts) or KeywordEmbedder().encode(texts)
    with pytest.raises(WorkbenchError) as err:
        coe.generate("math " * 400)
    msg = str(err.value)
    assert "2,000" in msg and "1,000" in msg and "COE_MAX_PROMPT_CHARS" in msg
    assert calls == []  # refused before the embedder saw it
    coe.pool.close()


def test_failing_experts_do_not_break_the_json_trace(experts):
    coe = make_coe(experts)
    d = coe.generate("math: 1 + 1").trace.to_dict()
    assert json.loads(json.dumps(d))["error"].startswith("ExpertError")
    coe.pool.close()
