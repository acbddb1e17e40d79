"""``kill -9`` during a concurrent ``syncengine apply`` whose checkpoints, audit rows and links
go through the group writer (many threads' writes in one transaction): at any kill point the
staging file says no less than what Exmail got ("running" is committed before the call), and
no more than what happened (a ``done`` checkpoint has its ``done`` audit row); then
``apply --resume`` finishes with every action done exactly once. Real subprocesses, a real
SQLite file and the emulator over HTTP with latency, concurrency 16."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.plan import ActionKind
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository
from tests.e2e.test_apply_kill import ok_writes
from tests.e2e.test_apply_support import (
    ApplyEnv,
    assert_each_action_done_once,
    audit_rows,
    base_rows,
    people,
)

pytestmark = pytest.mark.timeout(180)
HIRES = 160


@pytest.fixture
def busy_env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(base_rows() + people(HIRES), apply={"concurrency": 16})
    return env


@pytest.mark.parametrize("kill_after", [15, 60, 140])
def test_sigkill_at_concurrency_16_keeps_intent_before_call_and_resumes_once(
    busy_env: ApplyEnv, kill_after: int
) -> None:
    env = busy_env
    plan_file = env.ingest_and_plan()
    plan = service.read_plan_file(plan_file)
    returncode = env.kill_apply_when(
        plan_file,
        f"{kill_after} write calls",
        lambda: len(env.write_calls()) >= kill_after,
        latency_ms=20,
    )
    assert returncode == -signal.SIGKILL

    with Repository(staging_db.make_engine(f"sqlite:///{env.db_path}")) as repo:
        record = repo.load_plan(plan.checksum)
        assert record is not None
        checkpoints = {a.action_key: a.status for a in repo.load_actions(record.id)}
    assert list(checkpoints.values()).count("done") < len(plan.actions), "finished too early"
    # Intent before the call: every mailbox Exmail now has was started (not pending) first.
    live = env.users()
    creates = [a for a in plan.actions if a.kind is ActionKind.CREATE_USER]
    made = [a for a in creates if a.target.lower() in live]
    assert made, "nothing was created before the kill"
    assert [a.key for a in made if checkpoints[a.key] == "pending"] == []
    # Outcome after: a done checkpoint has its done audit row (same or earlier transaction).
    outcome_rows = {r.action_key for r in audit_rows(env) if r.call is None and r.result == "done"}
    assert {k for k, s in checkpoints.items() if s == "done"} <= outcome_rows

    r = env.cli("apply", "--resume", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [x["status"] for x in out["resumed"]] == ["applied"]
    env.assert_converged()
    assert_each_action_done_once(env, plan_file)
    assert ok_writes(env)["user/create"] == len(creates)  # each create made once in Exmail
    lines = (env.root / "initial-passwords.jsonl").read_text(encoding="utf-8").splitlines()
    handed = {json.loads(x)["email"] for x in lines if "password" in json.loads(x)}
    assert handed >= {a.target for a in creates}
