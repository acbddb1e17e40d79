"""The earliest day on which the planner's answer for unchanged inputs could change.

PURE: no I/O, no clock (``today`` is an argument), no randomness.

:func:`syncengine.planner.diff` reads the calendar in two places only, both through
:mod:`syncengine.policy`: a person's lifecycle (:func:`~syncengine.policy.lifecycle`: the end
date, the creation window before the start date, the start date itself, which the plan's reason
text names) and a leaver's grace period (:func:`~syncengine.policy.grace_over`, counted from the
link's ``disabled_since``). Each is a comparison of ``today`` with one fixed date, so between
two such dates the planner, given the same people, links, directory and rules, answers the same
on every day. :func:`plan_horizon` returns the first of those dates after ``today``: a plan made
today is the plan of every day before it. The group planner's retirement window is not covered:
a config with ``[groups]`` is never proved unchanged (see :mod:`syncengine.service.noop_proof`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from syncengine.domain import IdentityLink, Person
from syncengine.policy import Policy, delete_due


def person_turns(person: Person, policy: Policy) -> list[date]:
    """The days on which ``lifecycle(person, policy, today)`` may answer differently from the
    day before: the end date (a leaver from that day), the day the creation window opens, and
    the start date (from "starts on ..." to "active in HR")."""
    turns: list[date] = []
    if person.end_date is not None:
        turns.append(person.end_date)
    if person.start_date is not None:
        turns.append(person.start_date - timedelta(days=policy.create_days_before_start))
        turns.append(person.start_date)  # "start_date > today" is false from that day on
    return turns


def plan_horizon(
    people: Iterable[Person],
    links: Iterable[IdentityLink],
    policy: Policy,
    today: date,
) -> date | None:
    """The earliest day after ``today`` on which a date rule could change the plan of these
    inputs; None when no rule ever will (no future date in them)."""
    turns = [d for p in people for d in person_turns(p, policy)]
    turns.extend(delete_due(link.disabled_since, policy) for link in links
                 if link.disabled_since is not None)  # fmt: skip
    future = [d for d in turns if d > today]
    return min(future) if future else None
