"""Plan sign-off (issue 12): approvers approve or reject a saved plan; the approval policy
decides which plans ``apply`` and the scheduled run may execute only once approved.

Every decision is a row of ``plan_approvals`` and an audit row (``kind`` ``approve_plan`` or
``reject_plan``, ``actor`` ``approver:<name>``, the plan id, the checksum as target, the
comment as the message). A decision is refused for a plan this engine did not sign as it is
(edited in the database), for one that is no longer waiting (applied, abandoned, being
applied), and for a stale one: a newer plan exists that was made against another directory
state or config. An approval covers the plan's *content* (:func:`syncengine.plan.content_key`),
so the same changes planned again by the nightly run against the same state are covered.

Policy (``[review] require_approval``): ``never``; ``removals``: plans that disable or delete
mailboxes (or have ``approval_min_actions`` actions or more); ``always``: every plan with
changes. A plan that needs one and has no standing approval is refused by ``apply`` with
:class:`ApprovalRequiredError`, which the nightly run reports as blocked, "waiting for
approval", and notifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select

from syncengine import signing
from syncengine.config import Config
from syncengine.errors import PlanBlockedError, PlanError
from syncengine.plan import Plan, content_key
from syncengine.staging.models import PlanApproval, PlanRow
from syncengine.staging.repository import AuditEntry, PlanRecord, Repository

APPROVED = "approved"
REJECTED = "rejected"
WAITING_STATUS = "saved"


class ApprovalRequiredError(PlanBlockedError):
    """The approval policy holds this plan until an approver signs it off."""


@dataclass(frozen=True)
class Decision:
    id: int
    plan_id: int
    checksum: str
    decision: str
    approver: str
    comment: str
    at: datetime
    content_key: str = ""


def approval_reason(config: Config, plan: Plan) -> str | None:
    """Why the policy wants an approval for this plan (None: it does not)."""
    review = config.review
    if review.require_approval == "never" or not plan.actions:
        return None
    if review.require_approval == "always":
        return "every plan with changes needs an approval ([review] require_approval = always)"
    if plan.removal_count:
        return f"the plan disables or deletes {plan.removal_count} mailbox(es)"
    if review.approval_min_actions is not None and len(plan.actions) >= review.approval_min_actions:
        return (
            f"the plan has {len(plan.actions)} actions, at least "
            f"[review] approval_min_actions = {review.approval_min_actions}"
        )
    return None


def decisions(repo: Repository, plan_id: int | None = None) -> list[Decision]:
    """Decisions, newest first (of one plan when ``plan_id`` is given)."""
    query = select(PlanApproval.__table__).order_by(PlanApproval.id.desc())
    if plan_id is not None:
        query = query.where(PlanApproval.plan_id == plan_id)
    with repo.engine.connect() as conn:
        return [Decision(**dict(r)) for r in conn.execute(query).mappings()]


def decisions_on(repo: Repository, key: str) -> list[Decision]:
    """Every decision on plans with this content key, newest first."""
    query = (
        select(PlanApproval.__table__)
        .where(PlanApproval.content_key == key)
        .order_by(PlanApproval.id.desc())
    )
    with repo.engine.connect() as conn:
        return [Decision(**dict(r)) for r in conn.execute(query).mappings()]


def waiting_plans(repo: Repository, limit: int = 20) -> list[PlanRecord]:
    """Saved plans with changes made by a plan run, newest first: what approvers look at."""
    query = (
        select(PlanRow.id)
        .where(PlanRow.status == WAITING_STATUS, PlanRow.run_id.is_not(None))
        .order_by(PlanRow.id.desc())
        .limit(limit)
    )
    with repo.engine.connect() as conn:
        ids = list(conn.execute(query).scalars())
    out = []
    for plan_id in ids:
        record = repo.load_plan(int(plan_id))
        if record is not None and '"actions": []' not in record.document:
            out.append(record)
    return out


def standing(repo: Repository, plan: Plan) -> Decision | None:
    """The latest decision on this plan's content (approved or rejected), if any."""
    query = (
        select(PlanApproval.__table__)
        .where(PlanApproval.content_key == content_key(plan))
        .order_by(PlanApproval.id.desc())
        .limit(1)
    )
    with repo.engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    return Decision(**dict(row)) if row else None


def staleness(repo: Repository, record: PlanRecord) -> str | None:
    """Why a decision on this stored plan would be stale (None: it is current)."""
    if record.status != WAITING_STATUS:
        return f"plan #{record.id} is {record.status}, no longer waiting for a decision"
    query = (
        select(PlanRow.id)
        .where(
            PlanRow.id > record.id,
            PlanRow.run_id.is_not(None),
            (PlanRow.state_fingerprint != record.state_fingerprint)
            | (PlanRow.config_fingerprint != record.config_fingerprint),
        )
        .order_by(PlanRow.id.desc())
        .limit(1)
    )
    with repo.engine.connect() as conn:
        newer = conn.execute(query).scalar()
    if newer is not None:
        return (
            f"plan #{record.id} is stale: plan #{newer} was made later against another "
            "directory state or configuration"
        )
    return None


def decide(
    config: Config,
    repo: Repository,
    record: PlanRecord,
    *,
    decision: str,
    approver: str,
    comment: str,
    now: datetime | None = None,
) -> Decision:
    """Record ``approver``'s decision on the stored plan, after checking it is this engine's
    plan as signed and still current; also an audit row."""
    if decision not in (APPROVED, REJECTED):
        raise PlanError(f"unknown decision {decision!r}", where="decision")
    where = f"plan #{record.id}"
    plan = Plan.from_json(record.document, source=where)  # refuses a checksum mismatch
    if plan.checksum != record.checksum:
        raise PlanError("the stored plan's checksum is not the one it was saved under", where=where)
    signing.verify_plan(plan, signing.plan_key(config), source=where)
    stale = staleness(repo, record)
    if stale is not None:
        raise PlanError(stale, where=where, hint="review the newest plan instead")
    at = now or datetime.now(UTC)
    text = comment.strip()[:2000]
    with repo.engine.begin() as conn:
        new_id = conn.execute(
            insert(PlanApproval)
            .values(
                plan_id=record.id,
                checksum=plan.checksum,
                content_key=content_key(plan),
                decision=decision,
                approver=approver,
                comment=text,
                at=at,
            )
            .returning(PlanApproval.id)
        ).scalar_one()
    repo.append_audit(
        AuditEntry(
            result=decision,
            at=at,
            actor=f"approver:{approver}",
            plan_id=record.id,
            kind="approve_plan" if decision == APPROVED else "reject_plan",
            target=plan.checksum,
            errmsg=text or None,
        )
    )
    return Decision(
        int(new_id), record.id, plan.checksum, decision, approver, text, at, content_key(plan)
    )


def require_approval(config: Config, repo: Repository, plan: Plan, *, plan_id: int | None) -> None:
    """Refuse, before any write, a plan the policy holds and no approver has approved."""
    reason = approval_reason(config, plan)
    if reason is None:
        return
    latest = standing(repo, plan)
    if latest is not None and latest.decision == APPROVED:
        return
    ref = f"#{plan_id} " if plan_id is not None else ""
    if latest is not None:
        state = f"rejected by {latest.approver} ({latest.comment or 'no comment'})"
    else:
        state = "waiting for approval"
    raise ApprovalRequiredError(
        f"plan {ref}({plan.checksum[:12]}) is {state}: {reason}",
        where=f"plan {plan.checksum[:12]}",
        hint="an approver signs it off in the review pages of 'syncengine serve' "
        f"(/review/plans/{plan_id if plan_id is not None else 'ID'})",
    )
