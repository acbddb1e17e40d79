"""plan_horizon: the planner answers the same on every day before it (checked against the
full planner, day by day), and differently on it when a rule is due then."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta

import pytest

from syncengine.domain import IdentityLink, Mailbox, MailboxState, Person, Status
from syncengine.plan import Plan
from syncengine.plan_horizon import plan_horizon
from syncengine.planner import Desired, diff
from syncengine.policy import Brakes, LeaveAction, Policy

START = date(2026, 11, 1)
POLICY = Policy(domain="x.com", brakes=Brakes(min_existing=1000), grace_days=30,
                create_days_before_start=7, leave_action=LeaveAction.DISABLE)  # fmt: skip


def at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 2, 0, tzinfo=UTC)


def body(plan: Plan, today: date) -> str:
    """The plan's decisions: its document without its time, a stored link's "disabled since
    today" written as TODAY (an action stores the day it was made on: that is why only plans
    without actions are remembered, see noop_proof)."""
    doc = {k: v for k, v in plan.to_dict().items() if k not in {"created_at", "checksum"}}
    for action in doc["actions"]:  # type: ignore[attr-defined]
        link = action.get("link")
        if link and link.get("disabled_since") == today.isoformat():
            link["disabled_since"] = "TODAY"
    return json.dumps(doc, ensure_ascii=False, sort_keys=True)


def world(
    rng: random.Random,
) -> tuple[tuple[Person, ...], MailboxState, dict[str, IdentityLink]]:
    """A few people with start and end dates around START, their mailboxes and links, and
    linked leavers whose grace periods run out around START."""
    people: list[Person] = []
    boxes: list[Mailbox] = []
    links: dict[str, IdentityLink] = {}
    for i in range(12):
        eid, email = f"E{i:03d}", f"p{i}@x.com"
        start = START + timedelta(days=rng.randint(-20, 40)) if rng.random() < 0.5 else None
        end = START + timedelta(days=rng.randint(-5, 40)) if rng.random() < 0.3 else None
        status = rng.choice([Status.ACTIVE, Status.ACTIVE, Status.LEAVE])
        people.append(Person(eid, f"人{i}", email, departments=("部",), start_date=start,
                             end_date=end, status=status))  # fmt: skip
        if start is None or start <= START + timedelta(days=7):
            boxes.append(Mailbox(email, f"人{i}", ext_id=eid, departments=("部",)))
            links[eid] = IdentityLink(eid, email, at(START))
    for i in range(4):  # leavers already disabled, deleted once their grace period is over
        eid, email = f"L{i:03d}", f"gone{i}@x.com"
        since = START - timedelta(days=rng.randint(0, 40))
        boxes.append(Mailbox(email, f"走{i}", ext_id=eid, departments=("部",), enabled=False))
        links[eid] = IdentityLink(eid, email, at(START), disabled_since=since)
    return tuple(people), MailboxState(tuple(boxes)), links


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_is_the_same_on_every_day_before_the_horizon(seed: int) -> None:
    people, state, links = world(random.Random(seed))
    desired = Desired(people=people)
    days = {d: START + timedelta(days=d) for d in range(0, 60)}
    plans = {d: body(diff(desired, state, links, POLICY, at(day)), day) for d, day in days.items()}
    tight = 0
    for d in range(0, 50):
        today = START + timedelta(days=d)
        horizon = plan_horizon(people, links.values(), POLICY, today)
        last = (horizon - START).days if horizon is not None else 60
        for later in range(d, min(last, 60)):
            assert plans[later] == plans[d], (today, START + timedelta(days=later), horizon)
        if horizon is not None and last < 60 and plans[last] != plans[d]:
            tight += 1
        assert horizon is None or horizon > today
    assert tight  # the horizon is not merely "tomorrow": the plan does change on some of them


def test_each_rule_names_its_day() -> None:
    today = date(2026, 12, 1)
    hire = Person("N1", "新", "n@x.com", start_date=date(2026, 12, 20))
    assert plan_horizon([hire], [], POLICY, today) == date(2026, 12, 13)  # the window opens
    assert plan_horizon([hire], [], POLICY, date(2026, 12, 13)) == date(2026, 12, 20)
    assert plan_horizon([hire], [], POLICY, date(2026, 12, 20)) is None
    leaving = Person("N2", "走", "l@x.com", end_date=date(2026, 12, 5))
    assert plan_horizon([leaving], [], POLICY, today) == date(2026, 12, 5)
    link = IdentityLink("N3", "g@x.com", at(today), disabled_since=date(2026, 11, 20))
    assert plan_horizon([], [link], POLICY, today) == date(2026, 12, 20)  # 30 days' grace
    assert plan_horizon([hire, leaving], [link], POLICY, today) == date(2026, 12, 5)
    assert plan_horizon([Person("N4", "在", "z@x.com")], [], POLICY, today) is None
