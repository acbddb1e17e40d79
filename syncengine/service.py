"""The use-cases of the engine, and the one place that wires adapters together.

The CLI, the hook receiver and the benchmarks call these functions; nothing else builds a
provider, a connector or a database session from the configuration.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from syncengine import emulator as exmail_emulator
from syncengine.config import Config
from syncengine.connectors.base import make_connector
from syncengine.connectors.mapping import MappingResult, map_records
from syncengine.domain import MailEvent, RowProblem, normalise_email
from syncengine.errors import ConfigError, SyncEngineError
from syncengine.providers.base import MailboxProvider
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider
from syncengine.providers.http import new_http_client
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository, StoredDepartment

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
        timeout=ex.timeout, max_connections=ex.read_concurrency + 2, transport=transport
    )
    if ex.api == "v1":
        return ExmailV1Provider(ex, client)
    return ExmailV2Provider(ex, client)


def sso_url(config: Config, email: str, *, transport: httpx.BaseTransport | None = None) -> str:
    """A fresh single sign-on URL for one member (Gen 2 get_login_url; Gen 1 auth key)."""
    provider = build_provider(config, transport=transport)
    try:
        return provider.login_url(normalise_email(email))
    finally:
        provider.close()


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
    while True:
        wait = LISTEN_POLL_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - clock())
            if wait <= 0:
                return
        events, version = provider.listen(version, timeout=wait)
        for event in events:
            if not users or event.email in users:
                yield event


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
            )
            repo.complete_snapshot(
                snapshot_id, {**report.counts, "quarantined_ids": sorted(result.quarantined)}
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
            raise ConfigError(f"cannot read the seed: {exc}", where=seed_path,
                              hint="give a JSON or TOML seed (see samples/emulator-seed.json)")
    try:
        opts = exmail_emulator.EmulatorOptions(control=control, state_file=state_path,
                                               **options)
        app = exmail_emulator.create_app(api, seed, opts)  # type: ignore[arg-type]
    except exmail_emulator.SeedError as exc:
        raise ConfigError(str(exc), where=seed_path or state_path,
                          hint="fix the entry named, or delete the state file")
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), where="emulator options")

    def ready(base_url: str) -> None:
        snippet = (exmail_emulator.config_snippet(exmail_emulator.default_seed(), base_url, api)
                   if seed is None and state_path is None else None)
        on_ready(EmulatorStart(base_url, api, control, state_path, snippet))

    try:
        exmail_emulator.serve(app, host, port, on_ready=ready)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                          where="--host/--port", hint="choose another port (0 = any free one)")

