"""The Plan artifact: JSON round trip, checksum, schema version, order validation, brakes."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from syncengine.domain import Gender, Mailbox, UserUpdate
from syncengine.errors import PlanBlockedError, PlanError
from syncengine.plan import (
    Action,
    ActionKind,
    BlockedReason,
    Conflict,
    ConflictKind,
    LinkRecord,
    PasswordPolicy,
    Plan,
    Release,
    ReleaseKind,
    action_key,
    make_plan,
)

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def sample_plan() -> Plan:
    dept = Action(
        key=action_key(ActionKind.CREATE_DEPARTMENT, "研发中心"),
        kind=ActionKind.CREATE_DEPARTMENT,
        target="研发中心",
        reason="HR has department 研发中心",
    )
    mb = Mailbox(
        email="zhangsan@example.com",
        name="张三",
        ext_id="E1",
        departments=("研发中心",),
        gender=Gender.MALE,
    )
    create = Action(
        key=action_key(ActionKind.CREATE_USER, mb.email),
        kind=ActionKind.CREATE_USER,
        target=mb.email,
        employee_id="E1",
        reason="new hire",
        changes={"name": (None, "张三"), "departments": (None, ("研发中心",))},
        depends_on=(dept.key,),
        mailbox=mb,
        password=PasswordPolicy(delivery="manager_email"),
        link=LinkRecord("E1", mb.email, generated=True),
    )
    disable = Action(
        key=action_key(ActionKind.DISABLE_USER, "lisi@example.com"),
        kind=ActionKind.DISABLE_USER,
        target="lisi@example.com",
        employee_id="E2",
        reason="left on 2026-11-28",
        changes={"enabled": (True, False)},
        update=UserUpdate(enabled=False),
        link=LinkRecord("E2", "lisi@example.com", disabled_since=date(2026, 11, 29)),
    )
    return make_plan(
        created_at=NOW,
        config_fingerprint="cfg",
        state_fingerprint="state",
        actions=[dept, create, disable],
        conflicts=[
            Conflict(ConflictKind.PERSON_MATCHES_TWO, "E3 matches a@x and b@x", ("E3",), ("a@x",))
        ],
        unmanaged=["other@example.com"],
        quarantined=["E9"],
        blocked_reasons=[
            BlockedReason("disables", "1 disable > 0", ReleaseKind.ALLOW_REMOVALS, needed=1)
        ],
        explanations={"E1": ["not matched", "create"]},
    )


def test_json_round_trip_is_exact() -> None:
    plan = sample_plan()
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert again.to_json() == text
    assert plan.summary["create_user"] == 1 and plan.summary["total"] == 3


def test_checksum_detects_tampering() -> None:
    data = json.loads(sample_plan().to_json())
    data["actions"][2]["target"] = "boss@example.com"
    with pytest.raises(PlanError, match="checksum mismatch"):
        Plan.from_json(json.dumps(data))


def test_schema_version_checked() -> None:
    data = json.loads(sample_plan().to_json())
    data["schema_version"] = 99
    with pytest.raises(PlanError, match="schema version 99"):
        Plan.from_json(json.dumps(data))


def test_garbage_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="invalid JSON"):
        Plan.from_json("{not json", source="x.json")
    data = json.loads(sample_plan().to_json())
    del data["actions"][0]["kind"]
    with pytest.raises(PlanError, match="malformed"):
        Plan.from_json(json.dumps(data))


def test_no_secret_field_in_plan() -> None:
    text = sample_plan().to_json()
    assert sum(1 for a in json.loads(text)["actions"] if a["password"]) == 1
    for a in json.loads(text)["actions"]:
        if a["password"]:
            assert set(a["password"]) == {"delivery", "change_at_login", "length"}


def test_order_validated() -> None:
    plan = sample_plan()
    with pytest.raises(PlanError, match="do not come before"):
        make_plan(
            created_at=NOW,
            config_fingerprint="",
            state_fingerprint="",
            actions=[plan.actions[1], plan.actions[0]],
        )
    with pytest.raises(PlanError, match="twice"):
        make_plan(
            created_at=NOW,
            config_fingerprint="",
            state_fingerprint="",
            actions=[plan.actions[0], plan.actions[0]],
        )


def test_release() -> None:
    plan = sample_plan()
    assert plan.is_blocked()
    with pytest.raises(PlanBlockedError, match="--allow-removals 1"):
        plan.raise_if_unsafe()
    assert plan.is_blocked(Release(allow_removals=0))
    assert not plan.is_blocked(Release(allow_removals=1))
    assert not plan.is_blocked(Release(force=True))
    assert plan.is_blocked(Release(allow_updates=5))
    plan.raise_if_unsafe(Release(allow_removals=3))


def test_wrong_shapes_are_plan_errors_naming_the_file() -> None:
    data = json.loads(sample_plan().to_json())
    data["actions"][0]["changes"] = []
    with pytest.raises(PlanError, match="malformed") as err:
        Plan.from_json(json.dumps(data), source="p.json")
    assert err.value.where == "p.json"
    data = json.loads(sample_plan().to_json())
    data["actions"].reverse()
    with pytest.raises(PlanError, match="do not come before") as err:
        Plan.from_json(json.dumps(data), source="p.json")
    assert err.value.where == "p.json"
