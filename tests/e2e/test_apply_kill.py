"""``kill -9`` during ``syncengine apply``, then ``apply --resume``: the directory reaches the
desired state and every action is done exactly once (audit log and the emulator's call log).
Also: a second apply while one runs is refused, naming the holder. Real subprocesses against
an emulator with latency, both generations."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_ERROR
from syncengine.plan import ActionKind
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository
from tests.e2e.test_apply_support import (
    WAIT_S,
    ApplyEnv,
    _endpoint,
    assert_each_action_done_once,
    base_rows,
    people,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


def ok_writes(env: ApplyEnv) -> Counter[str]:
    """Successful write calls by endpoint (errcode 0 / empty body, not dropped)."""
    names = {"user/create", "user/update", "user/swapalias", "department/create",
             "party/sync", "user/sync"}  # fmt: skip
    return Counter(
        _endpoint(c) for c in env.emulator.calls()
        if _endpoint(c) in names and c["status"] == 200 and not c.get("dropped")
        and c.get("errcode") in (0, "0", None, "")
    )  # fmt: skip


@pytest.fixture(params=["v1", "v2"])
def slow_env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> ApplyEnv:
    emu = emulator_factory(request.param)
    env = ApplyEnv(tmp_path, emu)
    env.write(base_rows() + people(24), apply={"concurrency": 3})
    return env


@pytest.mark.parametrize("kill_after", [1, 9, 22])
def test_sigkill_then_resume_does_each_action_once(slow_env: ApplyEnv, kill_after: int) -> None:
    env = slow_env
    plan_file = env.ingest_and_plan()
    plan = service.read_plan_file(plan_file)
    returncode = env.kill_apply_when(
        plan_file,
        f"{kill_after} write calls",
        lambda: len(env.write_calls()) >= kill_after,
        latency_ms=40,
    )
    assert returncode == -signal.SIGKILL
    done_before = len(env.write_calls())
    assert done_before < len(plan.actions), "the apply finished before it could be killed"

    r = env.cli("apply", "--resume", "--json")  # takes over the dead process's lock
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert [x["status"] for x in out["resumed"]] == ["applied"]
    assert out["resumed"][0]["counts"]["failed"] == 0
    env.assert_converged()
    assert_each_action_done_once(env, plan_file)
    resumed_run = out["resumed"][0]["run_id"]
    checks = [r for r in service.query_audit(service.Engine(env.config()), run_id=resumed_run)
              if r.call in ("get_user", "department_exists")]  # fmt: skip
    # An action in flight at the kill is looked at before being redone (when one was).
    assert all(r.result in ("ok", "retry") for r in checks)

    # The emulator saw each write succeed exactly once per action.
    kinds = Counter(a.kind for a in plan.actions)
    writes = ok_writes(env)
    if env.emulator.api == "v2":
        assert writes["user/create"] == kinds[ActionKind.CREATE_USER]
        assert writes["department/create"] == kinds[ActionKind.CREATE_DEPARTMENT]
        assert writes["user/swapalias"] == kinds[ActionKind.SWAP_PRIMARY] == 1
        updates = kinds[ActionKind.UPDATE_USER] + kinds[ActionKind.ADD_ALIAS] + kinds[
            ActionKind.ENABLE_USER]  # fmt: skip
        assert writes["user/update"] == updates
    else:
        assert writes["party/sync"] == kinds[ActionKind.CREATE_DEPARTMENT]
        assert writes["user/swapalias"] == kinds[ActionKind.SWAP_PRIMARY] == 1
        assert writes["user/sync"] == sum(
            kinds[k] for k in (ActionKind.CREATE_USER, ActionKind.UPDATE_USER,
                               ActionKind.ADD_ALIAS, ActionKind.ENABLE_USER)
        )  # fmt: skip
    # Passwords of mailboxes created before the kill were written before their create call.
    lines = (env.root / "initial-passwords.jsonl").read_text(encoding="utf-8").splitlines()
    handed = {json.loads(x)["email"] for x in lines if "password" in json.loads(x)}
    assert handed >= {a.target for a in plan.actions if a.kind is ActionKind.CREATE_USER}
    # Nothing is left: a new plan is empty and --resume has nothing to do.
    assert env.cli("apply", "--resume").output.startswith("nothing to resume")


def test_second_apply_is_refused_while_one_runs(slow_env: ApplyEnv) -> None:
    env = slow_env
    plan_file = env.ingest_and_plan()
    env.emulator.set_faults(latency_ms=150)
    url = f"sqlite:///{env.db_path}"
    proc = env.subprocess("apply", str(plan_file))
    repo = Repository(staging_db.make_engine(url))
    try:
        wait_for("the first apply to take the lock", lambda: repo.get_lock("apply") is not None)
        holder = repo.get_lock("apply")
        assert holder is not None and holder.pid == proc.pid
        r = env.cli("apply", str(plan_file))
        assert r.exit_code == EXIT_ERROR
        assert "another run holds the lock" in r.output and f"pid {proc.pid}" in r.output
        r = env.cli("apply", "--resume")
        assert r.exit_code == EXIT_ERROR and "another run holds the lock" in r.output
        env.emulator.set_faults(latency_ms=0)
        _, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        repo.close()
    with Repository(staging_db.make_engine(url)) as after:
        assert after.get_lock("apply") is None  # released at the end
    env.assert_converged()
    assert_each_action_done_once(env, plan_file)
