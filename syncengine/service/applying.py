"""Applying a reviewed plan: checkpoints, audit, resume, the stale-plan check."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncengine import enforcement
from syncengine.apply_config import DEFAULT_PASSWORD_FILE
from syncengine.config import Config
from syncengine.errors import (
    PlanError,
    StagingError,
    StalePlanError,
)
from syncengine.executor import (
    Executor,
    NoPasswordDelivery,
    PasswordSink,
)
from syncengine.executor import Status as ExecStatus
from syncengine.handover import HandoverSink
from syncengine.passwords import FilePasswordDelivery
from syncengine.plan import ActionKind, Plan, Release
from syncengine.service.engine import Engine
from syncengine.service.plan_file import decode_plan
from syncengine.service.staging_sink import StagingSink
from syncengine.staging.repository import (
    PlanHeader,
    Repository,
)
from syncengine.statuses import ActionStatus, PlanStatus, RunKind, RunStatus

if TYPE_CHECKING:
    from syncengine.service.early_read import EarlyRead
    from syncengine.service.planning import PlanResult

log = logging.getLogger(__name__)

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
    retries: int = 0
    resumed: bool = False
    password_file: str | None = None
    passwords_delivered: int = 0
    passwords_handed_over: int = 0
    handover_errors: tuple[str, ...] = ()

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
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "password_file": self.password_file,
            "passwords_delivered": self.passwords_delivered,
            "passwords_handed_over": self.passwords_handed_over,
            "handover_errors": list(self.handover_errors),
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


def password_file_path(config: Config) -> Path:
    """Where ``delivery = "file"`` writes: ``[passwords] path``, else next to the SQLite
    database file, else next to the config file."""
    if config.passwords.path:
        return config.resolve_path(config.passwords.path)
    return config.beside_database(DEFAULT_PASSWORD_FILE)


def _execute_stored(
    engine: Engine,
    record: PlanHeader,
    plan: Plan,
    *,
    actor: str,
    resumed: bool,
    progress: Callable[[int, int], None] | None,
    stored: list[tuple[str, int, str]] | None = None,
) -> ApplyReport:
    """Run (or finish) one stored plan under the lock already held: checkpoints decide what
    is left (``stored``: its action states, read under this lock, else read now); the run,
    the plan status and the password file are kept up to date."""
    started = time.perf_counter()
    config, repo = engine.config, engine.repo
    engine.forget_state()  # whatever happens next, the directory is no longer what was read
    if stored is None:
        stored = repo.action_states(record.id)
    seqs = {key: seq for key, seq, _ in stored}
    missing = [a.key for a in plan.actions if a.key not in seqs]
    if missing:
        raise StagingError(
            f"plan #{record.id} has {len(missing)} action(s) without a checkpoint row "
            f"(first: {missing[0]})",
            hint="the stored plan is inconsistent; make a new plan",
        )
    statuses = {key: status for key, _, status in stored}
    repo.set_plan_status(record.id, PlanStatus.APPLYING)
    calls_before = engine.calls.stats.snapshot()
    with engine.run(RunKind.APPLY, actor) as run:
        run.failure = {"plan_id": record.id}
        sink = StagingSink(repo, record.id, seqs, run.id, actor)
        file_sink: FilePasswordDelivery | None = None
        passwords: PasswordSink = NoPasswordDelivery()
        if config.passwords.delivery == "file":
            file_sink = FilePasswordDelivery(password_file_path(config), run_id=run.id)
            passwords = file_sink
        handover: HandoverSink | None = None
        if config.passwords.handover is not None:  # also to the new hire, after the creates
            on_sent = file_sink.handed_over if file_sink else None
            handover = HandoverSink(passwords, config.passwords.handover, on_handed_over=on_sent)
            passwords = handover
        try:
            executor = Executor(
                engine.provider,
                sink,
                passwords=passwords,
                settings=engine.settings,
                calls=engine.calls,
                department_exists=engine.department_exists,
                sleep=engine.sleep,
                progress=progress,
                guard=enforcement.action_guard(enforcement.ground(config, repo)),
            )
            result = executor.run(plan, statuses)
            if handover is not None:
                made = ActionKind.CREATE_USER.value
                handover.flush({o.target.lower() for o in result.outcomes
                                if o.kind == made and o.status is ExecStatus.DONE})  # fmt: skip
        finally:
            sink.close()
            if file_sink is not None:
                file_sink.close()
        final = repo.action_counts(record.id)
        open_left = final.get(ActionStatus.PENDING, 0) + final.get(ActionStatus.RUNNING, 0)
        bad = final.get(ActionStatus.FAILED, 0) + final.get(ActionStatus.SKIPPED, 0)
        plan_status = (
            PlanStatus.APPLYING if open_left else (PlanStatus.FAILED if bad else PlanStatus.APPLIED)
        )
        repo.set_plan_status(record.id, plan_status)
        failures = tuple(
            ApplyFailure(o.key, o.kind, o.target, o.employee_id, o.status.value, o.detail)
            for o in result.failures
        )
        counts = {**result.counts(), "actions": len(plan.actions)}
        calls = engine.calls.stats.snapshot().since(calls_before)
        run.finish(
            RunStatus.PARTIAL if failures or open_left else RunStatus.SUCCEEDED,
            {**counts, "plan_id": record.id, "checksum": plan.checksum,
             "calls": calls.total_requests, "retries": calls.total_retries},
        )  # fmt: skip
    delivered = file_sink.delivered if file_sink else 0
    return ApplyReport(
        plan_id=record.id,
        run_id=run.id,
        checksum=plan.checksum,
        status="failed" if failures else "applied",
        counts=counts,
        failures=failures,
        calls=calls.total_requests,
        retries=calls.total_retries,
        seconds=time.perf_counter() - started,
        resumed=resumed,
        password_file=str(file_sink.path) if file_sink and delivered else None,
        passwords_delivered=delivered,
        passwords_handed_over=handover.sent if handover else 0,
        handover_errors=tuple(handover.errors) if handover else (),
    )


def _resume_unfinished(
    engine: Engine, *, actor: str, progress: Callable[[int, int], None] | None
) -> list[ApplyReport]:
    reports = []
    for record in engine.repo.unfinished_plans():
        plan = decode_plan(record.document, source=f"stored plan #{record.id}")
        log.warning(
            "resuming plan #%s (%s), left unfinished by an earlier run",
            record.id,
            plan.checksum[:12],
        )
        reports.append(
            _execute_stored(engine, record, plan, actor=actor, resumed=True, progress=progress)
        )
    return reports


def lock_command(actor: str) -> str:
    return f"syncengine apply ({actor})"


def resume_apply(
    engine: Engine,
    *,
    actor: str = "cli",
    progress: Callable[[int, int], None] | None = None,
) -> ApplyOutcome:
    """``apply --resume``: finish every plan an interrupted apply left (oldest first), under
    the run lock. Done actions are not repeated; actions left ``running`` are checked against
    the live directory before being redone. Nothing to resume is not an error."""
    repo = engine.repo
    repo.acquire_lock(APPLY_LOCK, command=lock_command(actor))
    try:
        reports = _resume_unfinished(engine, actor=actor, progress=progress)
    finally:
        repo.release_lock(APPLY_LOCK)
    return ApplyOutcome(resumed=tuple(reports), applied=None)


def apply_plan(
    engine: Engine,
    plan: Plan,
    *,
    checksum: str | None = None,
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    actor: str = "cli",
    progress: Callable[[int, int], None] | None = None,
) -> ApplyOutcome:
    """Apply exactly this reviewed plan.

    Refused before any write (PlanError / PlanBlockedError / StalePlanError / LockHeldError)
    when: ``checksum`` is given and is not the plan's; the plan was made under another config;
    a brake blocks it and the release (``allow_removals`` / ``allow_updates`` / ``force``) does
    not lift it; another apply holds the run lock; or the live mailbox state moved since the
    plan was made. The live state is read again for that check, unless this engine made the
    plan from a state it read itself and nothing was written since (``sync``, the demo, a
    hook's targeted sync: on Gen 1 a whole read is one call per member). Plans an interrupted
    run left are finished first. A plan already applied is not applied again. Failed actions
    are in the report (the CLI exits 4); they fail only their dependants.
    """
    release = Release(allow_removals=allow_removals, allow_updates=allow_updates, force=force)
    check_plan(engine, plan, checksum, release)
    repo = engine.repo
    repo.acquire_lock(APPLY_LOCK, command=lock_command(actor))
    try:
        return apply_locked(engine, plan, release, actor=actor, progress=progress, early=None)
    finally:
        repo.release_lock(APPLY_LOCK)


def check_plan(engine: Engine, plan: Plan, checksum: str | None, release: Release) -> None:
    """The refusals that need no lock: the reviewed checksum, the tenant, the config, the
    plan's own brakes and the engine's signature."""
    enforcement.check_reviewed_checksum(plan, checksum)
    tenant = engine.config.tenant or ""
    if plan.tenant != tenant:
        raise PlanError(
            f"the plan was made for {_tenant_words(plan.tenant)}, this is {_tenant_words(tenant)}",
            where=f"plan {plan.checksum[:12]}",
            hint=f"apply it with --tenant {plan.tenant}"
            if plan.tenant
            else "make a new plan for this tenant: syncengine plan",
        )
    if plan.config_fingerprint != engine.fingerprint:
        raise PlanError(
            f"the plan was made under another configuration (config fingerprint "
            f"{plan.config_fingerprint[:12]}, this config is {engine.fingerprint[:12]})",
            where=f"plan {plan.checksum[:12]}",
            hint="make a new plan with this configuration: syncengine plan",
        )
    plan.raise_if_unsafe(release)
    enforcement.verify_signature(engine.config, plan)


def apply_locked(
    engine: Engine,
    plan: Plan,
    release: Release,
    *,
    actor: str,
    progress: Callable[[int, int], None] | None,
    early: EarlyRead | None,
) -> ApplyOutcome:
    """:func:`apply_plan` once its lock-free checks passed, under the run lock."""
    repo = engine.repo
    enforcement.check_brakes(plan, enforcement.ground(engine.config, repo), release)
    enforcement.check_approval(engine.config, repo, plan)
    resumed = _resume_unfinished(engine, actor=actor, progress=progress)
    record = repo.plan_header(plan.checksum)
    if record is not None and record.status == PlanStatus.APPLYING:
        # Killed after its last action but before the plan was marked: close it.
        counts = repo.action_counts(record.id)
        if not counts.get(ActionStatus.PENDING) and not counts.get(ActionStatus.RUNNING):
            bad = counts.get(ActionStatus.FAILED, 0) + counts.get(ActionStatus.SKIPPED, 0)
            repo.set_plan_status(record.id, PlanStatus.FAILED if bad else PlanStatus.APPLIED)
            record = repo.plan_header(record.id)
    if record is not None and record.status in (PlanStatus.APPLIED, PlanStatus.FAILED):
        return ApplyOutcome(resumed=tuple(resumed), applied=_already_applied(repo, record, plan))
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
    # Read while the early state read may still be in flight (no write happens before both).
    states = repo.action_states(record.id) if record is not None else None
    live = engine.seen_state
    if live != plan.state_fingerprint:
        if early is not None and early.was_read and not resumed:  # under this lock, no write since
            live = early.result()[0].fingerprint()
        else:
            live = engine.provider.read_state().fingerprint()
    if live != plan.state_fingerprint:
        if record is not None:
            repo.set_plan_status(record.id, PlanStatus.ABANDONED)
        raise StalePlanError(
            "stale plan: the Exmail directory changed since the plan was made "
            f"(state {plan.state_fingerprint[:12]} then, {live[:12]} now); "
            "nothing was written",
            where=f"plan {plan.checksum[:12]}",
            hint="run `syncengine plan` again and review the new plan",
        )
    if record is None:  # `plan` stored it already, else store it now (to_json is slow)
        from syncengine.service.planning import save_plan  # (planning's imports: 12 ms)

        record = save_plan(repo, plan)
    report = _execute_stored(engine, record, plan, actor=actor, resumed=False, progress=progress,
                             stored=states)  # fmt: skip
    return ApplyOutcome(resumed=tuple(resumed), applied=report)


def plan_and_apply(
    engine: Engine,
    *,
    confirm: Callable[[ApplyOutcome, PlanResult], bool],
    actor: str = "cli",
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PlanResult, ApplyOutcome | None]:
    """``apply`` without a plan file: finish what an interrupted apply left, plan now, and
    apply that plan if ``confirm(earlier, plan)`` agrees (it is not asked when there is
    nothing to apply or a brake blocks the plan: the apply then refuses by itself). Returns
    the plan and the outcome (resumed plans included), None when the operator declined."""
    release: dict[str, Any] = {
        "allow_removals": allow_removals,
        "allow_updates": allow_updates,
        "force": force,
    }
    earlier = resume_apply(engine, actor=actor, progress=progress)
    from syncengine.service.planning import make_plan

    result = make_plan(engine, actor=actor, **release)
    plan = result.plan
    if plan.has_changes and not result.blocked and not confirm(earlier, result):
        return result, None
    outcome = apply_plan(
        engine, plan, checksum=plan.checksum, actor=actor, progress=progress, **release
    )
    return result, ApplyOutcome(
        resumed=(*earlier.resumed, *outcome.resumed), applied=outcome.applied
    )


def _already_applied(repo: Repository, record: PlanHeader, plan: Plan) -> ApplyReport:
    """A plan applied before: report it, write nothing (a plan is never applied twice)."""
    counts = repo.action_counts(record.id)
    failures = tuple(
        ApplyFailure(a.action_key, a.kind, a.target, a.employee_id or "", a.status, a.error or "")
        for a in repo.load_actions(record.id)
        if a.status in (ActionStatus.FAILED, ActionStatus.SKIPPED)
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


def _tenant_words(tenant: str) -> str:
    return f"tenant {tenant!r}" if tenant else "a single-company config"
