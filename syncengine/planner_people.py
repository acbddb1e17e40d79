"""The planner's per-person decisions: matching leftovers, addresses, lifecycle, the actions of
one person and their link. Part of :mod:`syncengine.planner` (see its docstring).

PURE: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from syncengine.domain import (
    MAX_ALIASES,
    Gender,
    IdentityLink,
    Mailbox,
    Person,
    UserUpdate,
    sorted_unique,
)
from syncengine.plan import (
    Action,
    ActionKind,
    ChangeValue,
    ConflictKind,
    LinkRecord,
    PasswordPolicy,
    action_key,
)
from syncengine.planner_base import Chain, PlannerBase, norm, sorted_paths, sorted_tuple
from syncengine.policy import (
    AliasMode,
    Lifecycle,
    delete_due,
    grace_over,
)
from syncengine.render import format_value


class PeoplePlanner(PlannerBase):
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
        depts = self.by_email[email].departments
        got = self._depts_cache.get(depts)  # by departments: a read shares their tuples
        if got is None:
            key = depts
            if self.moves:  # a few hundred paths among 100,000 mailboxes: each relocated once
                moved = self._relocated
                for d in depts:
                    if d not in moved:
                        moved[d] = self.relocate(d)
                depts = tuple(moved[d] for d in depts)
            got = sorted_paths(depts)
            self._depts_cache[key] = got
        return got

    def _hr_aliases(
        self, p: Person, primary: str, own: str | None, alias_claims: dict[str, str]
    ) -> tuple[str, ...]:
        """HR's aliases that this person may have: not their primary, not someone else's."""
        if self.policy.alias_mode is AliasMode.IGNORE:
            return ()
        out: list[str] = []
        for a in sorted({norm(x) for x in p.aliases}):
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
        depts = sorted_paths(p.departments)
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
        if address in {norm(a) for a in m.aliases}:
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
        cur_aliases = {norm(a) for a in m.aliases} if m.aliases else set()
        cur_sorted = sorted_tuple(cur_aliases)
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
            cur_sorted = sorted_tuple(cur_aliases)
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
            want = sorted_paths(p.departments)
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
            final = sorted_tuple(want_aliases)
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
                or sorted_paths(p.departments) == current_depts
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
        chain = self.chains.setdefault(eid, Chain())
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
