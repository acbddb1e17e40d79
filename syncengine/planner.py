"""The pure diff: what must change in Exmail so that it follows HR, in a valid order.

PURE: no I/O, no clock (``now`` is an argument), no randomness; the output order depends only
on the inputs' content, never on their order.

``diff(desired, actual, links, policy, now)`` compares

* ``desired`` (:class:`Desired`): the HR snapshot: people, departments (with HR ids when the
  source has a department table), the quarantined employee ids (never treated as leavers),
  the previous good snapshot's size (for the shrink brake) and the previous good snapshot's
  departments (HR id -> old path: a changed path is a rename/move; and every path HR ever
  had makes a department "managed");
* ``actual``: the :class:`MailboxState` read from Exmail;
* ``links``: the stored identity links, employee id -> :class:`IdentityLink`;

and returns a complete :class:`Plan` (also when a brake blocks it).

Decisions, in the order the planner takes them:

1. **Departments.** Moves first: an HR department whose previous path exists in Exmail and
   whose new path does not is moved (a rename is a move), shallowest first, so a moved parent
   carries its children. Then every department HR needs (listed departments, people's
   departments and their ancestors) that is missing is created, parents first.
2. **Matching**, per person in employee id order: the stored link (its address, primary or
   alias), else the mailbox whose ``ext_id`` is the employee id, else HR's address as a primary,
   else as an alias (never for a leaver: a mailbox is not adopted only to be removed). A
   person matching two mailboxes, two people (or two stored links) on one mailbox, an address
   match on a mailbox carrying another employee's ``ext_id``, and a wanted address owned by
   another mailbox or a group are conflicts: those people get no actions, and a mailbox in a
   conflict is nobody's to change. (An HR alias someone else owns, or aliases over Exmail's
   five, are conflicts that only leave those aliases out.)
   A matched protected mailbox is listed as protected and never touched.
3. **Addresses.** The wanted primary address is HR's, else the link's (a stored address never
   changes), else the matched mailbox's, else one generated from the template
   (:mod:`syncengine.addresses`), clashes resolved in employee id order.
4. **Lifecycle** (:func:`syncengine.policy.lifecycle`): leavers (terminated, end date passed,
   or linked but absent from HR and not quarantined) are disabled, then deleted when the grace
   period counted from ``disabled_since`` is over; future hires are created only inside the
   creation window; leave of absence keeps or disables; a disabled mailbox of an active person
   is enabled (rehire).
5. **Users**: create; address change = ``add_alias`` then ``swap_primary``; one ``update_user``
   with every field diff (and ``ext_id`` when it is missing); enable/disable; a person's actions
   form a chain (each depends on the previous), and the last one stores the link.
6. **Unmanaged** mailboxes (no link, no HR match, not protected) are listed, and disabled only
   when ``policy.disable_unmanaged``.
7. **Empty departments** that are managed (HR had them, or under a configured root) and that
   HR no longer wants are deleted when ``policy.delete_empty_departments``, children first,
   after the users in them moved out or were deleted.
8. **Brakes** (:func:`syncengine.policy.brake_findings`) judge the finished plan.

``only`` (``plan --only``) keeps the actions of the named employees (and the department
actions they need), and records an explanation per named person: how they matched, their
lifecycle, the field diffs and the decision.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from itertools import chain as chained
from operator import itemgetter

from syncengine.addresses import generate_addresses
from syncengine.domain import (
    MAX_ALIASES,
    Department,
    Gender,
    IdentityLink,
    Mailbox,
    MailboxState,
    Person,
    UnidentifiedRow,
    UserUpdate,
    ancestors,
    is_under,
    normalise_email,
    parent_path,
    path_depth,
    sorted_unique,
)
from syncengine.holds import find_holds
from syncengine.plan import (
    BLOCKING_CONFLICTS,
    UPDATE_KINDS,
    Action,
    ActionKind,
    ChangeValue,
    Conflict,
    ConflictKind,
    LinkRecord,
    PasswordPolicy,
    Plan,
    action_key,
    make_plan,
)
from syncengine.policy import (
    AliasMode,
    Lifecycle,
    PlanStats,
    Policy,
    brake_findings,
    delete_due,
    grace_over,
    lifecycle,
)
from syncengine.render import format_value


@dataclass(frozen=True)
class Desired:
    """The desired side: one HR snapshot plus what the brakes and move detection need."""

    people: tuple[Person, ...]
    departments: tuple[Department, ...] = ()
    quarantined: frozenset[str] = frozenset()
    previous_size: int | None = None
    previous_departments: tuple[Department, ...] = ()
    former_addresses: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Employee id -> addresses that were once their primary (swapped away by an address
    change): they stay aliases whatever ``alias_mode`` says, or mail to them would bounce."""
    # Why each quarantined employee is (the first problem), and the quarantined rows without
    # a usable employee id: both hold mailboxes (:mod:`syncengine.holds`).
    held_reasons: Mapping[str, str] = field(default_factory=dict)
    unidentified: tuple[UnidentifiedRow, ...] = ()
    # Ids an earlier snapshot had and this one does not: an unlinked mailbox whose ext_id is
    # one of them is a leaver's.
    former: frozenset[str] = frozenset()
    held: Mapping[str, str] = field(default_factory=dict)
    """Employees whose record is a hook's, kept against an older HR export, and why
    (``syncengine.hookfacts``): shown as non-blocking ``hook_held`` conflicts."""


def _norm(value: str) -> str:
    """:func:`normalise_email` that keeps the same string object when it is already
    normal, so 100,000 addresses are not stored twice."""
    n = normalise_email(value)
    return value if n == value else n


class _Multi:
    """A ``str -> [str, ...]`` map that keeps the usual single value without a list: the
    grouping maps of a 100,000-person diff would otherwise hold 100,000 one-item lists."""

    __slots__ = ("more", "one")

    def __init__(self) -> None:
        self.one: dict[str, str] = {}
        self.more: dict[str, list[str]] = {}

    def add(self, key: str, value: str) -> None:
        if key in self.more:
            self.more[key].append(value)
        elif key in self.one:
            self.more[key] = [self.one.pop(key), value]
        else:
            self.one[key] = value

    def get(self, key: str) -> tuple[str, ...]:
        if key in self.one:
            return (self.one[key],)
        return tuple(self.more.get(key, ()))

    def keys(self) -> set[str]:
        return set(self.one) | set(self.more)


def _sorted_tuple(values: AbstractSet[str]) -> tuple[str, ...]:
    """``tuple(sorted(values))``, without the sort for the usual none or one."""
    return tuple(sorted(values)) if len(values) > 1 else tuple(values)


def _sorted_paths(paths: tuple[str, ...]) -> tuple[str, ...]:
    """Departments as a set, in a canonical order (fast for the usual one department)."""
    if len(paths) == 1:
        return paths if paths[0] else ()
    return sorted_unique(d for d in paths if d)


@dataclass
class _Chain:
    """The actions of one person, in order; each depends on the one before."""

    actions: list[Action] = field(default_factory=list)


def diff(
    desired: Desired,
    actual: MailboxState,
    links: Mapping[str, IdentityLink],
    policy: Policy,
    now: datetime,
    *,
    config_fingerprint: str = "",
    only: Collection[str] | None = None,
) -> Plan:
    """The plan that makes ``actual`` follow ``desired`` (see the module docstring)."""
    return _Planner(desired, actual, links, policy, now, only).run(config_fingerprint)


class _Planner:
    def __init__(
        self,
        desired: Desired,
        actual: MailboxState,
        links: Mapping[str, IdentityLink],
        policy: Policy,
        now: datetime,
        only: Collection[str] | None,
    ) -> None:
        self.desired = desired
        self.actual = actual
        self.links = links
        self.policy = policy
        self.now = now
        self.today: date = policy.today(now)  # the company's calendar day, not UTC's
        self.only = frozenset(only) if only is not None else None
        self.people = sorted(desired.people, key=lambda p: p.employee_id)
        self.in_hr = {p.employee_id for p in self.people}
        # Each HR address normalised once (it is looked at in matching, in the taken set and
        # for the wanted address).
        self.p_email: dict[str, str] = {
            p.employee_id: _norm(p.email) for p in self.people if p.email
        }

        # Indexes of the actual state (addresses lower-case).
        self.by_email: dict[str, Mailbox] = {}
        self.owner: dict[str, str] = {}  # any address (primary or alias) -> primary
        self.by_ext = _Multi()
        normed = sorted(((_norm(m.email), m) for m in actual.mailboxes), key=itemgetter(0))
        for e, m in normed:
            self.by_email[e] = m
            self.owner[e] = e
            for a in m.aliases:
                self.owner.setdefault(_norm(a), e)
            if m.ext_id:
                self.by_ext.add(m.ext_id, e)
        self.groups = {normalise_email(g) for g in actual.groups}
        self.link_email = {eid: _norm(lk.email) for eid, lk in links.items()}
        self._depts_cache: dict[str, tuple[str, ...]] = {}
        self._relocated: dict[str, str] = {}  # path -> after the moves (users' step only)
        self._protected = policy.protected_matcher()

        self.dept_actions: list[Action] = []
        self.producer: dict[str, str] = {}  # path -> key of the action that makes it exist
        self.moves: list[tuple[str, str]] = []
        self.created: set[str] = set()
        self.cur: set[str] = {p.path for p in actual.parties if p.path}

        self.conflicts: list[Conflict] = []
        self.blocked: set[str] = set()
        self.contested: dict[str, list[str]] = {}
        self.protected_hits: set[str] = set()
        self.claimed: set[str] = set()  # mailboxes some person or link manages
        self.chains: dict[str, _Chain] = {}
        self.final_departments: dict[str, tuple[str, ...]] = {}  # mailbox -> after the plan
        self.dept_leavers: dict[str, list[str]] = defaultdict(list)  # path -> keys moving out
        self.new_members: list[tuple[str, ...]] = []
        self.unmanaged_actions: list[Action] = []
        self.notes: dict[str, list[str]] = defaultdict(list)
        self.holds = find_holds(
            quarantined=desired.quarantined,
            reasons=desired.held_reasons,
            unidentified=desired.unidentified,
            mailboxes=self.by_email,
            owner=self.owner,
            ext_of=self.by_ext.get,
            link_email=self.link_email,
        )
        self.claimed.update(self.holds.mailboxes)  # held: never unmanaged

    # --- helpers ---------------------------------------------------------------------------

    def note(self, eid: str, text: str) -> None:
        if self.only is not None and eid in self.only:
            self.notes[eid].append(text)

    def noting(self, eid: str) -> bool:
        """Whether notes about ``eid`` are kept (``plan --only``): a note that costs a
        formatted string is only made then."""
        return self.only is not None and eid in self.only

    def relocate(self, path: str) -> str:
        """Where a department path ends up after the planned moves."""
        for old, new in self.moves:
            if is_under(path, old) and old:
                path = new + path[len(old) :]
        return path

    def dept_deps(self, paths: Iterable[str]) -> tuple[str, ...]:
        keys: set[str] = set()
        for p in paths:
            for q in (*ancestors(p), p):
                k = self.producer.get(q)
                if k:
                    keys.add(k)
        return tuple(sorted(keys))

    # --- 1. departments --------------------------------------------------------------------

    def ensure_department(self, path: str) -> None:
        if not path or path in self.cur:
            return
        self.ensure_department(parent_path(path))
        key = action_key(ActionKind.CREATE_DEPARTMENT, path)
        parent_key = self.producer.get(parent_path(path))
        self.dept_actions.append(
            Action(
                key=key,
                kind=ActionKind.CREATE_DEPARTMENT,
                target=path,
                reason="HR has this department and Exmail does not",
                depends_on=(parent_key,) if parent_key else (),
            )
        )
        self.cur.add(path)
        self.created.add(path)
        self.producer[path] = key

    def plan_departments(self, needed: set[str]) -> None:
        prev = {
            d.hr_id: d.path
            for d in sorted(self.desired.previous_departments, key=lambda d: d.path)
            if d.hr_id
        }
        candidates = sorted(
            (
                (prev[d.hr_id], d.path)
                for d in self.desired.departments
                if d.hr_id and d.hr_id in prev and prev[d.hr_id] != d.path and d.path
            ),
            key=lambda m: (path_depth(m[0]), m[0], m[1]),
        )
        used_keys: set[str] = set()
        for old, new in candidates:
            old_now = self.relocate(old)
            key = action_key(ActionKind.MOVE_DEPARTMENT, old_now)
            if (
                old_now == new
                or not old_now
                or old_now not in self.cur
                or new in self.cur
                or is_under(new, old_now)
                or key in used_keys
                # never move what this plan creates: its path would be needed (and created)
                # again, and the created department is not the HR department that moved
                or any(is_under(c, old_now) for c in self.created)
            ):
                continue
            self.ensure_department(parent_path(new))
            deps = set(self.dept_deps([parent_path(new)])) | set(self.dept_deps([old_now]))
            self.dept_actions.append(
                Action(
                    key=key,
                    kind=ActionKind.MOVE_DEPARTMENT,
                    target=old_now,
                    new_path=new,
                    reason=f"HR renamed or moved this department to {new} (same HR id)",
                    changes={"path": (old_now, new)},
                    depends_on=tuple(sorted(deps)),
                )
            )
            used_keys.add(key)
            moved = {p for p in self.cur if is_under(p, old_now)}
            self.cur -= moved
            for p in moved:
                self.producer.pop(p, None)
            for p in moved:
                np = new + p[len(old_now) :]
                self.cur.add(np)
                self.producer[np] = key
            self.moves.append((old_now, new))
        for path in sorted(needed, key=lambda p: (path_depth(p), p)):
            self.ensure_department(path)

    # --- 2./3. matching and addresses -------------------------------------------------------

    def match(self, p: Person, by_address: bool = True) -> tuple[str | None, str]:
        """The mailbox a person matches and how; blocks the person on a conflict.

        ``by_address`` is False for leavers: a mailbox is never adopted by address only to be
        disabled or deleted (it may be someone else's old mailbox)."""
        eid = p.employee_id
        found: dict[str, str] = {}
        link = self.links.get(eid)
        if link is not None:
            primary = self.owner.get(self.link_email[eid])
            if primary:
                found[primary] = "stored link"
        for e in self.by_ext.get(eid):
            found.setdefault(e, "ext_id")
        if not found and p.email and by_address:
            addr = self.p_email[eid]
            holder = self.owner.get(addr)
            if holder is not None and holder in self.holds:
                return None, f"no mailbox ({holder} is held: not adopted)"
            if addr in self.by_email:
                found[addr] = "primary address"
            elif addr in self.owner:
                found[self.owner[addr]] = "alias"
        if len(found) > 1:
            self.conflict(
                ConflictKind.PERSON_MATCHES_TWO,
                f"employee {eid} matches {len(found)} mailboxes ("
                + ", ".join(f"{e} by {how}" for e, how in sorted(found.items()))
                + "); merge or fix them in Exmail, or correct the stored link",
                (eid,),
                tuple(sorted(found)),
            )
            # Each of these mailboxes stays contested: nobody else may take it either.
            self.contested[eid] = sorted(found)
            return None, "conflict"
        if not found:
            return None, "no mailbox"
        email, how = next(iter(found.items()))
        m = self.by_email[email]
        if how in {"primary address", "alias"} and m.ext_id and m.ext_id != eid:
            self.conflict(
                ConflictKind.FOREIGN_EXT_ID,
                f"employee {eid}'s address {email} belongs to a mailbox whose ext_id is "
                f"{m.ext_id!r}; correct the address in HR or the ext_id in Exmail",
                (eid, m.ext_id) if m.ext_id in self.in_hr else (eid,),
                (email,),
            )
            return None, "conflict"
        return email, how

    def conflict(
        self, kind: ConflictKind, message: str, eids: tuple[str, ...], emails: tuple[str, ...]
    ) -> None:
        self.conflicts.append(Conflict(kind, message, eids, emails))
        for e in eids:
            self.note(e, f"conflict ({kind.value}): {message}")
        if kind in BLOCKING_CONFLICTS:
            self.blocked.update(eids)

    # --- the run ----------------------------------------------------------------------------

    def run(self, config_fingerprint: str) -> Plan:
        policy = self.policy
        for eid, why in sorted(self.desired.held.items()):  # informational: nothing is blocked
            self.conflict(ConflictKind.HOOK_HELD, f"{eid}: {why}", (eid,), ())
        # The usual (state, reason) pairs are few: one tuple each, not one per person.
        pairs: dict[tuple[Lifecycle, str], tuple[Lifecycle, str]] = {}
        states = {
            p.employee_id: pairs.setdefault(pair, pair)
            for p in self.people
            for pair in (lifecycle(p, policy, self.today),)
        }
        wants_mailbox = {Lifecycle.ACTIVE, Lifecycle.ON_LEAVE_KEEP}

        # Departments HR needs: its list, and the departments of people who keep a mailbox.
        needed: set[str] = set()
        for d in self.desired.departments:
            if d.path:
                needed.add(d.path)
        for p in self.people:
            if states[p.employee_id][0] is not Lifecycle.LEAVER:
                needed.update(p.departments)
        needed.discard("")
        needed |= {a for p in needed for a in ancestors(p)}
        self.plan_departments(needed)

        # Two stored links on one mailbox (by its primary address or an alias) or on one
        # missing address: neither is trusted.
        by_link = _Multi()
        for eid in sorted(self.links):
            addr = self.link_email[eid]
            by_link.add(self.owner.get(addr, addr), eid)
        for addr, eids in sorted(by_link.more.items()):
            self.conflict(
                ConflictKind.MAILBOX_CLAIMED_TWICE,
                f"the stored links of employees {', '.join(eids)} all lead to {addr}; "
                "remove the wrong links",
                tuple(eids),
                (addr,),
            )
            if addr in self.owner:
                self.claimed.add(self.owner[addr])

        # Matching.
        matched: dict[str, str] = {}  # employee id -> the mailbox matched
        claims = _Multi()
        for p in self.people:
            eid = p.employee_id
            email, how = self.match(p, states[eid][0] is not Lifecycle.LEAVER)
            if self.noting(eid):
                self.note(eid, f"match: {email} by {how}" if email else f"match: {how}")
            for contested in self.contested.get(eid, ()):
                claims.add(contested, eid)
            if email is None:
                continue
            claims.add(email, eid)
            matched[eid] = email
        for email, eids in sorted(claims.more.items()):
            self.conflict(
                ConflictKind.MAILBOX_CLAIMED_TWICE,
                f"mailbox {email} is claimed by employees {', '.join(eids)}; fix the "
                "duplicate employee id or address in HR",
                tuple(eids),
                (email,),
            )
        self.claimed.update(claims.keys())  # matched or contested: not unmanaged
        for eid, email in matched.items():
            if self._protected(email):
                self.protected_hits.add(email)
                self.blocked.add(eid)
                self.note(eid, f"decision: {email} is a protected account; never touched")

        # Wanted primary addresses; the taken ones are conflicts.
        hr_addresses: set[str] = set(self.p_email.values())
        for p in self.people:
            if p.aliases:
                hr_addresses.update(_norm(a) for a in p.aliases)
        wanted: dict[str, str] = {}
        to_generate: list[tuple[str, str]] = []
        for p in self.people:
            eid = p.employee_id
            if eid in self.blocked:
                continue
            link = self.links.get(eid)
            m_email = matched.get(eid)
            if states[eid][0] is Lifecycle.LEAVER:
                if m_email is not None:
                    wanted[eid] = m_email  # a leaver's address is not changed any more
                continue
            if p.email:
                wanted[eid] = self.p_email[eid]
            elif link is not None:
                wanted[eid] = self.link_email[eid]
            elif m_email is not None:
                wanted[eid] = m_email
            elif states[eid][0] in wants_mailbox:
                to_generate.append((eid, p.name))
        generated = generate_addresses(
            to_generate,
            template=policy.address_template,
            fallback_template=policy.address_fallback_template,
            domain=policy.domain,
            # One set, built by the allocator (not a union of copies of 100,000 addresses).
            taken=chained(self.owner, self.groups, hr_addresses, self.link_email.values()),
        )  # fmt: skip
        wanted.update(generated)
        by_wanted = _Multi()
        for eid, addr in wanted.items():
            by_wanted.add(addr, eid)
        several = by_wanted.more
        for addr in sorted(by_wanted.keys()):
            if addr in several:
                wanters = several[addr]
                self.conflict(
                    ConflictKind.ADDRESS_TAKEN,
                    f"employees {', '.join(sorted(wanters))} all want the address {addr}; "
                    "fix the duplicate in HR",
                    tuple(sorted(wanters)),
                    (addr,),
                )
                continue
            eid = by_wanted.one[addr]
            own = matched.get(eid)
            holder = self.owner.get(addr)
            if (holder is not None and holder != own) or addr in self.groups:
                what = "a group" if addr in self.groups else f"mailbox {holder}"
                self.conflict(
                    ConflictKind.ADDRESS_TAKEN,
                    f"employee {eid} wants the address {addr}, which is already {what}; "
                    "choose another address in HR or free it in Exmail",
                    (eid,),
                    (addr,),
                )

        # Per-person decisions.
        alias_claims: dict[str, str] = {addr: eid for eid, addr in wanted.items()}
        for p in self.people:
            eid = p.employee_id
            if eid in self.blocked:
                if eid in matched:
                    self.final_departments[matched[eid]] = self._current_depts(matched[eid])
                continue
            state, why = states[eid]
            if self.noting(eid):
                self.note(eid, f"lifecycle: {state.value} ({why})")
            email = matched.get(eid)
            if email is not None and self._no_slot_for_new_address(p, state, email, wanted[eid]):
                continue
            aliases = self._hr_aliases(p, wanted.get(eid, ""), email, alias_claims)
            if email is None:
                self._unmatched(p, state, why, wanted.get(eid), eid in generated, aliases)
            else:
                self._matched(p, state, why, email, wanted[eid], eid in generated, aliases)

        # Linked employees absent from HR.
        absent = sorted(set(self.links) - self.in_hr)
        for eid in absent:
            if eid in self.blocked:
                continue
            link = self.links[eid]
            if eid in self.desired.quarantined:
                self.note(eid, "decision: quarantined in this snapshot; left as it is")
                continue
            primary = self.owner.get(self.link_email[eid])
            if primary is not None and primary in self.holds:
                self.note(eid, f"decision: {self.holds.mailboxes[primary].reason}")
                continue
            if primary is None:
                self._chain_add(
                    eid,
                    ActionKind.UNLINK,
                    link.email,
                    "the employee is no longer in HR and the linked mailbox no longer exists",
                )
                continue
            if self._protected(primary):
                self.protected_hits.add(primary)
                self.claimed.add(primary)
                continue
            if primary in self.claimed:
                # Someone in HR matches (or contests) this mailbox now: the link of a person
                # who left is stale; dropping it changes nothing in Exmail.
                self._chain_add(
                    eid,
                    ActionKind.UNLINK,
                    link.email,
                    f"the employee is no longer in HR and {primary} is matched to someone else",
                )
                continue
            self.claimed.add(primary)
            if self._protected(primary):
                self.protected_hits.add(primary)
                continue
            if self.holds.all_absent is not None:
                self.holds.hold(primary, eid, self.holds.all_absent)
                self.note(eid, f"decision: {self.holds.all_absent}")
                continue
            self._leaver(eid, primary, link, "no longer in the HR source")

        self._former_by_ext_id()

        # Unmanaged mailboxes.
        unmanaged: list[str] = []
        for email in sorted(self.by_email):
            if email in self.claimed:
                continue
            m = self.by_email[email]
            if self._protected(email):
                self.protected_hits.add(email)
                self.final_departments[email] = self._current_depts(email)
                continue
            unmanaged.append(email)
            self.final_departments[email] = self._current_depts(email)
            if policy.disable_unmanaged and m.enabled and self.holds.all_absent is None:
                self.unmanaged_actions.append(
                    Action(
                        key=action_key(ActionKind.DISABLE_USER, email),
                        kind=ActionKind.DISABLE_USER,
                        target=email,
                        reason="unmanaged mailbox (no HR record); the policy disables these",
                        changes={"enabled": (True, False)},
                        update=UserUpdate(enabled=False),
                    )
                )
        # Mailboxes of conflicted people not seen yet keep their departments.
        final = self.final_departments
        for email in self.by_email:
            if email not in final:
                final[email] = self._current_depts(email)

        dept_deletes = self.plan_department_deletes(needed)
        return self.finish(config_fingerprint, unmanaged, dept_deletes)

    def _former_by_ext_id(self) -> None:
        """Unlinked mailboxes carrying the id of someone HR had and no longer has: leavers."""
        for eid in sorted(self.desired.former - self.in_hr - set(self.links)):
            if eid in self.desired.quarantined:
                continue
            for email in self.by_ext.get(eid):
                if email in self.claimed:
                    continue
                self.claimed.add(email)
                if self._protected(email):
                    self.protected_hits.add(email)
                elif self.holds.all_absent is not None:
                    self.holds.hold(email, eid, self.holds.all_absent)
                else:
                    self._leaver(eid, email, None, "no longer in the HR source (the mailbox "
                                 "carries the employee id as extid)")  # fmt: skip

    # --- per person -------------------------------------------------------------------------

    def _current_depts(self, email: str) -> tuple[str, ...]:
        """The mailbox's departments after the planned moves, sorted."""
        got = self._depts_cache.get(email)
        if got is None:
            depts = self.by_email[email].departments
            if self.moves:  # a few hundred paths among 100,000 mailboxes: each relocated once
                moved = self._relocated
                for d in depts:
                    if d not in moved:
                        moved[d] = self.relocate(d)
                depts = tuple(moved[d] for d in depts)
            got = _sorted_paths(depts)
            self._depts_cache[email] = got
        return got

    def _hr_aliases(
        self, p: Person, primary: str, own: str | None, alias_claims: dict[str, str]
    ) -> tuple[str, ...]:
        """HR's aliases that this person may have: not their primary, not someone else's."""
        if self.policy.alias_mode is AliasMode.IGNORE:
            return ()
        out: list[str] = []
        for a in sorted({_norm(x) for x in p.aliases}):
            if a == primary:
                continue
            holder = self.owner.get(a)
            other = alias_claims.get(a)
            other = None if other == p.employee_id else other
            if (holder is not None and holder != own) or a in self.groups or other is not None:
                by = (
                    f"employee {other}"
                    if other
                    else ("a group" if a in self.groups else f"mailbox {holder}")
                )
                self.conflict(
                    ConflictKind.ALIAS_TAKEN,
                    f"employee {p.employee_id}'s alias {a} is already used by {by}; the alias "
                    "is left out",
                    (p.employee_id,),
                    (a,),
                )
                continue
            alias_claims[a] = p.employee_id
            out.append(a)
        return tuple(out)

    def _unmatched(
        self,
        p: Person,
        state: Lifecycle,
        why: str,
        address: str | None,
        was_generated: bool,
        aliases: tuple[str, ...],
    ) -> None:
        eid = p.employee_id
        link = self.links.get(eid)
        if state not in {Lifecycle.ACTIVE, Lifecycle.ON_LEAVE_KEEP} or address is None:
            if state is Lifecycle.LEAVER and link is not None:
                self._chain_add(
                    eid, ActionKind.UNLINK, link.email,
                    f"{why}, and the linked mailbox no longer exists",
                )  # fmt: skip
            else:
                self.note(eid, f"decision: no mailbox is created ({why})")
            return
        depts = _sorted_paths(p.departments)
        if self.policy.alias_mode is AliasMode.IGNORE:
            aliases = ()
        if len(aliases) > MAX_ALIASES:
            self._too_many(eid, aliases)
            aliases = aliases[:MAX_ALIASES]
        mb = Mailbox(
            email=address,
            name=p.name,
            ext_id=eid,
            departments=depts,
            aliases=aliases,
            position=p.position,
            tel=p.tel,
            mobile=p.mobile,
            gender=p.gender,
            enabled=True,
        )
        changes: dict[str, tuple[ChangeValue, ChangeValue]] = {
            "email": (None, address),
            "name": (None, p.name),
            "departments": (None, depts),
        }
        for f, v in (("position", p.position), ("tel", p.tel), ("mobile", p.mobile)):
            if v:
                changes[f] = (None, v)
        if p.gender is not Gender.UNSET:
            changes["gender"] = (None, int(p.gender))
        if aliases:
            changes["aliases"] = (None, aliases)
        generated = was_generated or (p.email is None and link is not None and link.generated)
        how = (
            "generated from the template"
            if was_generated
            else ("kept from the stored link" if p.email is None else "from HR")
        )
        self.new_members.append(depts)
        self._chain_add(
            eid,
            ActionKind.CREATE_USER,
            address,
            f"{why}; no mailbox yet (address {how}); the initial password is generated at "
            f"apply, delivered via '{self.policy.password_delivery}'"
            + (
                ", and must be changed at first login"
                if self.policy.change_password_at_login
                else ""
            ),
            changes=changes,
            mailbox=mb,
            deps=self.dept_deps(depts),
            link=LinkRecord(eid, address, generated=generated),
            password=PasswordPolicy(
                delivery=self.policy.password_delivery,
                change_at_login=self.policy.change_password_at_login,
            ),
        )

    def _no_slot_for_new_address(
        self, p: Person, state: Lifecycle, email: str, address: str
    ) -> bool:
        """An address change adds the new address as an alias first; with five aliases already
        there is no room, so the person is a conflict rather than a failing action."""
        m = self.by_email[email]
        if state is Lifecycle.LEAVER or address == email or len(m.aliases) < MAX_ALIASES:
            return False
        if address in {_norm(a) for a in m.aliases}:
            return False
        eid = p.employee_id
        self.conflict(
            ConflictKind.TOO_MANY_ALIASES,
            f"employee {eid}'s address change {email} -> {address} needs a free alias slot, "
            f"but the mailbox has {len(m.aliases)} aliases (Exmail allows {MAX_ALIASES}); "
            "remove one in Exmail or in HR",
            (eid,),
            (email, address),
        )
        self.blocked.add(eid)
        self.final_departments[email] = self._current_depts(email)
        return True

    def _too_many(self, eid: str, aliases: tuple[str, ...]) -> None:
        self.conflict(
            ConflictKind.TOO_MANY_ALIASES,
            f"employee {eid} would have {len(aliases)} aliases, Exmail allows {MAX_ALIASES}; "
            f"{', '.join(aliases[MAX_ALIASES:])} left out",
            (eid,),
            aliases[MAX_ALIASES:],
        )

    def _matched(
        self,
        p: Person,
        state: Lifecycle,
        why: str,
        email: str,
        address: str,
        was_generated: bool,
        hr_aliases: tuple[str, ...],
    ) -> None:
        eid = p.employee_id
        link = self.links.get(eid)
        m = self.by_email[email]
        current_depts = self._current_depts(email)
        if state is Lifecycle.LEAVER:
            self.final_departments[email] = current_depts
            self._leaver(eid, email, link, why)
            return
        if self._unchanged(p, state, m, email, address, link, hr_aliases, current_depts):
            self.final_departments[email] = current_depts
            return

        target = email
        cur_aliases = {_norm(a) for a in m.aliases} if m.aliases else set()
        cur_sorted = _sorted_tuple(cur_aliases)
        # Address change: add the new address as an alias, then swap.
        if address != email:
            if address not in cur_aliases:
                added = sorted_unique([*cur_aliases, address])
                self._chain_add(
                    eid,
                    ActionKind.ADD_ALIAS,
                    email,
                    f"address change to {address}: first add it as an alias",
                    alias=address,
                    changes={"aliases": (cur_sorted, added)},
                    update=UserUpdate(aliases=added),
                )
            self._chain_add(
                eid,
                ActionKind.SWAP_PRIMARY,
                email,
                f"address change: {address} becomes the primary address, {email} stays an alias",
                alias=address,
                changes={"email": (email, address)},
            )
            cur_aliases = (cur_aliases - {address}) | {email}
            cur_sorted = _sorted_tuple(cur_aliases)
            target = address

        upd: dict[str, object] = {}
        changes: dict[str, tuple[ChangeValue, ChangeValue]] = {}
        managed = self.policy.managed_fields
        if not (m.name == p.name and m.position == p.position and m.tel == p.tel
                and m.mobile == p.mobile):  # fmt: skip
            for f in ("name", "position", "tel", "mobile"):
                old, new = getattr(m, f), getattr(p, f)
                if f in managed and old != new:
                    upd[f] = new
                    changes[f] = (old, new)
        if "gender" in managed and p.gender is not Gender.UNSET and p.gender != m.gender:
            upd["gender"] = p.gender
            changes["gender"] = (int(m.gender), int(p.gender))
        final_depts = current_depts
        deps: tuple[str, ...] = ()
        if "departments" in managed:
            want = _sorted_paths(p.departments)
            if want != current_depts:
                upd["departments"] = want
                changes["departments"] = (current_depts, want)
                final_depts = want
                deps = self.dept_deps(want)
        self.final_departments[email] = final_depts
        if self.policy.set_ext_id and m.ext_id != eid:
            upd["ext_id"] = eid
            changes["ext_id"] = (m.ext_id, eid)
        mode = self.policy.alias_mode
        if mode is not AliasMode.IGNORE:
            want_aliases = set(hr_aliases) - {address}
            if mode is AliasMode.ADD:
                want_aliases |= cur_aliases
            else:
                # An address change promised "the old address stays an alias": exact mode
                # must not take it away, now or in a later run, or mail to it bounces.
                former = self.desired.former_addresses.get(p.employee_id, frozenset())
                want_aliases |= cur_aliases & (former | {email})
                want_aliases.discard(address)
            final = _sorted_tuple(want_aliases)
            if len(final) > MAX_ALIASES:
                keep = sorted(cur_aliases & want_aliases)
                extra = [a for a in final if a not in cur_aliases]
                final_list = (keep + extra)[: max(MAX_ALIASES, len(keep))]
                self._too_many(eid, tuple(keep + extra))
                final = tuple(sorted(final_list))
            if final != cur_sorted:
                upd["aliases"] = final
                changes["aliases"] = (cur_sorted, final)
        if upd:
            self._chain_add(
                eid,
                ActionKind.UPDATE_USER,
                target,
                "HR differs in " + ", ".join(sorted(changes)),
                changes=changes,
                update=UserUpdate(**upd),  # type: ignore[arg-type]
                deps=deps,
            )
            if "departments" in upd:
                key = self.chains[eid].actions[-1].key
                for d in current_depts:
                    self.dept_leavers[d].append(key)

        disabled_since = link.disabled_since if link is not None else None
        if state is Lifecycle.ON_LEAVE_DISABLED:
            if m.enabled:
                disabled_since = self.today
                self._chain_add(
                    eid, ActionKind.DISABLE_USER, target, why,
                    changes={"enabled": (True, False)}, update=UserUpdate(enabled=False),
                )  # fmt: skip
            elif disabled_since is None:
                disabled_since = self.today
        elif state is not Lifecycle.NOT_YET and not m.enabled:
            disabled_since = None
            self._chain_add(
                eid, ActionKind.ENABLE_USER, target,
                f"{why} but the mailbox is disabled (rehire or return)",
                changes={"enabled": (False, True)}, update=UserUpdate(enabled=True),
            )  # fmt: skip
        generated = p.email is None and (
            was_generated or (link is not None and link.generated and link.email == address)
        )
        self._store_link(eid, LinkRecord(eid, address, generated, disabled_since), why)

    def _unchanged(
        self,
        p: Person,
        state: Lifecycle,
        m: Mailbox,
        email: str,
        address: str,
        link: IdentityLink | None,
        hr_aliases: tuple[str, ...],
        current_depts: tuple[str, ...],
    ) -> bool:
        """The usual person, checked first: linked to this mailbox by its HR address, no
        aliases on either side, the same fields and departments, enabled and staying so, no
        action yet. :meth:`_matched` would plan nothing and keep the link as it is; it is not
        run for them (nor when notes are kept: ``--only`` explains every step)."""
        eid = p.employee_id
        return (
            self.only is None
            and address == email
            and link is not None
            and not link.generated
            and p.email is not None
            and self.link_email[eid] == address
            and m.enabled
            and state is not Lifecycle.ON_LEAVE_DISABLED
            and not m.aliases
            and not hr_aliases
            and m.name == p.name
            and m.position == p.position
            and m.tel == p.tel
            and m.mobile == p.mobile
            and (p.gender is Gender.UNSET or p.gender == m.gender)
            and (m.ext_id == eid or not self.policy.set_ext_id)
            and eid not in self.chains
            and (
                "departments" not in self.policy.managed_fields
                or _sorted_paths(p.departments) == current_depts
            )
        )

    def _leaver(self, eid: str, email: str, link: IdentityLink | None, why: str) -> None:
        m = self.by_email[email]
        generated = bool(link and link.generated)
        if m.enabled:
            self._chain_add(
                eid, ActionKind.DISABLE_USER, email, f"leaver: {why}",
                changes={"enabled": (True, False)}, update=UserUpdate(enabled=False),
            )  # fmt: skip
            self._store_link(eid, LinkRecord(eid, email, generated, self.today), why)
            return
        since = link.disabled_since if link is not None else None
        if since is None:
            self._store_link(
                eid, LinkRecord(eid, email, generated, self.today),
                f"leaver ({why}), mailbox already disabled: the grace period starts today",
            )  # fmt: skip
            return
        if grace_over(since, self.policy, self.today):
            self._chain_add(
                eid,
                ActionKind.DELETE_USER,
                email,
                f"leaver: {why}; disabled since {since}, grace period of "
                f"{self.policy.grace_days} days is over",
                changes={"exists": (True, False)},
            )
            key = self.chains[eid].actions[-1].key
            for d in self._current_depts(email):
                self.dept_leavers[d].append(key)
            self.final_departments[email] = ()
            return
        self._store_link(
            eid, LinkRecord(eid, email, generated, since),
            f"leaver, disabled since {since}; deleted on {delete_due(since, self.policy)}",
        )  # fmt: skip

    def _store_link(self, eid: str, record: LinkRecord, why: str) -> None:
        """Attach the link to the person's last action, or add a ``link`` action when the
        stored link differs and nothing else happens."""
        old = self.links.get(eid)
        same = (
            old is not None
            and self.link_email[eid] == record.email
            and old.generated == record.generated
            and old.disabled_since == record.disabled_since
        )
        chain = self.chains.get(eid)
        if chain and chain.actions:
            last = chain.actions[-1]
            chain.actions[-1] = replace(last, link=record)
            return
        if same:
            self.note(eid, "decision: nothing to change")
            return
        changes: dict[str, tuple[ChangeValue, ChangeValue]] = {}
        if old is None:
            changes["link"] = (None, record.email)
        else:
            if self.link_email[eid] != record.email:
                changes["email"] = (old.email, record.email)
            if old.generated != record.generated:
                changes["generated"] = (old.generated, record.generated)
            if old.disabled_since != record.disabled_since:
                changes["disabled_since"] = (
                    old.disabled_since.isoformat() if old.disabled_since else None,
                    record.disabled_since.isoformat() if record.disabled_since else None,
                )
        self._chain_add(
            eid,
            ActionKind.LINK,
            record.email,
            f"record the identity link ({why})",
            changes=changes,
            link=record,
        )

    def _chain_add(
        self,
        eid: str,
        kind: ActionKind,
        target: str,
        reason: str,
        *,
        changes: Mapping[str, tuple[ChangeValue, ChangeValue]] | None = None,
        deps: tuple[str, ...] = (),
        mailbox: Mailbox | None = None,
        update: UserUpdate | None = None,
        alias: str | None = None,
        link: LinkRecord | None = None,
        password: PasswordPolicy | None = None,
    ) -> None:
        chain = self.chains.setdefault(eid, _Chain())
        prev = (chain.actions[-1].key,) if chain.actions else ()
        # A link is about an employee, not an address: its key names the employee.
        by_employee = kind in {ActionKind.LINK, ActionKind.UNLINK}
        action = Action(
            key=action_key(kind, eid if by_employee else target),
            kind=kind,
            target=target,
            employee_id=eid,
            reason=reason,
            changes=dict(changes or {}),
            depends_on=tuple(sorted(set(prev) | set(deps))),
            mailbox=mailbox,
            update=update,
            alias=alias,
            link=link,
            password=password,
        )
        chain.actions.append(action)
        self.note(eid, f"action {action.key}: {reason}")
        for f, (old, new) in action.changes.items():
            self.note(eid, f"  {f}: {format_value(old, f)} → {format_value(new, f)}")

    # --- 7. departments to delete ----------------------------------------------------------

    def plan_department_deletes(self, needed: set[str]) -> list[Action]:
        if not self.policy.delete_empty_departments:
            return []
        occupied: set[str] = set()
        for depts in [*self.final_departments.values(), *self.new_members]:
            for d in depts:
                occupied.add(d)
                occupied.update(ancestors(d))
        hr_paths: set[str] = set(needed)
        for dept in self.desired.previous_departments:
            for q in (dept.path, self.relocate(dept.path)):
                if q:
                    hr_paths.add(q)
                    hr_paths.update(ancestors(q))
        hr = frozenset(hr_paths)
        children: dict[str, list[str]] = defaultdict(list)
        for p in self.cur:
            children[parent_path(p)].append(p)
        deletable: dict[str, str] = {}
        out: list[Action] = []
        for p in sorted(self.cur, key=lambda x: (-path_depth(x), x)):
            if p in needed or p in occupied or not self.policy.is_managed_department(p, hr):
                continue
            if not all(c in deletable for c in children.get(p, ())):
                continue
            key = action_key(ActionKind.DELETE_DEPARTMENT, p)
            deps = {deletable[c] for c in children.get(p, ())} | set(self.dept_leavers.get(p, ()))
            deletable[p] = key
            out.append(
                Action(
                    key=key,
                    kind=ActionKind.DELETE_DEPARTMENT,
                    target=p,
                    reason="HR no longer has this department and it is empty after the plan",
                    depends_on=tuple(sorted(deps)),
                )
            )
        return out

    # --- 8. assembling -----------------------------------------------------------------------

    def finish(
        self, config_fingerprint: str, unmanaged: list[str], dept_deletes: list[Action]
    ) -> Plan:
        user_actions = [a for eid in sorted(self.chains) for a in self.chains[eid].actions]
        actions = [*self.dept_actions, *user_actions, *self.unmanaged_actions, *dept_deletes]
        conflicts = self.conflicts
        # The population the shares are taken of: the mailboxes the engine manages, plus the
        # unmanaged ones when the policy lets it disable them.
        managed = len(self.claimed - self.protected_hits)
        if self.policy.disable_unmanaged:
            managed += len(unmanaged)
        if self.only is not None:
            keep: set[str] = {a.key for a in user_actions if a.employee_id in self.only}
            by_key = {a.key: a for a in actions}
            stack = list(keep)
            while stack:
                for d in by_key[stack.pop()].depends_on:
                    if d not in keep:
                        keep.add(d)
                        stack.append(d)
            actions = [a for a in actions if a.key in keep]
            conflicts = [c for c in conflicts if set(c.employee_ids) & self.only]
            unmanaged = []
        stats = PlanStats(
            # Quarantined rows are still rows of the export: held back, not gone.
            source_size=len(self.in_hr | self.desired.quarantined),
            previous_size=self.desired.previous_size,
            managed=max(managed, 0),
            disables=sum(1 for a in actions if a.kind is ActionKind.DISABLE_USER),
            deletes=sum(1 for a in actions if a.kind is ActionKind.DELETE_USER),
            updates=sum(1 for a in actions if a.kind in UPDATE_KINDS),
        )
        explanations = (
            {eid: self.notes.get(eid, ["not in the HR snapshot nor linked"]) for eid in self.only}
            if self.only is not None
            else None
        )
        return make_plan(
            created_at=self.now,
            config_fingerprint=config_fingerprint,
            state_fingerprint=self.actual.fingerprint(),
            actions=actions,
            conflicts=conflicts,
            unmanaged=unmanaged,
            protected=sorted(self.protected_hits),
            quarantined=sorted(self.desired.quarantined),
            blocked_reasons=brake_findings(stats, self.policy),
            explanations=explanations,
            held=self.holds.mailboxes.values() if self.only is None else (),
        )
