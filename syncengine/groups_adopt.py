"""Adoption: take over a mail group that already exists in Exmail (``[groups] adopt`` /
``adopt_existing``) instead of planning a conflict at its address.

PURE: no I/O. The group was read with Gen 2 ``group/get`` by the service (Gen 1 cannot read a
group, so the config refuses adoption there); the planner turns it into one ``adopt_group``
action: the ledger row to store and the minimal member change to send (none when the group
already holds the people HR puts in it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from syncengine.plan import Action, ActionKind, GroupRecord, action_key

if TYPE_CHECKING:
    from syncengine.groups import GroupRules, OwnedGroup


def adopt(
    rules: GroupRules,
    what: str,
    key: str,
    live: OwnedGroup,
    name: str,
    members: set[str],
    depends: Iterable[str],
    losses: list[tuple[str, int, int]],
) -> Action:
    """Take over an existing group: the ledger gets it, Exmail gets the minimal change."""
    old = set(live.members)
    add = tuple(sorted(members - old))
    remove = tuple(sorted(old - members))
    if remove:
        losses.append((live.address, len(remove), len(old)))
    changes: dict[str, tuple[object, object]] = {
        "members": (tuple(sorted(old)), tuple(sorted(members)))
    }
    if add:
        changes["added"] = ((), add)
    if remove:
        changes["removed"] = (remove, ())
    if name != live.name:
        changes["name"] = (live.name, name)
    if rules.posting != live.posting:
        changes["posting"] = (live.posting, rules.posting)
    if rules.allow_list != live.allow_list:
        changes["allow_list"] = (live.allow_list, rules.allow_list)
    how = "listed in [groups] adopt" if live.address in rules.adopt else "adopt_existing"
    change = f"{len(add)} to add, {len(remove)} to remove" if add or remove else "members as HR"
    return Action(
        key=action_key(ActionKind.ADOPT_GROUP, live.address),
        kind=ActionKind.ADOPT_GROUP,
        target=live.address,
        reason=f"{what}: the group already exists in Exmail with {len(old)} member(s) and "
        f"is adopted ({how}); {change}",
        changes=changes,  # type: ignore[arg-type]
        depends_on=tuple(sorted(depends)) if add else (),
        group=GroupRecord(
            key,
            live.address,
            name,
            tuple(sorted(members)),
            rules.posting,
            rules.allow_list,
            add=add,
            remove=remove,
        ),
    )
