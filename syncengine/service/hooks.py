"""The HR hook backend (receiver and worker) and ``serve``."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from syncengine import clock, hookfacts, signing
from syncengine.connectors.mapping import (
    DepartmentTable,
)
from syncengine.domain import (
    Person,
)
from syncengine.errors import (
    ConfigError,
    PlanBlockedError,
    SyncEngineError,
)
from syncengine.hooks.access_log import AccessLog
from syncengine.hooks.app import Stored
from syncengine.hooks.app import create_app as create_hook_app
from syncengine.hooks.guard import adoption_refusals
from syncengine.hooks.metrics import Metrics
from syncengine.hooks.payloads import (
    DepartmentChangeEvent,
    PayloadError,
    TerminateEvent,
    UpsertEvent,
)
from syncengine.hooks.review import with_review
from syncengine.hooks.schedule import CronSchedule
from syncengine.hooks.server import serve_limits, server_config
from syncengine.hooks.worker import Scheduler, Worker
from syncengine.plan import Plan, Release, for_tenant
from syncengine.planner import Desired
from syncengine.service.applying import APPLY_LOCK, ApplyReport, apply_plan
from syncengine.service.engine import Engine
from syncengine.service.mail import sso_login_url
from syncengine.service.nightly import SYNC_LOCK, per_kind, sync
from syncengine.service.planning import (
    SnapshotView,
    department_table,
    diff_knowing_groups,
    load_snapshot_view,
)
from syncengine.service.review_pages import review_backend
from syncengine.service.targeted import (
    WHOLE_READ_FROM,
    FullReadNeeded,
    StateLookup,
    TargetedProvider,
    TargetedRead,
    department_paths_in_play,
    judge_brakes,
    plan_targeted,
)
from syncengine.sockets import listening_socket
from syncengine.staging.repository import (
    HookEvent,
    SignatureReplay,
    SnapshotInfo,
    holder_is_dead,
)
from syncengine.statuses import EventStatus

log = logging.getLogger(__name__)

# --- HR hooks, single sign-on and new-mail forwarding (issue 6) ----------------------------

SNAPSHOT_RECHECK_SECONDS = 1.0
"""How often the receiver asks whether another snapshot became current (its department
table maps the records): a query on every request was a fifth of a request's cost."""

HOOK_ACTOR_MAX = 200
"""Longest "who started it" text for a hook batch (the runs and audit columns hold 255)."""


def hook_actor(deliveries: Sequence[str]) -> str:
    """``hook:<delivery id>``; a coalesced batch names its deliveries, then ``+N more``."""
    shown: list[str] = []
    for i, d in enumerate(deliveries):
        candidate = ",".join([*shown, d])
        rest = len(deliveries) - i - 1
        if len("hook:" + candidate) + (len(f"+{rest} more") if rest else 0) > HOOK_ACTOR_MAX:
            return "hook:" + ",".join(shown) + f"+{len(deliveries) - len(shown)} more"
        shown.append(d)
    return "hook:" + ",".join(shown)


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
    engine: Engine, *, status: str | None = None, limit: int = 50
) -> list[HookEventView]:
    """The newest stored hook events (``syncengine events``), optionally of one status."""
    if status is not None and status not in set(EventStatus):
        raise ConfigError(f"unknown event status {status!r}", where="--status",
                          hint="use received, applied or failed")  # fmt: skip
    return [HookEventView.of(e) for e in engine.repo.list_events(status=status, limit=limit)]


@dataclass(frozen=True)
class _HookBase:
    """What a targeted sync needs of the current snapshot, cached per snapshot id."""

    view: SnapshotView | None
    table: DepartmentTable | None

    @property
    def snapshot(self) -> SnapshotInfo | None:
        return self.view.snapshot if self.view else None

    @property
    def people(self) -> dict[str, Person]:
        return self.view.people if self.view else {}


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

    def __init__(self, engine: Engine) -> None:
        config = engine.config
        h = config.hooks
        self.engine = engine
        self.config = config
        self.hook_secret = h.secret.get_secret_value() if h.secret else None
        self.sso_secret = h.sso.secret.get_secret_value() if h.sso.secret else None
        self.tolerance = h.tolerance
        self.max_body = h.max_body
        self.sso_lifetime = h.sso.lifetime
        self.metrics = Metrics()
        self.repo = engine.repo
        self._clock = engine.now
        self._base: _HookBase | None = None
        self._base_lock = threading.Lock()
        self._base_checked = float("-inf")
        self.worker: Worker | None = None
        self.scheduler: Scheduler | None = None

    def close(self) -> None:
        self.engine.close()

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
            view = load_snapshot_view(self.repo, snapshot) if snapshot is not None else None
            base = _HookBase(view, department_table(self.config, self.repo, snapshot))
            self._base = base
            return base

    def map_person(self, record: dict[str, Any], table: DepartmentTable | None) -> Person:
        """An upsert's record through the nightly ``[mapping]`` (PayloadError names the field)."""
        return hookfacts.map_hook_person(self.config, record, table)

    def resolve_departments(
        self, values: Sequence[str], table: DepartmentTable | None
    ) -> tuple[str, ...]:
        """A department change's values as paths, read as the nightly mapping reads them."""
        return hookfacts.resolve_hook_departments(self.config, values, table)

    def _receiver_base(self) -> _HookBase:
        """The cached base, checked for a newer snapshot at most every
        SNAPSHOT_RECHECK_SECONDS (an ingest is seen by the receiver within that time)."""
        base = self._base
        now = time.monotonic()
        if base is not None and now - self._base_checked < SNAPSHOT_RECHECK_SECONDS:
            return base
        base = self._current_base()
        self._base_checked = now
        return base

    def employee_of(self, event: UpsertEvent | TerminateEvent | DepartmentChangeEvent) -> str:
        base = self._receiver_base()
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
              employee_id: str, replay_key: str, expires_at: datetime) -> Stored:  # fmt: skip
        assert event.delivery_id is not None
        result = self.repo.store_event(event.delivery_id, event.kind,
                                       event.model_dump(mode="json"), employee_id=employee_id,
                                       signature=(replay_key, expires_at))  # fmt: skip
        if isinstance(result, SignatureReplay):
            return Stored(0, True, "", signed_replay=True)
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
        return sso_login_url(self.engine, email)

    def claim_signature(self, key: str, expires_at: datetime) -> bool:
        return self.repo.claim_signature(key, expires_at)

    def release_signature(self, key: str) -> None:
        self.repo.release_signature(key)

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
                self.repo.mark_events(ids, EventStatus.FAILED, error=reason)
                failed += len(ids)
            else:
                self.repo.mark_events(ids, EventStatus.RECEIVED, error=reason, next_attempt_at=when)
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
        as_of = base.snapshot.as_of if base.snapshot else None
        # the facts the snapshot's export cannot overrule (see syncengine.hookfacts)
        since = hookfacts.live_since(as_of, self.config.hooks.settle) if as_of else None
        history: dict[str, list[HookEvent]] = {}
        for e in self.repo.employee_events(employees, received_after=since):
            history.setdefault(e.employee_id or "", []).append(e)
        waiting = {e.id: e for e in due if not e.employee_id}
        for eid in employees:
            waiting.update(
                {e.id: e for e in history.get(eid, []) if e.status == EventStatus.RECEIVED}
            )
        today = clock.company_today(now, self.config.timezone)  # the company's calendar day
        laid = hookfacts.overlay(
            self.config, base.people, [e for eid in employees for e in history.get(eid, [])],
            as_of=as_of or datetime.min.replace(tzinfo=UTC), table=base.table, today=today,
        )  # fmt: skip
        problems: dict[str, str] = dict(laid.problems)
        overrides: dict[str, Person | None] = {
            eid: laid.people.get(eid, base.people.get(eid))
            for eid in employees
            if eid not in problems
        }
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
        actor = hook_actor(deliveries)
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
            self.repo.mark_events(applied_ids, EventStatus.APPLIED, run_id=run_id)
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
        engine = self.engine
        try:
            plan, refused = self._plan_batch(base, overrides, targets, now, targeted=True)
        except FullReadNeeded as exc:
            log.info("hook batch reads the whole directory: %s", exc)
            plan, refused = self._plan_batch(base, overrides, targets, now, targeted=False)
        plan = for_tenant(plan, engine.config.tenant)
        plan = signing.sign_plan(plan, signing.plan_key(engine.config))
        engine.remember_state(plan.state_fingerprint)
        bad: dict[str, tuple[str, bool]] = {e: (why, False) for e, why in refused.items()}
        for c in plan.conflicts:
            for eid in c.employee_ids:
                if eid in overrides:
                    bad.setdefault(eid, (f"conflict: {c.message}", False))
        if not plan.actions:
            return plan, None, bad
        plan.raise_if_unsafe(Release())
        outcome = apply_plan(engine, plan, checksum=plan.checksum, actor=actor)
        report = outcome.applied
        for r in outcome.reports:
            self.metrics.inc("syncengine_api_calls_total", r.calls)
        if report is not None:
            for f in report.failures:
                if f.employee_id:
                    bad.setdefault(f.employee_id, (f"{f.kind} {f.target}: {f.reason}", True))
            for kind, counts in per_kind(self.repo, plan, report.plan_id, applied=True).items():
                for result in ("done", "failed", "skipped"):
                    if counts.get(result):
                        self.metrics.inc("syncengine_actions_total", counts[result],
                                         kind=kind, result=result)  # fmt: skip
            if report.run_id is not None:
                errors = sum(1 for a in self.repo.query_audit(run_id=report.run_id)
                             if a.call and a.result != "ok")  # fmt: skip
                self.metrics.inc("syncengine_api_errors_total", errors)
        return plan, report, bad

    def _plan_batch(
        self,
        base: _HookBase,
        overrides: dict[str, Person | None],
        targets: list[str],
        now: datetime,
        *,
        targeted: bool,
    ) -> tuple[Plan, dict[str, str]]:
        """The plan for ``targets`` and the employees refused adoption (see hooks.guard).

        ``targeted``: read only the people in play (:mod:`syncengine.service.targeted`;
        FullReadNeeded when that cannot be done safely), else the whole directory."""
        engine = self.engine
        provider = engine.provider
        read: TargetedRead | None = None
        scope = "full"
        if targeted and isinstance(provider, TargetedProvider):
            source: TargetedProvider = provider
            scope = "targeted"
            if provider.api == "v2" and len(targets) >= WHOLE_READ_FROM:
                source, scope = StateLookup(provider.read_state(), provider), "whole"
            # Only the links in play are loaded (all of them cost ~0.3 s at 10,000 people).
            read = TargetedRead(source, self.repo.load_links, self.repo.links_to,
                                self.repo.former_addresses())  # fmt: skip
            paths = (
                department_paths_in_play(base.view.departments, base.view.previous_departments)
                if base.view is not None
                else set()
            )
            read.start(overrides, targets, paths)
            state = read.state()
            read.people_in_play(targets)
            links = read.links
        else:
            state = provider.read_state()
            links = self.repo.load_links()
        self.metrics.inc("syncengine_hook_reads_total", scope=scope)
        # Hooks never adopt a mailbox the nightly sync leaves alone (see hooks.guard): those
        # records are left out of the plan and their events fail with the reason.
        refused = adoption_refusals(
            {e: p for e, p in overrides.items() if p is not None and e in targets},
            state.mailboxes, links, engine.policy.is_protected,
        )  # fmt: skip
        kept = {e: p for e, p in overrides.items() if e not in refused}
        if base.view is not None:
            desired = base.view.desired(kept)
        else:
            desired = Desired(people=tuple(p for _, p in sorted(kept.items()) if p))
        # Read each batch: a swap applied since the base was loaded must count already.
        former = read.former_addresses if read is not None else self.repo.former_addresses()
        desired = dataclasses.replace(desired, former_addresses=former)
        only = [t for t in targets if t not in refused]
        if read is not None:
            plan, state = plan_targeted(read, desired, only, engine.policy, now,
                                        config_fingerprint=engine.fingerprint)  # fmt: skip
            plan = judge_brakes(plan, desired, self.repo.count_links(), engine.policy)
        else:
            plan, state = diff_knowing_groups(
                provider, desired, state, links, engine.policy, now,
                config_fingerprint=engine.fingerprint, only=only,
            )  # fmt: skip
        return plan, refused

    # --- the schedule ---------------------------------------------------------------------

    def scheduled_sync(self) -> None:
        """The nightly job inside ``serve``: the same :func:`sync` as cron would run."""
        result = sync(self.engine, actor="schedule:serve")
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
    engine: Engine,
    *,
    host: str = "127.0.0.1",
    port: int = 8088,
    on_ready: Callable[[ServeStart], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Run the hook receiver, its worker and (with ``[hooks] schedule``) the nightly sync in
    this process until interrupted. Events stored before a restart are worked off at once."""
    import uvicorn  # here, not at the top: most commands never serve

    config = engine.config
    backend = HookBackend(engine)
    try:
        app: Any = with_review(create_hook_app(backend), review_backend(engine))
        if config.hooks.access_log:  # one line per request, no secrets, no bodies
            app = AccessLog(app, zone=config.timezone)
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
            zone = config.timezone  # the cron fires on the company's clock, not the host's
            scheduler = Scheduler(CronSchedule.parse(config.hooks.schedule),
                                  backend.scheduled_sync,
                                  clock=lambda: clock.local(engine.now(), zone))  # fmt: skip
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
            server = uvicorn.Server(server_config(app, serve_limits(config.hooks),
                                                 log_level=log_level))  # fmt: skip
            server.run(sockets=[sock])
        finally:
            sock.close()
            worker.stop()
            if scheduler is not None:
                scheduler.stop()
    finally:
        backend.close()
