"""The use-cases of the engine, and the one place that wires adapters together.

The CLI, the hook receiver and the benchmarks call these functions; nothing else builds a
provider, a connector or a database session from the configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import logging
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from syncengine import emulator as exmail_emulator
from syncengine import planner, render
from syncengine.apply_config import DEFAULT_PASSWORD_FILE
from syncengine.config import Config, load_config
from syncengine.connectors.base import make_connector
from syncengine.connectors.mapping import (
    DepartmentTable,
    MappingResult,
    build_department_table,
    department_path,
    field_values,
    map_people,
    map_records,
)
from syncengine.domain import (
    AddressKind,
    Department,
    IdentityLink,
    Mailbox,
    MailboxState,
    MailEvent,
    Person,
    RowProblem,
    normalise_email,
    normalise_path,
    parent_path,
    path_name,
)
from syncengine.errors import (
    EXIT_BLOCKED,
    EXIT_ERROR,
    EXIT_FAILED_ACTIONS,
    EXIT_OK,
    ConfigError,
    LockHeldError,
    NotFoundError,
    PlanBlockedError,
    PlanError,
    StagingError,
    StalePlanError,
    SyncEngineError,
)
from syncengine.executor import (
    AuditRecord,
    Executor,
    ExecutorSettings,
    NoPasswordDelivery,
    PasswordSink,
    retry_read,
)
from syncengine.executor import Status as ExecStatus
from syncengine.holds import from_snapshot_counts, snapshot_counts
from syncengine.hooks.app import SsoRefused, Stored
from syncengine.hooks.app import create_app as create_hook_app
from syncengine.hooks.forward import Forwarder
from syncengine.hooks.metrics import Metrics
from syncengine.hooks.payloads import (
    Change,
    DepartmentChangeEvent,
    PayloadError,
    TerminateEvent,
    UpsertEvent,
    fold,
)
from syncengine.hooks.schedule import CronSchedule
from syncengine.hooks.worker import Scheduler, Worker
from syncengine.notify import Delivery, Event, Notifier
from syncengine.passwords import FilePasswordDelivery
from syncengine.plan import Action, ActionKind, LinkRecord, Plan, Release
from syncengine.planner import Desired
from syncengine.policy import Policy
from syncengine.policy_config import policy_from_config
from syncengine.providers.base import MailboxProvider
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider
from syncengine.providers.http import new_http_client
from syncengine.sockets import listening_socket
from syncengine.staging import db as staging_db
from syncengine.staging.repository import (
    AuditEntry,
    HookEvent,
    LockInfo,
    NewAction,
    PlanRecord,
    Repository,
    SnapshotInfo,
    StoredDepartment,
    holder_is_dead,
)

log = logging.getLogger(__name__)

# --- Exmail provider, SSO and mail (issue 2) ---------------------------------------------

LISTEN_POLL_SECONDS = 30.0
"""Longest single Gen 1 ``listen`` wait; above the server's usual 25 s hold."""


def build_provider(
    config: Config, *, transport: httpx.BaseTransport | None = None
) -> MailboxProvider:
    """The provider of the configured API generation, owning its own httpx client.

    ``transport`` lets tests and benchmarks inject an httpx transport; the caller closes the
    provider (``provider.close()``).
    """
    ex = config.exmail
    client = new_http_client(
        timeout=ex.timeout,
        max_connections=max(ex.read_concurrency, config.apply.concurrency) + 2,
        transport=transport,
    )
    if ex.api == "v1":
        return ExmailV1Provider(ex, client)
    return ExmailV2Provider(ex, client)


def sso_url(config: Config, email: str, *, transport: httpx.BaseTransport | None = None) -> str:
    """A fresh single sign-on URL for one member (Gen 2 get_login_url; Gen 1 auth key),
    under the same refusal rule as the portal's links (see :func:`sso_login_url`)."""
    return sso_login_url(config, email, transport=transport)


def mail_count(config: Config, email: str, *, transport: httpx.BaseTransport | None = None) -> int:
    """The member's unread-mail count."""
    provider = build_provider(config, transport=transport)
    try:
        return provider.new_mail_count(normalise_email(email))
    finally:
        provider.close()


def watch_mail(
    config: Config,
    *,
    users: Sequence[str] = (),
    interval: float | None = None,
    max_events: int | None = None,
    timeout: float | None = None,
    since: str | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[MailEvent]:
    """New-mail events as they happen, until ``max_events`` or ``timeout`` seconds.

    Gen 1 long-polls ``listen`` (``users``, if given, filters the events; ``since`` is the
    version to start after, default now in epoch ms, so old mail is not replayed). Gen 2 has no
    push: it polls ``mail/newcount`` of each of ``users`` every ``interval`` seconds (default
    ``exmail.poll_interval``) and reports a rise of the count; the first poll is the baseline.
    """
    wanted = [normalise_email(u) for u in users]
    if config.exmail.api == "v2" and not wanted:
        raise ConfigError(
            "Gen 2 cannot push new-mail events; name the mailboxes to poll",
            where="mail watch",
            hint="pass --user EMAIL (repeatable)",
        )
    if max_events is not None and max_events <= 0:
        return
    deadline = None if timeout is None else clock() + timeout
    provider = build_provider(config, transport=transport)
    try:
        if isinstance(provider, ExmailV1Provider):
            events = _watch_listen(provider, wanted, since, deadline, clock)
        else:
            pace = interval if interval is not None else config.exmail.poll_interval
            events = _watch_poll(provider, wanted, pace, deadline, clock, sleep)
        for count, event in enumerate(events, 1):
            yield event
            if max_events is not None and count >= max_events:
                return
    finally:
        provider.close()


def _watch_listen(
    provider: ExmailV1Provider,
    users: list[str],
    since: str | None,
    deadline: float | None,
    clock: Callable[[], float],
) -> Iterator[MailEvent]:
    version = since if since is not None else str(int(time.time() * 1000))
    for events, _ in _listen_batches(provider, version, deadline, clock):
        for event in events:
            if not users or event.email in users:
                yield event


def _listen_batches(
    provider: ExmailV1Provider,
    version: str,
    deadline: float | None,
    clock: Callable[[], float],
) -> Iterator[tuple[list[MailEvent], str]]:
    """Gen 1 ``listen`` calls one after the other until ``deadline``: each answer's events and
    the version to listen from next (the server's, carried into the next call)."""
    while True:
        wait = LISTEN_POLL_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - clock())
            if wait <= 0:
                return
        events, version = provider.listen(version, timeout=wait)
        yield list(events), version


def _watch_poll(
    provider: MailboxProvider,
    users: list[str],
    interval: float,
    deadline: float | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Iterator[MailEvent]:
    last: dict[str, int] = {}
    while True:
        started = clock()
        for email in users:
            count = provider.new_mail_count(email)
            previous = last.get(email)
            last[email] = count
            if previous is not None and count > previous:
                yield MailEvent(email=email, new_count=count)
        now = clock()
        pause = max(0.0, interval - (now - started))
        if deadline is not None:
            if now >= deadline:
                return
            pause = min(pause, deadline - now)
        sleep(pause)


# --- staging database (issue 3) -----------------------------------------------------------


def open_staging(config: Config) -> Repository:
    """The staging repository of this config, its schema checked (the caller closes it).

    A database behind the code raises DatabaseBehindError naming ``syncengine db upgrade``; a
    brand-new empty SQLite file is created and migrated on the spot (logged).
    """
    engine = staging_db.make_engine(config.database_url)
    try:
        staging_db.check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return Repository(engine)


def db_current(config: Config) -> staging_db.SchemaStatus:
    """Where the configured database stands: its revision and the code's head."""
    engine = staging_db.make_engine(config.database_url)
    try:
        return staging_db.schema_status(engine)
    finally:
        engine.dispose()


def db_upgrade(config: Config) -> tuple[str | None, str | None]:
    """Migrate the configured database to the code's head: (revision before, after)."""
    return staging_db.upgrade(config.database_url)


def lock_holder(config: Config, name: str) -> LockInfo | None:
    """Who holds the named run lock (``apply``, ``sync``), or None."""
    repo = open_staging(config)
    try:
        return repo.get_lock(name)
    finally:
        repo.close()


def db_unlock(config: Config, name: str) -> LockInfo | None:
    """Clear a run lock whose holder cannot be checked from here (another host that died).

    A lock held by a live process on this host is refused: stop that process instead. A dead
    holder on this host needs no unlock (the next run takes it over), but clearing it is
    harmless. The release is a compare-and-set on the holder that was shown, so a lock someone
    else took meanwhile is left alone. Returns the holder that was cleared, None if not held.
    """
    repo = open_staging(config)
    try:
        holder = repo.get_lock(name)
        if holder is None:
            return None
        here = socket.gethostname()
        if holder.hostname == here and not holder_is_dead(holder, here):
            raise LockHeldError(
                f"the lock {name!r} is held by a process that is alive on this host: "
                f"{holder.describe()}",
                hint="let it finish, or stop that process; its lock is then taken over",
            )
        if not repo.release_lock(name, pid=holder.pid, hostname=holder.hostname):
            raise LockHeldError(
                f"the lock {name!r} changed hands while it was being cleared",
                hint=f"look again: syncengine db unlock {name}",
            )
        log.warning("run lock %r cleared by hand; it was held by %s", name, holder.describe())
        return holder
    finally:
        repo.close()


# --- ingest: HR source -> staging snapshot (issue 3) ---------------------------------------

INGEST_PROGRESS_EVERY = 5000
"""How many records between two ``progress("reading", n)`` calls."""


@dataclass(frozen=True)
class IngestReport:
    """What one ingest did: the new current snapshot, its counts and the rows held back.

    ``gone`` leaves out quarantined employees: a person whose row has a problem is not a
    leaver. ``problems`` quarantined rows; ``notes`` did not (an identical duplicate kept
    once); ``warnings`` point at the config (a mapped field no record has).
    """

    run_id: int
    snapshot_id: int
    previous_snapshot_id: int | None
    source: str
    rows: int
    people: int
    departments: int
    new: int
    changed: int
    gone: int
    quarantined: int
    problems: tuple[RowProblem, ...]
    notes: tuple[RowProblem, ...] = ()
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0
    quarantined_ids: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return {
            "rows": self.rows,
            "people": self.people,
            "departments": self.departments,
            "new": self.new,
            "changed": self.changed,
            "gone": self.gone,
            "quarantined": self.quarantined,
            "problems": len(self.problems),
        }

    def to_dict(self) -> dict[str, Any]:
        def problem(p: RowProblem) -> dict[str, Any]:
            return {
                "row": p.row,
                "field": p.field,
                "value": p.value,
                "reason": p.reason,
                "employee_id": p.employee_id,
            }

        return {
            "run_id": self.run_id,
            "snapshot_id": self.snapshot_id,
            "previous_snapshot_id": self.previous_snapshot_id,
            "source": self.source,
            "counts": self.counts,
            "quarantined_ids": list(self.quarantined_ids),
            "problems": [problem(p) for p in self.problems],
            "notes": [problem(p) for p in self.notes],
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }


def _counted(
    records: Iterator[dict[str, Any]], progress: Callable[[str, int], None] | None
) -> Iterator[dict[str, Any]]:
    count = 0
    for record in records:
        count += 1
        if progress is not None and count % INGEST_PROGRESS_EVERY == 0:
            progress("reading", count)
        yield record
    if progress is not None:
        progress("reading", count)


def _mapping_warnings(config: Config, result: MappingResult) -> list[str]:
    """Configured source fields that no record had: most likely a misspelt column name."""
    specs = config.mapping.specs()
    warnings = []
    for name in result.missing_fields:
        users = [k for k, spec in specs.items() if name in spec.source_fields()]
        warnings.append(
            f"source field {name!r} (mapping.{', mapping.'.join(users)}) is in no record; "
            f"the source has: {', '.join(result.columns) or 'no fields'}"
        )
    return warnings


def ingest(
    config: Config,
    *,
    progress: Callable[[str, int], None] | None = None,
    actor: str = "cli",
) -> IngestReport:
    """Read the configured HR source into a new snapshot and make it the current one.

    On a failure of the source as a whole (SourceError: missing file, refused connection, zero
    rows...) or a config error found while reading, the snapshot is marked failed, the run
    too, the last good snapshot stays current, and the error is raised for the caller.
    ``progress(stage, count)`` is called while reading (every few thousand records) and
    before storing.
    """
    started = time.monotonic()
    if config.source is None:
        raise ConfigError(
            "no [source] table: nothing to ingest",
            where=str(config.path or "config"),
            hint='add [source] with a type (e.g. type = "csv", path = "hr-export.csv")',
        )
    connector = make_connector(config.source.options, config.base_dir, key="source")
    dept_connector = None
    if config.departments is not None:
        dept_connector = make_connector(
            config.departments.source.options, config.base_dir, key="departments.source"
        )
    repo = open_staging(config)
    try:
        run_id = repo.start_run("ingest", actor)
        previous = repo.current_snapshot()
        snapshot_id = repo.begin_snapshot(run_id, connector.describe())
        try:
            dept_records = dept_connector.records() if dept_connector is not None else None
            result = map_records(
                _counted(connector.records(), progress),
                config.mapping,
                department_records=dept_records,
                departments=config.departments,
                domains=config.exmail.domains,
            )
            id_spec = config.mapping.employee_id
            if id_spec.field is not None and id_spec.field in result.missing_fields:
                raise ConfigError(
                    f"mapping.employee_id: the source has no field {id_spec.field!r} "
                    f"(it has: {', '.join(result.columns) or 'no fields'})",
                    where=connector.describe(),
                    hint="set mapping.employee_id to the column holding the HR employee id",
                )
            if progress is not None:
                progress("storing", len(result.people))
            parents = result.department_parents()
            repo.add_people(snapshot_id, result.people)
            repo.add_departments(
                snapshot_id, (StoredDepartment(d, parents.get(d.path)) for d in result.departments)
            )
            repo.add_problems(snapshot_id, result.problems)
            diff = repo.compare(previous.id if previous else None, snapshot_id)
            gone = [e for e in diff.gone if e not in result.quarantined]
            report = IngestReport(
                run_id=run_id,
                snapshot_id=snapshot_id,
                previous_snapshot_id=previous.id if previous else None,
                source=connector.describe(),
                rows=result.rows,
                people=len(result.people),
                departments=len(result.departments),
                new=len(diff.new),
                changed=len(diff.changed),
                gone=len(gone),
                quarantined=len(result.quarantined),
                problems=result.problems,
                notes=result.notes,
                warnings=tuple(_mapping_warnings(config, result)),
                seconds=time.monotonic() - started,
                quarantined_ids=tuple(sorted(result.quarantined)),
            )
            repo.complete_snapshot(
                snapshot_id,
                {
                    **report.counts,
                    "quarantined_ids": list(report.quarantined_ids),
                    **snapshot_counts(result.held_reasons(), result.unidentified),
                },
            )
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, SyncEngineError) else type(exc).__name__
            repo.fail_snapshot(snapshot_id, reason)
            repo.finish_run(run_id, "failed", {"error": reason})
            raise
        repo.finish_run(run_id, "succeeded", report.counts)
        return report
    finally:
        repo.close()


# --- the Exmail emulator (issue 2) ------------------------------------------------------


@dataclass(frozen=True)
class EmulatorStart:
    """What the emulator command shows once the server is bound."""

    base_url: str
    api: str
    control: bool
    state_file: str | None
    config_snippet: str | None  # only for the built-in demo seed (public credentials)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_emulator(
    *,
    api: str,
    host: str,
    port: int,
    seed_path: str | None,
    state_path: str | None,
    options: dict[str, Any],
    control: bool,
    control_anywhere: bool,
    on_ready: Callable[[EmulatorStart], None],
) -> None:
    """Serve the Exmail emulator in the foreground until interrupted.

    ``options`` are EmulatorOptions fields (latency_ms, fail_rate, ...). The control API lets
    anyone who reaches it replace the directory, so it is refused on a non-loopback host
    unless ``control_anywhere`` says the operator means it.
    """
    if control and not _is_loopback(host) and not control_anywhere:
        raise ConfigError(
            f"the control API would be reachable on {host}",
            where="--control",
            hint="bind to 127.0.0.1, drop --control, or add --control-anywhere",
        )
    seed = None
    if seed_path is not None:
        try:
            seed = exmail_emulator.load_seed_file(seed_path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the seed: {exc}",
                where=seed_path,
                hint="give a JSON or TOML seed (see samples/emulator-seed.json)",
            )
    try:
        opts = exmail_emulator.EmulatorOptions(control=control, state_file=state_path, **options)
        app = exmail_emulator.create_app(api, seed, opts)  # type: ignore[arg-type]
    except exmail_emulator.SeedError as exc:
        raise ConfigError(
            str(exc),
            where=seed_path or state_path,
            hint="fix the entry named, or delete the state file",
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), where="emulator options")

    def ready(base_url: str) -> None:
        snippet = (
            exmail_emulator.config_snippet(exmail_emulator.default_seed(), base_url, api)
            if seed is None and state_path is None
            else None
        )
        on_ready(EmulatorStart(base_url, api, control, state_path, snippet))

    try:
        exmail_emulator.serve(app, host, port, on_ready=ready)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            where="--host/--port",
            hint="choose another port (0 = any free one)",
        )


# --- plan: HR snapshot + live mailbox state -> saved Plan (issue 4) ------------------------

PREVIOUS_SNAPSHOTS_FOR_MOVES = 5
"""How many earlier complete snapshots feed department move detection (see make_plan)."""


@dataclass(frozen=True)
class PlanResult:
    """One planning run: the plan, where it is stored, and what the operator released.

    ``names`` maps the employee ids the plan's actions and explanations mention to their HR
    names (for labels in the rendered plan; names are not part of the checksummed plan).
    """

    plan: Plan
    plan_id: int
    run_id: int
    snapshot_id: int
    release: Release
    names: dict[str, str]
    mailboxes: int
    read_seconds: float
    diff_seconds: float
    seconds: float

    @property
    def blocked(self) -> bool:
        """A brake fired that the given release does not lift."""
        return self.plan.is_blocked(self.release)

    @property
    def has_changes(self) -> bool:
        return self.plan.has_changes

    def to_dict(self) -> dict[str, Any]:
        """The machine summary of ``plan --json`` (the plan document itself is separate)."""
        return {
            "plan_id": self.plan_id,
            "run_id": self.run_id,
            "snapshot_id": self.snapshot_id,
            "checksum": self.plan.checksum,
            "created_at": self.plan.created_at.isoformat(),
            "config_fingerprint": self.plan.config_fingerprint,
            "state_fingerprint": self.plan.state_fingerprint,
            "has_changes": self.has_changes,
            "blocked": self.blocked,
            "blocked_reasons": [
                {
                    "brake": r.brake,
                    "message": r.message,
                    "how_to_release": r.how_to_release,
                    "released": r.released_by(self.release),
                }
                for r in self.plan.blocked_reasons
            ],
            "summary": dict(self.plan.summary),
            "totals": render.totals(self.plan),
            "mailboxes_read": self.mailboxes,
            "seconds": {
                "read_state": round(self.read_seconds, 3),
                "diff": round(self.diff_seconds, 3),
                "total": round(self.seconds, 3),
            },
        }


_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@/\s]*@")


def _without_secrets(value: Any) -> Any:
    """A config dump with every secret replaced by a marker (its presence, not its value):
    ``Secret`` fields, and the password of a URL (``postgresql://user:pw@host/db``)."""
    if isinstance(value, SecretStr):
        return "<secret>"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1<secret>@", value)
    if isinstance(value, dict):
        return {str(k): _without_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_without_secrets(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return value


def config_fingerprint(config: Config) -> str:
    """sha256 of the config's content without its secrets.

    A plan records it; ``apply`` compares it so a plan made under other rules (another policy,
    mapping or Exmail target) is refused. Secrets are left out, so rotating a secret does not
    make reviewed plans stale, and the fingerprint reveals nothing about them.
    """
    data = _without_secrets(config.model_dump(mode="python"))
    blob = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


SHRINK_WINDOW = 400
"""How many snapshots back the shrink brake looks at most for its baseline."""


def _source_size(snapshot: SnapshotInfo) -> int | None:
    """Rows the export held: mapped people plus quarantined ones (held back, not gone)."""
    people, quarantined = snapshot.counts.get("people"), snapshot.counts.get("quarantined", 0)
    if not isinstance(people, int):
        return None
    return people + (quarantined if isinstance(quarantined, int) else 0)


def _last_good_snapshot_id(repo: Repository) -> int | None:
    """The snapshot behind the newest whole-directory plan whose apply ran.

    Targeted plans (``plan --only``) and hook syncs do not count: they judged the brakes for a
    few people, not for the export as a whole.
    """
    for record in repo.applied_plans():
        run = repo.get_run(record.run_id) if record.run_id is not None else None
        summary = run.summary if run is not None and isinstance(run.summary, dict) else {}
        snapshot_id = summary.get("snapshot_id")
        if isinstance(snapshot_id, int) and not summary.get("targeted"):
            return snapshot_id
    return None


def _shrink_baseline(repo: Repository, current: SnapshotInfo) -> int | None:
    """The size the shrink brake compares the current snapshot with.

    The largest complete snapshot from the last good one (see :func:`_last_good_snapshot_id`)
    up to the one before the current; before any apply, the largest earlier one. So a
    truncated export that arrives two nights running is compared with the last export that
    was accepted, not with the first truncated one, and a reduction released after review
    and applied becomes the new normal.
    """
    good = _last_good_snapshot_id(repo)
    sizes = [
        size
        for s in repo.list_snapshots(limit=SHRINK_WINDOW, since_id=good)
        if s.id < current.id and s.status == "complete" and (size := _source_size(s)) is not None
    ]
    return max(sizes) if sizes else None


def _previous_departments(
    repo: Repository, current: SnapshotInfo, current_departments: Sequence[Department]
) -> tuple[int | None, tuple[Department, ...]]:
    """The shrink brake's baseline size (:func:`_shrink_baseline`) and the departments of the
    last few complete snapshots (for move detection and "managed").

    The planner reads ``previous_departments`` as HR id -> old path, the last entry of an id
    winning. Entries whose path is the current one go first, so that for each id the winner
    is the most recent *different* path: a rename is still recognised when HR was ingested
    twice before anyone planned.
    """
    earlier = [
        s
        for s in repo.list_snapshots(limit=PREVIOUS_SNAPSHOTS_FOR_MOVES * 4 + 1)
        if s.id < current.id and s.status == "complete"
    ][:PREVIOUS_SNAPSHOTS_FOR_MOVES]
    if not earlier:
        return None, ()
    previous_size = _shrink_baseline(repo, current)
    now_path = {d.hr_id: d.path for d in current_departments if d.hr_id}
    same: list[Department] = []
    moved: list[Department] = []
    for snap in reversed(earlier):  # oldest first: later entries win
        for d in repo.load_departments(snap.id):
            (same if d.hr_id and now_path.get(d.hr_id) == d.path else moved).append(d)
    return previous_size, (*same, *moved)


GROUP_CHECK_ROUNDS = 4
"""How many times a plan is redone at most because a new address turned out to be a group."""


def _addresses_to_create(plan: Plan, state: MailboxState) -> set[str]:
    """Every address the plan would make exist that the state does not know yet."""
    known = {normalise_email(m.email) for m in state.mailboxes}
    known |= {normalise_email(a) for m in state.mailboxes for a in m.aliases}
    known |= {normalise_email(g) for g in state.groups}
    found: set[str] = set()
    for a in plan.actions:
        if a.mailbox is not None:
            found.add(a.mailbox.email)
            found.update(a.mailbox.aliases)
        if a.alias:
            found.add(a.alias)
        if a.update is not None and a.update.aliases:
            found.update(a.update.aliases)
    return {normalise_email(x) for x in found} - known


def diff_knowing_groups(
    provider: MailboxProvider,
    desired: Desired,
    state: MailboxState,
    links: Mapping[str, IdentityLink],
    policy: Policy,
    now: datetime,
    *,
    config_fingerprint: str,
    only: list[str] | None = None,
) -> tuple[Plan, MailboxState]:
    """:func:`planner.diff`, corrected for mail groups, which no Exmail API can list.

    The addresses the plan would create are checked with Exmail (Gen 1 ``user/check``, Gen 2
    ``user/batchcheck``, 20 a call); those that are groups join ``state.groups`` and the plan
    is made again, so an HR address owned by a group is a conflict in the plan (and a generated
    one takes the next free form) instead of a failed create at apply. Returns the plan and
    the state it was made from.
    """
    plan = planner.diff(desired, state, links, policy, now,
                        config_fingerprint=config_fingerprint, only=only)  # fmt: skip
    for _ in range(GROUP_CHECK_ROUNDS):
        new = _addresses_to_create(plan, state)
        if not new:
            break
        kinds = provider.check_addresses(sorted(new))
        groups = {normalise_email(a) for a, k in kinds.items() if k is AddressKind.GROUP}
        if not groups:
            break
        log.info("addresses owned by mail groups, planned around: %s", ", ".join(sorted(groups)))
        state = dataclasses.replace(state, groups=tuple(sorted({*state.groups, *groups})))
        plan = planner.diff(desired, state, links, policy, now,
                            config_fingerprint=config_fingerprint, only=only)  # fmt: skip
    return plan, state


def make_plan(
    config: Config,
    *,
    only: Sequence[str] | None = None,
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    progress: Callable[[str, int, int | None], None] | None = None,
    now: datetime | None = None,
    actor: str = "cli",
    transport: httpx.BaseTransport | None = None,
) -> PlanResult:
    """Plan the changes that make Exmail follow the current HR snapshot, and save the plan.

    Reads the current snapshot, the identity links and the previous snapshots from staging,
    the live directory through the provider (``progress("reading mailboxes", done, total)``),
    runs the pure :func:`syncengine.planner.diff` and stores the plan (also when a brake blocks
    it: a blocked plan is kept and shown). ``only`` plans for the named employees alone, with
    explanations. ``allow_removals`` / ``allow_updates`` / ``force`` are the operator's release;
    they do not change the plan, only whether it counts as blocked (``PlanResult.blocked``).
    No snapshot yet is a StagingError that says to run ``syncengine ingest``.
    """
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    fingerprint = config_fingerprint(config)
    policy = policy_from_config(config)
    release = Release(allow_removals=allow_removals, allow_updates=allow_updates, force=force)
    repo = open_staging(config)
    try:
        snapshot = repo.current_snapshot()
        if snapshot is None:
            raise StagingError(
                "there is no HR snapshot yet, so there is nothing to plan against",
                where=staging_db.display_url(config.database_url),
                hint="run 'syncengine ingest' first",
            )
        run_id = repo.start_run("plan", actor, config_fingerprint=fingerprint)
        try:
            people = repo.load_people(snapshot.id)
            departments = repo.load_departments(snapshot.id)
            previous_size, previous_departments = _previous_departments(repo, snapshot, departments)
            quarantined = snapshot.counts.get("quarantined_ids") or []
            held_reasons, unidentified = from_snapshot_counts(snapshot.counts)
            desired = Desired(
                people=tuple(people),
                departments=tuple(departments),
                quarantined=frozenset(str(e) for e in quarantined),
                previous_size=previous_size,
                previous_departments=previous_departments,
                held_reasons=held_reasons,
                unidentified=unidentified,
            )
            links = repo.load_links()

            def read_progress(done: int, total: int | None) -> None:
                if progress is not None:
                    progress("reading mailboxes", done, total)

            read_started = time.perf_counter()
            provider = build_provider(config, transport=transport)
            try:
                state = provider.read_state(progress=read_progress)
                read_seconds = time.perf_counter() - read_started
                if progress is not None:
                    progress("planning", len(people), None)
                diff_started = time.perf_counter()
                plan, state = diff_knowing_groups(
                    provider,
                    desired,
                    state,
                    links,
                    policy,
                    now,
                    config_fingerprint=fingerprint,
                    only=list(only) if only is not None else None,
                )
                diff_seconds = time.perf_counter() - diff_started
            finally:
                provider.close()

            record = repo.save_plan(
                checksum=plan.checksum,
                document=plan.to_json(),
                actions=_new_actions(plan)[0],
                run_id=run_id,
                config_fingerprint=plan.config_fingerprint,
                state_fingerprint=plan.state_fingerprint,
                blocked=bool(plan.blocked_reasons),
                block_reasons=[f"{r.brake}: {r.message}" for r in plan.blocked_reasons],
            )
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, SyncEngineError) else type(exc).__name__
            repo.finish_run(run_id, "failed", {"error": reason})
            raise
        mentioned = {a.employee_id for a in plan.actions if a.employee_id}
        mentioned |= set(plan.explanations)
        names = {p.employee_id: p.name for p in people if p.employee_id in mentioned}
        result = PlanResult(
            plan=plan,
            plan_id=record.id,
            run_id=run_id,
            snapshot_id=snapshot.id,
            release=release,
            names=names,
            mailboxes=len(state.mailboxes),
            read_seconds=read_seconds,
            diff_seconds=diff_seconds,
            seconds=time.perf_counter() - started,
        )
        repo.finish_run(
            run_id,
            "blocked" if result.blocked else "succeeded",
            {
                **plan.summary,
                "plan_id": record.id,
                "checksum": plan.checksum,
                "snapshot_id": snapshot.id,
                "targeted": only is not None,
            },
        )
        return result
    finally:
        repo.close()


# --- apply: a reviewed plan -> Exmail, checkpointed and audited (issue 5) ------------------

APPLY_LOCK = "apply"
"""The run lock's name: one apply (or sync) at a time per staging database."""


@dataclass(frozen=True)
class ApplyFailure:
    """One action that did not get done in this apply, and why."""

    key: str
    kind: str
    target: str
    employee_id: str
    status: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {
            "key": self.key,
            "kind": self.kind,
            "target": self.target,
            "employee_id": self.employee_id,
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ApplyReport:
    """What one apply of one plan did. ``status``: ``applied`` (every action done),
    ``failed`` (some failed or were skipped), ``no-changes`` (an empty plan)."""

    plan_id: int | None
    run_id: int | None
    checksum: str
    status: str
    counts: dict[str, int]
    failures: tuple[ApplyFailure, ...]
    calls: int
    seconds: float
    resumed: bool = False
    password_file: str | None = None
    passwords_delivered: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "run_id": self.run_id,
            "checksum": self.checksum,
            "status": self.status,
            "resumed": self.resumed,
            "counts": dict(self.counts),
            "failures": [f.to_dict() for f in self.failures],
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "password_file": self.password_file,
            "passwords_delivered": self.passwords_delivered,
        }


@dataclass(frozen=True)
class ApplyOutcome:
    """Every plan an ``apply`` call worked on: interrupted ones it resumed first, then the
    given plan (absent for ``apply --resume``)."""

    resumed: tuple[ApplyReport, ...]
    applied: ApplyReport | None

    @property
    def reports(self) -> tuple[ApplyReport, ...]:
        return (*self.resumed, *((self.applied,) if self.applied else ()))

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.reports)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resumed": [r.to_dict() for r in self.resumed],
            "applied": self.applied.to_dict() if self.applied else None,
            "failed": self.failed,
        }


class StagingSink:
    """The executor's :class:`~syncengine.executor.ExecutionSink` over the staging repository:
    checkpoints on ``plan_actions``, rows in ``audit_log``, links in ``identity_links``."""

    def __init__(
        self, repo: Repository, plan_id: int, seqs: dict[str, int], run_id: int, actor: str
    ) -> None:
        self.repo = repo
        self.plan_id = plan_id
        self.seqs = seqs
        self.run_id = run_id
        self.actor = actor
        self._done_rows: set[str] | None = None
        self._links: dict[str, datetime] | None = None
        self._lock = threading.Lock()

    def start_action(self, action: Action, *, resuming: bool) -> int:
        seq = self.seqs[action.key]
        return self.repo.start_action(self.plan_id, seq, resuming=resuming).attempts

    def finish_action(self, action: Action, status: ExecStatus, error: str | None) -> None:
        self.repo.finish_action(self.plan_id, self.seqs[action.key], status.value, error)

    def audit(self, records: Sequence[AuditRecord]) -> None:
        self.repo.append_audit_many(
            AuditEntry(
                result=r.result,
                run_id=self.run_id,
                actor=self.actor,
                plan_id=self.plan_id,
                action_key=r.action_key,
                kind=r.kind,
                target=r.target,
                employee_id=r.employee_id or None,
                email=r.email,
                diffs=dict(r.diffs) if r.diffs else None,
                errcode=r.errcode,
                errmsg=r.errmsg,
                attempt=r.attempt,
                attempts=r.attempts,
                duration_ms=r.duration_ms,
                call=r.call,
            )
            for r in records
        )

    def already_audited_done(self, action: Action) -> bool:
        with self._lock:
            if self._done_rows is None:
                self._done_rows = {
                    e.action_key
                    for e in self.repo.query_audit(plan_id=self.plan_id)
                    if e.action_key and e.call is None and e.result == ExecStatus.DONE.value
                }
            return action.key in self._done_rows

    def store_link(self, link: LinkRecord) -> None:
        with self._lock:  # the links as the run started (the run lock keeps others out)
            if self._links is None:
                self._links = {k: v.first_seen for k, v in self.repo.load_links().items()}
            first_seen = self._links.setdefault(link.employee_id, self.repo.now())
        self.repo.save_links(
            [
                IdentityLink(
                    employee_id=link.employee_id,
                    email=normalise_email(link.email),
                    first_seen=first_seen,
                    disabled_since=link.disabled_since,
                    generated=link.generated,
                )
            ]
        )

    def remove_link(self, employee_id: str) -> None:
        self.repo.delete_link(employee_id)
        with self._lock:
            if self._links is not None:
                self._links.pop(employee_id, None)


def _department_probe(provider: MailboxProvider) -> Callable[[str], bool]:
    """A cheap "does this department exist" for the executor's look-before-redo checks:
    Gen 2 lists the tree in one call; Gen 1 lists the parent's children."""
    if isinstance(provider, ExmailV2Provider):
        v2 = provider

        def exists_v2(path: str) -> bool:
            wanted = normalise_path(path)
            return any(d.path == wanted for d in v2.list_departments())

        return exists_v2
    if isinstance(provider, ExmailV1Provider):
        v1 = provider

        def exists_v1(path: str) -> bool:
            wanted = normalise_path(path)
            try:
                return path_name(wanted) in v1.party_list(parent_path(wanted))
            except NotFoundError:
                return False

        return exists_v1
    return lambda path: any(p.path == normalise_path(path) for p in provider.read_state().parties)


def password_file_path(config: Config) -> Path:
    """Where ``delivery = "file"`` writes: ``[passwords] path``, else next to the SQLite
    database file, else next to the config file."""
    if config.passwords.path:
        return config.resolve_path(config.passwords.path)
    url = config.database_url
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        return Path(url[len(prefix) :]).parent / DEFAULT_PASSWORD_FILE
    return config.base_dir / DEFAULT_PASSWORD_FILE


def _new_actions(plan: Plan) -> tuple[list[NewAction], dict[str, int]]:
    """The plan's actions as checkpoint rows (seq = 1-based plan order, as make_plan saves)."""
    seq = {a.key: i for i, a in enumerate(plan.actions, 1)}
    rows = [
        NewAction(
            seq=seq[a.key],
            action_key=a.key,
            kind=a.kind.value,
            target=a.target,
            employee_id=a.employee_id or None,
            depends_on=tuple(seq[d] for d in a.depends_on),
        )
        for a in plan.actions
    ]
    return rows, seq


def _execute_stored(
    config: Config,
    repo: Repository,
    record: PlanRecord,
    plan: Plan,
    *,
    actor: str,
    resumed: bool,
    transport: httpx.BaseTransport | None,
    sleep: Callable[[float], None],
    progress: Callable[[int, int], None] | None,
    settings: ExecutorSettings | None,
) -> ApplyReport:
    """Run (or finish) one stored plan under the lock already held: checkpoints decide what
    is left; the run, the plan status and the password file are kept up to date."""
    started = time.perf_counter()
    fingerprint = config_fingerprint(config)
    stored = repo.load_actions(record.id)
    seqs = {a.action_key: a.seq for a in stored}
    missing = [a.key for a in plan.actions if a.key not in seqs]
    if missing:
        raise StagingError(
            f"plan #{record.id} has {len(missing)} action(s) without a checkpoint row "
            f"(first: {missing[0]})",
            hint="the stored plan is inconsistent; make a new plan",
        )
    statuses = {a.action_key: a.status for a in stored}
    repo.set_plan_status(record.id, "applying")
    run_id = repo.start_run("apply", actor, config_fingerprint=fingerprint)
    sink = StagingSink(repo, record.id, seqs, run_id, actor)
    file_sink: FilePasswordDelivery | None = None
    passwords: PasswordSink = NoPasswordDelivery()
    if config.passwords.delivery == "file":
        file_sink = FilePasswordDelivery(password_file_path(config), run_id=run_id)
        passwords = file_sink
    provider = build_provider(config, transport=transport)
    try:
        executor = Executor(
            provider,
            sink,
            passwords=passwords,
            settings=settings or config.apply.settings(),
            department_exists=_department_probe(provider),
            sleep=sleep,
            progress=progress,
        )
        try:
            result = executor.run(plan, statuses)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, SyncEngineError) else type(exc).__name__
            repo.finish_run(run_id, "failed", {"error": reason, "plan_id": record.id})
            raise
    finally:
        provider.close()
        if file_sink is not None:
            file_sink.close()
    final = repo.action_counts(record.id)
    open_left = final.get("pending", 0) + final.get("running", 0)
    bad = final.get("failed", 0) + final.get("skipped", 0)
    plan_status = "applying" if open_left else ("failed" if bad else "applied")
    repo.set_plan_status(record.id, plan_status)
    failures = tuple(
        ApplyFailure(o.key, o.kind, o.target, o.employee_id, o.status.value, o.detail)
        for o in result.failures
    )
    counts = {**result.counts(), "actions": len(plan.actions)}
    repo.finish_run(
        run_id,
        "partial" if failures or open_left else "succeeded",
        {**counts, "plan_id": record.id, "checksum": plan.checksum, "calls": result.calls},
    )
    delivered = file_sink.delivered if file_sink else 0
    return ApplyReport(
        plan_id=record.id,
        run_id=run_id,
        checksum=plan.checksum,
        status="failed" if failures else "applied",
        counts=counts,
        failures=failures,
        calls=result.calls,
        seconds=time.perf_counter() - started,
        resumed=resumed,
        password_file=str(file_sink.path) if file_sink and delivered else None,
        passwords_delivered=delivered,
    )


def _resume_unfinished(
    config: Config,
    repo: Repository,
    *,
    actor: str,
    transport: httpx.BaseTransport | None,
    sleep: Callable[[float], None],
    progress: Callable[[int, int], None] | None,
    settings: ExecutorSettings | None,
) -> list[ApplyReport]:
    reports = []
    for record in repo.unfinished_plans():
        plan = Plan.from_json(record.document, source=f"stored plan #{record.id}")
        log.warning(
            "resuming plan #%s (%s), left unfinished by an earlier run",
            record.id,
            plan.checksum[:12],
        )
        reports.append(
            _execute_stored(
                config,
                repo,
                record,
                plan,
                actor=actor,
                resumed=True,
                transport=transport,
                sleep=sleep,
                progress=progress,
                settings=settings,
            )
        )
    return reports


def _lock_command(actor: str) -> str:
    return f"syncengine apply ({actor})"


def resume_apply(
    config: Config,
    *,
    actor: str = "cli",
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
    settings: ExecutorSettings | None = None,
) -> ApplyOutcome:
    """``apply --resume``: finish every plan an interrupted apply left (oldest first), under
    the run lock. Done actions are not repeated; actions left ``running`` are checked against
    the live directory before being redone. Nothing to resume is not an error."""
    repo = open_staging(config)
    try:
        repo.acquire_lock(APPLY_LOCK, command=_lock_command(actor))
        try:
            reports = _resume_unfinished(
                config,
                repo,
                actor=actor,
                transport=transport,
                sleep=sleep,
                progress=progress,
                settings=settings,
            )
        finally:
            repo.release_lock(APPLY_LOCK)
    finally:
        repo.close()
    return ApplyOutcome(resumed=tuple(reports), applied=None)


def read_plan_file(path: str | Path) -> Plan:
    """A plan file as written by ``syncengine plan --out``; its checksum is verified."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(
            "plan file not found",
            where=str(p),
            hint="pass the file written by 'syncengine plan --out FILE'",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read the plan file: {exc}", where=str(p)) from None
    return Plan.from_json(text, source=str(p))


def apply_plan(
    config: Config,
    plan: Plan,
    *,
    checksum: str | None = None,
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    actor: str = "cli",
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[int, int], None] | None = None,
    settings: ExecutorSettings | None = None,
    plan_state_is_fresh: bool = False,
) -> ApplyOutcome:
    """Apply exactly this reviewed plan.

    ``plan_state_is_fresh``: the caller made the plan in this process from a state it read
    moments ago (``sync``, the demo, a hook's targeted sync), so the stale-plan re-read is
    skipped; it still happens when an interrupted plan was resumed first, since that moved
    the state. A whole-directory read is one call per member on Gen 1, so this halves a
    nightly run's calls. The executor still looks before it redoes anything.

    Refused before any write (PlanError / PlanBlockedError / StalePlanError / LockHeldError)
    when: ``checksum`` is given and is not the plan's; the plan was made under another config;
    a brake blocks it and the release (``allow_removals`` / ``allow_updates`` / ``force``) does
    not lift it; another apply holds the run lock; or the live mailbox state moved since the
    plan was made (it is re-read first). Plans an interrupted run left are finished first. A
    plan already applied is not applied again. Failed actions are in the report (the CLI exits
    4); they fail only their dependants.
    """
    if checksum is not None and checksum.strip().lower() != plan.checksum:
        raise PlanError(
            f"the plan's checksum is {plan.checksum}, not the reviewed {checksum.strip()}",
            where="--checksum",
            hint="apply the exact file that was reviewed, or review this one",
        )
    fingerprint = config_fingerprint(config)
    if plan.config_fingerprint != fingerprint:
        raise PlanError(
            f"the plan was made under another configuration (config fingerprint "
            f"{plan.config_fingerprint[:12]}, this config is {fingerprint[:12]})",
            where=f"plan {plan.checksum[:12]}",
            hint="make a new plan with this configuration: syncengine plan",
        )
    release = Release(allow_removals=allow_removals, allow_updates=allow_updates, force=force)
    plan.raise_if_unsafe(release)
    common: dict[str, Any] = {
        "actor": actor,
        "transport": transport,
        "sleep": sleep,
        "progress": progress,
        "settings": settings,
    }
    repo = open_staging(config)
    try:
        repo.acquire_lock(APPLY_LOCK, command=_lock_command(actor))
        try:
            resumed = _resume_unfinished(config, repo, **common)
            record = repo.load_plan(plan.checksum)
            if record is not None and record.status == "applying":
                # Killed after its last action but before the plan was marked: close it.
                counts = repo.action_counts(record.id)
                if not counts.get("pending") and not counts.get("running"):
                    bad = counts.get("failed", 0) + counts.get("skipped", 0)
                    repo.set_plan_status(record.id, "failed" if bad else "applied")
                    record = repo.load_plan(record.id)
            if record is not None and record.status in ("applied", "failed"):
                return ApplyOutcome(
                    resumed=tuple(resumed),
                    applied=_already_applied(repo, record, plan),
                )
            if record is not None and any(r.plan_id == record.id for r in resumed):
                return ApplyOutcome(resumed=tuple(resumed), applied=None)
            if not plan.actions:
                return ApplyOutcome(
                    resumed=tuple(resumed),
                    applied=ApplyReport(
                        plan_id=record.id if record else None,
                        run_id=None,
                        checksum=plan.checksum,
                        status="no-changes",
                        counts={"actions": 0},
                        failures=(),
                        calls=0,
                        seconds=0.0,
                    ),
                )
            if plan_state_is_fresh and not resumed:
                live = plan.state_fingerprint
            else:
                provider = build_provider(config, transport=transport)
                try:
                    live = retry_read(
                        provider.read_state, settings or config.apply.settings(), sleep=sleep
                    ).fingerprint()
                finally:
                    provider.close()
            if live != plan.state_fingerprint:
                if record is not None:
                    repo.set_plan_status(record.id, "abandoned")
                raise StalePlanError(
                    "stale plan: the Exmail directory changed since the plan was made "
                    f"(state {plan.state_fingerprint[:12]} then, {live[:12]} now); "
                    "nothing was written",
                    where=f"plan {plan.checksum[:12]}",
                    hint="run `syncengine plan` again and review the new plan",
                )
            rows, _ = _new_actions(plan)
            record = repo.save_plan(
                checksum=plan.checksum,
                document=plan.to_json(),
                actions=rows,
                config_fingerprint=plan.config_fingerprint,
                state_fingerprint=plan.state_fingerprint,
                blocked=bool(plan.blocked_reasons),
                block_reasons=[f"{r.brake}: {r.message}" for r in plan.blocked_reasons],
            )
            report = _execute_stored(config, repo, record, plan, resumed=False, **common)
            return ApplyOutcome(resumed=tuple(resumed), applied=report)
        finally:
            repo.release_lock(APPLY_LOCK)
    finally:
        repo.close()


def _already_applied(repo: Repository, record: PlanRecord, plan: Plan) -> ApplyReport:
    """A plan applied before: report it, write nothing (a plan is never applied twice)."""
    counts = repo.action_counts(record.id)
    failures = tuple(
        ApplyFailure(a.action_key, a.kind, a.target, a.employee_id or "", a.status, a.error or "")
        for a in repo.load_actions(record.id)
        if a.status in ("failed", "skipped")
    )
    return ApplyReport(
        plan_id=record.id,
        run_id=None,
        checksum=plan.checksum,
        status=f"already-{record.status}",
        counts={**counts, "actions": len(plan.actions)},
        failures=failures,
        calls=0,
        seconds=0.0,
    )


def query_audit(
    config: Config,
    *,
    run_id: int | None = None,
    employee_id: str | None = None,
    email: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """Audit rows matching every given filter, oldest first (``limit``: the newest N)."""
    repo = open_staging(config)
    try:
        return repo.query_audit(
            run_id=run_id, employee_id=employee_id, email=email, since=since, limit=limit
        )
    finally:
        repo.close()


# --- sync: the nightly job (issue 5) -------------------------------------------------------

SYNC_LOCK = "sync"
"""Held for a whole (non dry-run) sync, so two nightly runs never overlap; the apply inside
takes :data:`APPLY_LOCK` as well, so a hand-run ``apply`` cannot interleave either."""

SyncProgress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: total None when unknown."""


@dataclass(frozen=True)
class ApiCall:
    """One Exmail request an action makes: what ``sync --dry-run`` says it would send."""

    method: str
    path: str
    note: str = ""

    def __str__(self) -> str:
        return f"{self.method} {self.path}" + (f" ({self.note})" if self.note else "")


_V2_CALLS: dict[ActionKind, tuple[str, str]] = {
    ActionKind.CREATE_DEPARTMENT: ("POST", "department/create"),
    ActionKind.MOVE_DEPARTMENT: ("POST", "department/update"),
    ActionKind.DELETE_DEPARTMENT: ("GET", "department/delete"),
    ActionKind.CREATE_USER: ("POST", "user/create"),
    ActionKind.UPDATE_USER: ("POST", "user/update"),
    ActionKind.ADD_ALIAS: ("POST", "user/update"),
    ActionKind.ENABLE_USER: ("POST", "user/update"),
    ActionKind.DISABLE_USER: ("POST", "user/update"),
    ActionKind.SWAP_PRIMARY: ("GET", "user/swapalias"),
    ActionKind.DELETE_USER: ("GET", "user/delete"),
}
_V1_CALLS: dict[ActionKind, tuple[str, str]] = {
    ActionKind.CREATE_DEPARTMENT: ("party/sync", "Action=2 add"),
    ActionKind.MOVE_DEPARTMENT: ("party/sync", "Action=3 modify"),
    ActionKind.DELETE_DEPARTMENT: ("party/sync", "Action=1 delete"),
    ActionKind.CREATE_USER: ("user/sync", "Action=2 add"),
    ActionKind.UPDATE_USER: ("user/sync", "Action=3 modify"),
    ActionKind.ADD_ALIAS: ("user/sync", "Action=3 modify"),
    ActionKind.ENABLE_USER: ("user/sync", "Action=3 modify"),
    ActionKind.DISABLE_USER: ("user/sync", "Action=3 modify"),
    ActionKind.SWAP_PRIMARY: ("user/swapalias", ""),
    ActionKind.DELETE_USER: ("user/sync", "Action=1 delete"),
}


def planned_calls(api: str, action: Action) -> tuple[ApiCall, ...]:
    """The write requests ``action`` makes through the provider of generation ``api``.

    Reads the executor may add (a look before redoing a write after a transient error, a
    Gen 1 parent listing before a department is created) are not listed: they change
    nothing. Link-only actions make no request at all.
    """
    if api == "v1":
        if action.kind not in _V1_CALLS:
            return ()
        endpoint, note = _V1_CALLS[action.kind]
        return (ApiCall("POST", "/openapi/" + endpoint, note),)
    if action.kind not in _V2_CALLS:
        return ()
    method, endpoint = _V2_CALLS[action.kind]
    calls = [ApiCall(method, "/cgi-bin/" + endpoint)]
    if action.kind is ActionKind.CREATE_USER and action.mailbox and not action.mailbox.enabled:
        calls.append(ApiCall("POST", "/cgi-bin/user/update", "enable=0: user/create has none"))
    return tuple(calls)


@dataclass(frozen=True)
class PlannedAction:
    """An action of a dry run and the requests it would make."""

    key: str
    kind: str
    target: str
    employee_id: str
    calls: tuple[ApiCall, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "target": self.target,
            "employee_id": self.employee_id,
            "calls": [str(c) for c in self.calls],
        }


@dataclass(frozen=True)
class SyncReport:
    """The run report of one ``sync``: what was read, planned, applied, and who was told.

    ``status``: ``succeeded`` (every action done, or nothing to do), ``dry-run``,
    ``blocked`` (a brake stopped it; nothing applied), ``failed`` (some actions failed, or
    an error stopped the run: ``error``). ``exit_code`` is what the CLI exits with.
    """

    status: str
    exit_code: int
    dry_run: bool
    actor: str
    run_id: int | None
    started_at: datetime
    seconds: float
    api: str
    ingest: IngestReport | None = None
    plan: PlanResult | None = None
    applied: ApplyReport | None = None
    resumed: tuple[ApplyReport, ...] = ()
    kinds: dict[str, dict[str, int]] | None = None
    would_call: tuple[PlannedAction, ...] = ()
    unfinished: tuple[int, ...] = ()
    error: str | None = None
    notifications: tuple[Delivery, ...] = ()
    report_file: str | None = None
    report_error: str | None = None

    @property
    def event(self) -> Event:
        if self.status == "blocked":
            return "blocked"
        return "failed" if self.status == "failed" else "finished"

    @property
    def failures(self) -> tuple[ApplyFailure, ...]:
        return tuple(f for r in (*self.resumed, *((self.applied,) if self.applied else ()))
                     for f in r.failures)  # fmt: skip

    @property
    def blocked_reasons(self) -> list[dict[str, Any]]:
        if self.plan is None:
            return []
        return [
            {"brake": r.brake, "message": r.message, "how_to_release": r.how_to_release}
            for r in self.plan.plan.unreleased(self.plan.release)
        ]

    @property
    def write_calls(self) -> int:
        """API calls made by the applies of this run (reads for checks included)."""
        return sum(r.calls for r in (*self.resumed, *((self.applied,) if self.applied else ())))

    def to_dict(self, *, notifications: bool = True) -> dict[str, Any]:
        plan = self.plan
        data: dict[str, Any] = {
            "status": self.status,
            "exit_code": self.exit_code,
            "dry_run": self.dry_run,
            "actor": self.actor,
            "run_id": self.run_id,
            "host": socket.gethostname(),
            "api": self.api,
            "started_at": self.started_at.isoformat(timespec="seconds"),
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "snapshot": (
                {"id": self.ingest.snapshot_id, "source": self.ingest.source,
                 "counts": self.ingest.counts, "warnings": list(self.ingest.warnings)}
                if self.ingest else None
            ),
            "quarantined": self.ingest.quarantined if self.ingest else None,
            "quarantined_ids": list(self.plan.plan.quarantined) if self.plan else [],
            "plan": (
                {"id": plan.plan_id, "checksum": plan.plan.checksum,
                 "summary": dict(plan.plan.summary), "totals": render.totals(plan.plan),
                 "has_changes": plan.has_changes, "blocked": plan.blocked}
                if plan else None
            ),
            "blocked_reasons": self.blocked_reasons,
            "conflicts": [
                {"kind": c.kind.value, "message": c.message, "employee_ids": list(c.employee_ids)}
                for c in (plan.plan.conflicts if plan else ())
            ],
            "counts": self.kinds or {},
            "applied": self.applied.to_dict() if self.applied else None,
            "resumed": [r.to_dict() for r in self.resumed],
            "failures": [f.to_dict() for f in self.failures],
            "api_calls": self.write_calls,
            "unfinished_plans": list(self.unfinished),
        }  # fmt: skip
        if self.dry_run:
            data["would_call"] = [a.to_dict() for a in self.would_call]
        if notifications:
            data["notifications"] = [n.to_dict() for n in self.notifications]
            data["report_file"] = self.report_file
            data["report_error"] = self.report_error
        return data

    def headline(self) -> str:
        """One line: the mail subject, the first line of the text report."""
        plan = self.plan
        what = render.summary_line(plan.plan, plan.release) if plan else ""
        if self.status == "failed" and self.error:
            return f"sync FAILED: {self.error}"
        if self.status == "failed":
            return f"sync FAILED: {len(self.failures)} action(s) failed; {what}"
        if self.status == "blocked":
            return f"sync BLOCKED, nothing applied: {what}"
        if self.status == "dry-run":
            return f"sync dry run, nothing applied: {what}"
        return f"sync succeeded: {what}"

    def lines(self) -> list[str]:
        """The text report (terminal, mail body)."""
        out = [self.headline()]
        who = f"run #{self.run_id}, " if self.run_id is not None else ""
        out.append(f"  {who}{self.actor}, {self.api}, {self.seconds:.1f} s, "
                   f"started {self.started_at.isoformat(timespec='seconds')}")  # fmt: skip
        for r in self.resumed:
            out.append(f"  resumed interrupted plan #{r.plan_id}: {r.counts.get('done', 0)} "
                       f"done, {r.counts.get('failed', 0)} failed, "
                       f"{r.counts.get('skipped', 0)} skipped")  # fmt: skip
        for plan_id in self.unfinished:
            out.append(f"  plan #{plan_id} was left unfinished; a real run resumes it first")
        if self.ingest is not None:
            c = self.ingest.counts
            out.append(
                f"  HR snapshot #{self.ingest.snapshot_id}: {c['people']} people, "
                f"{c['departments']} departments; {c['new']} new, {c['changed']} changed, "
                f"{c['gone']} gone, {c['quarantined']} quarantined"
            )
        if self.kinds:
            out.append("  per kind          planned   done  failed  skipped")
            for kind, n in sorted(self.kinds.items()):
                out.append(f"    {kind:<17}{n.get('planned', 0):>6} {n.get('done', 0):>6} "
                           f"{n.get('failed', 0):>7} {n.get('skipped', 0):>8}")  # fmt: skip
        if self.applied is not None and self.applied.run_id is not None:
            out.append(f"  {self.write_calls} API call(s)")
            if self.applied.passwords_delivered:
                out.append(f"  {self.applied.passwords_delivered} initial password(s) in "
                           f"{self.applied.password_file} (mode 0600)")  # fmt: skip
        for reason in self.blocked_reasons:
            out.append(f"  blocked: {reason['message']} — {reason['how_to_release']}")
        conflicts = self.plan.plan.conflicts if self.plan else ()
        if conflicts:
            out.append(f"  {len(conflicts)} conflict(s) the engine will not guess about "
                       "(resolve them in HR or Exmail; 'syncengine plan' lists them):")  # fmt: skip
            out.extend(f"    {c.kind.value}: {c.message}" for c in conflicts[:5])
            if len(conflicts) > 5:
                out.append(f"    ... and {len(conflicts) - 5} more")
        for f in self.failures:
            who = f" (employee {f.employee_id})" if f.employee_id else ""
            out.append(f"  {f.status}: {f.key}{who}: {f.reason}")
        if self.dry_run:
            out.append(f"  would make {sum(len(a.calls) for a in self.would_call)} write "
                       f"call(s) for {len(self.would_call)} action(s):")  # fmt: skip
            for a in self.would_call:
                calls = "; ".join(str(c) for c in a.calls) or "no API call (link record)"
                who = f" [{a.employee_id}]" if a.employee_id else ""
                out.append(f"    {a.kind:<17} {a.target}{who}: {calls}")
        for note in self.notifications:
            state = "sent" if note.ok else f"FAILED ({note.error})"
            out.append(f"  notification {note.channel} {note.target}: {state}, "
                       f"{note.attempts} attempt(s)")  # fmt: skip
        if self.report_file:
            out.append(f"  report: {self.report_file}")
        if self.report_error:
            out.append(f"  report NOT written: {self.report_error}")
        return out


def _secret_values(value: Any) -> list[str]:
    """Every secret in a config dump (to scrub them from anything sent out)."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _secret_values(v)]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for v in value for s in _secret_values(v)]
    return []


def config_secrets(config: Config) -> list[str]:
    """The secret values of this config (never shown; used to redact outgoing text)."""
    return _secret_values(config.model_dump(mode="python"))


def report_path(template: str, *, when: datetime, run_id: int | None) -> Path:
    """``--report`` with its placeholders filled: ``{date}`` (2026-11-29), ``{datetime}``
    (20261129T023000Z) and ``{run}`` (the sync's run id), so a scheduler needs no shell
    quoting of ``%`` to keep one report per night."""
    when = when.astimezone(UTC)
    try:
        text = template.format(
            date=when.strftime("%Y-%m-%d"),
            datetime=when.strftime("%Y%m%dT%H%M%SZ"),
            run=run_id if run_id is not None else "none",
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"bad placeholder in the report path: {exc}",
            where="--report",
            hint="use {date}, {datetime} or {run}; double braces for a literal brace",
        ) from None
    return Path(text).expanduser()


def write_report(path: Path, data: dict[str, Any]) -> None:
    """Write the JSON report through a temporary file and a rename (parents created)."""
    import os
    import tempfile

    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".report-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2, sort_keys=True, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report: {exc.strerror or exc}",
            where=str(path),
            hint="choose a writable path for --report",
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _per_kind(
    config: Config, plan: Plan, plan_id: int | None, applied: bool
) -> dict[str, dict[str, int]]:
    """``{kind: {planned, done, failed, skipped}}``; outcomes from the stored checkpoints."""
    out: dict[str, dict[str, int]] = {}
    for a in plan.actions:
        entry = out.setdefault(a.kind.value, {"planned": 0, "done": 0, "failed": 0,
                                              "skipped": 0})  # fmt: skip
        entry["planned"] += 1
    if applied and plan_id is not None:
        repo = open_staging(config)
        try:
            for rec in repo.load_actions(plan_id):
                entry = out.setdefault(rec.kind, {"planned": 0, "done": 0, "failed": 0,
                                                  "skipped": 0})  # fmt: skip
                if rec.status in ("done", "failed", "skipped"):
                    entry[rec.status] += 1
        finally:
            repo.close()
    return out


def sync(
    config: Config,
    *,
    dry_run: bool = False,
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    actor: str = "cli",
    report: str | None = None,
    notify: bool | None = None,
    progress: SyncProgress | None = None,
    transport: httpx.BaseTransport | None = None,
    notify_transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SyncReport:
    """The nightly job: finish an interrupted apply, ingest HR, plan, apply; report and notify.

    Never raises for what a night can bring (a failing source, a blocked plan, failed
    actions, a held lock): the report says what happened (``status``, ``error``) and
    ``exit_code`` carries the CLI's code; the notification says the same. ``dry_run`` does
    everything but the writes (no resume, no apply, no run lock) and lists the requests the
    plan would make. ``report`` is the path of the JSON report (placeholders: see
    :func:`report_path`). ``notify`` defaults to "not a dry run".
    """
    started = time.perf_counter()
    started_at = datetime.now(UTC)
    notify = (not dry_run) if notify is None else notify
    api = config.exmail.api
    if report is not None:
        report_path(report, when=started_at, run_id=0)  # a bad placeholder fails up front

    def step(stage: str, done: int, total: int | None) -> None:
        if progress is not None:
            progress(stage, done, total)

    repo: Repository | None = None
    run_id: int | None = None
    fields: dict[str, Any] = {}
    status, exit_code = "succeeded", EXIT_OK
    locked = False
    unexpected: BaseException | None = None
    try:
        repo = open_staging(config)  # a database that is down is reported like the rest
        run_id = repo.start_run("sync", actor, config_fingerprint=config_fingerprint(config))
        if not dry_run:
            repo.acquire_lock(SYNC_LOCK, command=f"syncengine sync ({actor})")
            locked = True
            fields["resumed"] = resume_apply(
                config, actor=actor, transport=transport, sleep=sleep,
                progress=lambda d, t: step("resuming", d, t),
            ).resumed  # fmt: skip
        else:
            fields["unfinished"] = tuple(p.id for p in repo.unfinished_plans())
        fields["ingest"] = ingest(
            config, progress=lambda stage, n: step(stage, n, None), actor=actor
        )
        result = make_plan(
            config, allow_removals=allow_removals, allow_updates=allow_updates, force=force,
            progress=step, actor=actor, transport=transport,
        )  # fmt: skip
        fields["plan"] = result
        plan = result.plan
        if result.blocked:
            status, exit_code = "blocked", EXIT_BLOCKED
            fields["kinds"] = _per_kind(config, plan, result.plan_id, applied=False)
        elif dry_run:
            status = "dry-run"
            fields["kinds"] = _per_kind(config, plan, result.plan_id, applied=False)
            fields["would_call"] = tuple(
                PlannedAction(a.key, a.kind.value, a.target, a.employee_id,
                              planned_calls(api, a))
                for a in plan.actions
            )  # fmt: skip
        elif plan.has_changes:
            outcome = apply_plan(
                config, plan, checksum=plan.checksum, allow_removals=allow_removals,
                allow_updates=allow_updates, force=force, actor=actor, transport=transport,
                sleep=sleep, progress=lambda d, t: step("applying", d, t),
                plan_state_is_fresh=True,
            )  # fmt: skip
            fields["resumed"] = (*fields.get("resumed", ()), *outcome.resumed)
            fields["applied"] = outcome.applied
            fields["kinds"] = _per_kind(config, plan, result.plan_id, applied=True)
            if outcome.failed:
                status, exit_code = "failed", EXIT_FAILED_ACTIONS
        else:
            fields["kinds"] = {}
        if any(r.failed for r in fields.get("resumed", ())) and status == "succeeded":
            status, exit_code = "failed", EXIT_FAILED_ACTIONS
    except SyncEngineError as exc:
        status, exit_code = "failed", exc.exit_code
        if exc.exit_code == EXIT_BLOCKED:
            status = "blocked"
        fields["error"] = str(exc)
    except Exception as exc:  # a bug: still tell someone, then let it surface
        status, exit_code = "failed", EXIT_ERROR
        fields["error"] = f"unexpected {type(exc).__name__} (see the log): {exc}"
        unexpected = exc
    except BaseException as exc:  # Ctrl+C: record it and stop now, without notifying
        status, exit_code = "failed", EXIT_ERROR
        fields["error"] = f"interrupted ({type(exc).__name__})"
        unexpected, notify = exc, False
    finally:
        if locked and repo is not None:
            try:
                repo.release_lock(SYNC_LOCK)
            except SyncEngineError as exc:  # the database went away: the lock is dead anyway
                log.warning("could not release the sync lock: %s", exc)

    sync_report = SyncReport(
        status=status, exit_code=exit_code, dry_run=dry_run, actor=actor, run_id=run_id,
        started_at=started_at, seconds=time.perf_counter() - started, api=api, **fields,
    )  # fmt: skip
    if repo is not None:
        try:
            if run_id is not None:
                repo.finish_run(
                    run_id,
                    {"succeeded": "succeeded", "dry-run": "succeeded", "blocked": "blocked"}.get(
                        status,
                        "partial" if sync_report.failures and not sync_report.error else "failed",
                    ),
                    sync_report.to_dict(notifications=False),
                )
        except SyncEngineError as exc:  # still tell someone below
            log.warning("could not record the end of sync run %s: %s", run_id, exc)
        finally:
            repo.close()

    deliveries: list[Delivery] = []
    if notify:
        notifier = Notifier(config.notifications, secrets=config_secrets(config),
                            transport=notify_transport, sleep=sleep)  # fmt: skip
        deliveries = notifier.send(
            sync_report.event,
            sync_report.to_dict(notifications=False),
            subject=sync_report.headline(),
            text="\n".join(sync_report.lines()) + "\n",
        )
    path = report_path(report, when=started_at, run_id=run_id) if report else None
    sync_report = dataclasses.replace(
        sync_report,
        notifications=tuple(deliveries),
        report_file=str(path) if path else None,
    )
    if path is not None:
        try:
            write_report(path, sync_report.to_dict())
        except ConfigError as exc:  # the sync itself is done; say so, do not hide its outcome
            log.warning("%s", exc)
            sync_report = dataclasses.replace(sync_report, report_file=None, report_error=str(exc))
    if unexpected is not None:
        raise unexpected
    return sync_report


# --- demo: the README's first command (issue 5) --------------------------------------------

DEMO_MARKER = ".syncengine-demo"
"""A file that marks a folder as the demo's own, so a re-run may wipe it (and nothing else)."""
DEMO_FILES = ("hr-export.csv", "departments.csv")
DEMO_ACTOR = "demo"


@dataclass(frozen=True)
class DemoChange:
    """One edit the demo makes to its copy of the HR export before the second run."""

    kind: str  # hire | move | leaver | rename
    employee_id: str
    name: str
    detail: str


@dataclass(frozen=True)
class DemoRound:
    """One ingest + plan + apply of the demo."""

    ingest: IngestReport
    plan: PlanResult
    outcome: ApplyOutcome | None


@dataclass(frozen=True)
class DemoResult:
    """Everything the demo did, for the CLI to show."""

    folder: Path
    config_path: Path
    base_url: str
    api: str
    seed_mailboxes: int
    first: DemoRound
    audit: tuple[AuditEntry, ...]
    changes: tuple[DemoChange, ...]
    second: DemoRound
    mailboxes: int
    departments: int
    seconds: float


def samples_dir() -> Path:
    """The sample HR files: the source tree's ``samples/`` (``pip install -e .``), else
    ``./samples``."""
    here = Path(__file__).resolve().parent.parent / "samples"
    return here if (here / "syncengine.toml").exists() else Path.cwd() / "samples"


def _fresh_demo_folder(folder: Path) -> None:
    """Empty ``folder`` for a new demo; refuse a folder the demo did not make."""
    import shutil

    if folder.exists():
        if not folder.is_dir():
            raise ConfigError("exists and is not a folder", where=str(folder),
                              hint="choose another folder with --dir")  # fmt: skip
        if any(folder.iterdir()) and not (folder / DEMO_MARKER).exists():
            raise ConfigError(
                "this folder is not empty and was not made by 'syncengine demo'; "
                "the demo will not delete it",
                where=str(folder),
                hint="choose another folder with --dir, or remove it yourself",
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / DEMO_MARKER).write_text(
        "made by 'syncengine demo'; deleted and made again on every demo run\n", encoding="utf-8"
    )


def _demo_config_text(sample: str, exmail_table: str) -> str:
    """The sample config with its ``[exmail]`` tables replaced by the running emulator's, and
    the client-side rate limit lifted (the local emulator has none)."""
    kept: list[str] = []
    in_exmail = False
    for line in sample.splitlines():
        header = line.strip()
        if header.startswith("["):
            in_exmail = header == "[exmail]" or header.startswith("[exmail.")
        if not in_exmail:
            kept.append(line)
    head = [
        "# Written by 'syncengine demo' from samples/syncengine.toml: [exmail] points at the",
        "# emulator the demo started; the database and the HR files are in this folder.",
        "",
        exmail_table,
        "",
        "# The local emulator has no rate limit; against the real Exmail keep the default (20).",
        "[apply]",
        "concurrency = 8",
        "rate_per_second = 0",
        "",
    ]
    body = [ln for ln in kept if not ln.startswith("# syncengine configuration for the demo")]
    return "\n".join(head + body).rstrip("\n") + "\n"


def _read_gb_csv(path: Path) -> tuple[list[str], list[dict[str, str]], str]:
    import csv
    import io

    raw = path.read_bytes()
    newline = "\r\n" if b"\r\n" in raw else "\n"
    reader = csv.DictReader(io.StringIO(raw.decode("gb18030"), newline=""))
    rows = list(reader)
    return list(reader.fieldnames or []), rows, newline


def _write_gb_csv(path: Path, header: list[str], rows: list[dict[str, str]], newline: str
                  ) -> None:  # fmt: skip
    import csv
    import io

    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator=newline)
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode("gb18030"))


def _demo_changes(config: Config, folder: Path, today: date) -> list[DemoChange]:
    """Edit the demo's HR export: a hire, a move, a leaver and a name change.

    The people are picked from the current snapshot (active, linked to a mailbox, in one
    department, no problem rows), so the edits work on whatever sample data is shipped.
    """
    from syncengine.domain import Status as HrStatus

    m = config.mapping.specs()
    columns = {k: (m[k].field if k in m else None)
               for k in ("employee_id", "name", "email", "departments", "status", "end_date",
                         "start_date")}  # fmt: skip
    path = folder / DEMO_FILES[0]
    header, rows, newline = _read_gb_csv(path)
    if any(c is None or c not in header for c in columns.values()):
        raise ConfigError(
            f"the demo expects the sample columns {sorted(str(c) for c in columns.values())}",
            where=str(path),
            hint="restore samples/ from the source tree",
        )
    col = {k: str(v) for k, v in columns.items()}
    repo = open_staging(config)
    try:
        snapshot = repo.current_snapshot()
        if snapshot is None:
            raise StagingError("the demo's first ingest left no snapshot", where=str(folder))
        people = {p.employee_id: p for p in repo.load_people(snapshot.id)}
        links = repo.load_links()
    finally:
        repo.close()
    by_id = {r[col["employee_id"]]: r for r in rows}
    candidates = sorted(
        eid for eid, p in people.items()
        if p.status is HrStatus.ACTIVE and eid in links and eid in by_id
        and len(p.departments) == 1 and (p.start_date is None or p.start_date <= today)
        and p.end_date is None and by_id[eid][col["departments"]].strip().count(";") == 0
    )  # fmt: skip
    if len(candidates) < 3:
        raise ConfigError("the sample HR export has too few active people for the demo",
                          where=str(path))  # fmt: skip
    used_depts = sorted({r[col["departments"]] for r in rows if r[col["departments"]]})
    mover, renamed, leaver = (by_id[e] for e in candidates[:3])
    old_dept = mover[col["departments"]]
    new_dept = next(d for d in used_depts if d != old_dept and ";" not in d)
    changes = []

    old_path = people[mover[col["employee_id"]]].departments[0]
    new_path = next(p.departments[0] for p in people.values()
                    if by_id.get(p.employee_id, {}).get(col["departments"]) == new_dept
                    and len(p.departments) == 1)  # fmt: skip
    mover[col["departments"]] = new_dept
    if "部门" in header:  # the sample's informational path column
        mover["部门"] = new_path
    changes.append(DemoChange("move", mover[col["employee_id"]], mover[col["name"]],
                              f"{old_path} → {new_path}"))  # fmt: skip

    old_name = renamed[col["name"]]
    given = "嘉怡" if old_name[1:] != "嘉怡" else "子涵"
    renamed[col["name"]] = old_name[:1] + given
    changes.append(DemoChange("rename", renamed[col["employee_id"]], renamed[col["name"]],
                              f"{old_name} → {renamed[col['name']]}"))  # fmt: skip

    leaver[col["status"]] = "离职"
    leaver[col["end_date"]] = today.isoformat()
    changes.append(DemoChange("leaver", leaver[col["employee_id"]], leaver[col["name"]],
                              f"left on {today.isoformat()}"))  # fmt: skip

    numbers = [int(e[1:]) for e in by_id if e[:1] == "E" and e[1:].isdigit()]
    width = max((len(e) - 1 for e in by_id if e[:1] == "E"), default=4)
    new_id = f"E{max(numbers, default=0) + 1:0{width}d}"
    taken = {r[col["email"]].strip().lower() for r in rows}
    domain = config.exmail.domains[0] if config.exmail.domains else "example.com"
    email = next(a for a in (f"linjiahe{n or ''}@{domain}" for n in range(100))
                 if a not in taken)  # fmt: skip
    hire = {h: "" for h in header}
    hire.update({col["employee_id"]: new_id, col["name"]: "林嘉禾", col["email"]: email,
                 col["departments"]: new_dept, col["status"]: "在职",
                 col["start_date"]: today.isoformat()})  # fmt: skip
    if "部门" in header:
        hire["部门"] = new_path
    rows.append(hire)
    changes.insert(0, DemoChange("hire", new_id, "林嘉禾", f"{email}, {new_path}"))
    _write_gb_csv(path, header, rows, newline)
    return changes


def _demo_round(config: Config, actor: str, progress: SyncProgress | None) -> DemoRound:
    def step(stage: str, done: int, total: int | None) -> None:
        if progress is not None:
            progress(stage, done, total)

    report = ingest(config, progress=lambda stage, n: step(stage, n, None), actor=actor)
    planned = make_plan(config, progress=step, actor=actor)
    outcome = None
    if planned.has_changes and not planned.blocked:
        outcome = apply_plan(config, planned.plan, checksum=planned.plan.checksum, actor=actor,
                             progress=lambda d, t: step("applying", d, t),
                             plan_state_is_fresh=True)  # fmt: skip
    return DemoRound(report, planned, outcome)


def _audit_sample(config: Config, outcome: ApplyOutcome | None, per_kind: int = 1
                  ) -> tuple[AuditEntry, ...]:  # fmt: skip
    """A few outcome rows of the apply, one per kind, to show what the audit log keeps."""
    if outcome is None or outcome.applied is None or outcome.applied.run_id is None:
        return ()
    seen: Counter[str] = Counter()
    picked = []
    for row in query_audit(config, run_id=outcome.applied.run_id):
        if row.call is None and row.kind and seen[row.kind] < per_kind:
            seen[row.kind] += 1
            picked.append(row)
    return tuple(picked)


def demo(
    *,
    folder: str | Path = ".demo",
    api: str = "v2",
    samples: str | Path | None = None,
    actor: str = DEMO_ACTOR,
    progress: SyncProgress | None = None,
    hold: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the whole product once on built-in defaults, with nothing but this package.

    Starts the emulator in-process on a free loopback port (the built-in seed), writes a
    working copy of the sample config and HR files into ``folder`` (wiped first, if the demo
    made it), then ingest → plan → apply; edits the copy (a hire, a move, a leaver, a name
    change) and runs again to show the incremental plan. ``hold(result)``, when given, is
    called while the emulator still runs (``--keep-running``). No network beyond loopback.
    """
    started = time.perf_counter()
    if api not in ("v1", "v2"):
        raise ConfigError(f"unknown API generation {api!r}", where="--api", hint="v1 or v2")
    src = Path(samples) if samples is not None else samples_dir()
    missing = [n for n in ("syncengine.toml", *DEMO_FILES) if not (src / n).is_file()]
    if missing:
        raise ConfigError(
            f"the sample files are missing: {', '.join(missing)}",
            where=str(src),
            hint="run the demo from the source tree (pip install -e .) or pass --samples DIR",
        )
    target = Path(folder).expanduser().resolve()
    _fresh_demo_folder(target)
    for name in DEMO_FILES:
        (target / name).write_bytes((src / name).read_bytes())

    emu = exmail_emulator.start_emulator(api)
    try:
        seed = exmail_emulator.default_seed()
        table = exmail_emulator.config_snippet(seed, emu.base_url, api)
        config_path = target / "syncengine.toml"
        config_path.write_text(
            _demo_config_text((src / "syncengine.toml").read_text(encoding="utf-8"), table),
            encoding="utf-8",
        )
        config = load_config(config_path)
        first = _demo_round(config, actor, progress)
        audit = _audit_sample(config, first.outcome)
        today = datetime.now(UTC).date()
        changes = _demo_changes(config, target, today)
        second = _demo_round(config, actor, progress)
        state = emu.state()
        result = DemoResult(
            folder=target,
            config_path=config_path,
            base_url=emu.base_url,
            api=api,
            seed_mailboxes=len(seed["users"]),
            first=first,
            audit=audit,
            changes=tuple(changes),
            second=second,
            mailboxes=len(state["users"]),
            departments=len(state["departments"]),
            seconds=time.perf_counter() - started,
        )
        if hold is not None:
            hold(result)
        return result
    finally:
        emu.close()


# --- HR hooks, single sign-on and new-mail forwarding (issue 6) ----------------------------

HOOK_ACTOR_MAX = 200
"""Longest "who started it" text for a hook batch (the runs and audit columns hold 255)."""


def _hook_actor(deliveries: Sequence[str]) -> str:
    """``hook:<delivery id>``; a coalesced batch names its deliveries, then ``+N more``."""
    shown: list[str] = []
    for i, d in enumerate(deliveries):
        candidate = ",".join([*shown, d])
        rest = len(deliveries) - i - 1
        if len("hook:" + candidate) + (len(f"+{rest} more") if rest else 0) > HOOK_ACTOR_MAX:
            return "hook:" + ",".join(shown) + f"+{len(deliveries) - len(shown)} more"
        shown.append(d)
    return "hook:" + ",".join(shown)


def _is_managed(config: Config, mailbox: Mailbox, repo: Repository | None = None) -> bool:
    """Whether an HR record owns this mailbox: its extid names an employee whose identity link
    points at it (a lookup by key, not a scan of every link)."""
    if not mailbox.ext_id:
        return False
    own = repo or open_staging(config)
    try:
        link = own.load_links([mailbox.ext_id]).get(mailbox.ext_id)
    finally:
        if repo is None:
            own.close()
    return link is not None and normalise_email(link.email) == normalise_email(mailbox.email)


def sso_login_url(
    config: Config,
    email: str,
    *,
    transport: httpx.BaseTransport | None = None,
    repo: Repository | None = None,
) -> str:
    """A fresh login URL for ``email``, refused (SsoRefused) for a protected, disabled or
    unmanaged account unless ``[hooks.sso]`` allows it. The one rule for ``sso-url`` and the
    portal's ``/sso/login``: an SSO link is a password-less way into someone's mail."""
    wanted = normalise_email(email)
    rules = config.hooks.sso
    provider = build_provider(config, transport=transport)
    try:
        mailbox = provider.get_user(wanted)
        if mailbox is None:
            raise NotFoundError(f"there is no mailbox {wanted}", call="single sign-on",
                                hint="check the address")  # fmt: skip
        primary = normalise_email(mailbox.email)
        hint = "an administrator can allow it with [hooks.sso] {} = true"
        policy = policy_from_config(config)
        if not rules.allow_protected and (policy.is_protected(primary)
                                          or policy.is_protected(wanted)):  # fmt: skip
            raise SsoRefused(f"{primary} is a protected account", where="single sign-on",
                             hint=hint.format("allow_protected"))  # fmt: skip
        if not rules.allow_disabled and not mailbox.enabled:
            raise SsoRefused(f"{primary} is disabled", where="single sign-on",
                             hint=hint.format("allow_disabled"))  # fmt: skip
        if not rules.allow_unmanaged and not _is_managed(config, mailbox, repo):
            raise SsoRefused(f"{primary} is not managed by syncengine (no HR record owns it)",
                             where="single sign-on",
                             hint=hint.format("allow_unmanaged"))  # fmt: skip
        return provider.login_url(primary)
    finally:
        provider.close()


@dataclass(frozen=True)
class HookEventView:
    """One stored hook event as ``syncengine events`` and ``GET /hooks/events/{id}`` show it
    (the payload's personal data is left out)."""

    id: int
    delivery_id: str
    kind: str
    employee_id: str | None
    status: str
    attempts: int
    last_error: str | None
    received_at: datetime
    next_attempt_at: datetime | None
    applied_at: datetime | None
    run_id: int | None

    @classmethod
    def of(cls, e: HookEvent) -> HookEventView:
        return cls(e.id, e.delivery_id, e.kind, e.employee_id, e.status, e.attempts,
                   e.last_error, e.received_at, e.next_attempt_at, e.applied_at,
                   e.run_id)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("received_at", "next_attempt_at", "applied_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data


def list_hook_events(
    config: Config, *, status: str | None = None, limit: int = 50
) -> list[HookEventView]:
    """The newest stored hook events (``syncengine events``), optionally of one status."""
    if status is not None and status not in ("received", "applied", "failed"):
        raise ConfigError(f"unknown event status {status!r}", where="--status",
                          hint="use received, applied or failed")  # fmt: skip
    repo = open_staging(config)
    try:
        return [HookEventView.of(e) for e in repo.list_events(status=status, limit=limit)]
    finally:
        repo.close()


def _department_table(config: Config, repo: Repository, snapshot: SnapshotInfo | None
                      ) -> DepartmentTable | None:  # fmt: skip
    """The department table the nightly mapping used, rebuilt from the snapshot (HR ids,
    names, parents), so a hook resolves department ids exactly as the last ingest did."""
    depts = config.departments
    if depts is None:
        return None
    if snapshot is None:
        return build_department_table((), depts)
    top = depts.root_ids[0] if depts.root_ids else (depts.top_parents or [""])[0]
    records = [
        {depts.id_field: s.department.hr_id, depts.name_field: path_name(s.department.path),
         depts.parent_field: s.parent_hr_id or top}
        for s in repo.load_department_rows(snapshot.id) if s.department.hr_id
    ]  # fmt: skip
    return build_department_table(records, depts)


@dataclass
class _HookBase:
    """What a targeted sync needs of the current snapshot, cached per snapshot id."""

    snapshot: SnapshotInfo | None
    people: dict[str, Person]
    departments: tuple[Department, ...]
    quarantined: frozenset[str]
    previous_size: int | None
    previous_departments: tuple[Department, ...]
    table: DepartmentTable | None
    counts: Mapping[str, Any] = field(default_factory=dict)  # the snapshot's: its holds


@dataclass(frozen=True)
class HookBatch:
    """What one round of the hook worker did."""

    events: int
    employees: int
    applied: int
    retried: int
    failed: int
    plan_id: int | None = None
    run_id: int | None = None
    error: str | None = None


class HookBackend:
    """The receiver's view of the engine (:class:`syncengine.hooks.app.Backend`) and the
    worker's work: the one place hooks meet staging, mapping, planner, executor and Exmail."""

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        h = config.hooks
        self.config = config
        self.hook_secret = h.secret.get_secret_value() if h.secret else None
        self.sso_secret = h.sso.secret.get_secret_value() if h.sso.secret else None
        self.tolerance = h.tolerance
        self.max_body = h.max_body
        self.sso_lifetime = h.sso.lifetime
        self.metrics = Metrics()
        self.repo = open_staging(config)
        self._transport = transport
        self._clock = clock
        self._base: _HookBase | None = None
        self._base_lock = threading.Lock()
        self.worker: Worker | None = None
        self.scheduler: Scheduler | None = None

    def close(self) -> None:
        self.repo.close()

    # --- the receiver ---------------------------------------------------------------------

    def _current_base(self) -> _HookBase:
        """The cached snapshot view, reloaded when another snapshot became current."""
        snapshot = self.repo.current_snapshot()
        with self._base_lock:
            base = self._base
            if base is not None and (base.snapshot.id if base.snapshot else None) == (
                snapshot.id if snapshot else None
            ):
                return base
            if snapshot is None:
                base = _HookBase(None, {}, (), frozenset(), None, (),
                                 _department_table(self.config, self.repo, None))  # fmt: skip
            else:
                departments = self.repo.load_departments(snapshot.id)
                previous_size, previous_departments = _previous_departments(
                    self.repo, snapshot, departments
                )
                quarantined = snapshot.counts.get("quarantined_ids") or []
                base = _HookBase(
                    snapshot,
                    {p.employee_id: p for p in self.repo.load_people(snapshot.id)},
                    tuple(departments),
                    frozenset(str(e) for e in quarantined),
                    previous_size,
                    previous_departments,
                    _department_table(self.config, self.repo, snapshot),
                    snapshot.counts,
                )
            self._base = base
            return base

    def map_person(self, record: dict[str, Any], table: DepartmentTable | None) -> Person:
        """An upsert's record through the nightly ``[mapping]``; a problem is a PayloadError
        naming the HR field (``person.<field>``)."""
        depts = self.config.departments
        result = map_people([record], self.config.mapping, department_table=table,
                            reference=depts.reference if depts else "id",
                            domains=self.config.exmail.domains)  # fmt: skip
        if result.problems or not result.people:
            p = result.problems[0] if result.problems else None
            raise PayloadError(
                f"person.{p.field}" if p and p.field else "person",
                (p.reason + (f" (value {p.value!r})" if p.value is not None else ""))
                if p else "the record maps to no person",
            )  # fmt: skip
        return result.people[0]

    def resolve_departments(
        self, values: Sequence[str], table: DepartmentTable | None
    ) -> tuple[str, ...]:
        """A department change's values as paths, read as the nightly mapping reads them."""
        spec = self.config.mapping.specs().get("departments")
        if spec is not None and spec.field is not None:
            values = field_values(spec, {spec.field: list(values)})
        depts = self.config.departments
        paths: list[str] = []
        for value in values:
            if table is None or depts is None:
                path, why = department_path(value, self.config.mapping.department_separator)
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

    def employee_of(self, event: UpsertEvent | TerminateEvent | DepartmentChangeEvent) -> str:
        base = self._current_base()
        if isinstance(event, UpsertEvent):
            person = self.map_person(event.person, base.table)
            if event.employee_id and event.employee_id.strip() != person.employee_id:
                raise PayloadError("employee_id", f"{event.employee_id!r} differs from the "
                                   f"record's employee id {person.employee_id!r}")  # fmt: skip
            return person.employee_id
        if isinstance(event, DepartmentChangeEvent):
            self.resolve_departments(event.departments, base.table)
        return event.employee_id.strip()

    def store(self, event: UpsertEvent | TerminateEvent | DepartmentChangeEvent,
              employee_id: str) -> Stored:  # fmt: skip
        assert event.delivery_id is not None
        result = self.repo.store_event(
            event.delivery_id, event.kind, event.model_dump(mode="json"), employee_id=employee_id
        )
        return Stored(result.event.id, result.replay, result.event.status)

    def event_status(self, event_id: int) -> dict[str, Any] | None:
        event = self.repo.get_event(event_id)
        return HookEventView.of(event).to_dict() if event else None

    def queue(self) -> tuple[int, float]:
        stats = self.repo.event_queue_stats()
        age = 0.0
        if stats.oldest_received_at is not None:
            age = max(0.0, (self._clock() - stats.oldest_received_at).total_seconds())
        return stats.depth, age

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.alive

    def wake(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def sso_url(self, email: str) -> str:
        return sso_login_url(self.config, email, transport=self._transport, repo=self.repo)

    # --- the worker -----------------------------------------------------------------------

    def _retry_at(self, attempts: int, now: datetime) -> datetime | None:
        """When to try an event again after its ``attempts``-th failure; None: give up."""
        h = self.config.hooks
        if attempts >= h.max_attempts:
            return None
        delay = min(h.backoff_max, h.backoff_initial * (2 ** max(attempts - 1, 0)))
        return now + timedelta(seconds=delay)

    def _fail_or_retry(self, events: Sequence[HookEvent], reason: str, now: datetime,
                       *, retriable: bool) -> tuple[int, int]:  # fmt: skip
        """Schedule a retry for each event, or mark it failed; returns (retried, failed)."""
        retried = failed = 0
        by_when: dict[datetime | None, list[int]] = {}
        for e in events:
            when = self._retry_at(e.attempts + 1, now) if retriable else None
            by_when.setdefault(when, []).append(e.id)
        for when, ids in by_when.items():
            if when is None:
                self.repo.mark_events(ids, "failed", error=reason)
                failed += len(ids)
            else:
                self.repo.mark_events(ids, "received", error=reason, next_attempt_at=when)
                retried += len(ids)
        self.metrics.inc("syncengine_hook_events_total", retried, outcome="retry")
        self.metrics.inc("syncengine_hook_events_total", failed, outcome="failed")
        return retried, failed

    def _busy(self) -> bool:
        """Whether a live sync or apply holds the run lock: a nightly run can take longer
        than the retries last, so hook events wait for it instead of failing."""
        host = socket.gethostname()
        for name in (SYNC_LOCK, APPLY_LOCK):
            lock = self.repo.get_lock(name)
            if lock is not None and not holder_is_dead(lock, host):
                log.debug("hook worker waits: %s holds the %r lock", lock.describe(), name)
                return True
        return False

    def process(self) -> int:
        """One round: take due events, sync their people, mark them. Returns events taken."""
        batch = self.process_batch()
        return batch.events

    def process_batch(self) -> HookBatch:
        now = self._clock()
        if self._busy():
            return HookBatch(0, 0, 0, 0, 0)  # the events wait; no attempt is used up
        due = self.repo.next_events(limit=self.config.hooks.batch_size, now=now)
        if not due:
            return HookBatch(0, 0, 0, 0, 0)
        base = self._current_base()
        employees = sorted({e.employee_id for e in due if e.employee_id})
        since = base.snapshot.created_at if base.snapshot else None
        history: dict[str, list[HookEvent]] = {}
        for e in self.repo.employee_events(employees, received_after=since):
            history.setdefault(e.employee_id or "", []).append(e)
        waiting = {e.id: e for e in due if not e.employee_id}
        for eid in employees:
            waiting.update({e.id: e for e in history.get(eid, []) if e.status == "received"})
        today = now.date()
        overrides: dict[str, Person | None] = {}
        problems: dict[str, str] = {}
        for eid in employees:
            changes: list[Change] = []
            try:
                for e in history.get(eid, []):
                    p = e.payload
                    if e.kind == "upsert":
                        changes.append(
                            Change("upsert", person=self.map_person(p["person"], base.table))
                        )
                    elif e.kind == "terminate":
                        end = p.get("end_date")
                        changes.append(Change("terminate", end_date=date.fromisoformat(end)
                                              if end else today))  # fmt: skip
                    elif e.kind == "department_change":
                        changes.append(
                            Change(
                                "department_change",
                                departments=(
                                    self.resolve_departments(p.get("departments", []), base.table)
                                ),
                            )
                        )
            except PayloadError as exc:
                problems[eid] = f"event no longer maps: {exc}"
                continue
            folded = fold(base.people.get(eid), changes, today)
            if folded.problem:
                problems[eid] = folded.problem
            else:
                overrides[eid] = folded.person
        by_employee: dict[str, list[HookEvent]] = {}
        for e in waiting.values():
            by_employee.setdefault(e.employee_id or "", []).append(e)
        failed = retried = 0
        for eid, reason in problems.items():
            r, f = self._fail_or_retry(by_employee.get(eid, []), reason, now, retriable=False)
            retried, failed = retried + r, failed + f
        if "" in by_employee:  # stored without an employee id: nothing to sync
            r, f = self._fail_or_retry(by_employee.pop(""), "the event names no employee", now,
                                       retriable=False)  # fmt: skip
            retried, failed = retried + r, failed + f
        targets = sorted(overrides)
        if not targets:
            return HookBatch(len(waiting), len(employees), 0, retried, failed)
        todo = [e for eid in targets for e in by_employee.get(eid, [])]
        deliveries = [e.delivery_id for e in sorted(todo, key=lambda e: e.id)]
        actor = _hook_actor(deliveries)
        try:
            outcome = self._targeted_sync(base, overrides, targets, actor, now)
        except PlanBlockedError as exc:
            r, f = self._fail_or_retry(todo, f"blocked by a brake: {exc}", now, retriable=False)
            self.metrics.inc("syncengine_runs_total", kind="hook", status="blocked")
            return HookBatch(len(waiting), len(employees), 0, retried + r, failed + f,
                             error=str(exc))  # fmt: skip
        except Exception as exc:  # transient or not, the events wait for another try
            reason = str(exc) if isinstance(exc, SyncEngineError) else (
                f"unexpected {type(exc).__name__}: {exc}")  # fmt: skip
            if not isinstance(exc, SyncEngineError):
                log.exception("hook sync failed unexpectedly")
            else:
                log.warning("hook sync failed (will retry): %s", reason)
            r, f = self._fail_or_retry(todo, reason, now, retriable=True)
            self.metrics.inc("syncengine_runs_total", kind="hook", status="failed")
            return HookBatch(len(waiting), len(employees), 0, retried + r, failed + f,
                             error=reason)  # fmt: skip
        _plan, report, bad = outcome
        applied_ids: list[int] = []
        for eid in targets:
            events = by_employee.get(eid, [])
            if eid in bad:
                reason, again = bad[eid]
                r, f = self._fail_or_retry(events, reason, now, retriable=again)
                retried, failed = retried + r, failed + f
            else:
                applied_ids.extend(e.id for e in events)
        run_id = report.run_id if report is not None else None
        if applied_ids:
            self.repo.mark_events(applied_ids, "applied", run_id=run_id)
            self.metrics.inc("syncengine_hook_events_total", len(applied_ids), outcome="applied")
        status = "failed" if bad else "succeeded"
        self.metrics.inc("syncengine_runs_total", kind="hook", status=status)
        return HookBatch(len(waiting), len(employees), len(applied_ids), retried, failed,
                         plan_id=report.plan_id if report else None, run_id=run_id)  # fmt: skip

    def _targeted_sync(
        self,
        base: _HookBase,
        overrides: dict[str, Person | None],
        targets: list[str],
        actor: str,
        now: datetime,
    ) -> tuple[Plan, ApplyReport | None, dict[str, tuple[str, bool]]]:
        """Plan for ``targets`` alone against the snapshot with the hook records laid over
        it, then apply through the same brakes, executor and audit as a nightly run.

        Returns the plan, the apply report (None when nothing was to do) and, per employee
        that did not get done, (why, whether a retry may help)."""
        people = dict(base.people)
        for eid, person in overrides.items():
            if person is None:
                people.pop(eid, None)
            else:
                people[eid] = person
        desired = Desired(
            people=tuple(people[k] for k in sorted(people)),
            departments=base.departments,
            quarantined=base.quarantined - set(overrides),
            previous_size=base.previous_size,
            previous_departments=base.previous_departments,
            held_reasons=from_snapshot_counts(base.counts)[0],
            unidentified=from_snapshot_counts(base.counts)[1],
        )
        fingerprint = config_fingerprint(self.config)
        links = self.repo.load_links()
        policy = policy_from_config(self.config)
        provider = build_provider(self.config, transport=self._transport)
        try:
            state = retry_read(provider.read_state, self.config.apply.settings())
            plan, state = diff_knowing_groups(
                provider, desired, state, links, policy, now,
                config_fingerprint=fingerprint, only=targets,
            )  # fmt: skip
        finally:
            provider.close()
        bad: dict[str, tuple[str, bool]] = {}
        for c in plan.conflicts:
            for eid in c.employee_ids:
                if eid in overrides:
                    bad.setdefault(eid, (f"conflict: {c.message}", False))
        if not plan.actions:
            return plan, None, bad
        plan.raise_if_unsafe(Release())
        outcome = apply_plan(self.config, plan, checksum=plan.checksum, actor=actor,
                             transport=self._transport, plan_state_is_fresh=True)  # fmt: skip
        report = outcome.applied
        for r in outcome.reports:
            self.metrics.inc("syncengine_api_calls_total", r.calls)
        if report is not None:
            for f in report.failures:
                if f.employee_id:
                    bad.setdefault(f.employee_id, (f"{f.kind} {f.target}: {f.reason}", True))
            for kind, counts in _per_kind(self.config, plan, report.plan_id, applied=True
                                          ).items():  # fmt: skip
                for result in ("done", "failed", "skipped"):
                    if counts.get(result):
                        self.metrics.inc("syncengine_actions_total", counts[result],
                                         kind=kind, result=result)  # fmt: skip
            if report.run_id is not None:
                errors = sum(1 for a in self.repo.query_audit(run_id=report.run_id)
                             if a.call and a.result != "ok")  # fmt: skip
                self.metrics.inc("syncengine_api_errors_total", errors)
        return plan, report, bad

    # --- the schedule ---------------------------------------------------------------------

    def scheduled_sync(self) -> None:
        """The nightly job inside ``serve``: the same :func:`sync` as cron would run."""
        result = sync(self.config, actor="schedule:serve")
        self.metrics.inc("syncengine_runs_total", kind="sync", status=result.status)
        log.warning("scheduled sync: %s", result.headline())


@dataclass(frozen=True)
class ServeStart:
    """What ``syncengine serve`` shows once it listens."""

    base_url: str
    hooks: bool
    sso: bool
    schedule: str | None
    waiting: int


def serve(
    config: Config,
    *,
    host: str = "127.0.0.1",
    port: int = 8088,
    on_ready: Callable[[ServeStart], None] | None = None,
    transport: httpx.BaseTransport | None = None,
    log_level: str = "warning",
) -> None:
    """Run the hook receiver, its worker and (with ``[hooks] schedule``) the nightly sync in
    this process until interrupted. Events stored before a restart are worked off at once."""
    import uvicorn

    backend = HookBackend(config, transport=transport)
    try:
        app = create_hook_app(backend)
        try:
            sock = listening_socket(host, port)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                where="--host/--port",
                hint="choose another port (0 = any free one)",
            ) from None
        worker = Worker(backend.process, coalesce_window=config.hooks.coalesce_window,
                        poll_interval=config.hooks.poll_interval)  # fmt: skip
        backend.worker = worker
        scheduler = None
        if config.hooks.schedule:
            scheduler = Scheduler(CronSchedule.parse(config.hooks.schedule),
                                  backend.scheduled_sync)  # fmt: skip
            backend.scheduler = scheduler
        waiting, _ = backend.queue()
        worker.start()
        if scheduler is not None:
            scheduler.start()
        try:
            shown = f"[{host}]" if ":" in host else host
            if on_ready is not None:
                on_ready(ServeStart(f"http://{shown}:{sock.getsockname()[1]}",
                                    bool(backend.hook_secret), bool(backend.sso_secret),
                                    config.hooks.schedule, waiting))  # fmt: skip
            server = uvicorn.Server(uvicorn.Config(
                app, log_level=log_level, access_log=False, lifespan="off",
                timeout_graceful_shutdown=5, timeout_keep_alive=30,
            ))  # fmt: skip
            server.run(sockets=[sock])
        finally:
            sock.close()
            worker.stop()
            if scheduler is not None:
                scheduler.stop()
    finally:
        backend.close()


# --- new-mail forwarding (issue 6) ----------------------------------------------------------

WATCH_V1_CURSOR = "mail-watch:v1:version"
WATCH_V2_CURSOR = "mail-watch:v2:counts"


@dataclass(frozen=True)
class ForwardedMail:
    """One new-mail event sent to the OA system."""

    event: MailEvent
    attempts: int


def _watched_users(config: Config, users: Sequence[str]) -> list[str]:
    """The mailboxes to poll: the given ones, else every managed (linked) one."""
    if users:
        return sorted({normalise_email(u) for u in users})
    repo = open_staging(config)
    try:
        return sorted({normalise_email(lk.email) for lk in repo.load_links().values()
                       if lk.disabled_since is None})  # fmt: skip
    finally:
        repo.close()


def forward_mail(
    config: Config,
    url: str,
    *,
    users: Sequence[str] = (),
    interval: float | None = None,
    max_events: int | None = None,
    timeout: float | None = None,
    transport: httpx.BaseTransport | None = None,
    forward_transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[ForwardedMail]:
    """``mail watch --forward URL``: new-mail events, each POSTed (signed, retried) to
    ``url`` before it is yielded, restart-safe.

    Gen 1 holds the ``listen`` long poll and stores the last version in staging
    (``watch_state``) after each forwarded batch, so a restart neither loses nor repeats mail
    (the very first start begins at "now"). Gen 2 polls ``mail/newcount`` of ``users`` (default:
    every managed mailbox) at ``interval`` (``[hooks.forward] interval``, else
    ``exmail.poll_interval``), one call at a time, and stores the counts: a rise is a new-mail
    event, also across a restart. A URL that keeps failing raises ForwardError with the cursor
    left where it was, so the event is sent on the next start.
    """
    fwd = config.hooks.forward
    if fwd.secret is None:
        raise ConfigError("forwarding needs a signing secret", where="[hooks.forward] secret",
                          hint='set secret = "env:SYNCENGINE_FORWARD_SECRET"')  # fmt: skip
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{url!r} is not an http(s) URL", where="--forward")
    if max_events is not None and max_events <= 0:
        return
    forwarder = Forwarder(url, fwd.secret.get_secret_value(), attempts=fwd.attempts,
                          backoff=fwd.backoff, backoff_max=fwd.backoff_max,
                          timeout=fwd.timeout, transport=forward_transport,
                          sleep=sleep)  # fmt: skip
    repo = open_staging(config)
    provider = build_provider(config, transport=transport)
    deadline = None if timeout is None else clock() + timeout
    sent = 0
    try:
        if isinstance(provider, ExmailV1Provider):
            wanted = {normalise_email(u) for u in users}
            version = repo.get_cursor(WATCH_V1_CURSOR)
            if version is None:
                version = str(int(time.time() * 1000))
                repo.set_cursor(WATCH_V1_CURSOR, version)
            for events, new_version in _listen_batches(provider, version, deadline, clock):
                for event in events:
                    if wanted and event.email not in wanted:
                        continue
                    tries = forwarder.send(dataclasses.asdict(event))
                    sent += 1
                    yield ForwardedMail(event, tries)
                    if max_events is not None and sent >= max_events:
                        repo.set_cursor(WATCH_V1_CURSOR, event.version or new_version)
                        return
                if new_version != version:
                    version = new_version
                    repo.set_cursor(WATCH_V1_CURSOR, version)
        else:
            watched = _watched_users(config, users)
            if not watched:
                raise ConfigError("no mailbox to watch: none is managed yet",
                                  where="mail watch --forward",
                                  hint="pass --user EMAIL, or run a sync first")  # fmt: skip
            pace = interval or fwd.interval or config.exmail.poll_interval
            raw = repo.get_cursor(WATCH_V2_CURSOR)
            counts: dict[str, int] = json.loads(raw) if raw else {}
            while True:
                started = clock()
                for email in watched:
                    count = provider.new_mail_count(email)
                    previous = counts.get(email)
                    if previous is not None and count > previous:
                        event = MailEvent(email=email, new_count=count)
                        tries = forwarder.send({**dataclasses.asdict(event),
                                                "previous_count": previous})  # fmt: skip
                        sent += 1
                        counts[email] = count
                        repo.set_cursor(WATCH_V2_CURSOR, json.dumps(counts, sort_keys=True))
                        yield ForwardedMail(event, tries)
                        if max_events is not None and sent >= max_events:
                            return
                    elif previous != count:
                        counts[email] = count  # first sight or mail read: the new baseline
                        repo.set_cursor(WATCH_V2_CURSOR, json.dumps(counts, sort_keys=True))
                now = clock()
                pause = max(0.0, pace - (now - started))
                if deadline is not None:
                    if now >= deadline:
                        return
                    pause = min(pause, deadline - now)
                sleep(pause)
    finally:
        provider.close()
        repo.close()
        forwarder.close()
