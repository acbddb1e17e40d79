"""The planner's state and its shared steps: departments (moves, creates, deletes) and matching
people to mailboxes. Part of :mod:`syncengine.planner` (see its docstring for the decisions).

PURE: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import date, datetime
from operator import itemgetter
from typing import TYPE_CHECKING

from syncengine.domain import (
    IdentityLink,
    Mailbox,
    MailboxState,
    Person,
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
    Action,
    ActionKind,
    Conflict,
    ConflictKind,
    action_key,
)
from syncengine.policy import (
    Policy,
)

if TYPE_CHECKING:
    from syncengine.planner import Desired


def norm(value: str) -> str:
    """:func:`normalise_email` that keeps the same string object when it is already
    normal, so 100,000 addresses are not stored twice."""
    n = value.strip().lower()  # normalise_email, inlined: 300,000 calls a big plan
    return value if n == value else n


class Multi:
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


def sorted_tuple(values: AbstractSet[str]) -> tuple[str, ...]:
    """``tuple(sorted(values))``, without the sort for the usual none or one."""
    return tuple(sorted(values)) if len(values) > 1 else tuple(values)


def sorted_paths(paths: tuple[str, ...]) -> tuple[str, ...]:
    """Departments as a set, in a canonical order (fast for the usual one department)."""
    if len(paths) == 1:
        return paths if paths[0] else ()
    return sorted_unique(d for d in paths if d)


@dataclass
class Chain:
    """The actions of one person, in order; each depends on the one before."""

    actions: list[Action] = field(default_factory=list)


class PlannerBase:
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
            p.employee_id: norm(p.email) for p in self.people if p.email
        }

        # Indexes of the actual state (addresses lower-case).
        self.by_email: dict[str, Mailbox] = {}
        self.owner: dict[str, str] = {}  # any address (primary or alias) -> primary
        self.by_ext = Multi()
        normed = sorted(((norm(m.email), m) for m in actual.mailboxes), key=itemgetter(0))
        by_email, owner, by_ext = self.by_email, self.owner, self.by_ext
        ext_one, ext_more = by_ext.one, by_ext.more
        for e, m in normed:
            by_email[e] = m
            owner[e] = e
            for a in m.aliases:
                owner.setdefault(norm(a), e)
            ext = m.ext_id
            if ext:
                if ext in ext_one or ext in ext_more:
                    by_ext.add(ext, e)
                else:
                    ext_one[ext] = e  # Multi.add of the usual first one
        self.groups = {normalise_email(g) for g in actual.groups}
        self.link_email = {eid: norm(lk.email) for eid, lk in links.items()}
        self._depts_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
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
        self.chains: dict[str, Chain] = {}
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
        link_email = self.link_email.get(eid)
        if link_email is not None:
            # The usual person: a stored link to a mailbox that carries no other employee's
            # ext_id for them (see below: one mailbox found, by the link).
            primary = self.owner.get(link_email)
            by_ext = self.by_ext
            if primary and eid not in by_ext.more and by_ext.one.get(eid, primary) == primary:
                return primary, "stored link"
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
