"""The staging side of the review pages of ``serve`` (issue 12): the plans waiting for a
decision, one plan's page data, and recording a decision, over :mod:`syncengine.approvals`
and :mod:`syncengine.review`. The pages themselves are :mod:`syncengine.hooks.review`."""

from __future__ import annotations

from typing import Any

from syncengine import approvals, plan_page, render, review
from syncengine.config import Config
from syncengine.errors import SyncEngineError
from syncengine.hooks.review import PlanView, ReviewSettings
from syncengine.plan import Plan, content_key


class StagingReviewBackend:
    """A :class:`~syncengine.hooks.review.ReviewBackend` over the staging database; each
    call opens and closes its own connection (the pages run in the server's thread pool)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        r = config.review
        self.settings = ReviewSettings(
            lang=r.lang,
            approvers={a.name: a.password_hash for a in r.approvers},
            secure_cookies=r.secure_cookies,
            session_minutes=r.session_minutes,
        )

    def pending(self) -> list[dict[str, Any]]:
        repo = review.open_repo(self.config)
        try:
            rows = []
            for record in approvals.waiting_plans(repo):
                plan = Plan.from_json(record.document, source=f"stored plan #{record.id}")
                latest = approvals.standing(repo, plan)
                t = render.totals(plan)
                rows.append(
                    {
                        "id": record.id,
                        "short": record.checksum[:12],
                        "created": plan_page.when(plan.created_at, self.config.review.zone),
                        "add": t["to create"],
                        "change": t["to change"],
                        "remove": t["to disable"] + t["to delete"],
                        "blocked": bool(plan.blocked_reasons),
                        "decision": f"{latest.decision} ({latest.approver})" if latest else "",
                    }
                )
            return rows
        finally:
            repo.close()

    def view(self, plan_id: int) -> PlanView | None:
        repo = review.open_repo(self.config)
        try:
            record = repo.load_plan(plan_id)
            if record is None:
                return None
            plan = Plan.from_json(record.document, source=f"stored plan #{record.id}")
            zone = self.config.review.zone
            return PlanView(
                plan=plan,
                context=review.context_for(self.config, repo, plan, plan_id=record.id),
                stale=approvals.staleness(repo, record),
                needs=approvals.approval_reason(self.config, plan),
                decisions=[
                    {
                        "decision": d.decision,
                        "approver": d.approver,
                        "at": plan_page.when(d.at, zone),
                        "checksum": d.checksum,
                        "comment": d.comment,
                    }
                    for d in approvals.decisions_on(repo, content_key(plan))
                ],
            )
        finally:
            repo.close()

    def decide(
        self, plan_id: int, *, user: str, decision: str, checksum: str, comment: str
    ) -> str | None:
        repo = review.open_repo(self.config)
        try:
            record = repo.load_plan(plan_id)
            if record is None:
                return f"there is no plan #{plan_id}"
            if checksum != record.checksum:
                return "the plan changed since this page was shown; reload it"
            approvals.decide(self.config, repo, record, decision=decision, approver=user,
                             comment=comment)  # fmt: skip
            return None
        except SyncEngineError as exc:
            return str(exc)
        finally:
            repo.close()


def review_backend(config: Config) -> StagingReviewBackend | None:
    """The review pages' backend, or None when no approver is configured (no pages)."""
    return StagingReviewBackend(config) if config.review.approvers else None
