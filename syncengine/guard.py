"""Apply-time enforcement: every action is re-checked against the current policy right before
its call, whatever the plan file says (defence in depth behind the plan signature).

PURE: functions of an action, the policy and the identity links; no I/O, no clock.

What is checked, per action (:func:`refusal`):

* **protected**: no address the action touches (target, alias, the created mailbox and its
  aliases, new aliases, the stored link) matches ``[policy] protected``;
* **domains**: every such address is in one of the Exmail domains of the config;
* **ownership**: a delete is only of the mailbox linked to the employee it names; a disable
  is of that linked mailbox, or of an unmanaged one only when ``disable_unmanaged`` is on; a
  change of an existing mailbox names its HR employee, and when that employee is linked, the
  linked mailbox (or the action records the new link, as an adoption or an address change).

And per plan (:func:`apply_brakes`): the removal and update counts against the current
thresholds (counts and shares of the managed mailboxes, i.e. the stored links), so a plan whose
brake findings were dropped from the file is still blocked. The source-size brakes judge the HR
snapshot and stay the planner's.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from syncengine.domain import normalise_email
from syncengine.plan import Action, ActionKind, BlockedReason, Plan
from syncengine.policy import PlanStats, Policy, brake_findings

REFUSED = "refused"
"""The audit result of an action the guard refused."""

_USER_KINDS = frozenset(
    {
        ActionKind.CREATE_USER,
        ActionKind.UPDATE_USER,
        ActionKind.ADD_ALIAS,
        ActionKind.SWAP_PRIMARY,
        ActionKind.ENABLE_USER,
        ActionKind.DISABLE_USER,
        ActionKind.DELETE_USER,
    }
)
_CHANGE_KINDS = frozenset(
    {ActionKind.UPDATE_USER, ActionKind.ADD_ALIAS, ActionKind.SWAP_PRIMARY, ActionKind.ENABLE_USER}
)


@dataclass(frozen=True)
class Ground:
    """What actions are judged against: the current policy, the Exmail domains, and the
    stored identity links (employee id -> linked address)."""

    policy: Policy
    domains: frozenset[str]
    links: Mapping[str, str]


def addresses_of(action: Action) -> list[str]:
    """Every mailbox address the action reads or writes, lower-case, without duplicates."""
    out: list[str] = []
    linkish = action.kind in (ActionKind.LINK, ActionKind.UNLINK)
    if (action.kind in _USER_KINDS or linkish) and "@" in action.target:
        out.append(action.target)
    if action.alias:
        out.append(action.alias)
    if action.mailbox is not None:
        out.extend([action.mailbox.email, *action.mailbox.aliases])
    if action.update is not None and action.update.aliases:
        out.extend(action.update.aliases)
    if action.link is not None:
        out.append(action.link.email)
    seen: dict[str, None] = {}
    for a in out:
        seen.setdefault(normalise_email(a), None)
    return list(seen)


def _protecting(address: str, patterns: Sequence[str]) -> str | None:
    for p in patterns:
        if fnmatch.fnmatchcase(address, p.lower()):
            return p
    return None


def refusal(action: Action, ground: Ground) -> str | None:
    """Why the current policy forbids this action (None: it may run)."""
    policy = ground.policy
    addresses = addresses_of(action)
    for address in addresses:
        pattern = _protecting(address, policy.protected)
        if pattern is not None:
            return (
                f"refused: {address} is protected by [policy] protected ({pattern!r}); "
                "the engine never touches it, whatever the plan says"
            )
    for address in addresses:
        domain = address.rpartition("@")[2]
        if domain not in ground.domains:
            return (
                f"refused: {address} is not in the Exmail domains of this config "
                f"({', '.join(sorted(ground.domains))})"
            )
    return _ownership(action, ground)


def _ownership(action: Action, ground: Ground) -> str | None:
    target = normalise_email(action.target) if "@" in action.target else action.target
    eid = action.employee_id
    linked = ground.links.get(eid) if eid else None
    linked = normalise_email(linked) if linked else None
    if action.kind is ActionKind.DELETE_USER:
        if not eid:
            return f"refused: {target} belongs to no HR employee; the engine deletes only leavers"
        if linked != target:
            return (
                f"refused: employee {eid} is linked to {linked or 'no mailbox'}, not to {target}; "
                "the engine deletes only a leaver's own linked mailbox"
            )
    elif action.kind is ActionKind.DISABLE_USER:
        if not eid and not ground.policy.disable_unmanaged:
            return (
                f"refused: {target} belongs to no HR employee and [policy] disable_unmanaged is off"
            )
        if eid and linked is not None and linked != target:
            return f"refused: employee {eid} is linked to {linked}, not to {target}"
    elif action.kind in _CHANGE_KINDS:
        if not eid:
            return f"refused: {target} belongs to no HR employee; the engine does not change it"
        adopting = action.link is not None and action.link.employee_id == eid
        if linked is not None and linked != target and not adopting:
            return f"refused: employee {eid} is linked to {linked}, not to {target}"
    return None


def apply_brakes(plan: Plan, policy: Policy, managed: int) -> tuple[BlockedReason, ...]:
    """The count and share brakes, judged again on the plan's actions and the current policy
    (``managed``: the number of stored identity links)."""
    stats = PlanStats(
        source_size=max(managed, 1),  # the source-size brakes are the planner's (module doc)
        previous_size=None,
        managed=managed,
        disables=plan.count(ActionKind.DISABLE_USER),
        deletes=plan.count(ActionKind.DELETE_USER),
        updates=plan.update_count,
    )
    return brake_findings(stats, policy)
