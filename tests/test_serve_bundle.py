"""The portable CoE bundle: save -> load (here and in a fresh process) gives the same greedy answers
and routing; loading names what is wrong (missing file, changed file, fingerprint, expert without
spec, future version); ``coe-workbench export`` writes one."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers_chat import CATEGORY_PROMPTS, make_coe, make_pool

from workbench.errors import BundleError

PROMPTS = [ps[i] for ps in CATEGORY_PROMPTS.values() for i in (0, 3)] + ["Tell me a story about a cat."]


@pytest.fixture(scope="module")
def coe(tiny_experts):
    pool = make_pool(tiny_experts)
    coe = make_coe(pool)
    yield coe
    pool.close()


@pytest.fixture(scope="module")
def exported(coe, tmp_path_factory):
    return coe.save(tmp_path_factory.mktemp("bundles") / "my-coe")


def answers(coe):
    out = {}
    for p in PROMPTS:
        a = coe.generate(p, max_new_tokens=8)
        out[p] = [list(coe.route(p)), a.text]
    return out


def manifest(folder):
    return json.loads((folder / "coe.json").read_text())


def copy_bundle(src, dest):
    import shutil

    shutil.copytree(src, dest)
    return dest


def edit_manifest(folder, change):
    data = manifest(folder)
    change(data)
    (folder / "coe.json").write_text(json.dumps(data))


def test_manifest_names_every_part(exported, coe):
    m = manifest(exported)
    assert m["format"] == "coe-workbench/coe-bundle" and m["version"] == 1
    assert m["embedder"]["pooling"] == "mean" and len(m["embedder"]["fingerprint"]) == 32
    assert m["embedder"]["fingerprint"] == coe.embedder.fingerprint and m["embedder"]["dim"] == 384
    assert [e["name"] for e in m["experts"]] == ["tiny-a", "tiny-b"]
    assert m["experts"][0]["generation"] == {"max_new_tokens": 12}
    assert m["pool"]["cpu_memory"] == coe.pool.cpu_budget and m["router"]["categories"] == ["law", "math"]
    assert (exported / "router.npz").is_file() and (exported / "mapping.json").is_file()
    assert not any(p.suffix in (".pkl", ".pickle") for p in exported.rglob("*"))


def test_load_in_process_gives_the_same_answers_and_routing(exported, coe):
    from workbench.coe import CoE

    loaded = CoE.load(exported)
    try:
        assert loaded.mapping.assignments == coe.mapping.assignments
        assert answers(loaded) == answers(coe)
    finally:
        loaded.pool.close()


def test_load_in_a_fresh_process_gives_the_same_answers_and_routing(exported, coe):
    code = (
        "import json, sys\n"
        "from workbench.coe import CoE\n"
        "coe = CoE.load(sys.argv[1])\n"
        "prompts = json.loads(sys.argv[2])\n"
        "print(json.dumps({p: [list(coe.route(p)), coe.generate(p, max_new_tokens=8).text] for p in prompts}))\n"
        "coe.pool.close()\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code, str(exported), json.dumps(PROMPTS)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh == json.loads(json.dumps(answers(coe)))


def test_copied_experts_make_a_movable_bundle(coe, tmp_path):
    from workbench.serve import load_coe, save_coe

    folder = save_coe(coe, tmp_path / "portable", copy_experts=True)
    m = manifest(folder)
    assert [e["model"] for e in m["experts"]] == ["experts/tiny-a/model", "experts/tiny-b/model"]
    moved = folder.rename(tmp_path / "moved")
    loaded = load_coe(moved)
    try:
        assert str(loaded.pool.specs["tiny-a"].model).startswith(str(moved))
        assert answers(loaded) == answers(coe)
    finally:
        loaded.pool.close()


# ----------------------------------------------------------------------------------- bad bundles
def test_missing_file_is_named(exported, tmp_path):
    from workbench.serve import load_coe

    folder = copy_bundle(exported, tmp_path / "b")
    (folder / "router.npz").unlink()
    with pytest.raises(BundleError, match=r"missing its router file router\.npz"):
        load_coe(folder)
    with pytest.raises(BundleError, match="no coe.json"):
        load_coe(tmp_path)
    with pytest.raises(BundleError, match="does not exist"):
        load_coe(tmp_path / "nowhere")


def test_a_file_changed_after_export_is_refused(exported, tmp_path):
    from workbench.serve import load_coe

    folder = copy_bundle(exported, tmp_path / "b")
    data = json.loads((folder / "mapping.json").read_text())
    data["assignments"]["law"] = "tiny-a"
    (folder / "mapping.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"mapping\.json was changed after export"):
        load_coe(folder)


def test_fingerprint_mismatch_is_refused(exported, tmp_path):
    from workbench.serve import load_coe

    folder = copy_bundle(exported, tmp_path / "b")
    edit_manifest(folder, lambda m: m["embedder"].update(fingerprint="0" * 32))
    with pytest.raises(BundleError, match=r"fingerprint .* but the router was fitted on .*0{32}"):
        load_coe(folder)


def test_expert_in_the_map_without_a_spec_is_named(exported, tmp_path):
    from workbench.serve import load_coe

    folder = copy_bundle(exported, tmp_path / "b")
    edit_manifest(folder, lambda m: m.update(experts=[e for e in m["experts"] if e["name"] != "tiny-b"]))
    with pytest.raises(BundleError, match=r"no spec in coe.json: 'tiny-b' \(for law\)"):
        load_coe(folder)


def test_a_version_from_the_future_is_refused(exported, tmp_path):
    from workbench.serve import load_coe

    folder = copy_bundle(exported, tmp_path / "b")
    edit_manifest(folder, lambda m: m.update(version=7, workbench_version="9.0"))
    with pytest.raises(BundleError, match=r"bundle version 7, written by a newer coe-workbench .*reads versions up to 1"):
        load_coe(folder)
    edit_manifest(folder, lambda m: m.update(format="something-else"))
    with pytest.raises(BundleError, match="not a CoE bundle manifest"):
        load_coe(folder)
    (folder / "coe.json").write_text("{bad json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_coe(folder)


def test_missing_expert_checkpoint_is_named(exported, tmp_path):
    from workbench.serve import load_coe

    folder = copy_bundle(exported, tmp_path / "b")
    edit_manifest(folder, lambda m: m["experts"][1].update(model=str(tmp_path / "gone")))
    with pytest.raises(BundleError, match=r"expert 'tiny-b': model path .*gone.* does not exist"):
        load_coe(folder)


def test_export_refuses_to_overwrite_a_folder_that_is_not_a_bundle(coe, tmp_path):
    from workbench.serve import save_coe

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a CoE bundle"):
        save_coe(coe, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    # a bundle is replaced in place
    first = save_coe(coe, tmp_path / "b")
    assert save_coe(coe, tmp_path / "b") == first and (first / "coe.json").is_file()


def test_export_needs_a_real_embedder(coe, tmp_path):
    from workbench.coe import CoE
    from workbench.serve import save_coe

    class Stub:
        def encode(self, texts):
            return coe.embedder.encode(texts)

    stub = CoE(Stub(), coe.router, coe.mapping, coe.pool)
    with pytest.raises(BundleError, match="needs a workbench Embedder"):
        save_coe(stub, tmp_path / "b")


def test_export_command_reexports_a_bundle(exported, tmp_path, capsys):
    from workbench.cli import main

    assert main(["export", str(tmp_path / "again"), "--from", str(exported)]) == 0
    assert "serve-api" in capsys.readouterr().out
    assert manifest(tmp_path / "again")["experts"] == manifest(exported)["experts"]
    assert main(["export", str(tmp_path / "x"), "--from", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err
