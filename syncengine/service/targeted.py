"""The targeted read and plan of a hook batch: Exmail is asked about the people the batch
touches (and whatever their conflicts need), never the whole directory.

What is read, per batch (each a handful of calls, O(batch)):

1. the mailbox of each target's stored link (``user/get`` per address);
2. every address a target's record names (primary and aliases), checked in batches
   (Gen 1 ``user/check``, Gen 2 ``user/batchcheck``): a member's address is read with
   ``user/get``; an alias is read through the stored link of the employee who once had it as
   a primary (the audit's address changes); a group is noted as one;
3. the departments the plan needs, only when a target wants one that no mailbox read is in
   or an HR department moved (Gen 2: the tree, one ``department/list``; Gen 1: one
   ``party/list`` per distinct parent of the paths in play);
4. after planning, every address the plan would make exist is checked the same way; a holder
   found is read in and the plan is made again, so an address held by someone outside the
   batch is a conflict (or, for a generated address, the next free form), never a clobber.

The people planned are the targets plus the owners (stored link or ``ext_id``) of every
mailbox read, so "two people on one mailbox" and "another employee's ext_id" come out as a
whole-directory plan says them; ``planner.diff(only=targets)`` keeps the targets' actions.

Where a targeted read cannot name a holder (an alias nobody's address change explains, a
stored link whose mailbox is gone), the batch reads the whole directory instead: slower,
never wrong. Not covered: a mailbox carrying an unlinked target's employee id in ``ext_id``
at an address that is neither linked nor named by HR is found by the nightly sync only.

The brakes judge the plan against the whole directory, not the few people read: the source
size is the snapshot's with the hook records laid over it, the shrink baseline is the
previous good snapshot's, and the managed count is the number of stored identity links (the
figure the apply-time brake check uses, see :func:`syncengine.guard.apply_brakes`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from syncengine import planner
from syncengine.domain import (
    AddressKind,
    Department,
    IdentityLink,
    Mailbox,
    MailboxState,
    Party,
    Person,
    ancestors,
    normalise_email,
    normalise_path,
)
from syncengine.plan import UPDATE_KINDS, ActionKind, Plan, make_plan
from syncengine.planner import Desired
from syncengine.policy import PlanStats, Policy, brake_findings
from syncengine.service.planning import _addresses_to_create

log = logging.getLogger(__name__)

PLAN_ROUNDS = 4
"""How many times a targeted plan is made again at most because an address it would take
turned out to be held (each round reads the holders it found)."""


@runtime_checkable
class TargetedProvider(Protocol):
    """What a targeted read asks of the provider (both generations implement it)."""

    def get_users(self, emails: Sequence[str]) -> dict[str, Mailbox | None]: ...

    def existing_departments(self, paths: Collection[str]) -> tuple[Party, ...]: ...

    def check_addresses(self, addresses: Sequence[str]) -> dict[str, AddressKind]: ...


WHOLE_READ_FROM = 16
"""From this many people in a batch, a Gen 2 batch reads the whole directory instead (two
calls: ``department/list``, ``user/list`` of the root) and looks the people up in it: at the
default pace (15 calls/s) one ``user/get`` per person costs more than parsing 10,000 members
(about half a second of CPU). The plan is still made for the people in play only."""


class StateLookup:
    """The targeted read's questions answered from a whole directory read in memory; only
    addresses no member holds are asked of Exmail (a group is not in a directory read)."""

    def __init__(self, state: MailboxState, provider: TargetedProvider) -> None:
        self._provider = provider
        self._parties = state.parties
        self._holder: dict[str, Mailbox] = {}
        for m in sorted(state.mailboxes, key=lambda m: _norm(m.email)):
            self._holder[_norm(m.email)] = m
        for m in state.mailboxes:
            for a in m.aliases:
                self._holder.setdefault(_norm(a), m)

    def get_users(self, emails: Sequence[str]) -> dict[str, Mailbox | None]:
        """The mailbox holding each address (as primary or as alias)."""
        return {_norm(e): self._holder.get(_norm(e)) for e in emails}

    def existing_departments(self, paths: Collection[str]) -> tuple[Party, ...]:
        return self._parties

    def check_addresses(self, addresses: Sequence[str]) -> dict[str, AddressKind]:
        """USER for an address a member holds (its holder is then read by address), else
        what Exmail says (free, a group, invalid)."""
        out = {_norm(a): AddressKind.USER for a in addresses if _norm(a) in self._holder}
        rest = [a for a in addresses if _norm(a) not in out]
        if rest:
            out.update(self._provider.check_addresses(rest))
        return out


class FullReadNeeded(Exception):
    """The targeted read met a holder it cannot name; the caller reads the whole directory."""


def _norm(address: str) -> str:
    return normalise_email(address)


def _addresses(m: Mailbox) -> set[str]:
    return {_norm(m.email), *(_norm(a) for a in m.aliases)}


@dataclass
class TargetedRead:
    """The part of the directory one hook batch needs, grown as planning finds holders."""

    provider: TargetedProvider
    links_of: Callable[[Collection[str]], dict[str, IdentityLink]]
    """Stored links by employee id (only those asked for are loaded)."""
    links_to: Callable[[Collection[str]], dict[str, IdentityLink]]
    """Stored links by address."""
    former_addresses: Mapping[str, frozenset[str]]
    links: dict[str, IdentityLink] = dataclasses.field(default_factory=dict)
    """The links learnt so far: the targets', and those of every mailbox read."""
    mailboxes: dict[str, Mailbox] = dataclasses.field(default_factory=dict)
    groups: set[str] = dataclasses.field(default_factory=set)
    free: set[str] = dataclasses.field(default_factory=set)
    parties: tuple[Party, ...] = ()
    _asked: set[str] = dataclasses.field(default_factory=set)

    @property
    def known(self) -> set[str]:
        """Every address whose holder (or freedom) this read knows."""
        out = set(self.groups) | self.free
        for m in self.mailboxes.values():
            out |= _addresses(m)
        return out

    def state(self) -> MailboxState:
        return MailboxState(
            mailboxes=tuple(self.mailboxes[k] for k in sorted(self.mailboxes)),
            parties=self.parties,
            groups=tuple(sorted(self.groups)),
        )

    def _read(self, emails: Iterable[str]) -> dict[str, Mailbox | None]:
        wanted = sorted({_norm(e) for e in emails} - set(self.mailboxes))
        if not wanted:
            return {}
        found = self.provider.get_users(wanted)
        for m in found.values():
            if m is not None:
                self.mailboxes[_norm(m.email)] = m
        return found

    def _alias_owners(self, aliases: Iterable[str]) -> None:
        """Read the mailbox holding each alias, through the stored link of the employee
        whose former primary it is; FullReadNeeded when nobody explains one."""
        missing = [a for a in aliases if a not in self.known]
        once = {e for e, former in self.former_addresses.items()
                if any(_norm(a) in missing for a in former)}  # fmt: skip
        self.links.update(self.links_of(once - set(self.links)))
        owners: dict[str, str] = {}
        for eid in sorted(once):
            link = self.links.get(eid)
            for a in self.former_addresses[eid]:
                if link is not None:
                    owners.setdefault(_norm(a), _norm(link.email))
        self._read(owners[a] for a in missing if a in owners)
        unnamed = sorted(a for a in missing if a not in self.known)
        if unnamed:
            raise FullReadNeeded(f"no stored link explains who holds the alias(es) "
                                 f"{', '.join(unnamed)}")  # fmt: skip

    def learn(self, addresses: Iterable[str]) -> bool:
        """Check addresses this read does not know yet and read their holders; True when
        something new was learnt (a holder, a group)."""
        new = sorted({_norm(a) for a in addresses if a} - self.known)
        if not new:
            return False
        kinds = self.provider.check_addresses(new)
        before = (len(self.mailboxes), len(self.groups))
        users = [a for a in new if kinds.get(a) is AddressKind.USER]
        aliases = [a for a in new if kinds.get(a) is AddressKind.ALIAS]
        self.groups.update(a for a in new if kinds.get(a) is AddressKind.GROUP)
        found = self._read(users)
        gone = sorted(a for a, m in found.items() if m is None)
        if gone:  # held a moment ago, gone now: the directory is moving under us
            raise FullReadNeeded(f"{', '.join(gone)} changed while it was being read")
        self._alias_owners(aliases)
        self.free.update(a for a in new if a not in self.known)
        return (len(self.mailboxes), len(self.groups)) != before

    def start(self, people: Mapping[str, Person | None], targets: Sequence[str],
              paths: Iterable[str]) -> None:  # fmt: skip
        """Read the targets' linked mailboxes, the holders of the addresses their records
        name, and the departments in play."""
        self.links.update(self.links_of(targets))
        linked = [self.links[e].email for e in targets if e in self.links]
        found = self._read(linked)
        gone = sorted(a for a, m in found.items() if m is None)
        if gone:  # a linked mailbox renamed or removed outside the engine
            self.learn(gone)
            held = {a for m in self.mailboxes.values() for a in _addresses(m)}
            if any(a not in held for a in gone):
                raise FullReadNeeded(f"linked mailbox(es) {', '.join(gone)} not found")
        named: list[str] = []
        for eid in targets:
            person = people.get(eid)
            if person is not None:
                named.extend(a for a in (person.email, *person.aliases) if a)
        self.learn(named)
        # The departments the mailboxes read are in exist now; the tree is asked only when
        # the targets want another one or an HR department moved (a field change, the
        # common hook, costs no department call).
        seen = {normalise_path(d) for m in self.mailboxes.values() for d in m.departments}
        seen |= {a for d in seen for a in ancestors(d)}
        wanted = {normalise_path(p) for p in paths}
        for eid in targets:
            person = people.get(eid)
            if person is not None:
                wanted.update(normalise_path(d) for d in person.departments)
        wanted.discard("")
        if wanted <= seen:
            self.parties = tuple(Party(p) for p in sorted(seen - {""}))
        else:
            self.parties = self.provider.existing_departments(sorted(wanted | seen))

    def people_in_play(self, targets: Collection[str]) -> set[str]:
        """The targets and the owners of every mailbox read (by stored link or ext_id),
        their links loaded."""
        held = {a for m in self.mailboxes.values() for a in _addresses(m)}
        self.links.update(self.links_to(held - self._asked))
        self._asked |= held
        with_ext = {m.ext_id for m in self.mailboxes.values() if m.ext_id}
        self.links.update(self.links_of(with_ext - set(self.links)))
        out = set(targets) | with_ext
        out.update(eid for eid, lk in self.links.items() if _norm(lk.email) in held)
        return out


def department_paths_in_play(departments: Sequence[Department],
                             previous: Sequence[Department]) -> set[str]:  # fmt: skip
    """Both ends of every HR department rename or move (same HR id, another path): the
    planner moves a department only when it sees the old path exist and the new one not."""
    old = {d.hr_id: d.path for d in previous if d.hr_id}
    out: set[str] = set()
    for d in departments:
        if d.hr_id and d.hr_id in old and old[d.hr_id] != d.path:
            out.update((old[d.hr_id], d.path))
    return out


def restrict(desired: Desired, planned: Collection[str]) -> Desired:
    """``desired`` with only the ``planned`` people (the rest of it as it is)."""
    keep = set(planned)
    return dataclasses.replace(
        desired, people=tuple(p for p in desired.people if p.employee_id in keep)
    )


def plan_targeted(
    read: TargetedRead,
    desired: Desired,
    targets: Sequence[str],
    policy: Policy,
    now: datetime,
    *,
    config_fingerprint: str,
) -> tuple[Plan, MailboxState]:
    """The targets' plan from what ``read`` holds, re-made while it finds new holders of
    the addresses the plan would take (FullReadNeeded when they never settle)."""
    for _ in range(PLAN_ROUNDS):
        planned = read.people_in_play(targets)
        links = {e: lk for e, lk in read.links.items() if e in planned}
        state = read.state()
        plan = planner.diff(restrict(desired, planned), state, links, policy, now,
                            config_fingerprint=config_fingerprint, only=list(targets))  # fmt: skip
        if not read.learn(_addresses_to_create(plan, state)):
            return plan, state
    raise FullReadNeeded(f"the addresses the plan takes kept changing over {PLAN_ROUNDS} reads")


def judge_brakes(plan: Plan, desired: Desired, managed: int, policy: Policy) -> Plan:
    """``plan`` with its brake findings judged against the whole directory (see the module
    docstring) instead of the few people the targeted plan was made from."""
    stats = PlanStats(
        source_size=len({p.employee_id for p in desired.people} | desired.quarantined),
        previous_size=desired.previous_size,
        managed=managed,
        disables=plan.count(ActionKind.DISABLE_USER),
        deletes=plan.count(ActionKind.DELETE_USER),
        updates=plan.count(*UPDATE_KINDS),
    )
    return make_plan(
        created_at=plan.created_at,
        config_fingerprint=plan.config_fingerprint,
        state_fingerprint=plan.state_fingerprint,
        actions=plan.actions,
        conflicts=plan.conflicts,
        unmanaged=plan.unmanaged,
        protected=plan.protected,
        quarantined=plan.quarantined,
        blocked_reasons=brake_findings(stats, policy),
        explanations=plan.explanations,
        held=plan.held,
    )
