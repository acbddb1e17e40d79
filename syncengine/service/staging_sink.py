"""The executor's sink over the staging database: checkpoints, audit rows, identity links and
owned groups, written through one group-commit writer (see :class:`StagingSink`)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime

from syncengine.domain import (
    IdentityLink,
    normalise_email,
)
from syncengine.executor import (
    AuditRecord,
    LinkChange,
)
from syncengine.executor import Status as ExecStatus
from syncengine.groups import OwnedGroup
from syncengine.plan import Action, GroupRecord, LinkRecord
from syncengine.staging.repository import (
    AuditEntry,
    GroupWriter,
    Merged,
    Repository,
)


class StagingSink:
    """The executor's :class:`~syncengine.executor.ExecutionSink` over the staging repository:
    checkpoints on ``plan_actions``, rows in ``audit_log``, links in ``identity_links``.

    Every write goes through one :class:`~syncengine.staging.repository.GroupWriter` (group
    commit: the writes the action threads make at the same moment share one transaction, and
    the checkpoints, links and outcomes among them are each one ``executemany``).
    ``start_action`` and ``finish_action`` return once their row is committed, so the intent
    is on disk before the call and the outcome after it. ``audit`` only keeps its rows: they
    are written in the same transaction as the action's final checkpoint and its identity-link
    change (all or nothing). Call :meth:`close` at the end of the run."""

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
        self._rows: dict[str, list[AuditEntry]] = {}  # audit rows waiting for their outcome
        self.writer = GroupWriter(repo)
        self._starts: Merged[tuple[int, bool], int] = Merged("starting actions", self._start)
        self._finishes: Merged[_Finish, None] = Merged("finishing actions", self._finish)
        self._batches: Merged[tuple[tuple[int, ...], bool], list[int]] = Merged(
            "starting batches of actions", self._start_batches
        )

    def close(self) -> None:
        """Commit whatever is still kept or queued and stop the writer thread."""
        with self._lock:
            left = [e for rows in self._rows.values() for e in rows]
            self._rows.clear()
        try:
            if left:  # rows of an action that never got its outcome (the run failed)
                self.writer.call(lambda: self.repo.append_audit_many(left))
        finally:
            self.writer.close()

    # --- the merged writes (run on the writer thread, inside its transaction) ------------

    def _start(self, items: list[tuple[int, bool]]) -> list[int]:
        attempts: dict[int, int] = {}
        for resuming in (False, True):
            seqs = [seq for seq, r in items if r is resuming]
            if seqs:
                counted = self.repo.start_actions_attempts(self.plan_id, seqs, resuming=resuming)
                attempts.update(zip(seqs, counted, strict=True))
        return [attempts[seq] for seq, _ in items]

    def _start_batches(self, items: list[tuple[tuple[int, ...], bool]]) -> list[list[int]]:
        counted = self._start([(seq, resuming) for seqs, resuming in items for seq in seqs])
        out: list[list[int]] = []
        at = 0
        for seqs, _resuming in items:
            out.append(counted[at : at + len(seqs)])
            at += len(seqs)
        return out

    def _finish(self, items: list[_Finish]) -> list[None]:
        """Links removed, links saved, audit rows, checkpoints: one statement each."""
        self.repo.delete_links([i.remove for i in items if i.remove is not None])
        links = [i.store for i in items if i.store is not None]
        if links:
            self.repo.save_links(links)
        rows = [e for item in items for e in item.rows]
        if rows:
            self.repo.append_audit_many(rows)
        self.repo.finish_actions(self.plan_id, [(i.seq, i.status, i.error) for i in items])
        return [None] * len(items)

    # --- the sink -----------------------------------------------------------------------

    def start_action(self, action: Action, *, resuming: bool) -> int:
        return self.start_action_later(action, resuming=resuming).result()

    def start_action_later(self, action: Action, *, resuming: bool) -> Future[int]:
        return self.writer.submit_merged(self._starts, (self.seqs[action.key], resuming))

    def start_actions_later(
        self, actions: Sequence[Action], *, resuming: bool
    ) -> Future[list[int]]:
        """:meth:`start_action_later` for a batch, as one write: the future resolves (with
        each action's count, in order) once all of them are committed."""
        seqs = tuple(self.seqs[a.key] for a in actions)
        return self.writer.submit_merged(self._batches, (seqs, resuming))

    def finish_action(
        self,
        action: Action,
        status: ExecStatus,
        error: str | None,
        *,
        link: LinkChange | None = None,
    ) -> None:
        self.finish_action_later(action, status, error, link=link).result()

    def finish_action_later(
        self,
        action: Action,
        status: ExecStatus,
        error: str | None,
        *,
        link: LinkChange | None = None,
    ) -> Future[None]:
        with self._lock:
            rows = tuple(self._rows.pop(action.key, ()))
        store = self._identity_link(link.store) if link and link.store else None
        remove = link.remove if link else None
        finish = _Finish(self.seqs[action.key], status.value, error, rows, store, remove)
        done = self.writer.submit_merged(self._finishes, finish)
        if remove is not None:
            done.add_done_callback(lambda fut: self._forget_link(fut, remove))
        return done

    def _forget_link(self, done: Future[None], employee_id: str) -> None:
        """A committed link removal: a later store of this employee is a first sighting."""
        if done.exception() is None:
            with self._lock:
                if self._links is not None:
                    self._links.pop(employee_id, None)

    def audit(self, records: Sequence[AuditRecord]) -> None:
        entries = [
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
        ]
        with self._lock:
            for entry in entries:
                self._rows.setdefault(entry.action_key or "", []).append(entry)

    def already_audited_done(self, action: Action) -> bool:
        with self._lock:
            if self._done_rows is None:
                self._done_rows = {
                    e.action_key
                    for e in self.repo.query_audit(plan_id=self.plan_id)
                    if e.action_key and e.call is None and e.result == ExecStatus.DONE.value
                }
            return action.key in self._done_rows

    def store_group(self, group: GroupRecord) -> None:
        owned = OwnedGroup(
            key=group.key,
            address=normalise_email(group.address),
            name=group.name,
            members=group.members,
            retiring_since=group.retiring_since,
            posting=group.posting,
            allow_list=group.allow_list,
        )
        self.writer.call(lambda: self.repo.save_group(owned))

    def remove_group(self, address: str) -> None:
        self.writer.call(lambda: self.repo.delete_group(normalise_email(address)))

    def _identity_link(self, link: LinkRecord) -> IdentityLink:
        with self._lock:  # the links as the run started (the run lock keeps others out)
            if self._links is None:
                self._links = {k: v.first_seen for k, v in self.repo.load_links().items()}
            first_seen = self._links.setdefault(link.employee_id, self.repo.now())
        return IdentityLink(
            employee_id=link.employee_id,
            email=normalise_email(link.email),
            first_seen=first_seen,
            disabled_since=link.disabled_since,
            generated=link.generated,
        )


@dataclass(frozen=True)
class _Finish:
    """One action's outcome checkpoint with the audit rows written alongside it."""

    seq: int
    status: str
    error: str | None
    rows: tuple[AuditEntry, ...]
    store: IdentityLink | None = None
    remove: str | None = None
