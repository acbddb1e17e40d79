"""Mail groups that follow HR: one group per department, planned as a minimal change set.

PURE: no I/O, no clock (``today`` is an argument), no randomness; the output order depends
only on the inputs' content.

The engine owns only the groups it created: each is recorded in the staging ledger
(``mail_groups``) under a stable key (``dept:<HR department id>``, or ``dept:<path>`` when the
source has no department table) with its address, name and the members it last wrote. No
Exmail API lists groups and Gen 1 cannot read one back, so the ledger is the planner's view of
its own groups; any other group is unmanaged and never touched.

Decisions (README "Mail groups"):

* A department HR has (under ``root``) with at least one member gets a group; its address
  comes from the template once, at creation, and is kept from then on: a renamed or moved
  department keeps its group's address (the key is the HR department id), only the name
  follows (Gen 2 ``group/update``; Gen 1 has no group rename, the old name stays).
* Members are the enabled mailboxes of the department's people (and of its sub-departments'
  with ``include_subdepartments``), plus the static ``extra_members``. A change is one
  ``update_group`` action with the minimal ``add`` / ``remove`` sets; it depends on the
  ``create_user`` / ``swap_primary`` actions that make the added addresses exist.
* A new group whose address is a mailbox, an alias, a group the engine does not own (or
  another department's retiring group), or an address the user plan creates is a
  ``group_address_taken`` conflict and is not created; a department whose group cannot be
  named (no HR id for ``{code}``, a name over 64 bytes) is a ``group_invalid`` conflict.
* A group whose department is gone (or left empty) retires: Exmail refuses a group without
  members (600009, both generations), so with ``keeper`` set it is emptied down to the keeper
  and deleted when the grace period is over; without a keeper it is deleted at once.
* Brake: a group losing more than ``max_member_loss`` of its members (once it has at least
  ``min_members``) blocks the plan like the removal brakes (``--allow-removals N``).
* Groups from an HR field (``by_field``, :mod:`syncengine.groups_field`) follow the same
  rules under the key ``field:<label>:<value>``; adoption (:mod:`syncengine.groups_adopt`)
  takes over an existing group at a desired address instead of a conflict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from syncengine.addresses import name_parts, sanitise_local
from syncengine.domain import (
    FORBIDDEN_DEPARTMENT_CHARS,
    MAX_NAME_BYTES,
    Department,
    IdentityLink,
    Person,
    Status,
    ancestors,
    is_under,
    normalise_email,
    path_name,
)
from syncengine.groups_adopt import adopt
from syncengine.groups_field import (
    FieldGroupRule,
    group_key,
    render_field_address,
    render_field_name,
)
from syncengine.plan import (
    Action,
    ActionKind,
    BlockedReason,
    Conflict,
    ConflictKind,
    GroupRecord,
    Plan,
    ReleaseKind,
    action_key,
    make_plan,
)

TEMPLATE_FIELDS = frozenset({"code", "pinyin", "initials", "path_pinyin"})
"""What an address template may use: the HR department id, the pinyin of its name, the
initials of that pinyin, the pinyin of the whole path joined by ``-``."""

_FIELD_RE = re.compile(r"{([^{}]*)}")


@dataclass(frozen=True)
class GroupRules:
    """``[groups]`` as the pure planner sees it (built by :mod:`syncengine.groups_config`)."""

    template: str  # "dept-{code}@example.com"; "" plans no department groups
    root: str = ""  # a department subtree; "" is every department
    include_subdepartments: bool = False
    name_template: str = "{name}"
    extra_members: tuple[str, ...] = ()  # in every group
    department_members: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Static members of one department's group, by HR department id or path."""
    posting: int = 0  # GroupPosting: 0 company, 1 anyone, 2 members, 3 allow list
    allow_list: tuple[str, ...] = ()
    keeper: str = ""
    grace_days: int = 30
    can_rename: bool = True  # Gen 2 only: Gen 1 has no group update
    max_member_loss: float | None = 0.5
    min_members: int = 4
    by_field: tuple[FieldGroupRule, ...] = ()  # groups from an HR field (groups_field.py)
    adopt: tuple[str, ...] = ()  # existing groups to take over (Gen 2: read with group/get)
    adopt_existing: bool = False  # take over any existing group at a desired group's address

    def adopts(self, address: str) -> bool:
        """Whether an existing group at this desired address is taken over."""
        return self.adopt_existing or normalise_email(address) in self.adopt


@dataclass(frozen=True)
class OwnedGroup:
    """One row of the ledger: a group the engine created, as it last wrote it."""

    key: str
    address: str
    name: str
    members: tuple[str, ...]
    retiring_since: date | None = None
    posting: int = 0
    allow_list: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupPlan:
    """The group part of a plan."""

    actions: tuple[Action, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    blocked: tuple[BlockedReason, ...] = ()
    desired: int = 0  # how many groups HR wants


@dataclass
class _Wanted:
    key: str
    path: str
    code: str
    members: set[str] = field(default_factory=set)
    depends: set[str] = field(default_factory=set)
    rule: FieldGroupRule | None = None  # a group of one HR value (path and code: the value)

    @property
    def what(self) -> str:
        if self.rule is None:
            return f"department {self.path}"
        return f"{self.rule.field} {self.path!r}"


def template_fields(template: str) -> set[str]:
    return {m.group(1) for m in _FIELD_RE.finditer(template)}


def _pinyin(text: str) -> str:
    parts = name_parts(text)
    return sanitise_local("".join(parts.family + parts.given))


def render_address(template: str, path: str, code: str) -> str:
    """The group address a template gives for a department ("" when it renders to nothing).
    Only the fields the template names are worked out (pinyin is the slow one)."""
    used = template_fields(template)
    name = path_name(path)
    values = {"code": sanitise_local(code)}
    if "pinyin" in used:
        values["pinyin"] = _pinyin(name)
    if "initials" in used:
        parts = name_parts(name)
        values["initials"] = "".join(s[0] for s in parts.family + parts.given if s)
    if "path_pinyin" in used:
        values["path_pinyin"] = "-".join(_pinyin(seg) for seg in path.split("/"))
    local, _, domain = template.format(**values).rpartition("@")
    local = sanitise_local(local)
    return f"{local}@{domain.lower()}" if local and domain else ""


def _member_addresses(
    people: Sequence[Person], links: Mapping[str, IdentityLink], user_plan: Plan
) -> tuple[dict[str, str], dict[str, str]]:
    """Employee id -> the address their enabled mailbox has once the plan ran, and the key of
    the action that makes that address exist (when the plan creates or swaps it)."""
    # Stored links are already normalised (lower-case, stripped): lower() is a cheap guard.
    final: dict[str, str] = {eid: lk.email.lower() for eid, lk in links.items()}
    disabled = {eid for eid, lk in links.items() if lk.disabled_since is not None}
    maker: dict[str, str] = {}
    for a in user_plan.actions:
        if not a.employee_id:
            continue
        if a.kind in (ActionKind.DISABLE_USER, ActionKind.DELETE_USER, ActionKind.UNLINK):
            disabled.add(a.employee_id)
            continue
        if a.kind is ActionKind.ENABLE_USER:
            disabled.discard(a.employee_id)
        if a.link is not None:
            final[a.employee_id] = normalise_email(a.link.email)
            if a.link.disabled_since is not None:
                disabled.add(a.employee_id)
        if a.kind in (ActionKind.CREATE_USER, ActionKind.SWAP_PRIMARY, ActionKind.ENABLE_USER):
            maker[a.employee_id] = a.key
    active = {p.employee_id for p in people if p.status is not Status.TERMINATED}
    emails = {eid: e for eid, e in final.items() if eid in active and eid not in disabled}
    return emails, {eid: k for eid, k in maker.items() if eid in emails}


def plan_groups(
    rules: GroupRules,
    *,
    people: Sequence[Person],
    departments: Sequence[Department],
    links: Mapping[str, IdentityLink],
    owned: Iterable[OwnedGroup],
    user_plan: Plan,
    taken: Iterable[str],
    today: date,
    held: Iterable[str] = (),
    adoptable: Mapping[str, OwnedGroup] | None = None,
) -> GroupPlan:
    """The group actions that make the owned groups follow HR (see the module docstring).

    ``taken``: every address that exists in Exmail and is not one of the owned groups
    (mailboxes, aliases, other groups). ``held``: the mailboxes of employees whose HR row is
    quarantined (or held by the plan): held back, not gone, so they keep the groups they are
    in and are never removed from one. ``adoptable``: the existing groups (read with Gen 2
    ``group/get``, by address) that ``rules.adopts``: a desired group at one of those
    addresses is adopted instead of being a conflict.
    """
    live_groups = adoptable or {}
    rendered: set[str] = set()
    kept = {normalise_email(h) for h in held}
    emails, makers = _member_addresses(people, links, user_plan)
    ids = {d.path: d.hr_id for d in departments if d.hr_id}
    wanted: dict[str, _Wanted] = {}

    by_path: dict[str, _Wanted | None] = {}

    def want(path: str) -> _Wanted | None:
        if path in by_path:
            return by_path[path]
        w: _Wanted | None = None
        if path and rules.template and is_under(path, rules.root):
            code = ids.get(path) or ""
            key = f"dept:{code}" if code else f"dept:{path}"
            w = wanted.get(key)
            if w is None:
                w = wanted[key] = _Wanted(key, path, code or path)
        by_path[path] = w
        return w

    for d in departments:
        want(d.path)
    by_field = {r.field: r for r in rules.by_field}
    for p in people:  # members are sets: the order of people does not matter
        address = emails.get(p.employee_id)
        if address is None:
            continue
        maker = makers.get(p.employee_id)
        for label, value in p.labels if by_field else ():
            rule = by_field.get(label)
            if rule is not None:
                key = group_key(label, value)
                fw = wanted.get(key)
                if fw is None:
                    fw = wanted[key] = _Wanted(key, value, value, rule=rule)
                fw.members.add(address)
                if maker is not None:
                    fw.depends.add(maker)
        for path in p.departments:
            targets = (path, *ancestors(path)) if rules.include_subdepartments else (path,)
            for t in targets:
                w = want(t)
                if w is not None:
                    w.members.add(address)
                    if maker is not None:
                        w.depends.add(maker)
    extra = {normalise_email(x) for x in rules.extra_members}

    by_key = {g.key: g for g in owned}
    owned_addresses = {g.address for g in by_key.values()}
    blocked_addresses = {normalise_email(t) for t in taken} - owned_addresses
    for a in user_plan.actions:  # what the user plan makes exist
        if a.mailbox is not None:
            blocked_addresses.add(normalise_email(a.mailbox.email))
            blocked_addresses.update(normalise_email(x) for x in a.mailbox.aliases)
        if a.alias:
            blocked_addresses.add(normalise_email(a.alias))
    needs_code = "code" in template_fields(rules.template)
    # Exmail keeps membership per account: after user/swapalias a group already holds the
    # new address (and the old one, now an alias, resolves to the same account).
    swapped = {
        normalise_email(a.target): normalise_email(a.alias)
        for a in user_plan.actions
        if a.kind is ActionKind.SWAP_PRIMARY and a.alias
    }

    actions: list[Action] = []
    conflicts: list[Conflict] = []
    losses: list[tuple[str, int, int]] = []
    claimed: set[str] = set()
    desired_count = 0
    for key in sorted(wanted):
        w = wanted[key]
        g = by_key.pop(key, None)
        if g is not None and kept:
            w.members |= kept.intersection(g.members)
        own = (
            rules.department_members.get(w.code) or rules.department_members.get(w.path, ())
            if w.rule is None
            else ()
        )
        members = w.members | extra | {normalise_email(x) for x in own} if w.members else set()
        name = (
            rules.name_template.format(name=path_name(w.path), path=w.path)
            if w.rule is None
            else render_field_name(w.rule, w.path)
        )
        if not members:
            if g is not None:
                by_key[key] = g  # retires below
            continue
        desired_count += 1
        refused = sorted(set(name) & FORBIDDEN_DEPARTMENT_CHARS)
        if len(name.encode("utf-8")) > MAX_NAME_BYTES or refused:
            too_long = len(name.encode("utf-8")) > MAX_NAME_BYTES
            why = " and ".join(
                ([f"is over Exmail's {MAX_NAME_BYTES} bytes"] if too_long else [])
                + ([f"has characters Exmail refuses in a group name ({' '.join(refused)})"]
                   if refused else [])
            )  # fmt: skip
            conflicts.append(_conflict(
                f"the group name {name!r} for {w.what} {why}; change the [groups] name "
                "template", ""))  # fmt: skip
            if g is None:
                continue
            name = g.name  # an owned group keeps its name
        if g is None:
            if needs_code and w.rule is None and w.code == w.path:
                conflicts.append(
                    _conflict(
                        f"department {w.path} has no HR id, so the template {rules.template!r} "
                        "cannot name its group; add a department table to the source",
                        "",
                    )
                )
                continue
            template = rules.template if w.rule is None else w.rule.template
            address = (
                render_address(template, w.path, w.code)
                if w.rule is None
                else render_field_address(template, w.path)
            )
            if not address:
                conflicts.append(
                    _conflict(
                        f"the template {template!r} gives no address for {w.what}",
                        "",
                    )
                )
                continue
            rendered.add(address)
            live = live_groups.get(address)
            free = address not in claimed and address not in owned_addresses
            if live is not None and free and rules.adopts(address):
                claimed.add(address)
                actions.append(adopt(rules, w.what, key, live, name, members, w.depends, losses))
                continue
            if address in blocked_addresses or address in claimed or address in owned_addresses:
                conflicts.append(
                    _conflict(
                        f"the group address {address} for {w.what} is already a "
                        "mailbox, an alias or another group (one the engine does not own, or "
                        "the retiring group of another department); the group is not created",
                        address,
                        ConflictKind.GROUP_ADDRESS_TAKEN,
                    )
                )
                continue
            claimed.add(address)
            record = GroupRecord(
                key, address, name, tuple(sorted(members)), rules.posting, rules.allow_list
            )
            actions.append(
                Action(
                    key=action_key(ActionKind.CREATE_GROUP, address),
                    kind=ActionKind.CREATE_GROUP,
                    target=address,
                    reason=f"{w.what} has {len(members)} member(s) and no group yet",
                    changes={"members": ((), record.members), "name": (None, name)},
                    depends_on=tuple(sorted(w.depends)),
                    group=record,
                )
            )
            continue
        actions.extend(_follow(rules, g, w, name, members, losses, swapped))
    for key in sorted(by_key):
        actions.extend(_retire(rules, by_key[key], today, losses))
    for address in sorted(set(rules.adopt) - rendered - owned_addresses):
        conflicts.append(_conflict(
            f"[groups] adopt lists {address}, but no department or HR value of [groups] "
            "gives that address (or HR wants no group there now); it is not adopted",
            address))  # fmt: skip
    return GroupPlan(
        actions=tuple(actions),
        conflicts=tuple(conflicts),
        blocked=_brake(rules, losses),
        desired=desired_count,
    )


def _conflict(
    message: str, address: str, kind: ConflictKind = ConflictKind.GROUP_INVALID
) -> Conflict:
    return Conflict(kind, message, emails=(address,) if address else ())


def _follow(
    rules: GroupRules,
    g: OwnedGroup,
    w: _Wanted,
    name: str,
    members: set[str],
    losses: list[tuple[str, int, int]],
    swapped: Mapping[str, str],
) -> list[Action]:
    old = {swapped.get(m, m) for m in g.members}
    readdressed = old != set(g.members)  # only the ledger changes: no member call for these
    add = tuple(sorted(members - old))
    remove = tuple(sorted(old - members))
    new_name = name if rules.can_rename else g.name
    # Who may post: Gen 2 group/update sets it; Gen 1 cannot change it after group/add.
    posting, allow = (
        (rules.posting, rules.allow_list) if rules.can_rename else (g.posting, g.allow_list)
    )
    reposted = (posting, allow) != (g.posting, g.allow_list)
    unchanged = not (add or remove or reposted or readdressed) and new_name == g.name
    if unchanged and g.retiring_since is None:
        return []
    if remove:
        losses.append((g.address, len(remove), len(old)))
    changes: dict[str, tuple[object, object]] = {}
    why: list[str] = []
    if add:
        changes["added"] = ((), add)
        why.append(f"{len(add)} joined")
    if remove:
        changes["removed"] = (remove, ())
        why.append(f"{len(remove)} left")
    if new_name != g.name:
        changes["name"] = (g.name, new_name)
        why.append(f"department renamed or moved to {w.path}" if w.rule is None else "name changed")
    if readdressed:
        why.append("a member's address changed (the group follows by itself)")
    if g.retiring_since is not None:
        why.append(f"{w.what} is back in HR")
    if reposted:
        changes["posting"] = (g.posting, posting)
        if allow != g.allow_list:
            changes["allow_list"] = (g.allow_list, allow)
        why.append("who may post changed in [groups]")
    record = GroupRecord(
        g.key, g.address, new_name, tuple(sorted(members)), posting, allow, add=add, remove=remove
    )
    return [
        Action(
            key=action_key(ActionKind.UPDATE_GROUP, g.address),
            kind=ActionKind.UPDATE_GROUP,
            target=g.address,
            reason=f"group of {w.what}: " + ", ".join(why),
            changes=changes,  # type: ignore[arg-type]
            depends_on=tuple(sorted(w.depends)) if add or readdressed else (),
            group=record,
        )
    ]


def _retire(
    rules: GroupRules, g: OwnedGroup, today: date, losses: list[tuple[str, int, int]]
) -> list[Action]:
    keeper = normalise_email(rules.keeper) if rules.keeper else ""
    if g.retiring_since is not None or not keeper:
        if g.retiring_since is not None and today < g.retiring_since + timedelta(
            days=rules.grace_days
        ):
            return []
        losses.append((g.address, len(g.members), len(g.members)))
        when = (
            f"retiring since {g.retiring_since.isoformat()}, grace period of "
            f"{rules.grace_days} day(s) over"
            if g.retiring_since is not None
            else "no keeper is configured and Exmail refuses an empty group"
        )
        return [
            Action(
                key=action_key(ActionKind.DELETE_GROUP, g.address),
                kind=ActionKind.DELETE_GROUP,
                target=g.address,
                reason=f"{_source(g.key)} is gone or empty; {when}",
                changes={"members": (g.members, ())},
                group=GroupRecord(g.key, g.address, g.name, ()),
            )
        ]
    members = (keeper,)
    remove = tuple(m for m in g.members if m != keeper)
    add = () if keeper in g.members else members
    losses.append((g.address, len(remove), len(g.members)))
    return [
        Action(
            key=action_key(ActionKind.UPDATE_GROUP, g.address),
            kind=ActionKind.UPDATE_GROUP,
            target=g.address,
            reason=f"{_source(g.key)} is gone or empty: emptied down to the keeper "
            f"{keeper}, deleted after {rules.grace_days} day(s)",
            changes={"added": ((), add), "removed": (remove, ())},
            group=GroupRecord(
                g.key,
                g.address,
                g.name,
                members,
                g.posting,
                g.allow_list,
                add=add,
                remove=remove,
                retiring_since=today,
            ),
        )
    ]


def _source(key: str) -> str:
    """What a ledger key stands for, in a reason."""
    if key.startswith("field:"):
        return f"its HR value ({key})"
    return f"its department ({key})"


def _brake(rules: GroupRules, losses: list[tuple[str, int, int]]) -> tuple[BlockedReason, ...]:
    share = rules.max_member_loss
    if share is None:
        return ()
    hit = [(a, r, n) for a, r, n in losses if n >= rules.min_members and r / n > share]
    if not hit:
        return ()
    removed = sum(r for _, r, _ in hit)
    shown = ", ".join(f"{a} loses {r} of {n}" for a, r, n in hit[:5])
    more = f" and {len(hit) - 5} more" if len(hit) > 5 else ""
    return (
        BlockedReason(
            brake="group_member_loss",
            message=f"{len(hit)} mail group(s) would lose more than {share:.0%} of their "
            f"members ({shown}{more})",
            release=ReleaseKind.ALLOW_REMOVALS,
            needed=removed,
        ),
    )


def with_groups(plan: Plan, groups: GroupPlan) -> Plan:
    """``plan`` with the group part appended (group actions come after the user actions they
    depend on), its conflicts and its brake; checksum and summary made anew."""
    if not groups.actions and not groups.conflicts and not groups.blocked:
        return plan
    return make_plan(
        created_at=plan.created_at,
        config_fingerprint=plan.config_fingerprint,
        state_fingerprint=plan.state_fingerprint,
        actions=[*plan.actions, *groups.actions],
        conflicts=[*plan.conflicts, *groups.conflicts],
        unmanaged=plan.unmanaged,
        protected=plan.protected,
        quarantined=plan.quarantined,
        blocked_reasons=[*plan.blocked_reasons, *groups.blocked],
        explanations=plan.explanations,
        held=plan.held,
    )
