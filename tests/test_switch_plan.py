"""The pool's eviction policy as a pure plan: no checkpoint, no model, no lock."""
from __future__ import annotations

import pytest

from workbench.errors import ExpertError
from workbench.experts.plan import ExpertState, SwitchRequest, plan_room, plan_switch

MB = 2**20
CPU_ONLY = {"gpu": 0, "cpu": 100 * MB}
WITH_GPU = {"gpu": 100 * MB, "cpu": 200 * MB}


def S(name, size=40, *, gpu=False, cpu=False, tick=0, pinned=False, busy=False, split=None,
      extra=None, largest=None):
    n = size * MB
    return ExpertState(name, n, gpu=n if gpu else 0, cpu=n if cpu else 0,
                       split={k: v * MB for k, v in split.items()} if split else None,
                       extra={k: v * MB for k, v in (extra or {}).items()}, pinned=pinned,
                       busy=busy, tick=tick, largest_module_bytes=(largest or size // 4) * MB)


def evicted(plan):
    return [(e.expert, e.action) for e in plan.evictions]


def test_a_resident_expert_needs_nothing():
    plan = plan_switch([S("a", cpu=True)], CPU_ONLY, SwitchRequest("a"))
    assert (plan.found, plan.steps, plan.evictions) == ("cpu", (), ())
    plan = plan_switch([S("a", gpu=True, cpu=True)], WITH_GPU, SwitchRequest("a"))
    assert (plan.found, plan.steps) == ("gpu", ())


def test_cold_expert_loads_into_free_room_and_reserves_it():
    plan = plan_switch([S("a"), S("b", cpu=True)], CPU_ONLY, SwitchRequest("a"))
    assert plan.steps == ("disk->cpu",) and plan.evictions == ()
    assert plan.reserve == {"gpu": 0, "cpu": 40 * MB}


def test_least_recently_used_goes_first():
    states = [S("new", cpu=True, tick=9), S("old", cpu=True, tick=1), S("mid", cpu=True, tick=5),
              S("want")]
    # 120 MB held of 150: 30 left for a 40 MB expert -> one victim, the oldest
    plan = plan_switch(states, {"gpu": 0, "cpu": 150 * MB}, SwitchRequest("want"))
    assert evicted(plan) == [("old", "drop-cpu")] and plan.steps == ("disk->cpu",)
    # a tighter budget takes the next oldest too, never the newest first
    plan = plan_switch(states, {"gpu": 0, "cpu": 90 * MB}, SwitchRequest("want"))
    assert evicted(plan) == [("old", "drop-cpu"), ("mid", "drop-cpu")]
    # enough room: nobody is evicted
    assert plan_switch(states, {"gpu": 0, "cpu": 160 * MB}, SwitchRequest("want")).evictions == ()


def test_pinned_busy_and_the_requested_expert_are_never_victims():
    states = [S("pinned", cpu=True, tick=0, pinned=True), S("busy", cpu=True, tick=1, busy=True),
              S("idle", cpu=True, tick=2), S("want")]
    plan = plan_switch(states, {"gpu": 0, "cpu": 130 * MB}, SwitchRequest("want"))
    assert evicted(plan) == [("idle", "drop-cpu")]
    # with nothing evictable left: wait for the busy session when allowed, else split
    states = [S("pinned", cpu=True, pinned=True), S("busy", cpu=True, busy=True), S("want")]
    budget = {"gpu": 0, "cpu": 100 * MB}
    assert plan_switch(states, budget, SwitchRequest("want", may_wait=True)).steps == ("wait",)
    split = plan_switch(states, budget, SwitchRequest("want"))
    assert split.steps == ("split",) and split.split_room == {"gpu": 0, "cpu": 20 * MB}


def test_prefetch_never_waits_splits_or_evicts_busy_experts():
    states = [S("busy", 80, cpu=True, busy=True), S("want")]
    plan = plan_switch(states, CPU_ONLY, SwitchRequest("want", prefetch=True))
    assert plan.steps == ("skip",) and plan.evictions == ()
    # with an idle victim a prefetch evicts like a load, CPU tier only even with a GPU budget
    states = [S("idle", 80, cpu=True), S("want")]
    plan = plan_switch(states, {"gpu": 100 * MB, "cpu": 100 * MB}, SwitchRequest("want", prefetch=True))
    assert plan.steps == ("disk->cpu",) and evicted(plan) == [("idle", "drop-cpu")]
    assert plan.reserve["gpu"] == 0


def test_gpu_room_demotes_to_cpu_when_it_fits_else_drops():
    states = [S("g", 80, gpu=True, tick=1), S("want", 40, cpu=True)]
    plan = plan_switch(states, WITH_GPU, SwitchRequest("want"))
    assert evicted(plan) == [("g", "demote")] and plan.steps == ("cpu->gpu",)
    assert plan.reserve == {"gpu": 40 * MB, "cpu": 0}
    # no CPU room for the demoted copy (the rest is pinned): its GPU copy is dropped
    states = [S("g", 80, gpu=True, tick=1), S("p", 150, cpu=True, pinned=True), S("want", 40, cpu=True)]
    plan = plan_switch(states, WITH_GPU, SwitchRequest("want"))
    assert evicted(plan) == [("g", "drop-gpu")]
    # demoting may first evict an older CPU copy to make room for it
    states = [S("g", 80, gpu=True, tick=5), S("c", 150, cpu=True, tick=1), S("want", 40, cpu=True)]
    plan = plan_switch(states, WITH_GPU, SwitchRequest("want"))
    assert evicted(plan) == [("c", "drop-cpu"), ("g", "demote")]


def test_cold_expert_with_a_gpu_goes_disk_cpu_gpu_or_disk_gpu():
    plan = plan_switch([S("want", 40)], WITH_GPU, SwitchRequest("want"))
    assert plan.steps == ("disk->cpu", "cpu->gpu") and plan.reserve == {"gpu": 40 * MB, "cpu": 40 * MB}
    # CPU tier full of pinned experts: straight to the GPU
    plan = plan_switch([S("p", 190, cpu=True, pinned=True), S("want", 40)], WITH_GPU,
                       SwitchRequest("want"))
    assert plan.steps == ("disk->gpu",) and plan.reserve == {"gpu": 40 * MB, "cpu": 0}


def test_an_expert_larger_than_the_tier_is_split_with_the_room_left():
    states = [S("small", 80, cpu=True, tick=1), S("huge", 300, largest=20)]
    plan = plan_switch(states, CPU_ONLY, SwitchRequest("huge"))
    # room for two of its largest modules is made first (the small one goes), then the split
    assert plan.steps == ("split",) and evicted(plan) == [("small", "drop-cpu")]
    assert plan.split_room == {"gpu": 0, "cpu": 100 * MB}
    # a split copy is dropped whole when its tier needs room
    states = [S("sp", 300, split={"cpu": 70}, tick=0), S("want", 40)]
    plan = plan_switch(states, CPU_ONLY, SwitchRequest("want"))
    assert evicted(plan) == [("sp", "drop-split")]


def test_reservations_and_adapter_bytes_count_but_are_never_freed():
    states = [S("loading", 10, extra={"cpu": 50}, busy=True), S("idle", 30, cpu=True), S("want")]
    plan = plan_switch(states, CPU_ONLY, SwitchRequest("want"))
    assert evicted(plan) == [("idle", "drop-cpu")]  # 50 reserved + 30 held: 40 needs the idle copy
    room = plan_room(states, CPU_ONLY, "cpu", 90 * MB, exclude="want")
    assert not room.ok and evicted(room) == [("idle", "drop-cpu")]


def test_plan_room_frees_exactly_enough():
    states = [S(f"e{i}", 20, cpu=True, tick=i) for i in range(5)]
    room = plan_room(states, CPU_ONLY, "cpu", 30 * MB)
    assert room.ok and evicted(room) == [("e0", "drop-cpu"), ("e1", "drop-cpu")]
    assert plan_room(states, CPU_ONLY, "cpu", 0).evictions == ()


def test_the_plan_does_not_change_the_snapshot():
    states = [S("a", 80, cpu=True), S("b")]
    before = list(states)
    plan_switch(states, CPU_ONLY, SwitchRequest("b"))
    assert states == before


def test_bad_snapshots_are_clear_errors():
    with pytest.raises(ExpertError, match="'zz' is not in the snapshot"):
        plan_switch([S("a")], CPU_ONLY, SwitchRequest("zz"))
    with pytest.raises(ExpertError, match="names an expert twice"):
        plan_switch([S("a"), S("a")], CPU_ONLY, SwitchRequest("a"))
    with pytest.raises(ExpertError, match="unknown tier"):
        plan_room([S("a")], CPU_ONLY, "disk", 1)


def test_residency_rows_group_by_tier_without_a_pool():
    from workbench.experts.residency import group_by_tier

    rows = [{"expert": "a", "tier": "gpu", "gpu_bytes": 10, "cpu_bytes": 10, "disk_bytes": 0},
            {"expert": "b", "tier": "cpu+disk", "gpu_bytes": 0, "cpu_bytes": 5, "disk_bytes": 7},
            {"expert": "c", "tier": "disk", "gpu_bytes": 0, "cpu_bytes": 0, "disk_bytes": 9,
             "pinned": True}]
    g = group_by_tier(rows)
    assert [e["expert"] for e in g["gpu"]] == ["a"]
    assert [e["expert"] for e in g["cpu"]] == ["a", "b"]   # a keeps its CPU copy, b is split
    assert [(e["expert"], e["bytes"]) for e in g["disk"]] == [("b", 7), ("c", 9)]
    assert g["disk"][1]["pinned"] is True
