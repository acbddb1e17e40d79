"""The nightly ``sync``: resume, ingest, plan, apply, report and notify."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncengine import render, textfile
from syncengine.callpolicy import CallCounts
from syncengine.errors import (
    EXIT_BLOCKED,
    EXIT_ERROR,
    EXIT_FAILED_ACTIONS,
    EXIT_OK,
    ConfigError,
    SyncEngineError,
)
from syncengine.plan import Plan, Release
from syncengine.providers.base import ApiCall
from syncengine.service import noop_proof
from syncengine.service.applying import (
    ApplyFailure,
    ApplyReport,
    apply_plan,
    resume_apply,
)
from syncengine.service.early_read import EarlyRead
from syncengine.service.engine import Engine, config_secrets
from syncengine.service.ingest import IngestReport, ingest
from syncengine.service.planning import PlanResult, make_plan
from syncengine.service.sync_checks import report_path, sync_secrets
from syncengine.staging.repository import (
    Repository,
)

if TYPE_CHECKING:
    from syncengine.notify import Delivery, Event

log = logging.getLogger(__name__)

# --- sync: the nightly job (issue 5) -------------------------------------------------------

SYNC_LOCK = "sync"
"""Held for a whole (non dry-run) sync, so two nightly runs never overlap; the apply inside
takes :data:`APPLY_LOCK` as well, so a hand-run ``apply`` cannot interleave either."""

SyncProgress = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``: total None when unknown."""


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
    calls: CallCounts | None = None
    tenant: str | None = None  # the tenant of a config with [tenants] (named in every report)
    proved_unchanged: bool = False
    """The plan is the last empty one, proved to stand again (:mod:`.noop_proof`): no diff."""

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
    def api_calls(self) -> int:
        """Every request this run sent to Exmail: reads, writes, token fetches, retries."""
        return self.calls.total_requests if self.calls is not None else 0

    @property
    def retries(self) -> int:
        return self.calls.total_retries if self.calls is not None else 0

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
                 "counts": self.ingest.counts, "warnings": list(self.ingest.warnings),
                 "source_unchanged": self.ingest.source_unchanged}
                if self.ingest else None
            ),
            "quarantined": self.ingest.quarantined if self.ingest else None,
            "quarantined_ids": list(self.plan.plan.quarantined) if self.plan else [],
            "plan": (
                {"id": plan.plan_id, "checksum": plan.plan.checksum,
                 "summary": dict(plan.plan.summary), "totals": render.totals(plan.plan),
                 "has_changes": plan.has_changes, "blocked": plan.blocked,
                 "proved_unchanged": self.proved_unchanged}
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
            "api_calls": self.api_calls,
            "api_retries": self.retries,
            "api_calls_by_call": dict(sorted(self.calls.requests.items())) if self.calls else {},
            "unfinished_plans": list(self.unfinished),
        }  # fmt: skip
        if self.tenant is not None:
            data["tenant"] = self.tenant
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
        if self.calls is not None and self.calls.total_requests:
            out.append(f"  {self.api_calls} API call(s) to Exmail (reads and writes), "
                       f"{self.retries} of them retries after a transient answer")  # fmt: skip
        if self.applied is not None and self.applied.passwords_delivered:
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


def per_kind(
    repo: Repository, plan: Plan, plan_id: int | None, applied: bool
) -> dict[str, dict[str, int]]:
    """``{kind: {planned, done, failed, skipped}}``; outcomes from the stored checkpoints."""
    out: dict[str, dict[str, int]] = {}
    for a in plan.actions:
        entry = out.setdefault(a.kind.value, {"planned": 0, "done": 0, "failed": 0,
                                              "skipped": 0})  # fmt: skip
        entry["planned"] += 1
    if applied and plan_id is not None:
        for rec in repo.load_actions(plan_id):
            entry = out.setdefault(rec.kind, {"planned": 0, "done": 0, "failed": 0,
                                              "skipped": 0})  # fmt: skip
            if rec.status in ("done", "failed", "skipped"):
                entry[rec.status] += 1
    return out


def sync(
    engine: Engine,
    *,
    dry_run: bool = False,
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    actor: str = "cli",
    report: str | None = None,
    notify: bool | None = None,
    progress: SyncProgress | None = None,
    early: EarlyRead | None = None,
) -> SyncReport:
    """The nightly job: finish an interrupted apply, ingest HR, plan, apply; report and notify.

    Never raises for what a night can bring (a failing source, a blocked plan, failed
    actions, a held lock, an Exmail that answers "busy" for a while): the report says what
    happened (``status``, ``error``, the calls and retries) and ``exit_code`` carries the
    CLI's code; the notification says the same. ``dry_run`` does everything but the writes
    (no resume, no apply, no run lock) and lists the requests the plan would make. ``report``
    is the path of the JSON report (placeholders: see :func:`report_path`). ``notify``
    defaults to "not a dry run". ``early``: a Gen 2 read of the directory the caller has
    already started (see :mod:`syncengine.service.early_read`); used when this night
    resumes no interrupted apply, else it is thrown away and the directory read again.
    """
    config = engine.config
    started = time.perf_counter()
    started_at = engine.local_now()  # the company's clock: report names, times shown
    calls_before = early.calls_before if early is not None else engine.calls.stats.snapshot()
    engine.calls.new_run()
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
        repo = engine.repo  # a database that is down is reported like the rest
        # before any work: every secret this run will need (notifications only when sent)
        config.require_secrets(*sync_secrets(notify))
        run_id = repo.start_run("sync", actor, config_fingerprint=engine.fingerprint)
        if not dry_run:
            repo.acquire_lock(SYNC_LOCK, command=f"syncengine sync ({actor})")
            locked = True
            fields["resumed"] = resume_apply(
                engine, actor=actor, progress=lambda d, t: step("resuming", d, t)
            ).resumed
            if fields["resumed"] and early is not None:
                # Written to Exmail since the early read began: what it read may be stale.
                early.close()
                early = None
        else:
            fields["unfinished"] = tuple(p.id for p in repo.unfinished_plans())
        # Gen 2: the directory is read while the ingest runs (see early_read.EarlyRead)
        if early is None and api == "v2":
            early = EarlyRead(engine)
        fields["ingest"] = ingest(
            engine, progress=lambda stage, n: step(stage, n, None), actor=actor
        )
        # A quiet night is proved unchanged when it can be (see noop_proof); else planned,
        # from the same read of the directory.
        release = Release(allow_removals=allow_removals, allow_updates=allow_updates,
                          force=force)  # fmt: skip
        tried = noop_proof.attempt(engine, release=release, actor=actor, progress=step,
                                   early=early)  # fmt: skip
        if tried.result is not None:
            result = tried.result
            fields["proved_unchanged"] = True
        else:
            result = make_plan(
                engine, allow_removals=allow_removals, allow_updates=allow_updates,
                force=force, progress=step, actor=actor, read=tried.read,
            )  # fmt: skip
            noop_proof.remember(engine, result, tried.read[0])
        fields["plan"] = result
        plan = result.plan
        if result.blocked:
            status, exit_code = "blocked", EXIT_BLOCKED
            fields["kinds"] = per_kind(repo, plan, result.plan_id, applied=False)
        elif dry_run:
            status = "dry-run"
            fields["kinds"] = per_kind(repo, plan, result.plan_id, applied=False)
            provider = engine.provider
            fields["would_call"] = tuple(
                PlannedAction(a.key, a.kind.value, a.target, a.employee_id,
                              provider.planned_calls(a))
                for a in plan.actions
            )  # fmt: skip
        elif plan.has_changes:
            outcome = apply_plan(
                engine, plan, checksum=plan.checksum, allow_removals=allow_removals,
                allow_updates=allow_updates, force=force, actor=actor,
                progress=lambda d, t: step("applying", d, t),
            )  # fmt: skip
            fields["resumed"] = (*fields.get("resumed", ()), *outcome.resumed)
            fields["applied"] = outcome.applied
            fields["kinds"] = per_kind(repo, plan, result.plan_id, applied=True)
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
        if early is not None:  # a read the night stopped before using (else a done thread)
            early.close()
        if locked and repo is not None:
            try:
                repo.release_lock(SYNC_LOCK)
            except SyncEngineError as exc:  # the database went away: the lock is dead anyway
                log.warning("could not release the sync lock: %s", exc)

    sync_report = SyncReport(
        status=status, exit_code=exit_code, dry_run=dry_run, actor=actor, run_id=run_id,
        started_at=started_at, seconds=time.perf_counter() - started, api=api,
        calls=engine.calls.stats.snapshot().since(calls_before), tenant=config.tenant, **fields,
    )  # fmt: skip
    if repo is not None and run_id is not None:
        try:
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

    deliveries: list[Delivery] = []
    # Notifier.wants() is the same test; without a target its senders are not even imported.
    if notify and config.notifications.enabled and sync_report.event in config.notifications.on:
        from syncengine.notify import Notifier

        notifier = Notifier(config.notifications, secrets=config_secrets(config),
                            transport=engine.notify_transport, sleep=engine.sleep)  # fmt: skip
        deliveries = notifier.send(
            sync_report.event,
            sync_report.to_dict(notifications=False),
            subject=(f"{config.tenant}: " if config.tenant else "") + sync_report.headline(),
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
    if config.metrics.textfile:  # for the node exporter's textfile collector
        try:
            textfile.write(config.resolve_path(config.metrics.textfile),
                           sync_report.to_dict(notifications=False), now=time.time())  # fmt: skip
        except ConfigError as exc:  # like the report: said, never hiding the sync's outcome
            log.warning("%s", exc)
    if unexpected is not None:
        raise unexpected
    return sync_report
