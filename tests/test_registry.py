"""ModelRegistry: parameter counts from YAML/CSV, clear errors for missing or malformed models."""
from __future__ import annotations

import pytest

from workbench.errors import RegistryError
from workbench.registry import MMLU_PRO_PARAMS, ModelInfo, ModelRegistry, mmlu_pro_registry


def test_from_mapping_and_infos():
    reg = ModelRegistry({"small": 7, "moe": (46.7, 12.9), "dict": {"total_params_b": 3.0}})
    assert reg.names == ["small", "moe", "dict"]
    assert reg.total("moe") == 46.7 and reg.active("moe") == 12.9
    assert reg.active("small") == reg.total("small") == 7.0
    assert reg["dict"] == ModelInfo("dict", 3.0, 3.0)
    assert "moe" in reg and "nope" not in reg and len(reg) == 3
    assert [m.name for m in reg] == reg.names
    assert ModelRegistry(list(reg)) == reg


def test_yaml_list_mapping_and_csv(tmp_path):
    (tmp_path / "list.yaml").write_text(
        "- {name: a, total_params_b: 7.2}\n- {name: b, total_params_b: 46.7, active_params_b: 12.9}\n"
    )
    (tmp_path / "map.yml").write_text("a: 7.2\nb: {total_params_b: 46.7, active_params_b: 12.9}\n")
    (tmp_path / "models.yaml").write_text("models:\n  - {name: a, total_params_b: 7.2}\n"
                                          "  - {name: b, total_params_b: 46.7, active_params_b: 12.9}\n")
    (tmp_path / "r.csv").write_text("name,total_params_b,active_params_b\na,7.2,\nb,46.7,12.9\n")
    (tmp_path / "short.csv").write_text("name,total_params_b\na,7.2\nb,46.7\n")
    want = ModelRegistry({"a": 7.2, "b": (46.7, 12.9)})
    for f in ("list.yaml", "map.yml", "models.yaml", "r.csv"):
        got = ModelRegistry.load(tmp_path / f)
        assert got == want, f
        assert str(tmp_path / f) in got.source
    assert ModelRegistry.load(tmp_path / "short.csv").active("b") == 46.7  # active defaults to total


@pytest.mark.parametrize("suffix", [".yaml", ".csv", ".json"])
def test_round_trip(tmp_path, suffix):
    reg = ModelRegistry({"a": 7.2, "b": (46.7, 12.9)})
    reg.save(tmp_path / f"r{suffix}")
    assert ModelRegistry.load(tmp_path / f"r{suffix}") == reg


def test_require_names_every_missing_model_and_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("a: 7\n")
    reg = ModelRegistry.load(path)
    with pytest.raises(RegistryError, match=r"scores: no parameter counts for 'b', 'c'\. Add them to .*params\.yaml"):
        reg.require(["a", "b", "c", "b"], context="scores")
    with pytest.raises(KeyError):  # RegistryError is also a KeyError
        reg["zzz"]
    reg.require(["a"], context="ok")  # no error


@pytest.mark.parametrize(
    "text, match",
    [
        ("name,total_params_b\na,7\na,8\n", "line 3: model 'a' already listed on line 2"),
        ("name,total_params_b\na,\n", "line 2: model 'a' has no total_params_b"),
        ("name,total_params_b\na,seven\n", "line 2: .*total_params_b must be a number"),
        ("name,size\na,7\n", "header must contain name and total_params_b"),
        ("name,total_params_b,active_params_b\na,7,13\n", "active_params_b=13 exceeds total_params_b=7"),
        ("name,total_params_b\na,-1\n", "positive finite"),
    ],
)
def test_bad_csv(tmp_path, text, match):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(RegistryError, match=match):
        ModelRegistry.load(path)


@pytest.mark.parametrize(
    "text, match",
    [
        ("- {total_params_b: 7}\n", "r.yaml: entry 0 must be a mapping with a name"),
        ("a: {active_params_b: 7}\n", "'a' .*has no total_params_b"),
        ("a: {total: 7}\n", "unknown keys \\['total'\\]"),
        ("", "is empty"),
        ("a: [1, 2, 3]\n", "expected \\(total_params_b, active_params_b\\)"),
        ("a: 7\nb: [\n", "not valid YAML"),
    ],
)
def test_bad_yaml(tmp_path, text, match):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RegistryError, match=match):
        ModelRegistry.load(path)


def test_bad_paths(tmp_path):
    with pytest.raises(RegistryError, match="does not exist"):
        ModelRegistry.load(tmp_path / "nope.yaml")
    (tmp_path / "r.txt").write_text("a 7")
    with pytest.raises(RegistryError, match="unknown format '.txt'"):
        ModelRegistry.load(tmp_path / "r.txt")
    with pytest.raises(RegistryError, match="listed twice"):
        ModelRegistry([ModelInfo("a", 1, 1), ModelInfo("a", 2, 2)])


def test_mmlu_pro_registry_matches_the_readme():
    reg = mmlu_pro_registry()
    assert len(reg) == 13 and reg.names == list(MMLU_PRO_PARAMS)
    assert reg.active("Mixtral-8x7B-Instruct-v0.1") == 12.9
    assert reg.total("Mixtral-8x7B-Instruct-v0.1") == 46.7
    assert reg.total("Qwen1.5-110B") == 111.2


@pytest.mark.shared_data
def test_mmlu_pro_registry_covers_every_result_file(mmlu_pro_dir):
    from workbench.scores import mmlu_pro_model_files

    mmlu_pro_registry().require(mmlu_pro_model_files(mmlu_pro_dir), context="MMLU-Pro results")


def test_old_file_verbs_still_work_with_a_deprecation_warning(tmp_path):
    reg = ModelRegistry({"a": 7.0, "b": 8.0})
    with pytest.warns(DeprecationWarning, match="use ModelRegistry.save"):
        reg.to_file(tmp_path / "r.yaml")
    with pytest.warns(DeprecationWarning, match="use ModelRegistry.load"):
        assert ModelRegistry.from_file(tmp_path / "r.yaml") == reg
