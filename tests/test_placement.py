"""Placement planning: parse_size, plan_placement (pure, CPU, byte budgets), checkpoint validation."""
from __future__ import annotations

import pytest

from workbench.errors import ExpertError, PlacementError
from workbench.placement import format_bytes, inspect_checkpoint, parse_size, plan_placement, read_safetensors_header


@pytest.fixture(scope="module")
def six_layer(tmp_path_factory):
    from helpers_models import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("ckpt") / "six", hidden_size=64, num_layers=6, seed=3)


@pytest.mark.parametrize(
    "value, expected",
    [(1_000, 1000), ("1_000", 1000), ("512MB", 512 * 10**6), ("20GiB", 20 * 2**30), ("1.5 KiB", 1536),
     ("3kb", 3000), ("2k", 2048), ("7", 7), (0, 0), ("1e3", 1000), (2.0, 2)],
)
def test_parse_size_accepts_units(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value, match", [
    ("lots", "cannot parse memory size 'lots'"),
    ("5 parsecs", "unknown unit 'parsecs'"),
    (-1, "non-negative"),
    (True, "is a bool"),
    (None, "has type NoneType"),
])
def test_parse_size_rejects_bad_values(value, match):
    with pytest.raises(PlacementError, match=match):
        parse_size(value)


def test_format_bytes():
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 2**30) == "3.0 GiB"


def test_plan_fits_whole_on_cpu(six_layer):
    plan = plan_placement(six_layer, cpu_bytes="1GiB")
    assert plan.device_map == {"": "cpu"}
    assert plan.bytes_per_tier["cpu"] == plan.total_bytes > 0
    assert plan.bytes_per_tier["disk"] == 0 and not plan.is_split
    assert plan.largest_module.startswith("model.layers.")


def test_plan_splits_cpu_and_disk_within_budget(six_layer, tmp_path):
    whole = plan_placement(six_layer, cpu_bytes="1GiB")
    budget = whole.total_bytes // 2
    plan = plan_placement(six_layer, cpu_bytes=budget, offload_dir=tmp_path)
    assert plan.is_split and plan.tiers == ["cpu", "disk"]
    assert 0 < plan.bytes_per_tier["cpu"] <= budget - plan.largest_module_bytes  # accelerate keeps room for one layer
    assert plan.bytes_per_tier["cpu"] + plan.bytes_per_tier["disk"] == whole.total_bytes
    # decoder layers (the no-split class) are never split across tiers
    for name in plan.device_map:
        assert name.count(".") <= 2, name
    assert set(plan.modules_per_tier["cpu"]) | set(plan.modules_per_tier["disk"]) == set(plan.device_map)


def test_plan_is_pure_and_accepts_a_config(six_layer, tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(six_layer)
    a = plan_placement(config, cpu_bytes=500_000, offload_dir=tmp_path)
    b = plan_placement(six_layer, cpu_bytes=500_000, offload_dir=tmp_path)
    assert a.device_map == b.device_map and a.bytes_per_tier == b.bytes_per_tier
    assert list(tmp_path.iterdir()) == []  # planning writes nothing


def test_plan_with_a_gpu_budget_fills_gpu_first(six_layer, tmp_path):
    whole = plan_placement(six_layer, cpu_bytes="1GiB").total_bytes
    plan = plan_placement(six_layer, gpu_bytes=whole // 2, cpu_bytes=whole // 3, offload_dir=tmp_path)
    assert plan.tiers[0] == "gpu" and plan.bytes_per_tier["gpu"] <= whole // 2
    assert sum(plan.bytes_per_tier.values()) == whole


def test_plan_dtype_halves_bytes(six_layer):
    f32 = plan_placement(six_layer, cpu_bytes="1GiB")
    bf16 = plan_placement(six_layer, cpu_bytes="1GiB", dtype="bfloat16")
    assert bf16.total_bytes * 2 == f32.total_bytes


def test_plan_budget_below_largest_module_is_a_clear_error(six_layer, tmp_path):
    with pytest.raises(PlacementError, match=r"smaller than the largest module 'model\.layers\.\d'.*raise cpu_memory"):
        plan_placement(six_layer, cpu_bytes=1000, offload_dir=tmp_path)


def test_plan_without_offload_dir_when_too_big(six_layer):
    whole = plan_placement(six_layer, cpu_bytes="1GiB").total_bytes
    with pytest.raises(PlacementError, match="no offload_dir was given"):
        plan_placement(six_layer, cpu_bytes=whole // 2)


def test_plan_bad_model_argument():
    with pytest.raises(PlacementError, match="needs a checkpoint path"):
        plan_placement(42, cpu_bytes="1GiB")
    with pytest.raises(ExpertError, match="does not exist"):
        plan_placement("/no/such/folder", cpu_bytes="1GiB")


def test_truncated_safetensors_detected(six_layer, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(six_layer, bad)
    weights = bad / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExpertError, match=r"model\.safetensors is truncated.*re-save or re-download"):
        inspect_checkpoint(bad, expert="x")
    weights.write_bytes(b"\x01\x00")
    with pytest.raises(ExpertError, match="too short for a safetensors header"):
        read_safetensors_header(weights)
    weights.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ExpertError, match="declares a"):
        read_safetensors_header(weights)


def test_checkpoint_without_config(tmp_path):
    with pytest.raises(ExpertError, match="no config.json"):
        inspect_checkpoint(tmp_path, expert="x")


def test_weights_bytes_on_disk_is_the_one_checkpoint_byte_sum(six_layer, tmp_path):
    from workbench.placement import weights_bytes_on_disk

    files = sorted(six_layer.glob("*.safetensors"))
    assert files and weights_bytes_on_disk(six_layer) == sum(f.stat().st_size for f in files)
    assert inspect_checkpoint(six_layer).nbytes == weights_bytes_on_disk(str(six_layer))
    old = tmp_path / "old"  # no safetensors: the .bin weights count
    old.mkdir()
    (old / "pytorch_model.bin").write_bytes(b"x" * 100)
    assert weights_bytes_on_disk(old) == 100
    (old / "adapter_model.safetensors").write_bytes(b"y" * 7)  # safetensors win when present
    assert weights_bytes_on_disk(old) == 7
    assert weights_bytes_on_disk(None) == 0 and weights_bytes_on_disk(tmp_path / "missing") == 0
    assert weights_bytes_on_disk(old / "pytorch_model.bin") == 0  # a file, not a folder
