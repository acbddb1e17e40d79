"""``kill -9`` while the lane has a batch of creates in flight (Gen 2, concurrency 48: the
lane's by default), then ``apply --resume``: each mailbox is created exactly once (the
emulator's call log), every action has one ``done`` outcome row, and every password reached
the file before its call."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.plan import ActionKind
from tests.e2e.test_apply_support import (
    ApplyEnv,
    _endpoint,
    assert_each_action_done_once,
    people,
)

pytestmark = pytest.mark.timeout(120)


def creates_that_took_effect(env: ApplyEnv) -> int:
    return sum(
        1 for c in env.emulator.calls()
        if _endpoint(c) == "user/create" and c["status"] == 200 and c["errcode"] in (0, None)
    )  # fmt: skip


@pytest.mark.parametrize("kill_after", [20, 55])
def test_sigkill_mid_batch_then_resume_creates_each_mailbox_once(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator], kill_after: int
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(people(120), apply={"concurrency": 48})
    plan_file = env.ingest_and_plan()
    plan = service.read_plan_file(plan_file)
    wanted = {a.target for a in plan.actions if a.kind is ActionKind.CREATE_USER}
    assert len(wanted) == 120
    env.emulator.clear_calls()
    returncode = env.kill_apply_when(
        plan_file,
        f"{kill_after} creates answered",
        lambda: creates_that_took_effect(env) >= kill_after,
        latency_ms=60,
    )
    assert returncode == -signal.SIGKILL
    before = creates_that_took_effect(env)
    assert kill_after <= before < len(wanted), "the apply finished before it could be killed"

    r = env.cli("apply", "--resume", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [x["status"] for x in out["resumed"]] == ["applied"]
    env.assert_converged()
    assert_each_action_done_once(env, plan_file)
    creates = [c for c in env.emulator.calls() if _endpoint(c) == "user/create"]
    made = [c for c in creates if c["status"] == 200 and c["errcode"] in (0, None)]
    assert len(made) == len(wanted)  # the emulator made each mailbox exactly once
    assert not [c for c in creates if c["errcode"] == 60102]  # never sent for a made one
    lines = (env.root / "initial-passwords.jsonl").read_text(encoding="utf-8").splitlines()
    handed = {json.loads(x)["email"] for x in lines if "password" in json.loads(x)}
    assert handed >= wanted
