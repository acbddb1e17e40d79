"""Issue 10: quarantine is a first-class state of the plan. A quarantined person's mailbox, or
the mailbox a row without an employee id may be, is held: never disabled, deleted or adopted,
whatever ``disable_unmanaged`` says, and listed "held: HR row has a problem" with the reason.

The real ``plan`` / ``sync`` commands, a real SQLite file, the emulator over real HTTP. The
emulator's default seed has wangwu@ (ext_id E0003, never linked) besides base_rows' people.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, _toml, base_rows, person

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory("v2"))
    e.write(base_rows(), policy={"disable_unmanaged": True, "protected": ["admin@*", "*-shared@*"],
                                 "min_existing": 100})  # fmt: skip
    return e


def plan_json(env: ApplyEnv) -> dict[str, Any]:
    r = env.cli("ingest")
    assert r.exit_code == 0, r.output
    r = env.cli("plan", "--json")
    assert r.exit_code in (0, 2, 3), r.output
    doc: dict[str, Any] = json.loads(r.stdout)
    plan: dict[str, Any] = doc.get("plan", doc)
    return plan


def removals(plan: dict[str, Any]) -> set[str]:
    kinds = {"disable_user", "delete_user"}
    return {a["target"] for a in plan["actions"] if a["kind"] in kinds}


def held(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["email"]: h for h in plan.get("held", [])}


def test_a_quarantined_owner_s_mailbox_is_held_not_unmanaged(env: ApplyEnv) -> None:
    # E0003 is in HR with a bad mobile: quarantined. wangwu@ carries ext_id E0003.
    env.write([*base_rows(), person("E0003", "王五", "wangwu@example.com", mobile="12345")])
    plan = plan_json(env)
    assert "wangwu@example.com" not in removals(plan)
    assert "wangwu@example.com" not in plan["unmanaged"]
    h = held(plan)["wangwu@example.com"]
    assert h["employee_id"] == "E0003"
    assert "HR row has a problem" in h["reason"] and "mobile" in h["reason"]

    r = env.cli("plan")
    assert "Held mailboxes (1)" in r.stdout and "wangwu@example.com (E0003)" in r.stdout
    page = env.root / "plan.html"
    r = env.cli("plan", "--format", "html", "--out", str(page))
    html = page.read_text("utf-8")
    assert 'id="held"' in html and "wangwu@example.com E0003" in html


def test_a_linked_person_quarantined_later_is_held_and_sync_keeps_the_mailbox(
    env: ApplyEnv,
) -> None:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    rows = base_rows()
    rows[1]["mobile"] = "not a phone"  # E0002 (linked by the first sync) now quarantined
    env.write(rows)
    plan = plan_json(env)
    assert "si.li@example.com" not in removals(plan)
    assert "si.li@example.com" not in plan["unmanaged"]
    assert held(plan)["si.li@example.com"]["employee_id"] == "E0002"
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    assert int(env.users()["si.li@example.com"].get("enable", 1)) == 1


def test_a_row_without_an_id_holds_the_mailbox_its_address_leads_to(env: ApplyEnv) -> None:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    rows = base_rows()
    rows[1]["employee_id"] = ""  # E0002's id blanked: E0002 looks gone
    env.write(rows)
    plan = plan_json(env)
    assert "si.li@example.com" not in removals(plan)
    h = held(plan)["si.li@example.com"]
    assert h["employee_id"] == "" and "row 3" in h["reason"]


def test_a_row_without_an_id_or_any_clue_holds_every_removal_of_absent_people(
    env: ApplyEnv,
) -> None:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    rows = base_rows()
    rows[1] = person("", "", "", "研发中心")  # E0002's row wiped but for a department
    env.write(rows)
    plan = plan_json(env)
    assert removals(plan) == set()
    assert "si.li@example.com" in held(plan)
    assert "row 3" in held(plan)["si.li@example.com"]["reason"]


def test_a_leaver_whose_mailbox_carries_their_id_unlinked_is_disabled(env: ApplyEnv) -> None:
    env.write([*base_rows(), person("E0003", "王五", "", status="离职")], policy={
        "disable_unmanaged": False})  # fmt: skip
    plan = plan_json(env)
    assert "wangwu@example.com" in removals(plan)
    assert "wangwu@example.com" not in plan["unmanaged"]


def _sqlite_hr(path: Path, rows: list[tuple[Any, Any, Any, Any]]) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE staff (employee_id TEXT, name BLOB, email TEXT, departments TEXT)")
        db.executemany("INSERT INTO staff VALUES (?, ?, ?, ?)", rows)


def _sql_source(env: ApplyEnv, **options: Any) -> None:
    data = env._config_data()
    data["source"] = {"type": "sql", "url": f"sqlite:///{env.root / 'hr.db'}",
                      "query": "SELECT * FROM staff", **options}  # fmt: skip
    data["mapping"] = {"email": "email", "departments": "departments"}
    env.config_path.write_text(_toml(data), encoding="utf-8")


def test_sql_a_null_id_holds_and_gbk_bytes_are_a_named_problem_never_base64(
    env: ApplyEnv,
) -> None:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    _sqlite_hr(env.root / "hr.db", [
        ("E0001", "张三".encode(), "zhangsan@example.com", ""),
        (None, "李四".encode(), "si.li@example.com", ""),  # E0002 with its id NULL
        ("E0004", "赵六".encode("gbk"), "zhaoliu@example.com", ""),
    ])  # fmt: skip
    _sql_source(env)
    r = env.cli("ingest", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["quarantined_ids"] == ["E0004"]
    why = " ".join(p["reason"] for p in doc["problems"])
    assert "column 'name' holds bytes that are not utf-8 text" in why and "base64" not in why
    plan = plan_json(env)
    assert removals(plan) == set()
    assert held(plan)["si.li@example.com"]["employee_id"] == ""
    assert held(plan)["zhaoliu@example.com"]["employee_id"] == "E0004"

    _sql_source(env, encoding="gbk")  # the database's text really is GBK
    r = env.cli("ingest", "--json")
    assert json.loads(r.stdout)["quarantined_ids"] == []


def test_a_json_lines_line_cut_short_holds_its_person(env: ApplyEnv) -> None:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    lines = [json.dumps(row, ensure_ascii=False) for row in base_rows()]
    lines[1] = lines[1][:40]  # E0002's line cut: '{"employee_id": "E0002", "name": "李四"...'
    assert '"E0002"' in lines[1]
    (env.root / "hr.jsonl").write_text("\n".join(lines) + "\n", "utf-8")
    env.write(source={"type": "jsonl", "path": "hr.jsonl"})
    r = env.cli("ingest", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["quarantined_ids"] == ["E0002"] and doc["counts"]["gone"] == 0
    assert "line 2 is not valid JSON" in doc["problems"][0]["reason"]
    plan = plan_json(env)
    assert removals(plan) == set()
    assert held(plan)["si.li@example.com"]["employee_id"] == "E0002"


def test_a_person_gone_from_hr_whose_unlinked_mailbox_carries_their_id_is_disabled(
    env: ApplyEnv,
) -> None:
    # E0003 was in an earlier snapshot, never linked (nothing was applied); now HR no longer
    # has them: wangwu@ (ext_id E0003) belongs to a leaver, not to nobody.
    env.write([*base_rows(), person("E0003", "王五", "wangwu@example.com")],
              policy={"disable_unmanaged": False})  # fmt: skip
    assert env.cli("ingest").exit_code == 0
    env.write(base_rows())
    plan = plan_json(env)
    assert "wangwu@example.com" in removals(plan)
    assert "wangwu@example.com" not in plan["unmanaged"]
    disable = next(a for a in plan["actions"] if a["target"] == "wangwu@example.com")
    assert disable["employee_id"] == "E0003" and "extid" in disable["reason"]
