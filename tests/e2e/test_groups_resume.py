"""``kill -9`` while ``syncengine apply`` creates mail groups, then ``apply --resume``: every
group exists once with its members, each group action is done exactly once, and the ledger of
owned groups matches Exmail (so the next plan has no group action). Real subprocesses against
an emulator with latency, both generations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.app import CLIENT_CLOSED
from syncengine.emulator.harness import RunningEmulator
from syncengine.plan import GROUP_KINDS, ActionKind
from tests.e2e.test_apply_support import (
    ApplyEnv,
    _endpoint,
    assert_each_action_done_once,
    base_rows,
    people,
)

pytestmark = pytest.mark.timeout(150)

GROUP_WRITES = {"group/create", "group/update", "group/add", "group/addmember",
                "group/deletemember"}  # fmt: skip


@pytest.fixture(params=["v1", "v2"])
def env(
    request: pytest.FixtureRequest, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> ApplyEnv:
    env = ApplyEnv(tmp_path, emulator_factory(request.param))
    env.write(
        base_rows() + people(24),
        apply={"concurrency": 3},
        groups={"template": "grp-{path_pinyin}@example.com", "keeper": "admin@example.com"},
    )
    return env


def group_writes(env: ApplyEnv) -> list[str]:
    """Group writes that reached the directory (not a killed client's 499)."""
    return [_endpoint(c) for c in env.emulator.calls()
            if _endpoint(c) in GROUP_WRITES and c["status"] != CLIENT_CLOSED]  # fmt: skip


def test_sigkill_during_group_creation_then_resume(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    plan = service.read_plan_file(plan_file)
    creates = [a for a in plan.actions if a.kind is ActionKind.CREATE_GROUP]
    assert len(creates) >= 5, [a.key for a in plan.actions]
    env.kill_apply_when(
        plan_file, "the first group write", lambda: len(group_writes(env)) >= 1, latency_ms=60
    )
    assert len(group_writes(env)) < len(creates), "the apply finished before it was killed"

    r = env.cli("apply", "--resume", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["resumed"][0]["counts"]["failed"] == 0
    assert_each_action_done_once(env, plan_file)

    live = {g["groupid"]: g for g in env.emulator.state()["groups"]}
    for a in creates:
        assert a.group is not None
        assert sorted(live[a.target]["userlist"]) == sorted(a.group.members), a.target
    # Each group was created once, whatever the kill interrupted.
    made = [c for c in group_writes(env) if c in ("group/create", "group/add")]
    assert len(made) == len(creates), made
    repo = service.open_staging(env.config())
    try:
        owned = {g.address: g.members for g in repo.load_groups()}
    finally:
        repo.close()
    assert owned == {a.target: a.group.members for a in creates if a.group}
    again = env.cli("plan", "--json")
    assert again.exit_code == 0, again.output
    assert not [a for a in json.loads(again.output)["plan"]["actions"]
                if a["kind"] in {k.value for k in GROUP_KINDS}]  # fmt: skip
