""" "Must change the password at first login": Gen 2 has ``cpwd_login``; the Gen 1 protocol has
no such field, so a Gen 1 plan must not promise it (it used to, and the mailbox was created
without it). Real CLI, real SQLite, the emulator over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(("api", "promised"), [("v1", False), ("v2", True)])
def test_the_plan_promises_a_password_change_only_where_exmail_can_force_it(
    api: str, promised: bool, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory(api))
    env.write(base_rows() + people(2))
    plan = json.loads(env.ingest_and_plan().read_text(encoding="utf-8"))
    creates = [a for a in plan["actions"] if a["kind"] == "create_user"]
    assert creates
    for action in creates:
        assert action["password"]["change_at_login"] is promised, action
        assert ("must be changed at first login" in action["reason"]) is promised, action
