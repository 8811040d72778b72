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


# ------------------------------------------------------------------ shared bases (LoRA adapters)
LORA_YAML = """\
- {name: generalist, total_params_b: 0.1345, base: generalist, base_params_b: 0.1345}
- {name: math, total_params_b: 0.1353, base: generalist, base_params_b: 0.1345}
- {name: code, total_params_b: 0.1353, base: generalist, base_params_b: 0.1345}
- {name: big, total_params_b: 7.0}
"""


def test_a_shared_base_is_resident_once(tmp_path):
    f = tmp_path / "lora.yaml"
    f.write_text(LORA_YAML)
    reg = ModelRegistry.load(f)
    assert reg["math"].base == "generalist" and reg["math"].own_params_b == pytest.approx(0.0008)
    assert reg.resident(["math", "code"]) == pytest.approx(0.1345 + 2 * 0.0008)
    assert reg.resident(["generalist", "math", "code", "math"]) == pytest.approx(0.1345 + 2 * 0.0008)
    assert reg.resident(["big", "math"]) == pytest.approx(7.0 + 0.1353)
    assert reg.active("math") == 0.1353 and reg.total("math") == 0.1353  # each answer runs it all
    assert list(reg.to_frame().columns) == ["name", "total_params_b", "active_params_b", "base",
                                            "base_params_b"]
    assert not ModelRegistry({"a": 1.0}).has_bases and reg.has_bases


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".csv"])
def test_bases_survive_a_round_trip(tmp_path, suffix):
    f = tmp_path / "lora.yaml"
    f.write_text(LORA_YAML)
    reg = ModelRegistry.load(f)
    out = tmp_path / f"again{suffix}"
    reg.save(out)
    back = ModelRegistry.load(out)
    assert back == reg and back.resident(back.names) == pytest.approx(reg.resident(reg.names))
    assert back["big"].base is None


@pytest.mark.parametrize("text, match", [
    ("- {name: a, total_params_b: 1, base: b}\n", r"model 'a': base 'b' needs base_params_b"),
    ("- {name: a, total_params_b: 1, base_params_b: 0.5}\n", r"model 'a': base_params_b needs a base"),
    ("- {name: a, total_params_b: 1, base: b, base_params_b: 2}\n",
     r"base_params_b=2 must be a positive number of billions within total_params_b=1"),
    ("- {name: a, total_params_b: 1, base: b, base_params_b: 0.5}\n"
     "- {name: c, total_params_b: 1, base: b, base_params_b: 0.6}\n",
     r"base 'b' in .* has two sizes: base_params_b=0.5 for model 'a' and 0.6 for 'c'"),
    ("- {name: b, total_params_b: 0.5}\n- {name: a, total_params_b: 1, base: b, base_params_b: 0.5}\n",
     r"model 'b' in .* is the base of 'a' but does not say so; give it base: b and base_params_b: 0.5"),
])
def test_bad_bases_are_refused_with_the_fix(tmp_path, text, match):
    f = tmp_path / "r.yaml"
    f.write_text(text)
    with pytest.raises(RegistryError, match=match):
        ModelRegistry.load(f)


def test_csv_bases_are_optional_columns(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("name,total_params_b,active_params_b,base,base_params_b\n"
                 "g,0.1345,,g,0.1345\nm,0.1353,,g,0.1345\nbig,7,,,\n")
    reg = ModelRegistry.load(f)
    assert reg["m"].base == "g" and reg["big"].base is None
    assert reg.resident(["g", "m", "big"]) == pytest.approx(0.1353 + 7)


def test_registry_for_specs_shares_the_base_of_lora_experts():
    from workbench.experts import ExpertSpec, registry_for

    specs = [ExpertSpec("gen", "ckpt/base", total_params_b=0.1345),
             ExpertSpec("math", "ckpt/base", total_params_b=0.1353, adapter="lora/math"),
             ExpertSpec("code", "ckpt/base", active_params_b=0.1353, adapter="lora/code"),
             ExpertSpec("other", "ckpt/other", total_params_b=1.0)]
    reg = registry_for(specs)
    assert [m.base for m in reg] == ["gen", "gen", "gen", None]
    assert reg.resident(reg.names) == pytest.approx(0.1345 + 2 * 0.0008 + 1.0)
    # an adapter whose base is not an expert of its own: no size known, counted whole
    alone = registry_for([ExpertSpec("math", "ckpt/base", total_params_b=0.1353, adapter="lora/math")])
    assert alone["math"].base is None
    with pytest.raises(RegistryError, match=r"experts 'x' have no total_params_b"):
        registry_for([ExpertSpec("x", "ckpt")])
