"""A quiet night, proved: the last empty plan stands again when none of its inputs changed.

The planner (:func:`syncengine.service.planning.make_plan`) is a function of its inputs: the
current HR snapshot (people, departments, quarantined and held rows), what it takes from the
snapshots before it (the shrink baseline, earlier departments, former employees), the identity
links, the former addresses, live hook facts, the directory as read from Exmail, the config,
the code, and the company's calendar day. When a nightly ``sync`` makes a plan with no action
and no brake, :func:`remember` stores a digest of all of those (:func:`inputs_key`) with the
plan's id and the plan's *horizon*: the first day on which a date rule could answer otherwise
(:func:`syncengine.plan_horizon.plan_horizon`). The next night, :func:`attempt` reads the
directory (that read is needed anyway) and computes the same digest from what is stored, without
loading a single person record; when it is equal and today is inside the horizon, the plan is
provably the same plan again: it is re-made from the stored one with this run's time, signed,
saved and reported exactly as a planned one (``PlanResult``), and the diff is skipped.

Not proved (the full planner runs): no memo yet, the config has ``[groups]`` (their retirement
window and the adoption reads are not covered), hook facts are live, the directory or anything
stored changed, the day is outside the memo's days. Anything unexpected in the memo itself also
just means "plan as usual".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from syncengine import clock, hookfacts, signing
from syncengine.domain import MailboxState
from syncengine.freshness import SnapshotAge
from syncengine.holds import from_snapshot_counts
from syncengine.plan import Plan, Release, compute_checksum
from syncengine.plan_horizon import plan_horizon
from syncengine.service.early_read import EarlyRead
from syncengine.service.engine import Engine
from syncengine.service.ingest import DIGEST_KEY, code_fingerprint
from syncengine.service.planning import (
    PREVIOUS_SNAPSHOTS_FOR_MOVES,
    PlanResult,
    current_snapshot,
    save_plan,
)
from syncengine.staging.repository import Repository, SnapshotInfo
from syncengine.statuses import RunKind, RunStatus

log = logging.getLogger(__name__)

MEMO_CURSOR = "sync.unchanged"
"""The ``watch_state`` row holding the memo of the last empty nightly plan (JSON)."""

MEMO_VERSION = 1


@dataclass(frozen=True)
class Memo:
    """The last empty plan and what it was a function of."""

    key: str
    plan_id: int
    today: date  # the company day it was made on
    horizon: date | None  # the first day a date rule could change it (None: never)
    candidates: tuple[str, ...]  # ext_ids of unlinked mailboxes not in HR (former employees?)

    def to_json(self) -> str:
        return json.dumps({
            "version": MEMO_VERSION, "key": self.key, "plan_id": self.plan_id,
            "today": self.today.isoformat(),
            "horizon": self.horizon.isoformat() if self.horizon else None,
            "candidates": list(self.candidates),
        }, sort_keys=True)  # fmt: skip

    @classmethod
    def from_json(cls, text: str | None) -> Memo | None:
        """The memo, or None for none (an empty or foreign value, another version)."""
        if not text:
            return None
        try:
            d = json.loads(text)
            if d.get("version") != MEMO_VERSION:
                return None
            return cls(
                key=str(d["key"]),
                plan_id=int(d["plan_id"]),
                today=date.fromisoformat(d["today"]),
                horizon=date.fromisoformat(d["horizon"]) if d["horizon"] else None,
                candidates=tuple(str(c) for c in d["candidates"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring an unreadable no-op memo (%s)", MEMO_CURSOR)
            return None


@dataclass(frozen=True)
class Attempt:
    """What :func:`attempt` found: the live state it read (for the planner when not proved)
    and the proved plan, or why there is none."""

    read: tuple[MailboxState, float]
    result: PlanResult | None
    why_not: str | None


def not_provable(engine: Engine, snapshot: SnapshotInfo) -> str | None:
    """Why no proof can be made for this config and snapshot, or None."""
    config = engine.config
    if config.groups is not None:
        return "the config has [groups]"
    since = hookfacts.live_since(snapshot.as_of, config.hooks.settle)
    if engine.repo.events_since(since):
        return "hook facts are live"
    return None


def former_found(repo: Repository, current: SnapshotInfo, candidates: Collection[str]) -> list[str]:
    """Which ``candidates`` an earlier complete snapshot had as people: the lookup of
    :func:`syncengine.service.planning.former_employees`, over the same snapshots."""
    found: set[str] = set()
    if not candidates:
        return []
    scan = PREVIOUS_SNAPSHOTS_FOR_MOVES * 4 + 1
    for snap_id in repo.earlier_complete_snapshots(current.id, scan=scan, keep=scan):
        found.update(p.employee_id for p in repo.load_people(snap_id, set(candidates) - found))
    return sorted(found)


def inputs_key(
    engine: Engine, snapshot: SnapshotInfo, state: MailboxState, candidates: Collection[str]
) -> str:
    """sha256 of everything the nightly plan is a function of apart from the day (see the
    module docstring), read from storage as digests: no person record is decoded."""
    repo = engine.repo
    window = repo.earlier_complete_snapshots(
        snapshot.id, scan=PREVIOUS_SNAPSHOTS_FOR_MOVES * 4 + 1, keep=PREVIOUS_SNAPSHOTS_FOR_MOVES
    )
    held, unidentified = from_snapshot_counts(snapshot.counts)
    source = snapshot.counts.get(DIGEST_KEY)
    parts: dict[str, Any] = {
        "version": MEMO_VERSION,
        "code": code_fingerprint(),
        "config": engine.fingerprint,
        # A snapshot read from a fingerprinted source is a function of that digest (the
        # same proof the ingest's copy rests on); any other is digested row by row.
        "snapshot": f"source:{source}" if source else repo.snapshot_digest(snapshot.id),
        "quarantined": sorted(str(e) for e in snapshot.counts.get("quarantined_ids") or []),
        "held": sorted(held.items()),
        "unidentified": [u.to_dict() for u in unidentified],
        # The planner reads earlier departments as a set: HR id -> path in path order, and
        # every path (a nightly copy of the same departments adds nothing to either). The
        # shrink baseline is left out: it feeds only the brakes, and every brake needs an
        # action, so it cannot change a plan without actions (tests/unit/test_noop_inputs.py).
        "previous_departments": sorted(repo.department_keys(window)),
        "former_addresses": sorted((k, sorted(v)) for k, v in repo.former_addresses().items()),
        "former": former_found(repo, snapshot, candidates),
        "links": repo.links_digest(),
        "state": state.fingerprint(),
        "parties": sorted((p.path, p.id if p.id is not None else -1) for p in state.parties),
        "groups": sorted(state.groups),
    }
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_live(
    engine: Engine, progress: Callable[[str, int, int | None], None] | None
) -> tuple[MailboxState, float]:
    """The directory as Exmail has it now, and the seconds the read took."""

    def read_progress(done: int, total: int | None) -> None:
        if progress is not None:
            progress("reading mailboxes", done, total)

    started = time.perf_counter()
    state = engine.provider.read_state(progress=read_progress)
    return state, time.perf_counter() - started


def attempt(
    engine: Engine,
    *,
    release: Release,
    actor: str,
    now: datetime | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    early: EarlyRead | None = None,
) -> Attempt:
    """Read the directory (or take the ``early`` read), then prove this night's plan is the
    remembered empty one: the proved plan is saved (with its plan run) like a planned one;
    else ``result`` is None and the caller plans with ``read``."""
    started = time.perf_counter()
    read = early.result(progress) if early is not None else read_live(engine, progress)
    now = clock.local(now or engine.now(), engine.config.timezone)
    repo = engine.repo
    snapshot = current_snapshot(engine)
    memo = Memo.from_json(repo.get_cursor(MEMO_CURSOR))
    state, read_seconds = read
    today = engine.policy.today(now)

    def no(why: str) -> Attempt:
        log.info("planning in full: %s", why)
        return Attempt(read, None, why)

    if memo is None:
        return no("no empty plan to compare with")
    why = not_provable(engine, snapshot)
    if why is not None:
        return no(why)
    if today < memo.today or (memo.horizon is not None and today >= memo.horizon):
        return no(f"a date rule may answer otherwise on {today} (memo of {memo.today})")
    if inputs_key(engine, snapshot, state, memo.candidates) != memo.key:
        return no("an input of the plan changed")
    stored = repo.load_plan(memo.plan_id)
    if stored is None:
        return no(f"plan #{memo.plan_id} is gone")
    plan = Plan.from_json(stored.document, source=f"plan #{memo.plan_id}")
    if plan.has_changes or plan.blocked_reasons:
        return no(f"plan #{memo.plan_id} is not empty")
    plan = dataclasses.replace(plan, created_at=now, signature="", checksum="")
    plan = dataclasses.replace(plan, checksum=compute_checksum(plan))
    plan = signing.sign_plan(plan, signing.plan_key(engine.config))
    with engine.run(RunKind.PLAN, actor) as run:
        engine.remember_state(plan.state_fingerprint)
        record = save_plan(repo, plan, run.id)
        result = PlanResult(
            plan=plan, plan_id=record.id, run_id=run.id, snapshot_id=snapshot.id,
            release=release, names={}, mailboxes=len(state.mailboxes),
            read_seconds=read_seconds, diff_seconds=0.0, seconds=time.perf_counter() - started,
            snapshot_age=SnapshotAge(
                snapshot.id, snapshot.created_at, snapshot.as_of, now, snapshot.source,
                hookfacts.export_time(engine.config.source.options, engine.config.base_dir)
                if engine.config.source else None,
            ),
        )  # fmt: skip
        run.finish(RunStatus.SUCCEEDED, {
            **plan.summary, "plan_id": record.id, "checksum": plan.checksum,
            "snapshot_id": snapshot.id, "targeted": False, "proved_unchanged": True,
        })  # fmt: skip
    log.info("nothing changed since plan #%s: proved without planning again", memo.plan_id)
    return Attempt(read, result, None)


def remember(engine: Engine, result: PlanResult, state: MailboxState) -> bool:
    """After a full nightly plan: remember it when it is empty (no action, no brake) and a
    proof can be made for it; else forget any earlier memo. Returns whether it remembered."""
    repo = engine.repo
    plan = result.plan
    snapshot = repo.get_snapshot(result.snapshot_id)
    if (
        plan.has_changes
        or plan.blocked_reasons
        or snapshot is None
        or not_provable(engine, snapshot) is not None
    ):
        if repo.get_cursor(MEMO_CURSOR):
            repo.set_cursor(MEMO_CURSOR, "")
        return False
    people = repo.load_people_bulk(snapshot.id)
    links = repo.load_links()
    quarantined = {str(e) for e in snapshot.counts.get("quarantined_ids") or []}
    in_hr = {p.employee_id for p in people} | quarantined | set(links)
    candidates = sorted({m.ext_id for m in state.mailboxes if m.ext_id and m.ext_id not in in_hr})
    today = engine.policy.today(plan.created_at)
    memo = Memo(
        key=inputs_key(engine, snapshot, state, candidates),
        plan_id=result.plan_id,
        today=today,
        horizon=plan_horizon(people, links.values(), engine.policy, today),
        candidates=tuple(candidates),
    )
    repo.set_cursor(MEMO_CURSOR, memo.to_json())
    return True
