"""``syncengine apply`` / ``audit`` end to end: the real CLI, a real SQLite file and the
emulator over real HTTP, in both API generations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_BLOCKED, EXIT_ERROR, EXIT_FAILED_ACTIONS
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["v1", "v2"])
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> ApplyEnv:
    emu = emulator_factory(request.param)
    e = ApplyEnv(tmp_path, emu)
    e.write(base_rows() + people(12))
    return e


def test_full_apply_then_second_run_writes_nothing(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    r = env.cli("apply", str(plan_file), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    applied = out["applied"]
    assert applied["status"] == "applied" and applied["failures"] == []
    assert applied["counts"]["done"] == applied["counts"]["actions"] > 12
    env.assert_converged()
    users = env.users()
    assert "zhangsan@example.com" in users and users["zhangsan@example.com"]["position"] == "架构师"
    assert users["si.li@example.com"]["slaves"] == ["lisi@example.com"]  # old address kept

    # Passwords: one line per new mailbox, mode 0600, each one works in Exmail.
    pw_file = Path(applied["password_file"])
    assert pw_file.stat().st_mode & 0o777 == 0o600
    lines = [json.loads(x) for x in pw_file.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 12 == applied["passwords_delivered"]
    for line in lines:
        assert env.emulator.check_password(line["email"], line["password"])

    # Second round: a fresh plan has no actions, and applying it makes no write call.
    mark = len(env.emulator.calls())
    plan2 = env.ingest_and_plan("plan2.json")
    r = env.cli("apply", str(plan2), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"]["status"] == "no-changes"
    assert env.write_calls(since=mark) == []

