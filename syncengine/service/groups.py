"""The group part of a plan: HR departments -> owned mail groups (:mod:`syncengine.groups`).

Wires the pure group planner to the staging ledger and the provider. No Exmail API lists
groups, so the only Exmail call made here is one ``user/check`` / ``user/batchcheck`` round
for the addresses of the groups the plan would create (none on a night with no new group).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

from syncengine.domain import AddressKind, IdentityLink, MailboxState, normalise_email
from syncengine.groups import GroupPlan, plan_groups, with_groups
from syncengine.plan import ActionKind, Plan
from syncengine.planner import Desired
from syncengine.service.engine import Engine

log = logging.getLogger(__name__)


def _taken(state: MailboxState) -> set[str]:
    taken = {normalise_email(m.email) for m in state.mailboxes}
    taken |= {normalise_email(a) for m in state.mailboxes for a in m.aliases}
    taken |= {normalise_email(g) for g in state.groups}
    return taken


def add_groups(
    engine: Engine,
    plan: Plan,
    desired: Desired,
    state: MailboxState,
    links: Mapping[str, IdentityLink],
    now: datetime,
) -> Plan:
    """``plan`` with the group actions, conflicts and brake of ``[groups]`` (unchanged when
    the config has no ``[groups]`` table)."""
    config = engine.config.groups
    if config is None:
        return plan
    rules = config.rules(engine.provider.api)
    owned = engine.repo.load_groups()
    today = engine.policy.today(now)
    taken = _taken(state)
    held = {links[e].email for e in desired.quarantined if e in links}
    held |= {h.email for h in plan.held}

    def run() -> GroupPlan:
        return plan_groups(
            rules,
            people=desired.people,
            departments=desired.departments,
            links=links,
            owned=owned,
            user_plan=plan,
            taken=taken,
            today=today,
            held=held,
        )

    groups = run()
    new = sorted(a.target for a in groups.actions if a.kind is ActionKind.CREATE_GROUP)
    if new:
        kinds = engine.provider.check_addresses(new)
        busy = {normalise_email(a) for a, k in kinds.items() if k is not AddressKind.FREE}
        if busy:
            log.info("group addresses already in use, planned as conflicts: %s", sorted(busy))
            taken |= busy
            groups = run()
    return with_groups(plan, groups)
