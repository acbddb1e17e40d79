"""``syncengine plan`` end to end: a real HR file ingested into a real SQLite staging file, the
emulator over real HTTP on loopback (both API generations), the command run through click's
CliRunner in-process.

The emulator's default seed holds 张三 (E0001), 李四 (E0002, 研发中心/移动部), 王五 (E0003),
赵六 (E0004, disabled), a shared HR mailbox and the admin. The HR file below moves 李四,
terminates 王五, re-activates 赵六 and hires 孙七 into a department Exmail does not have yet.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from syncengine import service
from syncengine.cli import main
from syncengine.config import load_config
from syncengine.domain import IdentityLink
from syncengine.emulator.harness import RunningEmulator
from syncengine.emulator.seed import config_snippet
from syncengine.plan import ActionKind, Plan

pytestmark = pytest.mark.timeout(120)

HEADER = "employee_id,name,email,departments,position,mobile,tel,gender,status"
ROWS = {
    "E0001": "E0001,张三,zhangsan@example.com,研发中心/平台部,高级工程师,13800000001,"
    "010-62000001,male,active",
    "E0002": "E0002,李四,lisi@example.com,研发中心/平台部,工程师,13800000002,,female,active",
    "E0003": "E0003,王五,wangwu@example.com,市场部,市场经理,,,male,terminated",
    "E0004": "E0004,赵六,zhaoliu@example.com,人力资源部,人事专员,,,female,active",
    "E0005": "E0005,孙七,sunqi@example.com,研发中心/数据部,数据工程师,13900000005,,male,active",
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

[policy]
protected = ["admin@*", "*-shared@*"]
"""


class Workspace:
    """A config folder: HR file, SQLite staging file and an [exmail] table for one emulator."""

    def __init__(self, folder: Path, emu: RunningEmulator, mapping: str = MAPPING):
        self.folder = folder
        self.emu = emu
        self.config = folder / "syncengine.toml"
        self.config.write_text(
            config_snippet(emu.seed, emu.base_url, emu.api)
            + '\n\n[database]\nurl = "sqlite:///staging.db"\n'
            + mapping,
            encoding="utf-8",
        )

    def write_hr(self, *rows: str) -> None:
        (self.folder / "hr.csv").write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args])

    def ingest(self, *rows: str) -> None:
        self.write_hr(*rows)
        result = self.run("ingest")
        assert result.exit_code == 0, result.output

    def link(self, *pairs: tuple[str, str]) -> None:
        """Store identity links as an earlier apply would have (adopted mailboxes)."""
        repo = service.open_staging(load_config(self.config))
        try:
            seen = datetime(2026, 1, 5, tzinfo=UTC)
            repo.save_links(IdentityLink(eid, email, seen) for eid, email in pairs)
        finally:
            repo.close()


@pytest.fixture
def workspace(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator], request: pytest.FixtureRequest
) -> Workspace:
    return Workspace(tmp_path, emulator_factory(request.param))


both = pytest.mark.parametrize("workspace", ["v1", "v2"], indirect=True)


def plan_from(path: Path) -> Plan:
    return Plan.from_json(path.read_text(encoding="utf-8"), source=str(path))


@both
def test_plan_shows_changes_and_exits_2(workspace: Workspace) -> None:
    workspace.ingest(*ROWS.values())
    before = workspace.emu.state()

    result = workspace.run("plan", "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    out = result.output
    # Grouped sections, in the terraform-like order, with field diffs and totals.
    order = [
        "Departments to create (1)",
        "Mailboxes to create (1)",
        "Mailboxes to update",
        "Mailboxes to enable (1)",
        "Mailboxes to disable (1)",
        "Protected accounts (2)",
    ]
    positions = [out.index(h) for h in order]
    assert positions == sorted(positions), out
    assert "+ 研发中心/数据部" in out
    assert "+ sunqi@example.com  E0005 孙七" in out
    assert "departments: [研发中心/移动部] → [研发中心/平台部]" in out
    assert "- wangwu@example.com  E0003 王五" in out
    assert "hr-shared@example.com" in out.split("Protected accounts")[1]
    assert "\x1b[" not in out  # not a terminal: no colours
    assert "Plan: 2 to create, 3 to change, 1 to disable, 0 to delete" in out
    # Planning never writes to Exmail.
    assert workspace.emu.state() == before

    # Without --detailed-exitcode, changes are exit 0.
    assert workspace.run("plan").exit_code == 0


@both
def test_plan_out_json_round_trips_and_is_saved(workspace: Workspace) -> None:
    workspace.ingest(*ROWS.values())
    out = workspace.folder / "plan.json"

    result = workspace.run("plan", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("Plan ") and "2 to create" in lines[0]
    assert str(out) in lines[1]

    plan = plan_from(out)  # checksum verified by from_json
    assert plan.to_json() == out.read_text(encoding="utf-8")
    assert lines[0].startswith(f"Plan {plan.checksum[:12]}")
    kinds = {a.kind for a in plan.actions}
    assert {ActionKind.CREATE_DEPARTMENT, ActionKind.CREATE_USER, ActionKind.UPDATE_USER,
            ActionKind.ENABLE_USER, ActionKind.DISABLE_USER} <= kinds  # fmt: skip
    create = next(a for a in plan.actions if a.kind is ActionKind.CREATE_USER)
    assert create.depends_on == ("create_department:研发中心/数据部",)
    assert create.password is not None
    assert "password" not in json.dumps(dataclasses.asdict(create.mailbox))
    config = load_config(workspace.config)
    assert plan.config_fingerprint == service.config_fingerprint(config)

    # The same plan is in the staging database, its actions in order with their dependencies.
    repo = service.open_staging(config)
    try:
        record = repo.load_plan(plan.checksum)
        assert record is not None and record.status == "saved" and not record.blocked
        assert Plan.from_json(record.document) == plan
        stored = repo.load_actions(record.id)
        assert [a.action_key for a in stored] == [a.key for a in plan.actions]
        by_key = {a.action_key: a.seq for a in stored}
        create_row = next(a for a in stored if a.kind == "create_user")
        assert create_row.depends_on == (by_key["create_department:研发中心/数据部"],)
    finally:
        repo.close()


@both
def test_json_summary_and_formats(workspace: Workspace) -> None:
    workspace.ingest(*ROWS.values())
    result = workspace.run("plan", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["has_changes"] is True and data["blocked"] is False
    assert data["totals"]["to create"] == 2 and data["totals"]["to disable"] == 1
    assert Plan.from_dict(data["plan"]).checksum == data["checksum"]
    assert data["mailboxes_read"] == 6

    # --format json on stdout is the plan file itself.
    result = workspace.run("plan", "--format", "json")
    assert Plan.from_json(result.output).summary["create_user"] == 1

    html_out = workspace.folder / "plan.html"
    result = workspace.run("plan", "--format", "html", "--out", str(html_out))
    assert result.exit_code == 0, result.output
    page = html_out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "sunqi@example.com" in page


@both
def test_only_explains_one_person(workspace: Workspace) -> None:
    workspace.ingest(*ROWS.values())
    result = workspace.run("plan", "--only", "E0002", "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    out = result.output
    head = out.split("Plan ")[0]
    assert "Employee E0002 (李四)" in head
    assert "match: lisi@example.com by ext_id" in head
    assert "lifecycle: active" in head
    assert "departments: [研发中心/移动部] → [研发中心/平台部]" in head
    # Only that person's actions are planned: nobody else is created, disabled or enabled.
    assert "Mailboxes to update (1)" in out
    for other in ("sunqi@", "wangwu@", "Mailboxes to enable", "Mailboxes to create"):
        assert other not in out.split("Employee E0002")[1].split("Plan ")[1]

    # Someone with nothing to do is explained too; exit 0.
    result = workspace.run("plan", "--only", "E0001", "--detailed-exitcode")
    assert "Employee E0001 (张三)" in result.output
    assert "match: zhangsan@example.com by ext_id" in result.output


@both
def test_truncated_source_is_blocked_with_the_reason_and_release(workspace: Workspace) -> None:
    workspace.ingest(*ROWS.values())
    workspace.link(("E0001", "zhangsan@example.com"), ("E0002", "lisi@example.com"),
                   ("E0003", "wangwu@example.com"), ("E0004", "zhaoliu@example.com"))  # fmt: skip
    # The next export has lost most people: E0002, E0003 and E0004 look like leavers.
    workspace.ingest(ROWS["E0001"], ROWS["E0005"])

    out = workspace.folder / "blocked.json"
    result = workspace.run("plan", "--out", str(out))
    assert result.exit_code == 3, result.output
    assert "BLOCKED" in result.output
    assert "shrank from 5 to 2 people" in result.output
    assert "--allow-removals 2" in result.output
    plan = plan_from(out)  # a blocked plan is still written and saved
    assert [r.brake for r in plan.blocked_reasons] == ["source_shrank"]
    disabled = {a.employee_id for a in plan.actions if a.kind is ActionKind.DISABLE_USER}
    assert disabled == {"E0002", "E0003"}  # E0004's mailbox is already disabled

    result = workspace.run("plan")
    assert result.exit_code == 3
    text = result.output
    assert text.index("BLOCKED") < text.index("Mailboxes to disable")
    assert "to release: review the plan, then pass --allow-removals" in text

    # Too small a release is not enough; the right one lifts the brake.
    assert workspace.run("plan", "--allow-removals", "0").exit_code == 3
    result = workspace.run("plan", "--allow-removals", "2", "--detailed-exitcode")
    assert result.exit_code == 2, result.output
    assert "released" in result.output
    assert workspace.run("plan", "--force").exit_code == 0


@both
def test_no_changes_exits_0(workspace: Workspace) -> None:
    # HR exactly as Exmail has it (the admin is protected, the shared box unmanaged).
    workspace.ingest(
        "E0001,张三,zhangsan@example.com,研发中心/平台部,高级工程师,13800000001,"
        "010-62000001,male,active",
        "E0002,李四,lisi@example.com,研发中心/移动部,工程师,13800000002,,female,active",
    )
    workspace.link(("E0001", "zhangsan@example.com"), ("E0002", "lisi@example.com"))
    result = workspace.run("plan", "--detailed-exitcode")
    assert result.exit_code == 0, result.output
    assert "No changes." in result.output


def test_no_snapshot_is_a_clear_error(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    ws = Workspace(tmp_path, emulator_factory("v2"))
    result = ws.run("plan")
    assert result.exit_code == 1
    assert "no HR snapshot yet" in result.output
    assert "syncengine ingest" in result.output
    assert "Traceback" not in result.output


def test_unreachable_exmail_is_exit_1_and_the_run_is_failed(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory("v2")
    ws = Workspace(tmp_path, emu)
    ws.ingest(*ROWS.values())
    emu.stop()
    result = ws.run("plan")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    for secret in emu.seed["secrets"].values():
        assert secret not in result.output
    repo = service.open_staging(load_config(ws.config))
    try:
        run = repo.list_runs(1)[0]
        assert run.kind == "plan" and run.status == "failed"
    finally:
        repo.close()


def test_unwritable_out_is_a_clear_error(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    ws = Workspace(tmp_path, emulator_factory("v2"))
    ws.ingest(*ROWS.values())
    result = ws.run("plan", "--out", str(tmp_path / "missing-dir" / "plan.json"))
    assert result.exit_code == 1
    assert "cannot write the plan" in result.output and "Traceback" not in result.output


def test_config_fingerprint_ignores_secrets_but_not_settings(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    ws = Workspace(tmp_path, emulator_factory("v2"))
    base = load_config(ws.config)
    fp = service.config_fingerprint(base)
    text = ws.config.read_text(encoding="utf-8")
    secret = base.exmail.secrets["contacts"].get_secret_value()
    ws.config.write_text(text.replace(secret, "rotated-secret-0002"), encoding="utf-8")
    assert service.config_fingerprint(load_config(ws.config)) == fp
    ws.config.write_text(text.replace('"*-shared@*"', '"*-box@*"'), encoding="utf-8")
    assert service.config_fingerprint(load_config(ws.config)) != fp
    # A password inside a URL is a secret too: rotating it keeps the fingerprint.
    pg = text.replace("sqlite:///staging.db", "postgresql://sync:PW@db.internal/sync")
    ws.config.write_text(pg.replace(":PW@", ":old-pw@"), encoding="utf-8")
    with_pw = service.config_fingerprint(load_config(ws.config))
    ws.config.write_text(pg.replace(":PW@", ":new-pw@"), encoding="utf-8")
    assert service.config_fingerprint(load_config(ws.config)) == with_pw != fp
    # Housekeeping changes no plan: keeping more snapshots keeps reviewed plans valid.
    kept = text.replace('url = "sqlite:///staging.db"',
                        'url = "sqlite:///staging.db"\nkeep_snapshots = 400')  # fmt: skip
    assert kept != text
    ws.config.write_text(kept, encoding="utf-8")
    assert service.config_fingerprint(load_config(ws.config)) == fp


@both
def test_make_plan_reports_progress_and_names(workspace: Workspace) -> None:
    workspace.ingest(*ROWS.values())
    seen: list[tuple[str, int, int | None]] = []
    result = service.make_plan(
        service.Engine(load_config(workspace.config)),
        progress=lambda s, d, t: seen.append((s, d, t)),
    )
    stages = [s for s, _, _ in seen]
    assert stages[0] == "reading mailboxes" and "planning" in stages
    # Planning is not silent while Exmail checks the addresses to create (issue 14).
    checks = [(d, t) for s, d, t in seen if s == "checking addresses"]
    assert stages[-1] == "checking addresses" and checks[0][0] == 0
    assert checks[-1][0] == checks[-1][1] and checks[-1][1] is not None and checks[-1][1] > 0
    reading = [(d, t) for s, d, t in seen if s == "reading mailboxes"]
    assert reading[-1] == (6, 6)
    assert result.mailboxes == 6 and not result.blocked and result.has_changes
    assert result.names["E0005"] == "孙七" and result.names["E0001"] == "张三"
    assert result.to_dict()["checksum"] == result.plan.checksum


@both
def test_quarantined_person_is_not_a_leaver(workspace: Workspace) -> None:
    workspace.ingest(*ROWS.values())
    workspace.link(("E0002", "lisi@example.com"))
    # 李四's row now has a broken mobile: quarantined by ingest, so absent from the snapshot.
    broken = ROWS["E0002"].replace("13800000002", "1380000")
    workspace.ingest(ROWS["E0001"], broken, ROWS["E0003"], ROWS["E0004"], ROWS["E0005"])
    out = workspace.folder / "plan.json"
    # (5 -> 4 people in the snapshot trips the 10 % shrink brake of this tiny source; the
    # release is not what this test is about.)
    result = workspace.run("plan", "--out", str(out), "--format", "json", "--force")
    assert result.exit_code == 0, result.output
    plan = plan_from(out)
    assert plan.quarantined == ("E0002",)
    assert not plan.for_employee("E0002")  # not disabled, not touched
    assert {a.employee_id for a in plan.actions if a.kind is ActionKind.DISABLE_USER} == {"E0003"}
    text = workspace.run("plan", "--force").output
    assert "Quarantined employees (1)" in text and "  E0002" in text


DEPARTMENT_TABLE = """
[departments]
id_field = "id"
name_field = "name"
parent_field = "parent"
root_ids = ["1"]

[departments.source]
type = "csv"
path = "departments.csv"
"""


def test_hr_department_rename_is_a_move_even_after_two_ingests(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    """Departments by HR id: renaming 移动部 in HR plans a move of the Exmail department (its
    members follow), also when HR was ingested twice before anyone planned."""
    ws = Workspace(tmp_path, emulator_factory("v2"), MAPPING + DEPARTMENT_TABLE)
    table = tmp_path / "departments.csv"

    def departments(mobile_name: str) -> None:
        table.write_text(
            f"id,name,parent\n1,总部,\n10,研发中心,1\n101,平台部,10\n102,{mobile_name},10\n",
            encoding="utf-8",
        )

    lisi = "E0002,李四,lisi@example.com,102,工程师,13800000002,,female,active"
    departments("移动部")
    ws.ingest(lisi)
    departments("移动开发部")
    ws.ingest(lisi)
    ws.ingest(lisi)  # a second ingest of the same renamed table

    out = tmp_path / "plan.json"
    result = ws.run("plan", "--out", str(out))
    assert result.exit_code == 0, result.output
    plan = plan_from(out)
    moves = [a for a in plan.actions if a.kind is ActionKind.MOVE_DEPARTMENT]
    assert [(a.target, a.new_path) for a in moves] == [("研发中心/移动部", "研发中心/移动开发部")]
    assert not [a for a in plan.actions if a.kind is ActionKind.CREATE_DEPARTMENT]
    # 李四 moves with the department: no department change of her own.
    assert all("departments" not in a.changes for a in plan.for_employee("E0002"))
