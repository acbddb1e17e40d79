"""Planning: the desired state from the snapshot, the live state from Exmail, the saved Plan."""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncengine import clock, hookfacts, planner, render, signing
from syncengine.config import Config
from syncengine.connectors.mapping import DepartmentTable, build_department_table
from syncengine.domain import (
    AddressKind,
    Department,
    IdentityLink,
    MailboxState,
    Person,
    UnidentifiedRow,
    normalise_email,
    path_name,
)
from syncengine.errors import (
    StagingError,
)
from syncengine.freshness import SnapshotAge
from syncengine.holds import from_snapshot_counts
from syncengine.plan import Plan, Release, for_tenant
from syncengine.planner import Desired
from syncengine.policy import (
    AppliedPlanRun,
    Policy,
    SnapshotSize,
    last_good_snapshot,
    shrink_baseline,
)
from syncengine.providers.base import MailboxProvider
from syncengine.service.address_checks import (
    EarlyChecks,
    known_addresses,
    likely_new_addresses,
    likely_new_by_links,
)
from syncengine.service.background import Background
from syncengine.service.engine import Engine
from syncengine.service.groups import add_groups
from syncengine.staging import db as staging_db
from syncengine.staging.repository import (
    NewAction,
    PlanRecord,
    Repository,
    SnapshotInfo,
)
from syncengine.statuses import RunKind, RunStatus

log = logging.getLogger(__name__)

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
    snapshot_age: SnapshotAge | None = None

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
            "snapshot": self.snapshot_age.to_dict() if self.snapshot_age else None,
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


SHRINK_WINDOW = 400
"""How many snapshots back the shrink brake looks at most for its baseline."""


def _snapshot_size(s: SnapshotInfo) -> SnapshotSize:
    people, quarantined = s.counts.get("people"), s.counts.get("quarantined", 0)
    return SnapshotSize(
        id=s.id,
        complete=s.status == "complete",
        people=people if isinstance(people, int) else None,
        quarantined=quarantined if isinstance(quarantined, int) else 0,
    )


def _applied_plan_runs(repo: Repository) -> Iterator[AppliedPlanRun]:
    """Applied plans (newest first) with what their plan run recorded, typed."""
    for record in repo.applied_plans():
        run = repo.get_run(record.run_id) if record.run_id is not None else None
        summary = run.summary if run is not None and isinstance(run.summary, dict) else {}
        snapshot_id = summary.get("snapshot_id")
        yield AppliedPlanRun(
            snapshot_id=snapshot_id if isinstance(snapshot_id, int) else None,
            targeted=bool(summary.get("targeted")),
        )


def _shrink_baseline(repo: Repository, current: SnapshotInfo) -> int | None:
    """:func:`syncengine.policy.shrink_baseline` over this database's snapshots and plans."""
    good = last_good_snapshot(list(_applied_plan_runs(repo)))
    earlier = [_snapshot_size(s) for s in repo.list_snapshots(limit=SHRINK_WINDOW, since_id=good)]
    return shrink_baseline(earlier, current.id, good)


def _previous_departments(
    repo: Repository, current: SnapshotInfo, current_departments: Sequence[Department]
) -> tuple[int | None, tuple[Department, ...]]:
    """The shrink brake's baseline size and the departments of the last few complete
    snapshots (for move detection and "managed").

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


@dataclass(frozen=True)
class SnapshotView:
    """The current snapshot as the planner needs it, loaded in one place for the nightly plan
    and the hook worker alike: the people by employee id and the rest of :class:`Desired`."""

    snapshot: SnapshotInfo
    people: dict[str, Person]
    departments: tuple[Department, ...]
    quarantined: frozenset[str]
    previous_size: int | None
    previous_departments: tuple[Department, ...]
    former_addresses: Mapping[str, frozenset[str]] = dataclasses.field(default_factory=dict)
    held_reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    unidentified: tuple[UnidentifiedRow, ...] = ()

    def desired(
        self,
        overrides: Mapping[str, Person | None] | None = None,
        held: Mapping[str, str] | None = None,
    ) -> Desired:
        """The desired state; ``overrides`` lays hook records over the snapshot's (None: the
        person is taken out), and an overridden person is no longer quarantined; ``held``
        notes the hook facts kept against the export (``hook_held`` conflicts)."""
        people = self.people
        quarantined = self.quarantined
        if overrides:
            people = dict(people)
            for eid, person in overrides.items():
                if person is None:
                    people.pop(eid, None)
                else:
                    people[eid] = person
            quarantined = quarantined - set(overrides)
        return Desired(
            people=tuple(people[k] for k in sorted(people))
            if overrides
            else tuple(people.values()),
            departments=self.departments,
            quarantined=quarantined,
            previous_size=self.previous_size,
            previous_departments=self.previous_departments,
            former_addresses=self.former_addresses,
            held_reasons=self.held_reasons,
            unidentified=self.unidentified,
            held=dict(held or {}),
        )


def load_snapshot_view(repo: Repository, snapshot: SnapshotInfo) -> SnapshotView:
    """Everything the planner needs of ``snapshot`` (and of the snapshots before it)."""
    departments = repo.load_departments(snapshot.id)
    previous_size, previous_departments = _previous_departments(repo, snapshot, departments)
    quarantined = snapshot.counts.get("quarantined_ids") or []
    held_reasons, unidentified = from_snapshot_counts(snapshot.counts)
    return SnapshotView(
        snapshot=snapshot,
        people={p.employee_id: p for p in repo.load_people_bulk(snapshot.id)},
        departments=tuple(departments),
        quarantined=frozenset(str(e) for e in quarantined),
        previous_size=previous_size,
        previous_departments=previous_departments,
        former_addresses=repo.former_addresses(),
        held_reasons=held_reasons,
        unidentified=unidentified,
    )


def former_employees(
    repo: Repository,
    current: SnapshotInfo,
    desired: Desired,
    state: MailboxState,
    links: Mapping[str, IdentityLink],
) -> frozenset[str]:
    """The ext_ids of unlinked mailboxes that an earlier complete snapshot had as people and
    the current one no longer has: those mailboxes belong to leavers (issue 10), not to
    nobody. Only the few candidate ids are looked up, in the last few snapshots."""
    in_hr = {p.employee_id for p in desired.people} | desired.quarantined | set(links)
    candidates = {m.ext_id for m in state.mailboxes if m.ext_id and m.ext_id not in in_hr}
    if not candidates:
        return frozenset()
    found: set[str] = set()
    for snap in repo.list_snapshots(limit=PREVIOUS_SNAPSHOTS_FOR_MOVES * 4 + 1):
        if snap.id < current.id and snap.status == "complete":
            found.update(p.employee_id for p in repo.load_people(snap.id, candidates - found))
    return frozenset(found)


def department_table(config: Config, repo: Repository, snapshot: SnapshotInfo | None
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


def hook_facts(
    engine: Engine, view: SnapshotView, now: datetime
) -> tuple[dict[str, Person | None], dict[str, str]]:
    """The hook facts the snapshot's export cannot overrule, laid over its people (records
    to replace; None: taken out), and the held notes (see :mod:`syncengine.hookfacts`).
    Events that no longer map are left to the hook worker, which fails them with the reason."""
    config = engine.config
    as_of = view.snapshot.as_of
    events = engine.repo.events_since(hookfacts.live_since(as_of, config.hooks.settle))
    if not events:
        return {}, {}
    laid = hookfacts.overlay(
        config, view.people, events, as_of=as_of,
        table=department_table(config, engine.repo, view.snapshot),
        today=clock.company_today(now, config.timezone),
    )  # fmt: skip
    return dict(laid.people), dict(laid.held)


def current_snapshot(engine: Engine) -> SnapshotInfo:
    """The current HR snapshot; none yet is a StagingError that says to ingest first."""
    snapshot = engine.repo.current_snapshot()
    if snapshot is None:
        raise StagingError(
            "there is no HR snapshot yet, so there is nothing to plan against",
            where=staging_db.display_url(engine.config.database_url),
            hint="run 'syncengine ingest' first",
        )
    return snapshot


GROUP_CHECK_ROUNDS = 4
"""How many times a plan is redone at most because a new address turned out to be a group."""


def _addresses_to_create(
    plan: Plan, state: MailboxState, known: Collection[str] | None = None
) -> set[str]:
    """Every address the plan would make exist that the state does not know yet (``known``:
    :func:`~syncengine.service.address_checks.known_addresses` of ``state``, when the caller
    has it)."""
    found: set[str] = set()
    for a in plan.actions:
        if a.mailbox is not None:
            found.add(a.mailbox.email)
            found.update(a.mailbox.aliases)
        if a.alias:
            found.add(a.alias)
        if a.update is not None and a.update.aliases:
            found.update(a.update.aliases)
    found = {normalise_email(x) for x in found}
    if not found:
        return found
    # Built only when the plan adds an address: it holds every address of the directory.
    if known is None:
        known = known_addresses(state)
    return {a for a in found if a not in known}


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
    progress: Callable[[str, int, int | None], None] | None = None,
    early: EarlyChecks | None = None,
    known: set[str] | None = None,
) -> tuple[Plan, MailboxState]:
    """:func:`planner.diff`, corrected for mail groups, which no Exmail API can list.

    The addresses the plan would create are checked with Exmail (Gen 1 ``user/check``, Gen 2
    ``user/batchcheck``, 20 a call); those that are groups join ``state.groups`` and the plan
    is made again, so an HR address owned by a group is a conflict in the plan (and a generated
    one takes the next free form) instead of a failed create at apply. Returns the plan and
    the state it was made from. ``progress("checking addresses", done, total)`` before and
    after each round of checks.

    ``early``: checks started before the diff (see :mod:`syncengine.service.address_checks`);
    their answers are used for the addresses the plan creates, the rest is checked after it.
    An address is checked once per call, whatever the rounds. ``known``: the addresses of
    ``state`` (:func:`~syncengine.service.address_checks.known_addresses`), if the caller has
    them.
    """
    try:
        plan = planner.diff(desired, state, links, policy, now,
                            config_fingerprint=config_fingerprint, only=only)  # fmt: skip
    except BaseException:
        if early is not None:
            early.wait()  # the provider is not left to a thread; the diff's error is raised
        raise
    kinds = early.result() if early is not None else {}
    known = set(known) if known is not None else known_addresses(state)
    for _ in range(GROUP_CHECK_ROUNDS):
        new = _addresses_to_create(plan, state, known)
        if not new:
            break
        if progress is not None:
            progress("checking addresses", 0, len(new))
        missing = sorted(a for a in new if a not in kinds)
        if missing:
            got = provider.check_addresses(missing)
            kinds.update((normalise_email(a), k) for a, k in got.items())
        if progress is not None:
            progress("checking addresses", len(new), len(new))
        groups = {a for a in new if kinds.get(a) is AddressKind.GROUP}
        if not groups:
            break
        log.info("addresses owned by mail groups, planned around: %s", ", ".join(sorted(groups)))
        state = dataclasses.replace(state, groups=tuple(sorted({*state.groups, *groups})))
        known.update(groups)
        plan = planner.diff(desired, state, links, policy, now,
                            config_fingerprint=config_fingerprint, only=only)  # fmt: skip
    return plan, state


def save_plan(repo: Repository, plan: Plan, run_id: int | None = None) -> PlanRecord:
    """Store ``plan`` with one checkpoint row per action (seq = 1-based plan order)."""
    return repo.save_plan(
        checksum=plan.checksum,
        document=plan.to_json(),
        actions=checkpoint_rows(plan)[0],
        run_id=run_id,
        config_fingerprint=plan.config_fingerprint,
        state_fingerprint=plan.state_fingerprint,
        blocked=bool(plan.blocked_reasons),
        block_reasons=[f"{r.brake}: {r.message}" for r in plan.blocked_reasons],
    )


def checkpoint_rows(plan: Plan) -> tuple[list[NewAction], dict[str, int]]:
    """The plan's actions as checkpoint rows, and each key's seq (1-based plan order)."""
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


FULL_COLLECTION_EVERY = 1000
"""While a plan is made: a full (oldest-generation) collection after this many collections of
the middle one, instead of Python's 10."""
_bulk_lock = threading.Lock()
_bulk_depth = 0
_bulk_saved: tuple[int, int, int] = (0, 0, 0)


@contextmanager
def bulk_objects() -> Iterator[None]:
    """Make full garbage collections rare while a plan is made; restore the thresholds after.

    Planning builds a few hundred thousand long-lived, acyclic objects (people, mailboxes,
    links, the planner's indexes). Python runs a full collection each time the long-lived
    objects grew by a quarter, and each walks all of them: a third of the planner's time at
    100,000 people, for nothing to collect. The young generations are still collected as
    usual, so the short-lived cycles (HTTP, SQL) are freed: pausing the collector altogether
    was as fast but kept 20 MiB more at the peak. Nested and concurrent uses (the hook
    worker) restore the thresholds when the last one leaves.
    """
    global _bulk_depth, _bulk_saved
    with _bulk_lock:
        if _bulk_depth == 0:
            _bulk_saved = gc.get_threshold()
            young, middle, full = _bulk_saved
            gc.set_threshold(young, middle, max(full, FULL_COLLECTION_EVERY))
        _bulk_depth += 1
    try:
        yield
    finally:
        with _bulk_lock:
            _bulk_depth -= 1
            if _bulk_depth == 0:
                gc.set_threshold(*_bulk_saved)


def make_plan(
    engine: Engine,
    *,
    only: Sequence[str] | None = None,
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    progress: Callable[[str, int, int | None], None] | None = None,
    now: datetime | None = None,
    actor: str = "cli",
    read: tuple[MailboxState, float] | None = None,
) -> PlanResult:
    """Plan the changes that make Exmail follow the current HR snapshot, and save the plan.

    Reads the current snapshot, the identity links and the previous snapshots from staging,
    the live directory through the provider (``progress("reading mailboxes", done, total)``),
    runs the pure :func:`syncengine.planner.diff` and stores the plan (also when a brake blocks
    it: a blocked plan is kept and shown). ``only`` plans for the named employees alone, with
    explanations. ``allow_removals`` / ``allow_updates`` / ``force`` are the operator's release;
    they do not change the plan, only whether it counts as blocked (``PlanResult.blocked``).
    No snapshot yet is a StagingError that says to run ``syncengine ingest``. ``read``: the
    live state and the seconds its read took, when the caller has just read it (the nightly
    sync, see :mod:`syncengine.service.noop_proof`); else it is read here.
    """
    started = time.perf_counter()
    now = clock.local(now or engine.now(), engine.config.timezone)  # shown with its offset
    release = Release(allow_removals=allow_removals, allow_updates=allow_updates, force=force)
    repo = engine.repo
    snapshot = current_snapshot(engine)
    with bulk_objects(), engine.run(RunKind.PLAN, actor) as run:

        def read_progress(done: int, total: int | None) -> None:
            if progress is not None:
                progress("reading mailboxes", done, total)

        # The live state is read in a thread while the snapshot and the links are loaded:
        # most of a big read is waiting for Exmail's answer, and the loads fill that time.
        # The provider is the thread's until it is joined (also when a load fails).
        provider = engine.provider
        # A caller that read the state already (the nightly run's early read) passes it.
        reading = (
            None
            if read is not None
            else Background(lambda: provider.read_state(progress=read_progress), "read-state")
        )
        early: EarlyChecks | None = None
        today = engine.policy.today(now)
        try:
            view = load_snapshot_view(repo, snapshot)
            desired = view.desired(*hook_facts(engine, view, now))
            links = repo.load_links()
            if reading is not None and only is None and provider.api == "v2":
                # Gen 2 reads the directory in two calls: the address changes are checked, at
                # the pace, while Exmail answers. Gen 1's read is paced member by member:
                # checks queued among its calls would only delay it.
                pre = likely_new_by_links(desired, links, engine.policy, today)
                early = EarlyChecks(provider.check_addresses, pre)
            if reading is not None:
                state, read_seconds = reading.result(), reading.seconds
            else:
                assert read is not None
                state, read_seconds = read
        except BaseException:
            if reading is not None:  # the provider is not left to a thread
                reading.wait()
            if early is not None:
                early.wait()
            raise
        if progress is not None:
            progress("planning", len(view.people), None)
        diff_started = time.perf_counter()
        # The addresses the plan will probably create are checked (paced calls) while the
        # diff runs, started first: at 1% changes in 100,000 people their pace (1.4 s) is
        # as long as the diff. A targeted plan checks what it creates after it, as before.
        known = known_addresses(state)
        if only is None:
            guess = likely_new_addresses(desired, state, links, engine.policy, today, known)
            early = EarlyChecks(provider.check_addresses, guess, before=early)
        try:
            former = former_employees(repo, snapshot, desired, state, links)
        except BaseException:
            if early is not None:
                early.wait()  # the provider is not left to a thread
            raise
        desired = dataclasses.replace(desired, former=former)
        plan, state = diff_knowing_groups(
            provider,
            desired,
            state,
            links,
            engine.policy,
            now,
            config_fingerprint=engine.fingerprint,
            only=list(only) if only is not None else None,
            progress=progress,
            early=early,
            known=known,
        )
        if only is None:  # a targeted plan (--only) is about people, not groups
            plan = add_groups(engine, plan, desired, state, links, now)
        diff_seconds = time.perf_counter() - diff_started
        plan = for_tenant(plan, engine.config.tenant)
        plan = signing.sign_plan(plan, signing.plan_key(engine.config))
        engine.remember_state(plan.state_fingerprint)
        record = save_plan(repo, plan, run.id)
        mentioned = {a.employee_id for a in plan.actions if a.employee_id}
        mentioned |= set(plan.explanations)
        names = {eid: view.people[eid].name for eid in mentioned if eid in view.people}
        result = PlanResult(
            plan=plan,
            plan_id=record.id,
            run_id=run.id,
            snapshot_id=snapshot.id,
            release=release,
            names=names,
            mailboxes=len(state.mailboxes),
            read_seconds=read_seconds,
            diff_seconds=diff_seconds,
            seconds=time.perf_counter() - started,
            snapshot_age=SnapshotAge(
                snapshot.id, snapshot.created_at, snapshot.as_of, now, snapshot.source,
                hookfacts.export_time(engine.config.source.options, engine.config.base_dir)
                if engine.config.source else None,
            ),
        )  # fmt: skip
        run.finish(
            RunStatus.BLOCKED if result.blocked else RunStatus.SUCCEEDED,
            {
                **plan.summary,
                "plan_id": record.id,
                "checksum": plan.checksum,
                "snapshot_id": snapshot.id,
                "targeted": only is not None,
            },
        )
        return result
