"""Address checks started before the diff: the paced ``user/batchcheck`` calls overlap it.

Mail groups cannot be listed by any Exmail API, so every address a plan would create is
checked with Exmail (20 a call on Gen 2, at the process's pace: 15 calls a second by default)
and the plan is made again when one is a group (:func:`syncengine.service.planning.
diff_knowing_groups`). At 1% changes in 100,000 people that is some 400 addresses, 20 calls
and 1.4 s of waiting for the pace after a diff that is otherwise done.

:func:`likely_new_addresses` guesses those addresses from the inputs before the diff runs, and
:class:`EarlyChecks` checks them in a thread while it does. What the plan really creates is
still checked after the diff (only the addresses the guess missed cost a call then), and only
those addresses count, so the plan is the same as without the guess: a wrong guess costs a
call, never a different plan.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import date

from syncengine.addresses import generate_addresses
from syncengine.domain import AddressKind, IdentityLink, MailboxState, normalise_email
from syncengine.planner import Desired
from syncengine.policy import Lifecycle, Policy, lifecycle
from syncengine.service.background import Background


def known_addresses(state: MailboxState) -> set[str]:
    """Every address the state knows (primaries, aliases, groups), normalised."""
    known = set(map(normalise_email, (m.email for m in state.mailboxes)))
    known.update(map(normalise_email, (a for m in state.mailboxes if m.aliases for a in m.aliases)))
    known.update(map(normalise_email, state.groups))
    return known


def likely_new_addresses(
    desired: Desired,
    state: MailboxState,
    links: Mapping[str, IdentityLink],
    policy: Policy,
    today: date,
    known: Collection[str],
) -> set[str]:
    """The addresses a plan of ``desired`` will probably create that are not in ``known``
    (:func:`known_addresses` of ``state``).

    The HR addresses and aliases of the people who keep a mailbox, and an address generated
    (as the planner generates them) for each such person without an address, a link or a
    mailbox carrying their employee id. A guess: conflicts, holds and matches by address are
    not looked at, which the check after the diff makes up for.
    """
    keeps = {Lifecycle.ACTIVE, Lifecycle.ON_LEAVE_KEEP}
    found: set[str] = set()
    nameless: list[tuple[str, str]] = []
    for p in desired.people:
        if p.email in known and not p.aliases:  # the usual person: nothing new, whatever state
            continue
        fresh = [a for a in map(normalise_email, (p.email or "", *p.aliases)) if a]
        fresh = [a for a in fresh if a not in known]
        nameless_one = not p.email and p.employee_id not in links
        if not (fresh or nameless_one):
            continue
        if lifecycle(p, policy, today)[0] not in keeps:
            continue
        found.update(fresh)
        if nameless_one:
            nameless.append((p.employee_id, p.name))
    if nameless:
        ext_ids = {m.ext_id for m in state.mailboxes if m.ext_id}
        hr_addresses = {
            normalise_email(a) for p in desired.people for a in (p.email, *p.aliases) if a
        }
        linked = {a for a in (normalise_email(k.email) for k in links.values()) if a not in known}
        generated = generate_addresses(
            [(eid, name) for eid, name in nameless if eid not in ext_ids],
            template=policy.address_template,
            fallback_template=policy.address_fallback_template,
            domain=policy.domain,
            taken=(),
            taken_in=(known, hr_addresses, linked),
        )
        found.update(generated.values())
    return {a for a in found if a not in known}


def likely_new_by_links(
    desired: Desired, links: Mapping[str, IdentityLink], policy: Policy, today: date
) -> set[str]:
    """The part of :func:`likely_new_addresses` that needs no live state, for checks started
    while Exmail is still being read: the new HR address of each linked person who keeps a
    mailbox and whose HR address is not the linked one (an address change).

    Everything else waits for the state: aliases and unlinked people with an HR address (who
    may own a mailbox already: a first run with no links would check every address of the
    directory), and generated addresses (pypinyin's 57 MiB loaded while the read's answer is
    being decoded would add to the run's memory peak).
    """
    keeps = {Lifecycle.ACTIVE, Lifecycle.ON_LEAVE_KEEP}
    found: set[str] = set()
    for p in desired.people:
        if not p.email:
            continue
        link = links.get(p.employee_id)
        if link is None or p.email == link.email:  # the usual person
            continue
        address = normalise_email(p.email)
        changed = address and address != normalise_email(link.email)
        if changed and lifecycle(p, policy, today)[0] in keeps:
            found.add(address)
    return found


class EarlyChecks:
    """``check(addresses)`` run in a thread (:class:`~syncengine.service.background.
    Background`), started at once unless there is nothing to check; :meth:`result` waits for
    it. The caller must not use the provider for anything else until it returned.

    ``before``: checks started earlier; this one checks only what they do not, and
    :attr:`addresses`, :meth:`wait` and :meth:`result` cover both."""

    def __init__(
        self,
        check: Callable[[list[str]], dict[str, AddressKind]],
        addresses: Collection[str],
        before: EarlyChecks | None = None,
    ) -> None:
        self._before = before
        earlier: frozenset[str] = before.addresses if before is not None else frozenset()
        ordered = sorted(set(addresses) - earlier)
        self.addresses: frozenset[str] = earlier | frozenset(ordered)
        self._job = Background(lambda: check(ordered), "address-checks") if ordered else None

    def wait(self) -> None:
        """Wait for the threads, whatever their outcome."""
        if self._before is not None:
            self._before.wait()
        if self._job is not None:
            self._job.wait()

    def result(self) -> dict[str, AddressKind]:
        """The kinds of the checked addresses (keys normalised); a check's error, if any."""
        try:
            kinds = self._before.result() if self._before is not None else {}
        finally:
            self.wait()  # both threads are done before anything is raised
        got = self._job.result() if self._job is not None else {}
        kinds.update((normalise_email(a), k) for a, k in got.items())
        return kinds
