"""The safety and lifecycle rules the planner follows: ownership, protection, brakes, dates.

PURE: a frozen :class:`Policy` (built from the config by :mod:`syncengine.policy_config`) and
functions of it; no I/O, no clock (``today`` is always an argument).

Brakes work like octoDNS's ``raise_if_unsafe``: the planner always produces the complete plan,
and :func:`brake_findings` lists what looks like an accident (the HR source came back empty or
much smaller than last time, or the plan removes or changes more mailboxes than the thresholds
allow). Share thresholds apply only once ``min_existing`` managed mailboxes exist, so a small
pilot is not blocked by percentages. Each finding names the release that lifts it
(``--allow-removals N`` after review, ``--allow-updates N``, or ``--force``).
"""

from __future__ import annotations

import enum
import fnmatch
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

from syncengine.clock import company_today
from syncengine.domain import Person, Status, is_under, normalise_email
from syncengine.plan import BlockedReason, ReleaseKind

DEFAULT_MANAGED_FIELDS = frozenset({"name", "gender", "position", "tel", "mobile", "departments"})
"""The mailbox fields the engine keeps equal to HR (aliases follow ``alias_mode``)."""


class AliasMode(enum.StrEnum):
    """How HR's aliases govern a mailbox's aliases.

    ``add`` (default): HR's aliases are added, aliases HR does not list are kept (an address
    that ever received mail keeps working, e.g. the old address after an address change).
    ``exact``: the aliases are exactly HR's. ``ignore``: aliases are never touched.
    """

    ADD = "add"
    EXACT = "exact"
    IGNORE = "ignore"


class LeaveAction(enum.StrEnum):
    """What a leave of absence does to the mailbox."""

    KEEP = "keep"
    DISABLE = "disable"


@dataclass(frozen=True)
class Brakes:
    """Thresholds; ``None`` switches a check off. Shares are fractions (0.1 = 10 %)."""

    max_shrink_share: float | None = 0.1
    max_deletes: int | None = None
    max_delete_share: float | None = 0.1
    max_disables: int | None = None
    max_disable_share: float | None = 0.1
    max_updates: int | None = None
    max_update_share: float | None = 0.3
    min_existing: int = 10


@dataclass(frozen=True)
class Policy:
    """Everything the planner needs from the config, as plain values."""

    domain: str = "example.com"
    address_template: str = "{pinyin_family}{pinyin_given}"
    address_fallback_template: str = "u{employee_id}"
    protected: tuple[str, ...] = ("admin@*", "postmaster@*", "abuse@*")
    department_roots: tuple[str, ...] = ()
    delete_empty_departments: bool = False
    disable_unmanaged: bool = False
    alias_mode: AliasMode = AliasMode.ADD
    managed_fields: frozenset[str] = field(default_factory=lambda: DEFAULT_MANAGED_FIELDS)
    set_ext_id: bool = True
    grace_days: int = 30
    leave_action: LeaveAction = LeaveAction.KEEP
    create_days_before_start: int = 7
    password_delivery: str = "file"
    change_password_at_login: bool = True
    brakes: Brakes = field(default_factory=Brakes)
    timezone: tzinfo = UTC
    """The company's calendar (``[general] timezone``): the planner's "today" is the date there."""

    def today(self, now: datetime) -> date:
        """The company's calendar day at the instant ``now``: the day every date rule uses."""
        return company_today(now, self.timezone)

    def is_protected(self, email: str) -> bool:
        """Protected accounts (glob patterns on the address) are never touched."""
        return self.protected_matcher()(normalise_email(email))

    def protected_matcher(self) -> Callable[[str], bool]:
        """A fast test for lower-case addresses: the globs compiled into one regex."""
        return _compile_globs(self.protected)

    def is_managed_department(self, path: str, hr_paths: frozenset[str]) -> bool:
        """A department the engine may delete when empty: one HR has had (``hr_paths``: the
        current and previous snapshots' paths and their ancestors) or one under a configured
        root. Other departments (made by hand in Exmail) are left alone."""
        if path in hr_paths:
            return True
        return any(path != r and is_under(path, r) for r in self.department_roots)


@functools.lru_cache(maxsize=32)
def _compile_globs(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    if not patterns:
        return lambda _addr: False
    rx = re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))
    return lambda addr: rx.match(addr) is not None


# --- lifecycle ------------------------------------------------------------------------------


class Lifecycle(enum.StrEnum):
    """Where a person stands on ``today``, which decides what their mailbox should be."""

    ACTIVE = "active"  # should have an enabled mailbox
    NOT_YET = "not_yet"  # future hire outside the creation window: nothing is created yet
    ON_LEAVE_KEEP = "on_leave_keep"  # on leave, mailbox kept as is (treated as active)
    ON_LEAVE_DISABLED = "on_leave_disabled"  # on leave, mailbox disabled (never deleted)
    LEAVER = "leaver"  # disabled, deleted after the grace period


def lifecycle(person: Person, policy: Policy, today: date) -> tuple[Lifecycle, str]:
    """The person's lifecycle state and why, in words for the plan."""
    if person.status is Status.TERMINATED:
        when = f" (end date {person.end_date})" if person.end_date else ""
        return Lifecycle.LEAVER, f"HR status is terminated{when}"
    if person.end_date is not None and person.end_date <= today:
        return Lifecycle.LEAVER, f"end date {person.end_date} has passed"
    if person.start_date is not None:
        opens = person.start_date - timedelta(days=policy.create_days_before_start)
        if today < opens:
            return (
                Lifecycle.NOT_YET,
                f"starts on {person.start_date}; the mailbox is created from {opens} "
                f"({policy.create_days_before_start} days before)",
            )
    if person.status is Status.LEAVE:
        if policy.leave_action is LeaveAction.DISABLE:
            return Lifecycle.ON_LEAVE_DISABLED, "on leave of absence (policy: disable)"
        return Lifecycle.ON_LEAVE_KEEP, "on leave of absence (policy: keep)"
    if person.start_date is not None and person.start_date > today:
        return Lifecycle.ACTIVE, f"starts on {person.start_date}, within the creation window"
    return Lifecycle.ACTIVE, "active in HR"


def grace_over(disabled_since: date, policy: Policy, today: date) -> bool:
    return today >= disabled_since + timedelta(days=policy.grace_days)


def delete_due(disabled_since: date, policy: Policy) -> date:
    return disabled_since + timedelta(days=policy.grace_days)


# --- brakes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanStats:
    """The figures the brakes judge."""

    source_size: int
    previous_size: int | None
    managed: int
    disables: int
    deletes: int
    updates: int

    @property
    def removals(self) -> int:
        return self.disables + self.deletes


def _share(n: int, of: int) -> str:
    return f"{n / of:.1%}" if of else "n/a"


def brake_findings(stats: PlanStats, policy: Policy) -> tuple[BlockedReason, ...]:
    """Every brake the plan trips, each with the release that lifts it (see module doc)."""
    b = policy.brakes
    out: list[BlockedReason] = []
    removals = stats.removals

    def removal(brake: str, message: str) -> None:
        out.append(BlockedReason(brake, message, ReleaseKind.ALLOW_REMOVALS, needed=removals))

    if removals and stats.source_size == 0:
        removal(
            "empty_source",
            f"the HR source has no people, so all {removals} managed mailbox(es) would be "
            "disabled or deleted; this usually means a broken export",
        )
    if (
        removals
        and b.max_shrink_share is not None
        and stats.previous_size
        and stats.source_size < stats.previous_size
    ):
        lost = stats.previous_size - stats.source_size
        if lost / stats.previous_size > b.max_shrink_share:
            removal(
                "source_shrank",
                f"the HR source shrank from {stats.previous_size} to {stats.source_size} people "
                f"({_share(lost, stats.previous_size)}, more than {b.max_shrink_share:.0%}) "
                "since the last good snapshot; the export may be truncated",
            )
    big_enough = stats.managed >= b.min_existing

    def threshold(
        brake: str,
        what: str,
        n: int,
        max_count: int | None,
        max_share: float | None,
        release: ReleaseKind,
        needed: int,
    ) -> None:
        if not n:
            return
        if max_count is not None and n > max_count:
            msg = f"the plan would {what} {n} mailbox(es), more than the limit of {max_count}"
        elif max_share is not None and big_enough and n / max(stats.managed, 1) > max_share:
            msg = (
                f"the plan would {what} {n} of {stats.managed} managed mailboxes "
                f"({_share(n, stats.managed)}, more than {max_share:.0%})"
            )
        else:
            return
        out.append(BlockedReason(brake, msg, release, needed=needed))

    threshold(
        "deletes", "delete", stats.deletes, b.max_deletes, b.max_delete_share,
        ReleaseKind.ALLOW_REMOVALS, removals,
    )  # fmt: skip
    threshold(
        "disables", "disable", stats.disables, b.max_disables, b.max_disable_share,
        ReleaseKind.ALLOW_REMOVALS, removals,
    )  # fmt: skip
    threshold(
        "updates", "update", stats.updates, b.max_updates, b.max_update_share,
        ReleaseKind.ALLOW_UPDATES, stats.updates,
    )  # fmt: skip
    return tuple(out)


# --- the shrink brake's baseline ------------------------------------------------------------


@dataclass(frozen=True)
class SnapshotSize:
    """What the shrink brake knows of one earlier snapshot: its id, whether it completed, and
    the rows it held (mapped people plus quarantined ones: held back, not gone)."""

    id: int
    complete: bool
    people: int | None
    quarantined: int = 0

    @property
    def source_rows(self) -> int | None:
        return None if self.people is None else self.people + self.quarantined


@dataclass(frozen=True)
class AppliedPlanRun:
    """A plan whose apply ran, as the shrink brake sees it: the snapshot it was made from,
    and whether it was targeted (``plan --only``, a hook sync: judged for a few people)."""

    snapshot_id: int | None
    targeted: bool


def last_good_snapshot(applied: Sequence[AppliedPlanRun]) -> int | None:
    """The snapshot behind the newest whole-directory plan whose apply ran (``applied`` is
    newest first); targeted plans do not count."""
    for run in applied:
        if run.snapshot_id is not None and not run.targeted:
            return run.snapshot_id
    return None


def shrink_baseline(
    earlier: Sequence[SnapshotSize], current_id: int, last_good: int | None
) -> int | None:
    """The size the shrink brake compares the current snapshot with.

    The largest complete snapshot from the last good one (see :func:`last_good_snapshot`) up
    to the one before the current; before any apply, the largest earlier one. So a truncated
    export that arrives two nights running is compared with the last export that was
    accepted, not with the first truncated one, and a reduction released after review and
    applied becomes the new normal.
    """
    sizes = [
        rows
        for s in earlier
        if s.id < current_id
        and s.complete
        and (last_good is None or s.id >= last_good)
        and (rows := s.source_rows) is not None
    ]
    return max(sizes) if sizes else None
