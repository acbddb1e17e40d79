"""What ``apply`` checks about a plan before and while it writes (issue 12), kept out of the
service so each check is one call there: the reviewed checksum (a prefix of at least 12 hex
characters, as the plan page shows it), the engine's signature, the brakes under the current
policy, and the per-action guard of :mod:`syncengine.guard`.
"""

from __future__ import annotations

from collections.abc import Callable

from syncengine import guard, signing
from syncengine.config import Config
from syncengine.errors import PlanBlockedError, PlanError
from syncengine.plan import Action, Plan, Release, checksum_prefix_error
from syncengine.policy_config import policy_from_config
from syncengine.staging.repository import Repository


def check_reviewed_checksum(plan: Plan, given: str | None) -> None:
    """Refuse unless ``given`` (when given) is the plan's checksum or a prefix of at least
    12 hex characters of it."""
    if given is None:
        return
    problem = checksum_prefix_error(given)
    if problem is not None:
        raise PlanError(
            problem,
            where="--checksum",
            hint="copy the checksum the plan shows (12 characters or all 64)",
        )
    wanted = given.strip().lower()
    if not plan.checksum.startswith(wanted):
        raise PlanError(
            f"the plan's checksum is {plan.checksum}, not the reviewed {wanted}",
            where="--checksum",
            hint="apply the exact file that was reviewed, or review this one",
        )


def verify_signature(config: Config, plan: Plan) -> None:
    """Refuse a plan this engine did not sign as it is (an edited file), before any write."""
    signing.verify_plan(plan, signing.plan_key(config), source=f"plan {plan.checksum[:12]}")


def ground(config: Config, repo: Repository) -> guard.Ground:
    """The current policy, domains and identity links the guard judges actions against."""
    policy = policy_from_config(config)
    links = repo.link_emails()  # the addresses only: no dates to convert
    domains = frozenset(d.lower() for d in config.exmail.domains) | {policy.domain.lower()}
    return guard.Ground(policy=policy, domains=domains, links=links)


def check_brakes(plan: Plan, current: guard.Ground, release: Release) -> None:
    """Refuse a plan the current brakes block and the release does not lift, whatever brake
    findings the plan itself lists."""
    findings = guard.apply_brakes(plan, current.policy, len(current.links))
    left = [r for r in findings if not r.released_by(release)]
    if left:
        text = "; ".join(f"{r.message} — {r.how_to_release}" for r in left)
        raise PlanBlockedError(
            f"plan blocked at apply by {len(left)} brake(s) of the current policy: {text}",
            where=f"plan {plan.checksum[:12]}",
        )


def action_guard(current: guard.Ground) -> Callable[[Action], str | None]:
    """The executor's per-action check under ``current``."""
    return lambda action: guard.refusal(action, current)


def check_approval(config: Config, repo: Repository, plan: Plan) -> None:
    """Refuse a plan the approval policy holds until an approver signs it off."""
    from syncengine import approvals

    record = repo.plan_header(plan.checksum)
    approvals.require_approval(config, repo, plan, plan_id=record.id if record else None)
