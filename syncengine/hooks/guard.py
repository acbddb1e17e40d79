"""What a hook event or a portal link may reach: the company's own, managed mailboxes only.

PURE: no I/O, no clock. The nightly run sees HR's whole export and may link an existing
mailbox to a person by its address ("adoption"); a hook carries one record from a sender that
only a shared secret vouches for, so it is held to a narrower rule:

* a hook never adopts: it may change the mailbox linked to its employee (stored link, or the
  employee id in the mailbox's ``ext_id``) and create a new one, but an upsert whose address
  is that of another existing mailbox (unmanaged: no HR record owns it; or protected) fails
  with the reason, and the mailbox stays as it is. The nightly run adopts, when HR's export
  says so;
* a portal link for an address outside the company's domains is refused before Exmail is
  asked (it cannot be one of ours).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from syncengine.domain import IdentityLink, Mailbox, Person, normalise_email


def outside_domains(address: str, domains: Iterable[str], default_domain: str) -> str | None:
    """Why ``address`` is not one of the company's (None when it is): its domain must be one
    of ``[exmail] domains`` or the address domain of the policy."""
    own = {d.strip().lower() for d in domains if d.strip()} | {default_domain.strip().lower()}
    _, at, domain = normalise_email(address).rpartition("@")
    if not at or not domain:
        return f"{address!r} is not an e-mail address"
    if domain not in own:
        return f"{domain} is not one of the company's domains ({', '.join(sorted(own))})"
    return None


def adoption_refusals(
    people: Mapping[str, Person],
    mailboxes: Iterable[Mailbox],
    links: Mapping[str, IdentityLink],
    is_protected: Callable[[str], bool],
) -> dict[str, str]:
    """Per employee whose hook record would take over an existing mailbox, why it may not.

    ``people``: the hook records (employee id -> person). An employee with a stored link or
    a mailbox carrying their id in ``ext_id`` is that mailbox's known owner: never refused
    here. A mailbox another employee owns (linked, or another ``ext_id``) is left to the
    planner, which reports the clash as a conflict."""
    linked = {normalise_email(link.email) for link in links.values()}
    by_address: dict[str, Mailbox] = {}
    with_ext: set[str] = set()
    for m in mailboxes:
        by_address[normalise_email(m.email)] = m
        for alias in m.aliases:
            by_address.setdefault(normalise_email(alias), m)
        if m.ext_id:
            with_ext.add(m.ext_id)
    refusals: dict[str, str] = {}
    for eid, person in sorted(people.items()):
        if eid in links or eid in with_ext or not person.email:
            continue
        wanted = normalise_email(person.email)
        mailbox = by_address.get(wanted)
        if mailbox is None:
            continue
        primary = normalise_email(mailbox.email)
        if is_protected(primary) or is_protected(wanted):
            what = "a protected account"
        elif mailbox.ext_id or primary in linked:
            continue  # another employee's mailbox: the planner's conflict says so
        else:
            what = "an existing mailbox no HR record owns"
        refusals[eid] = (
            f"{wanted} is {what} ({primary}); a hook never takes over a mailbox the "
            "nightly sync leaves alone: add the person to HR's export (the nightly sync links "
            "it), or choose another address"
        )
    return refusals
