"""Which mailboxes a plan must hold because an HR row that may be their owner's is damaged.

PURE: no I/O, no clock. The planner asks this before matching, so a held mailbox is claimed
(never unmanaged), never adopted by another person's address, and never disabled or deleted.

The rules (README, "What counts as a bad row"):

* A **quarantined employee** (their row has a problem, but the id is known) holds the mailbox
  their stored link leads to and every mailbox whose ``ext_id`` is their id.
* A **row without a usable employee id** (:class:`~syncengine.domain.UnidentifiedRow`) holds
  the mailboxes its addresses lead to (primary or alias), else the mailboxes whose display
  name is the row's name. A row that leads to no mailbox at all could be anyone absent from
  HR: it holds *every* removal of a person absent from HR (and every disable of an unmanaged
  mailbox) until the row is fixed. Holding too much for one night is cheap; disabling the
  wrong person is not, and "hold N arbitrary removals" would pick whom to spare by chance.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from syncengine.domain import Mailbox, UnidentifiedRow, normalise_email
from syncengine.plan import Held

HELD = "held: HR row has a problem"


@dataclass
class Holds:
    """The held mailboxes (primary address -> why) and the hold on every absent removal."""

    mailboxes: dict[str, Held] = field(default_factory=dict)
    all_absent: str | None = None

    def __contains__(self, email: str) -> bool:
        return email in self.mailboxes

    def hold(self, email: str, employee_id: str, reason: str) -> None:
        self.mailboxes.setdefault(email, Held(email, employee_id, f"{HELD}: {reason}"))


def find_holds(
    *,
    quarantined: Collection[str],
    reasons: Mapping[str, str],
    unidentified: Iterable[UnidentifiedRow],
    mailboxes: Mapping[str, Mailbox],
    owner: Mapping[str, str],
    ext_of: Callable[[str], Iterable[str]],
    link_email: Mapping[str, str],
) -> Holds:
    """The holds for one plan.

    ``mailboxes``: primary address -> mailbox; ``owner``: any address -> its mailbox's primary;
    ``ext_of``: the mailboxes whose ext_id is an employee id; ``link_email``: employee id ->
    the stored link's address.
    """
    holds = Holds()
    for eid in sorted(quarantined):
        why = reasons.get(eid) or "the row is quarantined"
        found = list(ext_of(eid))
        linked = link_email.get(eid)
        if linked is not None and linked in owner:
            found.append(owner[linked])
        for email in sorted(set(found)):
            holds.hold(email, eid, f"employee {eid}: {why}")
    by_name: dict[str, list[str]] | None = None
    for row in unidentified:
        where = f"row {row.row}" if row.row is not None else "a row"
        found = sorted({owner[a] for a in map(normalise_email, row.emails) if a in owner})
        if not found and row.name:
            if by_name is None:
                by_name = {}
                for email, m in mailboxes.items():
                    by_name.setdefault(m.name, []).append(email)
            found = sorted(by_name.get(row.name, ()))
        for email in found:
            holds.hold(email, "", f"{where} has no usable employee id and may be this mailbox")
        if not found and holds.all_absent is None:
            holds.all_absent = (
                f"{HELD}: {where} has no usable employee id and leads to no mailbox; it could "
                "be anyone absent from HR, so no removal of an absent person is planned until "
                "it is fixed"
            )
    return holds


def snapshot_counts(
    reasons: Mapping[str, str], unidentified: Iterable[UnidentifiedRow]
) -> dict[str, Any]:
    """What an ingest stores in the snapshot's counts for :func:`from_snapshot_counts`."""
    return {
        "held_reasons": dict(reasons),
        "unidentified_rows": [u.to_dict() for u in unidentified],
    }


def from_snapshot_counts(
    counts: Mapping[str, Any],
) -> tuple[dict[str, str], tuple[UnidentifiedRow, ...]]:
    """The held reasons and unidentified rows a snapshot's counts carry (none if older)."""
    reasons = counts.get("held_reasons")
    rows = counts.get("unidentified_rows")
    return (
        {str(k): str(v) for k, v in reasons.items()} if isinstance(reasons, dict) else {},
        tuple(UnidentifiedRow.from_dict(r) for r in rows if isinstance(r, dict))
        if isinstance(rows, list)
        else (),
    )


__all__ = ["HELD", "Holds", "find_holds", "from_snapshot_counts", "snapshot_counts"]
