"""The weighing of hook facts against an HR export (syncengine.hookfacts.weigh), pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from syncengine.domain import Person, Status
from syncengine.hookfacts import weigh
from syncengine.hooks.payloads import Change

EXPORT = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)  # 01:00 Beijing time on 1 December
TODAY = date(2026, 12, 1)
ZONE = ZoneInfo("Asia/Shanghai")
DAY = 86400.0


@dataclass(frozen=True)
class Event:
    id: int
    delivery_id: str
    received_at: datetime
    kind: str = "upsert"
    employee_id: str | None = "H1"
    payload: dict[str, Any] = field(default_factory=dict)


def hire(n: int, at: datetime) -> tuple[Event, Change]:
    return Event(n, f"d{n}", at), Change("upsert", person=Person("H1", "新人", email="h@x.com"))


def fire(n: int, at: datetime) -> tuple[Event, Change]:
    return Event(n, f"d{n}", at, "terminate"), Change("terminate", end_date=TODAY)


def run(base: Person | None, newer: list[Any], settling: list[Any], settle: float = DAY) -> Any:
    return weigh(base, newer, settling, as_of=EXPORT, settle_seconds=settle, today=TODAY,
                 zone=ZONE)  # fmt: skip


def test_a_hire_after_the_export_is_laid_over_it_and_said() -> None:
    w = run(None, [hire(1, EXPORT + timedelta(hours=2))], [])
    assert w.person is not None and w.person.employee_id == "H1"
    assert w.held and "not in the HR export" in w.held and "d1" in w.held
    assert "+08:00" in w.held


def test_a_settling_hire_the_export_lacks_stays() -> None:
    w = run(None, [], [hire(1, EXPORT - timedelta(hours=3))])
    assert w.person is not None and w.held


def test_a_settling_hire_the_export_has_takes_the_exports_record() -> None:
    exported = Person("H1", "新人", email="h@x.com", position="经理")
    w = run(exported, [], [hire(1, EXPORT - timedelta(hours=3))])
    assert w.person == exported and w.held is None  # the export's other news wins


def test_a_settling_termination_the_export_lacks_stays() -> None:
    active = Person("H1", "新人", email="h@x.com")
    w = run(active, [], [fire(1, EXPORT - timedelta(hours=3))])
    assert w.person is not None and w.person.status is Status.TERMINATED
    assert w.held and "terminated by hook" in w.held


def test_a_newer_termination_after_a_settling_hire_wins() -> None:
    w = run(None, [fire(2, EXPORT + timedelta(hours=1))], [hire(1, EXPORT - timedelta(hours=1))])
    assert w.person is not None and w.person.status is Status.TERMINATED


def test_with_no_settle_period_an_older_fact_is_not_passed_in_at_all() -> None:
    # live_since(as_of, 0) leaves out events older than the export: the export decides
    w = run(None, [], [], settle=0)
    assert w.person is None and w.held is None


def test_a_department_change_for_nobody_is_a_problem() -> None:
    event = Event(1, "d1", EXPORT + timedelta(hours=1), "department_change")
    w = run(None, [(event, Change("department_change", departments=("销售部",)))], [])
    assert w.problem and "upsert" in w.problem
