"""Plans and their actions (the checkpoints an apply moves through)."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Update,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.dml import ReturningUpdate

from syncengine.errors import StagingError
from syncengine.staging.models import (
    PlanAction,
    PlanDocument,
    PlanRow,
)
from syncengine.staging.repository.bulk import BulkStatement
from syncengine.staging.repository.core import RepositoryCore
from syncengine.staging.repository.records import (
    ActionRecord,
    NewAction,
    PlanHeader,
    PlanRecord,
    chunks,
    first_line,
)
from syncengine.statuses import (
    ActionStatus,
    PlanStatus,
)

log = logging.getLogger(__name__)


@functools.cache
def _transition_statement(allowed: tuple[str, ...], starting: bool, finishing: bool) -> Update:
    """One checkpoint UPDATE per shape, built once with bound parameters only (no IN list to
    expand per call), so SQLAlchemy compiles it once and each call only binds values."""
    values: dict[str, Any] = {"status": bindparam("v_status")}
    if starting:
        values["attempts"] = PlanAction.attempts + 1
        values["started_at"] = bindparam("v_started")
    if finishing:
        values["finished_at"] = bindparam("v_finished")
        values["error"] = bindparam("v_error")
    return (
        update(PlanAction)
        .where(
            PlanAction.plan_id == bindparam("w_plan"),
            PlanAction.seq == bindparam("w_seq"),
            or_(*(PlanAction.status == bindparam(f"w_from{i}") for i in range(len(allowed)))),
        )
        .values(**values)
    )


@functools.cache
def _returning(allowed: tuple[str, ...], starting: bool, finishing: bool) -> ReturningUpdate[Any]:
    """:func:`_transition_statement` returning the changed row, also built once."""
    return _transition_statement(allowed, starting, finishing).returning(*PlanAction.__table__.c)


@functools.cache
def _bulk_transition(allowed: tuple[str, ...], starting: bool, finishing: bool) -> BulkStatement:
    """:func:`_transition_statement` as the group writer runs it: many rows at once."""
    return BulkStatement(_transition_statement(allowed, starting, finishing))


@functools.cache
def _attempts_by_seq(count: int) -> BulkStatement:
    """The attempts of ``count`` actions of one plan (``w_plan``, ``w_seq0``...): what a
    batch of start checkpoints answers, without reading (and decoding) the rest of their
    rows; one statement per batch size, compiled once."""
    return BulkStatement(
        select(PlanAction.seq, PlanAction.attempts).where(
            PlanAction.plan_id == bindparam("w_plan"),
            PlanAction.seq.in_([bindparam(f"w_seq{i}") for i in range(count)]),
        )
    )


@functools.cache
def _actions_by_seq() -> Select[Any]:
    """The rows of some actions of one plan (``w_plan``, ``w_seqs``), built once: the
    expanding IN list is bound per call, not rebuilt (and re-keyed for the cache)."""
    return select(PlanAction.__table__).where(
        PlanAction.plan_id == bindparam("w_plan"),
        PlanAction.seq.in_(bindparam("w_seqs", expanding=True)),
    )


def document_sha256(document: str | bytes) -> str:
    """sha256 of a plan document's UTF-8 text: of the plan file's bytes as written."""
    data = document.encode("utf-8") if isinstance(document, str) else document
    return hashlib.sha256(data).hexdigest()


def _plans() -> Select[Any]:
    """Saved plans with their documents (kept in their own table, see PlanDocument)."""
    return select(PlanRow.__table__, PlanDocument.document).join(
        PlanDocument, PlanDocument.plan_id == PlanRow.id
    )


class PlansRepository(RepositoryCore):
    """Plans and their actions (the checkpoints an apply moves through)."""

    # --- plans and actions --------------------------------------------------------------

    @staticmethod
    def _plan(row: Mapping[Any, Any]) -> PlanRecord:
        data = dict(row)
        data["block_reasons"] = tuple(data["block_reasons"] or ())
        return PlanRecord(**data)

    @staticmethod
    def _header(row: Mapping[Any, Any]) -> PlanHeader:
        data = dict(row)
        data["block_reasons"] = tuple(data["block_reasons"] or ())
        return PlanHeader(**data)

    @staticmethod
    def _action(row: Mapping[Any, Any]) -> ActionRecord:
        data = dict(row)
        data["depends_on"] = tuple(data["depends_on"] or ())
        return ActionRecord(**data)

    def save_plan(
        self,
        *,
        checksum: str,
        document: str,
        actions: Sequence[NewAction],
        run_id: int | None = None,
        config_fingerprint: str | None = None,
        state_fingerprint: str | None = None,
        blocked: bool = False,
        block_reasons: Sequence[str] = (),
    ) -> PlanRecord:
        """Store a plan and its actions (all pending), or return the plan already stored under
        this checksum untouched: applying the same reviewed plan again resumes it."""
        existing = self.plan_header(checksum)
        if existing is not None:
            return PlanRecord(**vars(existing), document=self.plan_document(existing.id))
        seqs = [a.seq for a in actions]
        if len(set(seqs)) != len(seqs):
            raise StagingError(f"plan {checksum[:12]}: two actions share a sequence number")
        try:
            with self._tx("saving a plan") as conn:
                plan_id = conn.execute(
                    insert(PlanRow)
                    .values(
                        created_at=self.now(),
                        run_id=run_id,
                        checksum=checksum,
                        config_fingerprint=config_fingerprint,
                        state_fingerprint=state_fingerprint,
                        blocked=blocked,
                        block_reasons=list(block_reasons),
                        status=PlanStatus.SAVED.value,
                    )
                    .returning(PlanRow.id)
                ).scalar_one()
                sha256 = document_sha256(document)
                conn.execute(
                    insert(PlanDocument).values(plan_id=plan_id, document=document, sha256=sha256)
                )
                for chunk in chunks(actions, self._batch):
                    conn.execute(
                        insert(PlanAction),
                        [
                            {
                                "plan_id": plan_id,
                                "seq": a.seq,
                                "action_key": a.action_key,
                                "kind": a.kind,
                                "target": a.target,
                                "employee_id": a.employee_id,
                                "depends_on": list(a.depends_on),
                                "status": ActionStatus.PENDING.value,
                                "attempts": 0,
                            }
                            for a in chunk
                        ],
                    )
        except IntegrityError as exc:
            again = self.load_plan(checksum)
            if again is not None:  # saved concurrently by another process
                return again
            raise StagingError(
                f"saving plan {checksum[:12]} failed: {first_line(exc)}",
                hint="action keys must be unique within a plan",
            ) from None
        saved = self.plan_header(int(plan_id))
        assert saved is not None
        return PlanRecord(**vars(saved), document=document)

    def load_plan(self, plan: int | str) -> PlanRecord | None:
        """A plan by id (int) or checksum (str), with its document."""
        cond = PlanRow.id == plan if isinstance(plan, int) else PlanRow.checksum == plan
        with self._tx("reading a plan") as conn:
            row = conn.execute(_plans().where(cond)).mappings().first()
        return self._plan(row) if row else None

    def plan_header(self, plan: int | str) -> PlanHeader | None:
        """A plan by id (int) or checksum (str), without reading its document."""
        cond = PlanRow.id == plan if isinstance(plan, int) else PlanRow.checksum == plan
        with self._tx("reading a plan") as conn:
            row = conn.execute(select(PlanRow.__table__).where(cond)).mappings().first()
        return self._header(row) if row else None

    def plan_of_document(self, sha256: str) -> PlanHeader | None:
        """The saved plan whose document's UTF-8 text hashes to ``sha256`` (see
        :func:`document_sha256`): the plan a file with these bytes is a copy of."""
        with self._tx("finding a plan by its document") as conn:
            row = (
                conn.execute(
                    select(PlanRow.__table__)
                    .join(PlanDocument, PlanDocument.plan_id == PlanRow.id)
                    .where(PlanDocument.sha256 == sha256)
                    .order_by(PlanRow.id)
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return self._header(row) if row else None

    def plan_document(self, plan_id: int) -> str:
        """The document of the saved plan ``plan_id``."""
        with self._tx("reading a plan document") as conn:
            document = conn.execute(
                select(PlanDocument.document).where(PlanDocument.plan_id == plan_id)
            ).scalar()
        if document is None:
            raise StagingError(f"plan #{plan_id} has no stored document")
        return str(document)

    def plans_with_checksum_prefix(self, prefix: str, *, limit: int = 2) -> list[PlanRecord]:
        """Stored plans whose checksum starts with ``prefix`` (lower-case hex), newest first."""
        with self._tx("finding a plan by checksum prefix") as conn:
            rows = conn.execute(
                _plans()
                .where(PlanRow.checksum.startswith(prefix, autoescape=True))
                .order_by(PlanRow.id.desc())
                .limit(limit)
            ).mappings()
            return [self._plan(r) for r in rows]

    def set_plan_status(self, plan_id: int, status: str) -> None:
        status = PlanStatus(status).value
        with self._tx("updating a plan") as conn:
            conn.execute(update(PlanRow).where(PlanRow.id == plan_id).values(status=status))

    def applied_plans(self, limit: int = 20) -> list[PlanRecord]:
        """Plans whose apply ran (status ``applied``, or ``failed`` for a partial apply) and that
        a plan run made (``run_id`` set), newest first."""
        statuses = [PlanStatus.APPLIED.value, PlanStatus.FAILED.value]
        with self._tx("listing applied plans") as conn:
            rows = conn.execute(
                _plans()
                .where(PlanRow.status.in_(statuses), PlanRow.run_id.is_not(None))
                .order_by(PlanRow.id.desc())
                .limit(limit)
            ).mappings()
            return [self._plan(r) for r in rows]

    def unfinished_plans(self) -> list[PlanRecord]:
        """Plans being applied (status ``applying``) with actions still pending or running,
        oldest first: what ``apply --resume`` (or the next run) must finish. A plan only saved
        (status ``saved``: made for review) is never listed, so it is never applied by accident.
        """
        open_action = exists().where(
            PlanAction.plan_id == PlanRow.id,
            PlanAction.status.in_([ActionStatus.PENDING.value, ActionStatus.RUNNING.value]),
        )
        with self._tx("listing unfinished plans") as conn:
            rows = conn.execute(
                _plans()
                .where(PlanRow.status == PlanStatus.APPLYING.value, open_action)
                .order_by(PlanRow.id)
            ).mappings()
            return [self._plan(r) for r in rows]

    def load_actions(self, plan_id: int) -> list[ActionRecord]:
        with self._tx("loading plan actions") as conn:
            rows = conn.execute(
                select(PlanAction.__table__)
                .where(PlanAction.plan_id == plan_id)
                .order_by(PlanAction.seq)
            ).mappings()
            return [self._action(r) for r in rows]

    def action_states(self, plan_id: int) -> list[tuple[str, int, str]]:
        """(action key, seq, status) of every action of a plan, in order: what an apply needs
        of its checkpoints (without decoding the other columns of 10,000 rows)."""
        with self._tx("loading plan action states") as conn:
            rows = conn.execute(
                select(PlanAction.action_key, PlanAction.seq, PlanAction.status)
                .where(PlanAction.plan_id == plan_id)
                .order_by(PlanAction.seq)
            )
            return [(str(key), int(seq), str(status)) for key, seq, status in rows]

    def pending_actions(self, plan_id: int) -> list[ActionRecord]:
        """Actions still to do, in order: ``pending`` ones, and ``running`` ones a killed run
        left behind (their outcome is unknown: look at the mailbox before redoing them)."""
        with self._tx("loading pending actions") as conn:
            rows = conn.execute(
                select(PlanAction.__table__)
                .where(
                    PlanAction.plan_id == plan_id,
                    PlanAction.status.in_([ActionStatus.PENDING.value, ActionStatus.RUNNING.value]),
                )
                .order_by(PlanAction.seq)
            ).mappings()
            return [self._action(r) for r in rows]

    def action_counts(self, plan_id: int) -> dict[str, int]:
        with self._tx("counting plan actions") as conn:
            rows = conn.execute(
                select(PlanAction.status, func.count())
                .where(PlanAction.plan_id == plan_id)
                .group_by(PlanAction.status)
            )
            return {status: int(n) for status, n in rows}

    def _transition(
        self,
        plan_id: int,
        seq: int,
        allowed_from: Sequence[ActionStatus],
        values: dict[str, Any],
    ) -> ActionRecord:
        allowed = tuple(s.value for s in allowed_from)
        shape = (allowed, "attempts" in values, "finished_at" in values)
        params: dict[str, Any] = {"w_plan": plan_id, "w_seq": seq, "v_status": values["status"]}
        params.update({f"w_from{i}": s.value for i, s in enumerate(allowed_from)})
        if "started_at" in values:
            params["v_started"] = values["started_at"]
        if "finished_at" in values:
            params["v_finished"] = values["finished_at"]
            params["v_error"] = values.get("error")
        with self._tx("checkpointing an action") as conn:
            if conn.dialect.update_returning:  # one statement: the update returns the row
                changed = conn.execute(_returning(*shape), params).mappings().first()
                if changed is not None:
                    return self._action(changed)
                won = False
            else:
                won = conn.execute(_transition_statement(*shape), params).rowcount == 1
            if not won:
                raise self._refusal(conn, plan_id, seq, values["status"])
            row = self._action_row(conn, plan_id, seq)
        return self._action(row)

    @staticmethod
    def _action_row(conn: Connection, plan_id: int, seq: int) -> Mapping[Any, Any]:
        row = conn.execute(_actions_by_seq(), {"w_plan": plan_id, "w_seqs": [seq]}).mappings()
        found = row.first()
        if found is None:
            raise StagingError(f"plan {plan_id} has no action {seq}")
        return found

    def _refusal(self, conn: Connection, plan_id: int, seq: int, status: str) -> StagingError:
        """Why action ``seq`` could not become ``status``: what it is and where it stands."""
        row = self._action_row(conn, plan_id, seq)
        return StagingError(
            f"plan {plan_id} action {seq} ({row['kind']} {row['target']}) is "
            f"{row['status']}; it cannot become {status}",
            hint="an action is never applied twice; plan again if it must be redone",
        )

    def start_action(self, plan_id: int, seq: int, *, resuming: bool = False) -> ActionRecord:
        """pending → running, attempts + 1, committed before the caller makes the API call.

        Only one caller can win that transition. An action a killed run left ``running`` is
        restarted only with ``resuming=True``: the caller says it has checked the mailbox (the
        first call's effect is unknown), and ``attempts`` counts the restart.
        """
        allowed = (
            (ActionStatus.PENDING, ActionStatus.RUNNING) if resuming else (ActionStatus.PENDING,)
        )
        return self._transition(
            plan_id,
            seq,
            allowed,
            {
                "status": ActionStatus.RUNNING.value,
                "attempts": True,  # attempts + 1, in the cached statement (see _transition)
                "started_at": self.now(),
            },
        )

    def finish_action(
        self, plan_id: int, seq: int, status: str, error: str | None = None
    ) -> ActionRecord:
        """running → done / failed / skipped; pending → skipped (a dependency failed)."""
        target = ActionStatus(status)
        if target is ActionStatus.SKIPPED:
            allowed: tuple[ActionStatus, ...] = (ActionStatus.PENDING, ActionStatus.RUNNING)
        elif target in (ActionStatus.DONE, ActionStatus.FAILED):
            allowed = (ActionStatus.RUNNING,)
        else:
            raise StagingError(f"finish_action: {status!r} is not a final status")
        return self._transition(
            plan_id,
            seq,
            allowed,
            {"status": target.value, "error": error, "finished_at": self.now()},
        )

    def start_actions(
        self, plan_id: int, seqs: Sequence[int], *, resuming: bool = False
    ) -> list[ActionRecord]:
        """:meth:`start_action` for many actions in one statement; the records in the order
        of ``seqs``. When one of them cannot start, nothing is changed and the error names
        it."""
        if len(seqs) <= 1 or len(set(seqs)) != len(seqs):
            return [self.start_action(plan_id, seq, resuming=resuming) for seq in seqs]
        with self._tx("checkpointing actions") as conn:
            self._start_many(conn, plan_id, seqs, resuming)
            rows = conn.execute(
                _actions_by_seq(), {"w_plan": plan_id, "w_seqs": list(seqs)}
            ).mappings()
            by_seq = {int(r["seq"]): self._action(r) for r in rows}
        return [by_seq[seq] for seq in seqs]

    def start_actions_attempts(
        self, plan_id: int, seqs: Sequence[int], *, resuming: bool = False
    ) -> list[int]:
        """:meth:`start_actions` answering only each action's ``attempts`` (the group
        writer's batch: the rest of the rows is not read back). A single action that cannot
        start is named with where it stands, as :meth:`start_action` names it."""
        if len(set(seqs)) != len(seqs):
            return [self.start_action(plan_id, seq, resuming=resuming).attempts for seq in seqs]
        if not seqs:
            return []
        with self._tx("checkpointing actions") as conn:
            self._start_many(conn, plan_id, seqs, resuming)
            params = {f"w_seq{i}": seq for i, seq in enumerate(seqs)}
            params["w_plan"] = plan_id
            rows = _attempts_by_seq(len(seqs)).rows(conn, params)
            attempts = {int(seq): int(n) for seq, n in rows}
        return [attempts[seq] for seq in seqs]

    def _start_many(
        self, conn: Connection, plan_id: int, seqs: Sequence[int], resuming: bool
    ) -> None:
        allowed = (
            (ActionStatus.PENDING, ActionStatus.RUNNING) if resuming else (ActionStatus.PENDING,)
        )
        shared: dict[str, Any] = {"w_plan": plan_id, "v_status": ActionStatus.RUNNING.value,
                                  "v_started": self.now()}  # fmt: skip
        shared.update({f"w_from{i}": s.value for i, s in enumerate(allowed)})
        statement = _bulk_transition(tuple(s.value for s in allowed), True, False)
        running = ActionStatus.RUNNING.value
        try:
            self._update_many(conn, statement, [{"w_seq": seq} for seq in seqs], shared,
                              plan_id, seqs, running)  # fmt: skip
        except StagingError:
            if len(seqs) > 1:
                raise
            # One action (nothing changed): name it and its state, as start_action.
            raise self._refusal(conn, plan_id, seqs[0], running) from None

    def finish_actions(self, plan_id: int, outcomes: Sequence[tuple[int, str, str | None]]) -> None:
        """:meth:`finish_action` for many ``(seq, status, error)`` at once: one statement per
        final status. When one of them cannot finish, nothing is changed."""
        seqs = [seq for seq, _status, _error in outcomes]
        if not outcomes or len(set(seqs)) != len(seqs):
            for seq, status, error in outcomes:
                self.finish_action(plan_id, seq, status, error)
            return
        now = self.now()
        by_status: dict[str, list[tuple[int, str | None]]] = {}
        for seq, status, error in outcomes:
            by_status.setdefault(ActionStatus(status).value, []).append((seq, error))
        with self._tx("checkpointing actions") as conn:
            for status, items in by_status.items():
                if status == ActionStatus.SKIPPED.value:
                    allowed: tuple[str, ...] = (ActionStatus.PENDING.value,
                                                ActionStatus.RUNNING.value)  # fmt: skip
                elif status in (ActionStatus.DONE.value, ActionStatus.FAILED.value):
                    allowed = (ActionStatus.RUNNING.value,)
                else:
                    raise StagingError(f"finish_action: {status!r} is not a final status")
                shared: dict[str, Any] = {"w_plan": plan_id, "v_status": status,
                                          "v_finished": now}  # fmt: skip
                shared.update({f"w_from{i}": s for i, s in enumerate(allowed)})
                rows = [{"w_seq": seq, "v_error": error} for seq, error in items]
                try:
                    self._update_many(conn, _bulk_transition(allowed, False, True), rows,
                                      shared, plan_id, [seq for seq, _ in items],
                                      status)  # fmt: skip
                except StagingError:
                    if len(outcomes) > 1:
                        raise
                    # One action (nothing changed): name it and its state, as finish_action.
                    raise self._refusal(conn, plan_id, outcomes[0][0], status) from None

    @staticmethod
    def _update_many(
        conn: Connection,
        statement: BulkStatement,
        rows: list[dict[str, Any]],
        shared: dict[str, Any],
        plan_id: int,
        seqs: Sequence[int],
        status: str,
    ) -> None:
        """One checkpoint UPDATE as executemany; every row must change (else StagingError,
        and the caller's transaction is rolled back: the single-row path then names it)."""
        if not conn.dialect.supports_sane_multi_rowcount:
            for one in rows:
                if statement.run(conn, [one], shared) != 1:
                    raise StagingError(
                        f"plan {plan_id} action {one['w_seq']} cannot become {status}"
                    )
            return
        changed = statement.run(conn, rows, shared)
        if changed != len(rows):
            raise StagingError(
                f"plan {plan_id}: {len(rows) - changed} of the actions "
                f"{', '.join(map(str, seqs[:10]))} cannot become {status}",
                hint="an action is never applied twice; plan again if it must be redone",
            )

    def reset_actions(self, plan_id: int, statuses: Sequence[str] = ("failed", "skipped")) -> int:
        """Put failed/skipped actions back to pending so that a retry of the plan runs them."""
        wanted = [ActionStatus(s).value for s in statuses]
        if ActionStatus.DONE.value in wanted:
            raise StagingError("done actions are never reset: they would be applied twice")
        with self._tx("resetting plan actions") as conn:
            result = conn.execute(
                update(PlanAction)
                .where(PlanAction.plan_id == plan_id, PlanAction.status.in_(wanted))
                .values(status=ActionStatus.PENDING.value, finished_at=None)
            )
            return int(result.rowcount)
