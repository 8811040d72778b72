"""Reading user files safely: YAML alias bombs and duplicate keys refused, bounded quotes in error
messages, the app's map file box confined to one folder, Save that never replaces a file that is
not a map, load errors that never echo a file's values, and a loud trust_remote_code warning."""
from __future__ import annotations

import json
import time
import tracemalloc

import pytest

from workbench.errors import DemoError, ExpertError, MappingError, RegistryError
from workbench.mapping import CategoryExpertMap
from workbench.registry import ModelRegistry
from workbench.safeio import (
    FileBox,
    FileBoxError,
    load_json,
    load_yaml,
    short,
    short_list,
)

CATS = ["math", "law", "code", "chat"]
EXPERTS = ["small", "mid", "big"]
SECRET = "-----BEGIN PRIVATE KEY-----\n" + "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC" * 53 + "\n-----END PRIVATE KEY-----"


def _bomb(depth: int = 9, top: str = "") -> str:
    """The 'billion laughs' YAML: 9 levels of 9 aliases each (9**9 strings once expanded)."""
    lines = [top, 'l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, depth + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def _bounded(fn, *args, **kwargs):
    """Run ``fn`` expecting an error; return (the error, seconds, peak traced bytes)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(Exception) as info:
            fn(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return info.value, elapsed, peak


@pytest.fixture
def bundle(map_editor_bundle):
    return map_editor_bundle


@pytest.fixture
def box(tmp_path):
    return FileBox(tmp_path / "box")


@pytest.fixture
def boxed(bundle, box):
    from workbench.ui.mapping_editor import MappingEditorModel

    return MappingEditorModel.from_bundle(bundle, autosave=False, files=box)


# ---------------------------------------------------------------------------------------------
# 1. alias bombs and duplicate keys
# ---------------------------------------------------------------------------------------------
def test_alias_bomb_through_every_loader_is_a_quick_clear_error(tmp_path, bundle, boxed, box):
    from workbench.demo.tiny import read_spec
    from workbench.experts import specs_from_file

    bomb = _bomb()
    assert len(bomb) < 600
    cases = []
    (tmp_path / "map.yaml").write_text(bomb)
    cases.append((MappingError, CategoryExpertMap.load, tmp_path / "map.yaml"))
    (tmp_path / "experts.yaml").write_text(_bomb() + "experts:\n- {name: x, model: *l9}\n")
    cases.append((ExpertError, specs_from_file, tmp_path / "experts.yaml"))
    (tmp_path / "params.yaml").write_text(bomb)
    cases.append((RegistryError, ModelRegistry.load, tmp_path / "params.yaml"))
    (tmp_path / "demo.yaml").write_text(bomb)
    cases.append((DemoError, lambda p: read_spec(p, p, "demo spec"), tmp_path / "demo.yaml"))
    (box.root / "bomb.yaml").write_text(bomb)
    cases.append((MappingError, boxed.load, "bomb.yaml"))
    for cls, fn, arg in cases:
        err, seconds, peak = _bounded(fn, arg)
        assert isinstance(err, cls), (fn, err)
        msg = str(err)
        assert "line 3: YAML aliases (*l0) are not accepted" in msg, msg
        assert "write the value out in full" in msg
        assert len(msg) < 400
        assert seconds < 1.0, (fn, seconds)
        assert peak < 50 * 2**20, (fn, peak)
    assert boxed.mapping.expert_for("math") == "small"  # the editor's map is unchanged


def test_deep_nesting_is_a_clear_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 50_000)
    with pytest.raises(MappingError, match="deep.yaml"):
        CategoryExpertMap.load(path)
    with pytest.raises(MappingError, match="nested too deeply"):
        load_json("[" * 50_000 + "]" * 50_000, "deep.json", error=MappingError)


def test_duplicate_yaml_keys_name_both_lines(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("math: small\nlaw: mid\nmath: big\nfallback: big\n")
    with pytest.raises(MappingError, match=r"map\.yaml line 3: duplicate key 'math' \(first on "
                                           r"line 1\); keep one of them"):
        CategoryExpertMap.load(path)
    reg = tmp_path / "params.yaml"
    reg.write_text("- {name: a, total_params_b: 1, total_params_b: 2}\n")
    with pytest.raises(RegistryError, match=r"params\.yaml line 1: duplicate key 'total_params_b'"):
        ModelRegistry.load(reg)
    # JSON read through the YAML loader (registries, spec files) is checked too
    jreg = tmp_path / "params.json"
    jreg.write_text('{\n  "a": 1,\n  "b": 2,\n  "a": 3\n}\n')
    with pytest.raises(RegistryError, match=r"params\.json line 4: duplicate key 'a' \(first on line 2\)"):
        ModelRegistry.load(jreg)


def test_duplicate_json_keys_name_the_key_and_line(tmp_path):
    path = tmp_path / "map.json"
    path.write_text('{\n  "assignments": {\n    "math": "small",\n    "math": "big",\n'
                    '    "fallback": "big"\n  }\n}\n')
    with pytest.raises(MappingError, match=r"map\.json line 4: duplicate key 'math'; keep one of them"):
        CategoryExpertMap.load(path)
    with pytest.raises(MappingError, match=r"line 1 column 2 is not valid JSON"):
        load_json("{not json", "x.json", error=MappingError)


def test_duplicate_keys_in_spec_and_adapter_config(tmp_path):
    from workbench.adapters import LoraAdapter
    from workbench.experts import specs_from_file

    path = tmp_path / "experts.yaml"
    path.write_text("- name: a\n  model: m\n  name: b\n")
    with pytest.raises(ExpertError, match=r"experts\.yaml line 3: duplicate key 'name'"):
        specs_from_file(path)
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA",\n "r": 4,\n "r": 8}')
    with pytest.raises(ExpertError, match=r"line 3: duplicate key 'r'; keep one of them; re-save"):
        LoraAdapter.load(folder, expert="e")


# ---------------------------------------------------------------------------------------------
# 2. bounded quotes
# ---------------------------------------------------------------------------------------------
def test_short_and_short_list_are_bounded():
    assert len(short("x" * 10_000)) <= 80
    assert short("abc") == "'abc'"
    names = [f"expert-{i}" for i in range(100)]
    text = short_list(names)
    assert text.startswith("expert-0, expert-1") and text.endswith("... (80 more)")
    assert short_list(["y" * 500]).endswith("...") and len(short_list(["y" * 500])) <= 80
    assert short_list(["a", "b"], quote=True) == "'a', 'b'"


def test_long_names_in_errors_are_quoted_in_80_characters(tmp_path, bundle):
    from workbench.experts import ExpertSpec
    from workbench.ui.mapping_editor import MappingEditorModel

    long = "N" * 5000
    with pytest.raises(MappingError) as info:
        CategoryExpertMap({"math": long, "fallback": "big"}, experts=EXPERTS)
    msg = str(info.value)
    assert "maps to unknown expert 'NNNN" in msg and "N" * 81 not in msg and len(msg) < 400
    with pytest.raises(MappingError) as info:
        CategoryExpertMap({long: "small", "fallback": "big"}, categories=CATS)
    assert "is not one of the router's categories" in str(info.value)
    assert "N" * 81 not in str(info.value)
    editor = MappingEditorModel.from_bundle(bundle, autosave=False)
    with pytest.raises(MappingError) as info:
        editor.set_expert("math", long)
    assert "unknown expert 'NNN" in str(info.value) and "N" * 81 not in str(info.value)
    with pytest.raises(MappingError) as info:
        editor.set_expert(long, "big")
    assert "is not in the map" in str(info.value) and "N" * 81 not in str(info.value)
    with pytest.raises(RegistryError) as info:
        bundle.registry.require([long], context="scores")
    assert "no parameter counts for 'NNN" in str(info.value) and "N" * 81 not in str(info.value)
    with pytest.raises(ExpertError) as info:
        ExpertSpec.from_dict({"name": long, "model": "m", "dtype": "float7"})
    assert "unknown dtype" in str(info.value) and "N" * 81 not in str(info.value)
    # a long list of known names is cut after 20 of them
    many = CategoryExpertMap({f"c{i}": "e" for i in range(200)} | {"fallback": "e"})
    with pytest.raises(MappingError, match=r"known categories: c0, c1, .*c19, \.\.\. \(181 more\)"):
        many.expert_for("nope")


# ---------------------------------------------------------------------------------------------
# 3. the app's map file box
# ---------------------------------------------------------------------------------------------
def test_file_box_refuses_names_that_leave_it(tmp_path, boxed, box):
    outside = tmp_path / "outside"
    outside.mkdir()
    good = CategoryExpertMap({**{c: "mid" for c in CATS}, "fallback": "big"})
    good.save(outside / "map.yaml")
    (box.root / "link.yaml").symlink_to(outside / "map.yaml")
    (box.root / "dirlink").symlink_to(outside, target_is_directory=True)
    cases = [
        (str(outside / "map.yaml"), "is an absolute path; type a name inside the workbench folder"),
        ("../outside/map.yaml", "goes up with '..'; files stay inside the workbench folder"),
        ("sub/../../outside/map.yaml", "goes up with '..'"),
        ("link.yaml", "is a link to a place outside the workbench folder"),
        ("dirlink/map.yaml", "is a link to a place outside the workbench folder"),
        ("notes.txt", "must end in .yaml, .yml, .json"),
        ("~/map.yaml", "is an absolute path"),
        ("", "type a file name"),
    ]
    for name, message in cases:
        for action in (boxed.load, boxed.save, boxed.diff):
            with pytest.raises(FileBoxError) as info:
                action(name)
            assert message in str(info.value), (name, str(info.value))
    assert boxed.mapping.expert_for("math") == "small"
    assert CategoryExpertMap.load(outside / "map.yaml") == good  # never written through the box
    # names inside the box work, also in sub-folders
    out = boxed.save("maps/mine.yaml")
    assert out == box.root / "maps" / "mine.yaml" and boxed.status == "saved maps/mine.yaml"
    boxed.set_expert("math", "big")
    assert boxed.load("maps/mine.yaml") == ["math: big -> small"]
    assert boxed.status == "loaded maps/mine.yaml"
    assert box.names() == ["maps/mine.yaml"]


def test_panel_shows_the_box_folder_and_its_errors(boxed, box):
    from workbench.ui.mapping_editor import MappingEditorPanel

    panel = MappingEditorPanel(boxed)
    panel.__panel__()
    assert f"Map file names are relative to `{box.root}`" in panel._note.object
    assert "in the workbench folder" in panel._path.label
    panel._path.value = "/etc/passwd.yaml"
    panel._load.clicks += 1
    assert boxed.status.startswith("error: '/etc/passwd.yaml' is an absolute path")
    assert "is an absolute path" in panel._status.object


def test_default_file_box_follows_the_environment(tmp_path, monkeypatch):
    from workbench.ui.mapping_editor import default_file_box

    monkeypatch.setenv("COE_WORKBENCH_FILES", str(tmp_path / "mine"))
    assert default_file_box().root == (tmp_path / "mine").resolve()
    assert (tmp_path / "mine").is_dir()
    monkeypatch.delenv("COE_WORKBENCH_FILES")
    monkeypatch.setenv("COE_WORKBENCH_CACHE", str(tmp_path / "cache"))
    assert default_file_box().root == (tmp_path / "cache" / "files").resolve()


@pytest.mark.parametrize("use_box", [True, False])
def test_save_never_replaces_a_file_that_is_not_a_map(tmp_path, bundle, box, use_box):
    from workbench._paths import REPO_DIR
    from workbench.ui.mapping_editor import MappingEditorModel

    editor = MappingEditorModel.from_bundle(bundle, autosave=False, files=box if use_box else None)
    folder = box.root if use_box else tmp_path
    victims = {
        "params.yaml": (REPO_DIR / "data" / "mmlu_pro_params.yaml").read_bytes(),
        "creds.json": json.dumps({"private_key": SECRET}).encode(),
        "notes.yaml": b"- just\n- a list\n",
        "broken.json": b"{not json",
    }
    for name, data in victims.items():
        (folder / name).write_bytes(data)
        target = name if use_box else folder / name
        with pytest.raises(MappingError) as info:
            editor.save(target)
        assert f"{name} exists and is not a map file; choose another name or delete it" in str(info.value)
        assert SECRET[30:60] not in str(info.value)
        assert (folder / name).read_bytes() == data  # the file is intact
    # an existing map (of any categories and experts) may be replaced
    other = CategoryExpertMap({"poetry": "someone", "fallback": "else"})
    other.save(folder / "old_map.yaml")
    editor.save("old_map.yaml" if use_box else folder / "old_map.yaml")
    assert CategoryExpertMap.load(folder / "old_map.yaml") == editor.mapping
    (folder / "adir.yaml").mkdir()
    with pytest.raises(MappingError, match="is a folder"):
        editor.save("adir.yaml" if use_box else folder / "adir.yaml")


def test_load_of_a_creds_file_never_echoes_its_values(boxed, box):
    from workbench.ui.mapping_editor import MappingEditorPanel

    creds = {"type": "service_account", "project_id": "acme-prod-1234",
             "private_key": SECRET, "client_email": "robot@acme-prod-1234.iam.example.com"}
    (box.root / "creds.json").write_text(json.dumps(creds, indent=2))
    with pytest.raises(MappingError) as info:
        boxed.load("creds.json")
    msg = str(info.value)
    assert f"the value of 'private_key' is not one of the experts (a {len(SECRET):,}-character string)" in msg
    assert "'private_key' on line 4" in msg
    for value in creds.values():
        assert value not in msg
    assert SECRET[40:60] not in msg and "acme-prod" not in msg and "service_account" not in msg
    # the Panel's status line shows the same bounded text
    panel = MappingEditorPanel(boxed)
    panel._path.value = "creds.json"
    panel._load.clicks += 1
    assert boxed.status.startswith("error: mapping file")
    assert "acme-prod" not in panel._status.object and SECRET[40:60] not in panel._status.object
    # also when the editor's map has no list of known experts (the registry decides)
    from workbench.ui.mapping_editor import MappingEditorModel

    loose = CategoryExpertMap({**{c: "small" for c in CATS}, "fallback": "big"})
    (box.root / "half.yaml").write_text("math: sk-live-0123456789abcdef\nlaw: small\ncode: small\n"
                                        "chat: small\nfallback: big\n")
    editor = MappingEditorModel(loose, boxed._scores, boxed._registry, autosave=False, files=box)
    with pytest.raises(MappingError) as info:
        editor.load("half.yaml")
    assert "the value of 'math' is not one of the experts (a 24-character string)" in str(info.value)
    assert "sk-live" not in str(info.value) and "'math' on line 1" in str(info.value)
    # a YAML file with secrets as values and a non-string fallback_category
    (box.root / "env.yaml").write_text("assignments:\n  math: hunter2-password\n  fallback: big\n"
                                       "fallback_category: hunter2-password\n")
    with pytest.raises(MappingError) as info:
        boxed.load("env.yaml")
    assert "hunter2" not in str(info.value)
    assert "the value of 'fallback_category' is not one of the map's categories" in str(info.value)


def test_load_refuses_files_over_the_size_limit(boxed, box, monkeypatch):
    import workbench.ui.mapping_editor as me

    monkeypatch.setattr(me, "MAX_MAP_FILE_BYTES", 2**20)
    (box.root / "huge.yaml").write_text("math: small\n" + "# padding\n" * 120_000)
    err, seconds, _ = _bounded(boxed.load, "huge.yaml")
    assert isinstance(err, MappingError)
    assert "huge.yaml is 1.1 MiB; files over 1 MiB are not read" in str(err)
    assert seconds < 1.0


def test_unexpected_errors_do_not_reach_the_status_line(boxed):
    from workbench.ui.mapping_editor import MappingEditorPanel

    panel = MappingEditorPanel(boxed)

    def leaky():
        raise RuntimeError("token=" + SECRET)

    panel._run(leaky)
    assert boxed.status == "error: unexpected RuntimeError; the server log has the details"
    assert SECRET[:20] not in panel._status.object


def test_without_a_box_values_are_quoted_but_bounded(tmp_path, bundle):
    from workbench.ui.mapping_editor import MappingEditorModel

    editor = MappingEditorModel.from_bundle(bundle, autosave=False)
    path = tmp_path / "creds.json"
    path.write_text(json.dumps({"private_key": SECRET}))
    with pytest.raises(MappingError) as info:
        editor.load(path)
    msg = str(info.value)
    assert "category 'private_key' maps to unknown expert '-----BEGIN" in msg
    assert SECRET[80:] not in msg and len(msg) < 1000


# ---------------------------------------------------------------------------------------------
# 4. trust_remote_code
# ---------------------------------------------------------------------------------------------
def test_trust_remote_code_in_a_spec_file_warns(tmp_path, recwarn):
    from workbench.experts import specs_from_file
    from workbench.experts.spec import TrustRemoteCodeWarning

    path = tmp_path / "experts.yaml"
    path.write_text("- {name: safe, model: org/a}\n"
                    "- {name: custom, model: org/custom-arch, trust_remote_code: true}\n")
    with pytest.warns(TrustRemoteCodeWarning) as record:
        specs = specs_from_file(path)
    assert [s.trust_remote_code for s in specs] == [False, True]
    assert len(record) == 1
    text = str(record[0].message)
    assert str(path) in text and "expert 'custom' sets trust_remote_code: true" in text
    assert "runs the Python code that ships with its model ('org/custom-arch')" in text
    assert "with your user's rights" in text
    assert issubclass(TrustRemoteCodeWarning, UserWarning)
    path.write_text("- {name: safe, model: org/a, trust_remote_code: false}\n")
    recwarn.clear()
    specs_from_file(path)
    assert not [w for w in recwarn if issubclass(w.category, TrustRemoteCodeWarning)]
    path.write_text("- {name: s, model: org/a, trust_remote_code: 'no'}\n")
    with pytest.raises(ExpertError, match="expert 's': trust_remote_code must be true or false, got 'no'"):
        specs_from_file(path)


def test_load_yaml_still_reads_plain_files():
    assert load_yaml("a: 1\nb: [x, y]\nc: {d: null}\n") == {"a": 1, "b": ["x", "y"], "c": {"d": None}}
    assert load_yaml("") is None
    assert load_json('{"a": {"b": [1, 2]}}') == {"a": {"b": [1, 2]}}
