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

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from syncengine.addresses import generate_addresses
from syncengine.domain import (
    Department,
    IdentityLink,
    MailboxState,
    Person,
    UnidentifiedRow,
    UserUpdate,
    ancestors,
)
from syncengine.plan import (
    UPDATE_KINDS,
    Action,
    ActionKind,
    ConflictKind,
    Plan,
    action_key,
    make_plan,
)
from syncengine.planner_base import Multi, norm
from syncengine.planner_people import PeoplePlanner
from syncengine.policy import (
    Lifecycle,
    PlanStats,
    Policy,
    brake_findings,
    lifecycle,
)


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


class _Planner(PeoplePlanner):
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
        by_link = Multi()
        owner = self.owner
        for eid, addr in self.link_email.items():
            by_link.add(owner.get(addr, addr), eid)
        for eids in by_link.more.values():
            eids.sort()  # as if added in employee id order
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
        claims = Multi()
        claim_one, claim_more = claims.one, claims.more
        noting = self.only is not None
        contested = self.contested
        for p in self.people:
            eid = p.employee_id
            email, how = self.match(p, states[eid][0] is not Lifecycle.LEAVER)
            if noting and self.noting(eid):
                self.note(eid, f"match: {email} by {how}" if email else f"match: {how}")
            if contested:
                for c in contested.get(eid, ()):
                    claims.add(c, eid)
            if email is None:
                continue
            if email in claim_one or email in claim_more:
                claims.add(email, eid)
            else:
                claim_one[email] = eid  # Multi.add of the usual first claim
            matched[eid] = email
        for email, eids in sorted(claims.more.items()):
            self.conflict(
                ConflictKind.MAILBOX_CLAIMED_TWICE,
                f"mailbox {email} is claimed by employees {', '.join(eids)}; fix the "
                "duplicate employee id or address in HR",
                tuple(eids),
                (email,),
            )
        self.claimed.update(claim_one)  # matched or contested: not unmanaged
        self.claimed.update(claim_more)
        for eid, email in matched.items():
            if self._protected(email):
                self.protected_hits.add(email)
                self.blocked.add(eid)
                self.note(eid, f"decision: {email} is a protected account; never touched")

        # Wanted primary addresses; the taken ones are conflicts.
        hr_addresses: set[str] = set(self.p_email.values())
        for p in self.people:
            if p.aliases:
                hr_addresses.update(norm(a) for a in p.aliases)
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
        generated = {} if not to_generate else generate_addresses(
            to_generate,
            template=policy.address_template,
            fallback_template=policy.address_fallback_template,
            domain=policy.domain,
            # Looked up where they are, not copied into one set of 300,000 addresses.
            taken=(),
            taken_in=(owner, self.groups, hr_addresses, {e for e in self.link_email.values()
                                                       if e not in owner}),
        )  # fmt: skip
        wanted.update(generated)
        by_wanted = Multi()
        wanted_one, several = by_wanted.one, by_wanted.more
        for eid, addr in wanted.items():
            if addr in wanted_one or addr in several:
                by_wanted.add(addr, eid)
            else:
                wanted_one[addr] = eid
        # Only the addresses that are a conflict are sorted (the order conflicts are noted in).
        groups, owner = self.groups, self.owner
        clashing = list(several)
        for addr, eid in wanted_one.items():
            holder = owner.get(addr)
            if (holder is not None and holder != matched.get(eid)) or addr in groups:
                clashing.append(addr)
        for addr in sorted(clashing):
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
        # Who claims each address, for HR aliases: only built when someone has one.
        alias_claims: dict[str, str] = (
            {addr: eid for eid, addr in wanted.items()}
            if any(p.aliases for p in self.people)
            else {}
        )
        blocked = self.blocked
        for p in self.people:
            eid = p.employee_id
            if eid in blocked:
                if eid in matched:
                    self.final_departments[matched[eid]] = self._current_depts(matched[eid])
                continue
            state, why = states[eid]
            if noting and self.noting(eid):
                self.note(eid, f"lifecycle: {state.value} ({why})")
            email = matched.get(eid)
            if (
                email is not None
                and wanted[eid] != email  # the usual: no new address, so no slot needed
                and self._no_slot_for_new_address(p, state, email, wanted[eid])
            ):
                continue
            aliases = (
                self._hr_aliases(p, wanted.get(eid, ""), email, alias_claims) if p.aliases else ()
            )
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
        claimed = self.claimed
        for email in sorted(e for e in self.by_email if e not in claimed):  # the few left
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
