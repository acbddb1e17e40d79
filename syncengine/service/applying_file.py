"""``apply PLANFILE``: the plan file read under the run lock, recognised as a saved plan's
exact copy, decoded while the live directory is read for the stale-plan check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from syncengine.plan import Plan, Release
from syncengine.service.applying import (
    APPLY_LOCK,
    ApplyOutcome,
    apply_locked,
    check_plan,
    lock_command,
)
from syncengine.service.early_read import EarlyRead
from syncengine.service.engine import Engine
from syncengine.service.plan_file import no_collection, plan_file_bytes, utf8_text
from syncengine.staging.repository import Repository, document_sha256
from syncengine.statuses import PlanStatus


def apply_plan_file(
    engine: Engine,
    path: str | Path,
    *,
    checksum: str | None = None,
    allow_removals: int | None = None,
    allow_updates: int | None = None,
    force: bool = False,
    actor: str = "cli",
    progress: Callable[[int, int], None] | None = None,
    after_decode: Callable[[Plan], None] | None = None,
) -> ApplyOutcome:
    """:func:`read_plan_file` then :func:`apply_plan`, with the same checks and refusals,
    under the run lock taken before the file is decoded.

    When the file's bytes are the document of a plan ``plan`` saved (same sha256) and not yet
    applied: its stored checksum is taken once the file states it (the body is not hashed
    again, see :meth:`Plan.from_json`), and on Gen 2 the live directory is read for the
    stale-plan check while the file decodes, instead of after it. That read is not used when
    plans an interrupted run left were finished first (they wrote: the directory is read
    again). ``after_decode(plan)`` is called once the plan is decoded, before the garbage
    collector resumes: a process that keeps the plan to the end can freeze the heap then (the
    first collection after the decode would otherwise walk every object of the plan)."""
    release = Release(allow_removals=allow_removals, allow_updates=allow_updates, force=force)
    early: EarlyRead | None = None
    if engine.config.exmail.api == "v2" and engine.seen_state is None:
        early = EarlyRead(engine, start=False)  # reads once the file is known (below)
    repo: Repository | None = None
    try:
        data = plan_file_bytes(path)
        repo = engine.repo
        repo.acquire_lock(APPLY_LOCK, command=lock_command(actor))
    except BaseException:
        if early is not None:
            early.close()
        raise
    try:
        stored = repo.plan_of_document(document_sha256(data))
        if early is not None:  # a whole Gen 2 read is two calls; only for a plan to apply
            early.start(stored is not None and stored.status == PlanStatus.SAVED)
        with no_collection():  # after_decode runs before collections resume (see the doc)
            plan = Plan.from_saved_copy(data, stored.checksum) if stored is not None else None
            if plan is None:
                plan = Plan.from_json(utf8_text(data, path), source=str(path))
            del data
            if after_decode is not None:
                after_decode(plan)
        check_plan(engine, plan, checksum, release)
        return apply_locked(engine, plan, release, actor=actor, progress=progress, early=early)
    finally:
        if early is not None:
            early.close()  # never outlives the lock (nor the engine)
        repo.release_lock(APPLY_LOCK)
