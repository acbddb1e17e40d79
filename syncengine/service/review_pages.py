"""Plan review over the engine: ``show`` and ``plan --out`` rendering a stored plan, the
``plan --only`` check, and the staging side of the review pages of ``serve`` (the plans
waiting for a decision, one plan's page data, recording a decision), over
:mod:`syncengine.approvals` and :mod:`syncengine.review`. The pages themselves are
:mod:`syncengine.hooks.review`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syncengine import approvals, plan_page, render, review
from syncengine.errors import SyncEngineError
from syncengine.hooks.review import PlanView, ReviewSettings
from syncengine.plan import Plan, Release, content_key
from syncengine.service.engine import Engine


def show_plan(engine: Engine, ref: str, fmt: str, *, lang: str | None = None) -> str:
    """``syncengine show``: a stored plan (file, id or checksum prefix) in any format."""
    return review.show(engine.config, engine.repo, ref, fmt, lang=lang)


def render_plan(
    engine: Engine,
    plan: Plan,
    fmt: str,
    *,
    plan_id: int | None,
    release: Release | None = None,
    lang: str | None = None,
) -> str:
    """``plan`` as text, json, html or summary, with the names, quarantine reasons, language
    and time zone the staging database and the config give it."""
    return review.render_stored(
        engine.config, engine.repo, plan, fmt, plan_id=plan_id, release=release, lang=lang
    )


def check_only(engine: Engine, employee_ids: Sequence[str]) -> None:
    """Refuse ``plan --only`` ids that are unknown or quarantined (see :mod:`.review`)."""
    review.check_only(engine.repo, employee_ids)


class StagingReviewBackend:
    """A :class:`~syncengine.hooks.review.ReviewBackend` over the engine's repository (each
    repository call is its own transaction; the pages run in the server's thread pool)."""

    def __init__(self, engine: Engine) -> None:
        config = engine.config
        self.engine = engine
        self.config = config
        r = config.review
        self.settings = ReviewSettings(
            lang=r.lang,
            approvers={a.name: a.password_hash for a in r.approvers},
            secure_cookies=r.secure_cookies,
            session_minutes=r.session_minutes,
        )

    def pending(self) -> list[dict[str, Any]]:
        repo = self.engine.repo
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

    def view(self, plan_id: int) -> PlanView | None:
        repo = self.engine.repo
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

    def decide(
        self, plan_id: int, *, user: str, decision: str, checksum: str, comment: str
    ) -> str | None:
        repo = self.engine.repo
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


def review_backend(engine: Engine) -> StagingReviewBackend | None:
    """The review pages' backend, or None when no approver is configured (no pages)."""
    return StagingReviewBackend(engine) if engine.config.review.approvers else None
