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
from tests.e2e.test_apply_support import ApplyEnv, base_rows, person

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
    assert "Held" in r.stdout and "wangwu@example.com" in r.stdout


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
