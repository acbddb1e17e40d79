"""An address taken by a mail group is a conflict in the plan, not a failed apply.

Neither Exmail API lists mail groups, so ``read_state`` cannot see them. ``plan`` asks Exmail
about exactly the addresses it is about to create (Gen 1 ``user/check``, Gen 2
``user/batchcheck``) and plans again knowing the groups. The emulator's default seed has the
group all@example.com.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.plan import ActionKind
from tests.e2e.test_plan_command import ROWS, Workspace, plan_from

pytestmark = pytest.mark.timeout(120)

GROUP_CLASH = "E0009,全员,all@example.com,研发中心/平台部,工程师,,,male,active"


@pytest.fixture(params=["v1", "v2"])
def ws(
    request: pytest.FixtureRequest, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> Workspace:
    return Workspace(tmp_path, emulator_factory(request.param))


def test_an_hr_address_owned_by_a_group_is_a_conflict(ws: Workspace) -> None:
    ws.ingest(*ROWS.values(), GROUP_CLASH)
    out = ws.folder / "plan.json"
    result = ws.run("plan", "--out", str(out))
    assert result.exit_code == 0, result.output
    plan = plan_from(out)
    assert not [a for a in plan.actions if a.employee_id == "E0009"]
    (conflict,) = [c for c in plan.conflicts if "E0009" in c.employee_ids]
    assert "all@example.com" in conflict.message and "group" in conflict.message
    # Everyone else is still planned, and the plan applies without a stale refusal.
    assert any(a.kind is ActionKind.CREATE_USER and a.employee_id == "E0005" for a in plan.actions)
    applied = ws.run("apply", str(out), "--yes")
    assert applied.exit_code == 0, applied.output
    users = {u["userid"] for u in ws.emu.state()["users"]}
    assert "sunqi@example.com" in users


def test_each_new_address_is_checked_once_per_plan(ws: Workspace) -> None:
    """The addresses the plan will create are checked while it is made (started before the
    diff); planning again around the group does not check the same addresses again."""
    ws.ingest(*ROWS.values(), GROUP_CLASH)
    ws.emu.clear_calls()
    result = ws.run("plan", "--out", str(ws.folder / "plan.json"))
    assert result.exit_code == 0, result.output
    checks = [c for c in ws.emu.calls() if c["endpoint"].endswith(("/user/check", "/batchcheck"))]
    # Two new addresses, sunqi@ (E0005, created) and all@ (the group, planned around), in one
    # call: the plan made again knowing the group does not ask about sunqi@ a second time.
    assert len(checks) == 1, checks
