"""One source of truth across HR hooks and HR exports: the newer word wins, by time.

An HR hook says "E0107 was hired" at 14:05; the nightly export the engine ingests at 02:30 was
written by HR at 01:00 the same day, before the hire. Planned from the export alone, E0107 is
"no longer in the HR source" and the mailbox the hook made would be disabled; a person
terminated by hook would be re-enabled the same way. Neither source is wrong: each is right as
of its own time. So both are kept with their times and weighed:

* Every stored hook event (hire or change ``upsert``, ``terminate``, ``department_change``) is
  a *fact* with the time it was received. A snapshot knows when its data was exported
  (:attr:`~syncengine.staging.repository.SnapshotInfo.as_of`: the export file's modification
  time, or the read time of a live SQL/LDAP/HTTP source).
* A fact received **after** the export is newer than it: the plan lays it over the snapshot's
  record (the same :func:`~syncengine.hooks.payloads.fold` the hook worker uses), whatever the
  export says.
* A fact received **before** the export but less than ``[hooks] settle`` seconds before it is
  *settling*: the export's record is used, except that the export cannot take away what the
  fact established: a hire it lacks stays (not disabled), a termination it lacks stays (not
  re-enabled). HR exports are often written from a copy that lags the live system; ``settle``
  (default one day) is how long such a lag is trusted to be.
* An export made ``settle`` seconds or more after a fact is the whole truth again: the fact has
  been carried by HR's own data, or HR reverted it, and the export says which.

Whenever the plan keeps a fact against the export, it says so: a non-blocking ``hook_held``
conflict names the person, the export's time, the hook deliveries and until when they hold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Protocol

from syncengine.clock import shown
from syncengine.config import Config
from syncengine.connectors.mapping import (
    DepartmentTable,
    department_path,
    field_values,
    map_people,
)
from syncengine.domain import Person, Status
from syncengine.hooks.payloads import Change, PayloadError, fold


class HookEvent(Protocol):
    """What this module reads of a stored hook event (staging's ``HookEvent`` has it)."""

    @property
    def id(self) -> int: ...
    @property
    def delivery_id(self) -> str: ...
    @property
    def received_at(self) -> datetime: ...
    @property
    def kind(self) -> str: ...
    @property
    def employee_id(self) -> str | None: ...
    @property
    def payload(self) -> dict[str, Any]: ...


# --- from stored events to changes (the hook worker and the planner read them alike) -------


def map_hook_person(
    config: Config, record: dict[str, Any], table: DepartmentTable | None
) -> Person:
    """An upsert's record through the nightly ``[mapping]``; a problem is a PayloadError
    naming the HR field (``person.<field>``)."""
    depts = config.departments
    result = map_people([record], config.mapping, department_table=table,
                        reference=depts.reference if depts else "id",
                        domains=config.exmail.domains)  # fmt: skip
    if result.problems or not result.people:
        p = result.problems[0] if result.problems else None
        raise PayloadError(
            f"person.{p.field}" if p and p.field else "person",
            (p.reason + (f" (value {p.value!r})" if p.value is not None else ""))
            if p else "the record maps to no person",
        )  # fmt: skip
    return result.people[0]


def resolve_hook_departments(
    config: Config, values: Sequence[str], table: DepartmentTable | None
) -> tuple[str, ...]:
    """A department change's values as paths, read as the nightly mapping reads them."""
    spec = config.mapping.specs().get("departments")
    if spec is not None and spec.field is not None:
        values = field_values(spec, {spec.field: list(values)})
    depts = config.departments
    paths: list[str] = []
    for value in values:
        if table is None or depts is None:
            path, why = department_path(value, config.mapping.department_separator)
            if why:
                raise PayloadError("departments", f"{value!r}: {why}")
        elif depts.reference == "id":
            if value not in table.by_id:
                raise PayloadError("departments", f"unknown department id {value!r}")
            path = table.by_id[value]
        else:
            found = table.by_name.get(value, ())
            if len(found) != 1:
                what = "ambiguous" if found else "unknown"
                raise PayloadError("departments", f"{what} department name {value!r}")
            path = found[0]
        if path:
            paths.append(path)
    return tuple(sorted(set(paths)))


def change_of(
    config: Config, event: HookEvent, table: DepartmentTable | None, today: date
) -> Change:
    """One stored event as a :class:`Change`; PayloadError when it no longer maps."""
    p = event.payload
    if event.kind == "upsert":
        return Change("upsert", person=map_hook_person(config, p["person"], table))
    if event.kind == "terminate":
        end = p.get("end_date")
        return Change("terminate", end_date=date.fromisoformat(end) if end else today)
    if event.kind == "department_change":
        return Change(
            "department_change",
            departments=resolve_hook_departments(config, p.get("departments", []), table),
        )
    raise PayloadError("kind", f"unknown event kind {event.kind!r}")


def live_since(as_of: datetime, settle_seconds: float) -> datetime:
    """Events received after this instant are facts an export made at ``as_of`` cannot
    overrule (newer than it, or still settling)."""
    return as_of - timedelta(seconds=settle_seconds)


# --- weighing a fact against the export (pure) ---------------------------------------------


def _present(person: Person | None, today: date) -> bool:
    """Whether HR, as this record says, wants an enabled mailbox for the person today."""
    if person is None:
        return False
    if person.status is Status.TERMINATED:
        return False
    return person.end_date is None or person.end_date > today


@dataclass(frozen=True)
class Weighed:
    """The record the plan uses for one employee, and the note when it is the hook's against
    the export's (``held``), or a problem that stops the events (``problem``)."""

    person: Person | None
    held: str | None = None
    problem: str | None = None


def weigh(
    base: Person | None,
    newer: Sequence[tuple[HookEvent, Change]],
    settling: Sequence[tuple[HookEvent, Change]],
    *,
    as_of: datetime,
    settle_seconds: float,
    today: date,
    zone: tzinfo,
) -> Weighed:
    """The record for one employee: the export's ``base`` with the ``newer`` facts laid over
    it; the ``settling`` facts (older than the export, younger than ``settle``) keep only
    what the export lacks: a hire or a termination (see the module docstring)."""
    if settling:
        hook_view = fold(base, [c for _, c in (*settling, *newer)], today)
        if hook_view.problem:
            return Weighed(base, problem=hook_view.problem)
    first = fold(base, [c for _, c in newer], today)
    if first.problem:
        return Weighed(base, problem=first.problem)
    person = first.person
    events = [e for e, _ in newer]
    if settling and (
        (person is None and hook_view.person is not None)
        or _present(hook_view.person, today) != _present(person, today)
    ):
        # the export (with the newer facts) lacks the person, or a hire or a termination a
        # settling fact made: it cannot take that away yet
        person = hook_view.person
        events = [e for e, _ in (*settling, *newer)]
    if _present(person, today) == _present(base, today) or not events:
        return Weighed(person)
    latest = max(e.received_at for e in events)
    deliveries = ", ".join(sorted({e.delivery_id for e in events}))
    if _present(person, today):
        what = "is not active in the HR export" if base is not None else "is not in the HR export"
        fact = "hired or changed by hook"
    else:
        what = "is active in the HR export"
        fact = "terminated by hook"
    until = latest + timedelta(seconds=settle_seconds)
    return Weighed(
        person,
        held=(
            f"{fact} ({deliveries}, received {shown(latest, zone)}) but {what} of "
            f"{shown(as_of, zone)}; the hook's record holds until an export newer than "
            f"{shown(until, zone)} says otherwise"
        ),
    )


@dataclass(frozen=True)
class Overlay:
    """The hook facts laid over a snapshot: records to replace (None: HR states nothing about
    the person any more), held notes and events that no longer map, per employee."""

    people: Mapping[str, Person | None]
    held: Mapping[str, str]
    problems: Mapping[str, str]


def overlay(
    config: Config,
    base: Mapping[str, Person],
    events: Sequence[HookEvent],
    *,
    as_of: datetime,
    table: DepartmentTable | None,
    today: date,
) -> Overlay:
    """Weigh every employee's live hook ``events`` (see :func:`live_since`) against the
    snapshot records ``base`` exported at ``as_of``."""
    settle = config.hooks.settle
    by_employee: dict[str, list[HookEvent]] = {}
    for e in sorted(events, key=lambda e: e.id):
        if e.employee_id:
            by_employee.setdefault(e.employee_id, []).append(e)
    people: dict[str, Person | None] = {}
    held: dict[str, str] = {}
    problems: dict[str, str] = {}
    for eid, evs in by_employee.items():
        try:
            changes = [(e, change_of(config, e, table, today)) for e in evs]
        except PayloadError as exc:
            problems[eid] = f"event no longer maps: {exc}"
            continue
        newer = [(e, c) for e, c in changes if e.received_at > as_of]
        settling = [(e, c) for e, c in changes if e.received_at <= as_of]
        w = weigh(base.get(eid), newer, settling, as_of=as_of, settle_seconds=settle,
                  today=today, zone=config.timezone)  # fmt: skip
        if w.problem:
            problems[eid] = w.problem
            continue
        if w.person != base.get(eid):
            people[eid] = w.person
        if w.held:
            held[eid] = w.held
    return Overlay(people, held, problems)


def export_time(options: Mapping[str, Any], base_dir: Path) -> datetime | None:
    """When HR wrote an export file (its modification time, UTC); None for a live source
    (SQL, LDAP, HTTP: the read time is the data's time) or a file that cannot be looked at."""
    path = options.get("path")
    if not isinstance(path, str) or not path:
        return None
    p = Path(path).expanduser()
    try:
        return datetime.fromtimestamp((p if p.is_absolute() else base_dir / p).stat().st_mtime, UTC)
    except OSError:
        return None
