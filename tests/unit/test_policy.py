"""Brakes, lifecycle rules, protection, and the [policy]/[addresses]/[lifecycle] config tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from syncengine.config import parse_config
from syncengine.domain import IdentityLink, Mailbox, MailboxState, Person, Status
from syncengine.errors import ConfigError, PlanBlockedError
from syncengine.plan import Release
from syncengine.planner import Desired, diff
from syncengine.policy import (
    Brakes,
    LeaveAction,
    Lifecycle,
    PlanStats,
    Policy,
    brake_findings,
    lifecycle,
)
from syncengine.policy_config import policy_from_config

NOW = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
TODAY = NOW.date()


def stats(**kw: int | None) -> PlanStats:
    base: dict[str, int | None] = dict(
        source_size=100, previous_size=100, managed=100, disables=0, deletes=0, updates=0
    )
    base.update(kw)
    return PlanStats(**base)  # type: ignore[arg-type]


def brakes(s: PlanStats, **kw: object) -> list[str]:
    return [r.brake for r in brake_findings(s, Policy(brakes=Brakes(**kw)))]  # type: ignore[arg-type]


def test_quiet_plan_is_not_blocked() -> None:
    assert brakes(stats(disables=5, deletes=5, updates=30)) == []


def test_empty_source_blocks_removals_only() -> None:
    assert brakes(stats(source_size=0, previous_size=None, disables=3, managed=3)) == [
        "empty_source"
    ]
    assert brakes(stats(source_size=0, disables=3, managed=3)) == ["empty_source", "source_shrank"]
    assert brakes(stats(source_size=0, managed=3)) == []  # nothing to remove: nothing to fear


def test_truncated_source_blocks_removals() -> None:
    assert brakes(stats(source_size=85, previous_size=100, disables=1)) == ["source_shrank"]
    assert brakes(stats(source_size=95, previous_size=100, disables=1)) == []
    assert brakes(stats(source_size=85, previous_size=100, disables=1), max_shrink_share=None) == []
    assert brakes(stats(source_size=85, previous_size=None, disables=1)) == []


def test_thresholds_count_and_share() -> None:
    assert brakes(stats(deletes=11)) == ["deletes"]
    assert brakes(stats(deletes=3), max_deletes=2) == ["deletes"]
    assert brakes(stats(disables=11)) == ["disables"]
    assert brakes(stats(updates=31)) == ["updates"]
    assert brakes(stats(updates=31), max_update_share=None) == []
    assert brakes(stats(updates=31), max_updates=40, max_update_share=None) == []


def test_shares_apply_only_once_enough_mailboxes_exist() -> None:
    assert brakes(stats(managed=5, source_size=5, previous_size=5, disables=5)) == []
    assert brakes(stats(managed=5, disables=5), min_existing=5) == ["disables"]
    # a count limit applies whatever the size
    assert brakes(stats(managed=5, disables=5), max_disables=4) == ["disables"]


def test_release_messages_and_semantics() -> None:
    (r,) = brake_findings(stats(deletes=11, disables=4), Policy())
    assert r.needed == 15 and "--allow-removals 15" in r.how_to_release
    assert not r.released_by(None)
    assert not r.released_by(Release(allow_removals=14))
    assert r.released_by(Release(allow_removals=15))
    assert r.released_by(Release(force=True))
    assert not r.released_by(Release(allow_updates=100))
    (u,) = brake_findings(stats(updates=40), Policy())
    assert "--allow-updates 40" in u.how_to_release and u.released_by(Release(allow_updates=40))


def test_truncated_source_blocks_a_real_plan_and_release_lifts_it() -> None:
    links = {f"E{i:02d}": IdentityLink(f"E{i:02d}", f"u{i}@x.com", NOW) for i in range(20)}
    boxes = tuple(Mailbox(f"u{i}@x.com", "某人", ext_id=f"E{i:02d}") for i in range(20))
    people = tuple(Person(f"E{i:02d}", "某人", email=f"u{i}@x.com") for i in range(10))
    plan = diff(Desired(people, previous_size=20), MailboxState(boxes), links, Policy(), NOW)
    assert plan.removal_count == 10
    assert [r.brake for r in plan.blocked_reasons] == ["source_shrank", "disables"]
    with pytest.raises(PlanBlockedError) as err:
        plan.raise_if_unsafe()
    assert "--allow-removals 10" in str(err.value)
    assert err.value.exit_code == 3
    plan.raise_if_unsafe(Release(allow_removals=10))
    plan.raise_if_unsafe(Release(force=True))


def person(**kw: object) -> Person:
    return Person("E1", "张三", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "policy", "expect"),
    [
        ({}, Policy(), Lifecycle.ACTIVE),
        ({"status": Status.TERMINATED}, Policy(), Lifecycle.LEAVER),
        ({"end_date": TODAY}, Policy(), Lifecycle.LEAVER),
        ({"end_date": TODAY + timedelta(days=1)}, Policy(), Lifecycle.ACTIVE),
        ({"start_date": TODAY + timedelta(days=8)}, Policy(), Lifecycle.NOT_YET),
        ({"start_date": TODAY + timedelta(days=7)}, Policy(), Lifecycle.ACTIVE),
        ({"start_date": TODAY + timedelta(days=2)}, Policy(create_days_before_start=0),
         Lifecycle.NOT_YET),
        ({"status": Status.LEAVE}, Policy(), Lifecycle.ON_LEAVE_KEEP),
        ({"status": Status.LEAVE}, Policy(leave_action=LeaveAction.DISABLE),
         Lifecycle.ON_LEAVE_DISABLED),
    ],
)  # fmt: skip
def test_lifecycle(kw: dict[str, object], policy: Policy, expect: Lifecycle) -> None:
    state, why = lifecycle(person(**kw), policy, TODAY)
    assert state is expect and why


def test_protected_patterns() -> None:
    p = Policy(protected=("admin@*", "*-shared@*", "ceo@x.com"))
    assert p.is_protected("Admin@x.com")
    assert p.is_protected("hr-shared@y.com")
    assert p.is_protected("ceo@x.com")
    assert not p.is_protected("ceo@y.com")
    assert not p.is_protected("administrator@x.com")


def test_managed_departments() -> None:
    p = Policy(department_roots=("公司",))
    hr = frozenset({"研发"})
    assert p.is_managed_department("研发", hr)
    assert p.is_managed_department("公司/临时", hr)
    assert not p.is_managed_department("公司", hr)
    assert not p.is_managed_department("手工", hr)


BASE = {"exmail": {"api": "v1", "client_id": "c", "client_secret": "s", "domains": ["Corp.com"]}}


def test_config_tables_build_the_policy() -> None:
    cfg = parse_config(
        {
            **BASE,
            "policy": {"protected": ["boss@*"], "max_deletes": 5, "alias_mode": "exact"},
            "addresses": {"template": "{given}.{family}"},
            "lifecycle": {"grace_days": 10, "leave": "disable"},
            "passwords": {"delivery": "none"},
        }
    )
    pol = policy_from_config(cfg)
    assert pol.domain == "corp.com"  # the first Exmail domain by default
    assert pol.protected == ("boss@*",)
    assert pol.brakes.max_deletes == 5 and pol.brakes.max_update_share == 0.3
    assert pol.alias_mode.value == "exact"
    assert pol.address_template == "{given}.{family}"
    assert pol.grace_days == 10 and pol.leave_action is LeaveAction.DISABLE
    assert pol.password_delivery == "none"  # the executor's channel, named in the plan
    assert replace(pol, domain="x") != pol


def test_defaults_without_the_tables() -> None:
    pol = policy_from_config(parse_config(BASE))
    assert pol.grace_days == 30 and pol.domain == "corp.com"
    assert pol.is_protected("admin@corp.com")


@pytest.mark.parametrize(
    ("tables", "needle"),
    [
        ({"policy": {"max_delete_shar": 0.1}}, "policy.max_delete_shar: unknown key"),
        ({"policy": {"max_delete_share": 2}}, "policy.max_delete_share"),
        ({"addresses": {"template": "{pinyin_surname}"}}, "pinyin_surname"),
        ({"lifecycle": {"leave": "fire"}}, "lifecycle.leave"),
    ],
)
def test_bad_config_names_the_key(tables: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, **tables})
    assert needle in str(err.value)


def test_no_domain_anywhere_is_a_config_error() -> None:
    cfg = parse_config({"exmail": {"api": "v1", "client_id": "c", "client_secret": "s"}})
    with pytest.raises(ConfigError, match=r"addresses\.domain"):
        policy_from_config(cfg)


def test_grace_period_date_math() -> None:
    from syncengine.policy import delete_due, grace_over

    pol = Policy(grace_days=30)
    since = date(2026, 11, 1)
    assert delete_due(since, pol) == date(2026, 12, 1)
    assert not grace_over(since, pol, date(2026, 11, 30))
    assert grace_over(since, pol, date(2026, 12, 1))


def test_quarantined_rows_are_part_of_the_source_size() -> None:
    """A row held back by a problem is still in the export: it must not look like a shrink.

    20 people last time; now 17 valid rows, 2 quarantined and 1 real leaver: the source has 19
    rows (5% smaller), which is under the 10% shrink brake even though only 17 people map.
    """
    links = {f"E{i:02d}": IdentityLink(f"E{i:02d}", f"u{i}@x.com", NOW) for i in range(20)}
    boxes = tuple(Mailbox(f"u{i}@x.com", "某人", ext_id=f"E{i:02d}") for i in range(20))
    people = tuple(Person(f"E{i:02d}", "某人", email=f"u{i}@x.com") for i in range(17))
    desired = Desired(people, quarantined=frozenset({"E17", "E18"}), previous_size=20)
    plan = diff(desired, MailboxState(boxes), links, Policy(), NOW)
    assert {a.employee_id for a in plan.actions} == {"E19"}  # the leaver; never E17/E18
    assert "source_shrank" not in [r.brake for r in plan.blocked_reasons]
