"""The group part of a plan: HR departments -> owned mail groups (:mod:`syncengine.groups`).

Wires the pure group planner to the staging ledger and the provider. No Exmail API lists
groups, so the only Exmail calls made here are one ``user/check`` / ``user/batchcheck`` round
for the addresses of the groups the plan would create (none on a night with no new group)
and, with ``adopt`` / ``adopt_existing`` (Gen 2), one ``group/get`` per existing group found
at a desired address, to adopt it with its current members.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime

from syncengine.domain import AddressKind, IdentityLink, MailboxState, normalise_email
from syncengine.groups import GroupPlan, GroupRules, OwnedGroup, plan_groups, with_groups
from syncengine.plan import ActionKind, Conflict, ConflictKind, Plan
from syncengine.planner import Desired
from syncengine.providers.base import GroupProvider
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

    adoptable: dict[str, OwnedGroup] = {}

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
            adoptable=adoptable,
        )

    groups = run()
    new = sorted(a.target for a in groups.actions if a.kind is ActionKind.CREATE_GROUP)
    wanted = _adoption_candidates(rules, groups, {g.address for g in owned})
    refused: list[Conflict] = []
    if new or wanted:
        kinds = engine.provider.check_addresses(sorted({*new, *wanted}))
        busy = {normalise_email(a) for a, k in kinds.items() if k is not AddressKind.FREE}
        existing = sorted(a for a, k in kinds.items() if k is AddressKind.GROUP and rules.adopts(a))
        if existing:
            refused = _read_for_adoption(engine, existing, adoptable)
        if busy - set(wanted) or adoptable:
            log.info("group addresses already in use: %s (adopted: %s)", sorted(busy),
                     sorted(adoptable))  # fmt: skip
            taken |= busy
            groups = run()
    if refused:
        groups = replace(groups, conflicts=(*groups.conflicts, *refused))
    return with_groups(plan, groups)


def _adoption_candidates(rules: GroupRules, groups: GroupPlan, owned: set[str]) -> list[str]:
    """The addresses of desired groups that are taken (not by a group the engine owns
    already) and that ``[groups]`` says to adopt."""
    if not (rules.adopt or rules.adopt_existing):
        return []
    return sorted(
        {
            c.emails[0]
            for c in groups.conflicts
            if c.kind is ConflictKind.GROUP_ADDRESS_TAKEN
            and c.emails
            and c.emails[0] not in owned
            and rules.adopts(c.emails[0])
        }
    )


def _read_for_adoption(
    engine: Engine, addresses: list[str], into: dict[str, OwnedGroup]
) -> list[Conflict]:
    """Read each existing group (Gen 2 ``group/get``) into ``into``; a group that holds
    departments or other groups is not adopted (the engine writes member accounts only)."""
    provider = engine.provider
    if not isinstance(provider, GroupProvider) or not provider.can_read_groups:
        return [
            Conflict(
                ConflictKind.GROUP_ADDRESS_TAKEN,
                f"the group {a} cannot be adopted: this Exmail API cannot read a group "
                "(no group/get)",
                emails=(a,),
            )
            for a in addresses
        ]
    refused: list[Conflict] = []
    for address in addresses:
        live = provider.get_group(address)
        if live is None:
            continue  # gone since the address check: created as a new group next time
        if live.departments or live.groups:
            refused.append(
                Conflict(
                    ConflictKind.GROUP_ADDRESS_TAKEN,
                    f"the group {address} holds departments or other groups "
                    f"({', '.join([*live.departments, *live.groups])}); the engine keeps "
                    "member accounts only, so it is not adopted",
                    emails=(address,),
                )
            )
            continue
        into[normalise_email(address)] = OwnedGroup(
            key="",
            address=normalise_email(address),
            name=live.name,
            members=tuple(sorted(normalise_email(m) for m in live.members)),
            posting=int(live.posting),
            allow_list=tuple(live.allow_list),
        )
    return refused
