"""Ingest: the HR source, through the mapping, into a new staging snapshot."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import syncengine
from syncengine import hookfacts
from syncengine.config import Config
from syncengine.connectors.base import Connector, make_connector, source_fingerprint
from syncengine.connectors.mapping import (
    MappingResult,
    map_records,
)
from syncengine.domain import (
    RowProblem,
)
from syncengine.errors import (
    ConfigError,
    SyncEngineError,
)
from syncengine.holds import snapshot_counts
from syncengine.service.engine import Engine
from syncengine.staging.repository import (
    SnapshotInfo,
    StoredDepartment,
)
from syncengine.statuses import RunKind, RunStatus

log = logging.getLogger(__name__)

# --- ingest: HR source -> staging snapshot (issue 3) ---------------------------------------

INGEST_PROGRESS_EVERY = 5000
"""How many records between two ``progress("reading", n)`` calls."""

DIGEST_KEY = "source_digest"
"""The snapshot count holding the digest of what it was read from (:func:`source_digest`)."""


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
    source_unchanged: bool = False
    """The source was byte for byte what the previous snapshot was read from, under the same
    config and code: it shares that snapshot's rows rather than reading and mapping them again."""

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
        problem = _problem_dict
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
            "source_unchanged": self.source_unchanged,
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


def _problem_dict(p: RowProblem) -> dict[str, Any]:
    return {
        "row": p.row,
        "field": p.field,
        "value": p.value,
        "reason": p.reason,
        "employee_id": p.employee_id,
    }


@functools.cache
def code_fingerprint() -> str:
    """sha256 of the installed syncengine package's Python sources (about 2 ms): a snapshot
    copied on "same bytes, same config" must also be what *this* code maps them to, and a
    version number does not change with every fix of a checkout."""
    root = Path(syncengine.__file__).parent
    digest = hashlib.sha256(syncengine.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        digest.update(f"\0{path.relative_to(root).as_posix()}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def source_digest(
    engine: Engine, connector: Connector, departments: Connector | None
) -> str | None:
    """What a snapshot is a function of: the raw source (and department source) as their
    connectors fingerprint them, the whole config (mapping, domains, departments, source
    options: :func:`config_fingerprint`) and the code (:func:`code_fingerprint`). None when a
    source cannot be fingerprinted without reading it (SQL, LDAP, HTTP): then it is always
    read."""
    parts = [source_fingerprint(connector)]
    if departments is not None:
        parts.append(source_fingerprint(departments))
    if any(p is None for p in parts):
        return None
    blob = "\0".join(
        ("syncengine-ingest/1", code_fingerprint(), engine.fingerprint, *map(str, parts))
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


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
    engine: Engine,
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
    config = engine.config
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
    repo = engine.repo
    with engine.run(RunKind.INGEST, actor, with_fingerprint=False) as run:
        previous = repo.current_snapshot()
        snapshot_id = repo.begin_snapshot(
            run.id,
            connector.describe(),
            source_time=hookfacts.export_time(config.source.options, config.base_dir),
        )
        try:
            digest = source_digest(engine, connector, dept_connector)
            if (
                digest is not None
                and previous is not None
                and previous.counts.get(DIGEST_KEY) == digest
            ):
                report, counts = _copy_previous(engine, previous, snapshot_id, run.id, progress)
            else:
                report, counts = _read_source(
                    engine, connector, dept_connector, previous, snapshot_id, run.id, progress
                )
            if digest is not None:
                counts[DIGEST_KEY] = digest
            report = dataclasses.replace(report, seconds=time.monotonic() - started)
            repo.complete_snapshot(snapshot_id, counts)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, SyncEngineError) else type(exc).__name__
            repo.fail_snapshot(snapshot_id, reason)
            raise
        # Housekeeping: the rows of snapshots past the planner's window would grow the
        # database by a whole export every night, forever.
        repo.prune_snapshot_rows(config.database.keep_snapshots)
        run.finish(RunStatus.SUCCEEDED, report.counts)
        return report


def _read_source(
    engine: Engine,
    connector: Connector,
    dept_connector: Connector | None,
    previous: SnapshotInfo | None,
    snapshot_id: int,
    run_id: int,
    progress: Callable[[str, int], None] | None,
) -> tuple[IngestReport, dict[str, Any]]:
    """Read and map the source into the loading snapshot; the report and the counts to store.

    Besides what consumers read (counts, quarantined ids, held reasons), the counts keep what
    a later ingest of the same bytes needs to report the same: the notes, the warnings and
    the source as described after reading (with the encoding and delimiter found)."""
    config, repo = engine.config, engine.repo
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
        quarantined_ids=tuple(sorted(result.quarantined)),
    )
    counts = {
        **report.counts,
        "quarantined_ids": list(report.quarantined_ids),
        **snapshot_counts(result.held_reasons(), result.unidentified),
        "notes": [_problem_dict(n) for n in report.notes],
        "warnings": list(report.warnings),
        "source_described": report.source,
    }
    return report, counts


def _copy_previous(
    engine: Engine,
    previous: SnapshotInfo,
    snapshot_id: int,
    run_id: int,
    progress: Callable[[str, int], None] | None,
) -> tuple[IngestReport, dict[str, Any]]:
    """The source is what ``previous`` was read from: the new snapshot shares its rows (by
    reference, see :meth:`~syncengine.staging.repository.Repository.share_snapshot_rows`)
    instead of reading and mapping them again, or copying 10,000 of them. The new snapshot is
    a snapshot like any other (its own id, ingest time and export time), so freshness, hook
    overlays, holds and brakes see what a re-read would have given; nobody is new, changed or
    gone."""
    repo = engine.repo
    c = previous.counts
    if progress is not None:
        progress("reading", int(c.get("rows", 0)))
        progress("storing", int(c.get("people", 0)))
    repo.share_snapshot_rows(previous.id, snapshot_id)
    report = IngestReport(
        run_id=run_id,
        snapshot_id=snapshot_id,
        previous_snapshot_id=previous.id,
        source=str(c.get("source_described") or previous.source),
        rows=int(c.get("rows", 0)),
        people=int(c.get("people", 0)),
        departments=int(c.get("departments", 0)),
        new=0,
        changed=0,
        gone=0,
        quarantined=int(c.get("quarantined", 0)),
        problems=tuple(repo.load_problems(snapshot_id)),
        notes=tuple(RowProblem(**n) for n in c.get("notes") or ()),
        warnings=tuple(c.get("warnings") or ()),
        quarantined_ids=tuple(c.get("quarantined_ids") or ()),
        source_unchanged=True,
    )
    return report, {**c, **report.counts}
