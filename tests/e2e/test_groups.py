"""Mail groups that follow HR, end to end: the CLI, a real staging database (SQLite file and
PostgreSQL), the emulator over real HTTP on loopback, both API generations.

One group per HR department (``dept-{code}@example.com``): created with the department's
people, left alone on a night where nothing changed, following a renamed department (address
kept) and a person who moves in, emptied down to the keeper when its department is gone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.plan import GROUP_KINDS, ActionKind, Plan
from tests.e2e.test_plan_command import Workspace, plan_from

pytestmark = pytest.mark.timeout(180)

HEADER = "employee_id,name,email,departments,position,mobile,tel,gender,status"
DEPARTMENTS = ["id,name,parent", "1,总部,", "10,研发中心,1", "101,平台部,10", "102,移动部,10",
               "103,数据部,10", "20,人力资源部,1", "30,市场部,1"]  # fmt: skip
ROWS = {
    "E0001": "E0001,张三,zhangsan@example.com,101,高级工程师,13800000001,010-62000001,male,active",
    "E0002": "E0002,李四,lisi@example.com,101,工程师,13800000002,,female,active",
    "E0003": "E0003,王五,wangwu@example.com,30,市场经理,,,male,terminated",
    "E0004": "E0004,赵六,zhaoliu@example.com,20,人事专员,,,female,active",
    "E0005": "E0005,孙七,sunqi@example.com,103,数据工程师,13900000005,,male,active",
}
MAPPING = """
[source]
type = "csv"
path = "hr.csv"

[mapping]
email = "email"
departments = { field = "departments", split = ";" }
position = "position"
mobile = "mobile"
tel = "tel"
gender = "gender"
status = "status"

[departments]
id_field = "id"
name_field = "name"
parent_field = "parent"
reference = "id"
root_ids = ["1"]

[departments.source]
type = "csv"
path = "departments.csv"

[policy]
protected = ["admin@*", "*-shared@*"]

[groups]
template = "dept-{code}@example.com"
keeper = "admin@example.com"
"""


class GroupWorkspace(Workspace):
    def __init__(self, folder: Path, emu: RunningEmulator, database_url: str | None = None):
        super().__init__(folder, emu, MAPPING)
        self.departments(*DEPARTMENTS)
        if database_url is not None:
            text = self.config.read_text(encoding="utf-8")
            self.config.write_text(
                text.replace("sqlite:///staging.db", database_url), encoding="utf-8"
            )

    def departments(self, *rows: str) -> None:
        (self.folder / "departments.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")

    def write_hr(self, *rows: str) -> None:
        (self.folder / "hr.csv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")

    def plan(self) -> Plan:
        out = self.folder / "plan.json"
        result = self.run("plan", "--out", str(out))
        assert result.exit_code == 0, result.output
        return plan_from(out)

    def apply(self) -> str:
        result = self.run("apply", str(self.folder / "plan.json"), "--yes")
        assert result.exit_code == 0, result.output
        return result.output

    def groups(self) -> dict[str, dict[str, Any]]:
        return {g["groupid"]: g for g in self.emu.state()["groups"]}


def group_actions(plan: Plan) -> dict[str, Any]:
    return {a.key: a for a in plan.actions if a.kind in GROUP_KINDS}


@pytest.fixture(params=["v1", "v2"])
def ws(
    request: pytest.FixtureRequest, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> GroupWorkspace:
    return GroupWorkspace(tmp_path, emulator_factory(request.param))


def test_department_groups_are_created_then_follow_hr(ws: GroupWorkspace) -> None:
    scenario(ws)


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
@pytest.mark.parametrize("api", ["v1", "v2"])
def test_the_same_on_postgresql(
    api: str,
    database_url: str,
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    assert database_url.startswith("postgresql")
    ws = GroupWorkspace(tmp_path, emulator_factory(api), database_url)
    upgraded = ws.run("db", "upgrade")  # migrations 0001..0006_groups on a real server
    assert upgraded.exit_code == 0, upgraded.output
    scenario(ws)


def scenario(ws: GroupWorkspace) -> None:
    ws.ingest(*ROWS.values())
    plan = ws.plan()
    groups = group_actions(plan)
    assert set(groups) == {
        "create_group:dept-101@example.com",
        "create_group:dept-103@example.com",
        "create_group:dept-20@example.com",
    }, groups
    platform = groups["create_group:dept-101@example.com"]
    assert platform.group is not None
    assert platform.group.members == ("lisi@example.com", "zhangsan@example.com")
    assert platform.group.name == "平台部"
    # 孙七 is new: the group waits for the mailbox; 赵六 is re-enabled first.
    assert groups["create_group:dept-103@example.com"].depends_on == (
        "create_user:sunqi@example.com",
    )
    assert groups["create_group:dept-20@example.com"].depends_on == (
        "enable_user:zhaoliu@example.com",
    )
    text = ws.run("plan").output
    assert "Mail groups to create (3)" in text and "+ dept-101@example.com" in text
    ws.apply()
    live = ws.groups()
    assert sorted(live["dept-101@example.com"]["userlist"]) == [
        "lisi@example.com",
        "zhangsan@example.com",
    ]
    assert live["dept-103@example.com"]["userlist"] == ["sunqi@example.com"]
    assert live["dept-20@example.com"]["groupname"] == "人力资源部"

    # A night where nothing changed: not one group action, not one group call.
    ws.emu.clear_calls()
    again = ws.plan()
    assert not group_actions(again), group_actions(again)
    ws.apply()
    calls = ws.emu.calls()
    assert calls and not [c for c in calls if "group/" in c["endpoint"]], calls

    # HR renames 平台部 and moves 赵六 into it: the group keeps its address, takes the new
    # name where the API can (Gen 2), gains 赵六; 人力资源部's group is emptied to the keeper.
    ws.departments(*[r.replace("101,平台部", "101,基础平台部") for r in DEPARTMENTS])
    ws.ingest(ROWS["E0001"], ROWS["E0002"], ROWS["E0003"],
              ROWS["E0004"].replace(",20,", ",101,"), ROWS["E0005"])  # fmt: skip
    moved = ws.plan()
    groups = group_actions(moved)
    update = groups["update_group:dept-101@example.com"]
    assert update.group is not None
    assert update.group.add == ("zhaoliu@example.com",) and update.group.remove == ()
    assert ("name" in update.changes) == (ws.emu.api == "v2")
    hr = groups["update_group:dept-20@example.com"]
    assert hr.group is not None and hr.group.members == ("admin@example.com",)
    assert hr.group.retiring_since is not None
    assert any(a.kind is ActionKind.MOVE_DEPARTMENT for a in moved.actions)
    ws.apply()
    live = ws.groups()
    assert sorted(live["dept-101@example.com"]["userlist"]) == [
        "lisi@example.com",
        "zhangsan@example.com",
        "zhaoliu@example.com",
    ]
    expected_name = "基础平台部" if ws.emu.api == "v2" else "平台部"
    assert live["dept-101@example.com"]["groupname"] == expected_name
    assert live["dept-20@example.com"]["userlist"] == ["admin@example.com"]
    assert not group_actions(ws.plan())  # and quiet again

    # The admin lets anyone post: Gen 2 updates the groups, Gen 1 cannot (kept as created).
    text = ws.config.read_text(encoding="utf-8")
    ws.config.write_text(text.replace('keeper = "admin@example.com"',
                                      'keeper = "admin@example.com"\nposting = "anyone"'),
                         encoding="utf-8")  # fmt: skip
    reposted = group_actions(ws.plan())
    if ws.emu.api == "v2":
        assert {a.changes["posting"] for a in reposted.values()} == {(0, 1)}
        # the retiring group of 人力资源部 is left as it is
        assert set(reposted) == {"update_group:dept-101@example.com",
                                 "update_group:dept-103@example.com"}  # fmt: skip
        ws.apply()
        live = ws.groups()
        assert live["dept-101@example.com"]["allow_type"] == 1
        assert live["dept-103@example.com"]["allow_type"] == 1
        assert live["dept-20@example.com"]["allow_type"] == 0
    else:
        assert reposted == {}
