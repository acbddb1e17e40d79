"""Identity links: which mailbox each HR employee owns."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence

from sqlalchemy import (
    Text,
    bindparam,
    cast,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from syncengine.domain import IdentityLink
from syncengine.errors import StagingError
from syncengine.staging.models import (
    IdentityLinkRow,
)
from syncengine.staging.repository.bulk import BulkStatement
from syncengine.staging.repository.core import RepositoryCore
from syncengine.staging.repository.records import (
    chunks,
    first_line,
    rows_digest,
)

log = logging.getLogger(__name__)


_DELETE_BY_EMPLOYEE = BulkStatement(
    delete(IdentityLinkRow).where(IdentityLinkRow.employee_id == bindparam("w_eid"))
)
"""Built once, run as executemany: no IN list rendered anew for every save."""
_INSERT_LINK = BulkStatement(
    insert(IdentityLinkRow),
    ("employee_id", "email", "first_seen", "disabled_since", "generated", "updated_at"),
)
"""Built once: an apply saves a few links per group-commit batch, thousands of times."""


class LinksRepository(RepositoryCore):
    """Identity links: which mailbox each HR employee owns."""

    # --- identity links -----------------------------------------------------------------

    def load_links(self, employee_ids: Collection[str] | None = None) -> dict[str, IdentityLink]:
        stmt = select(
            IdentityLinkRow.employee_id,
            IdentityLinkRow.email,
            IdentityLinkRow.first_seen,
            IdentityLinkRow.disabled_since,
            IdentityLinkRow.generated,
        )
        links: dict[str, IdentityLink] = {}
        with self._tx("loading identity links") as conn:
            batches = (
                [stmt]
                if employee_ids is None
                else [
                    stmt.where(IdentityLinkRow.employee_id.in_(c))
                    for c in chunks(sorted(set(employee_ids)), 500)
                ]
            )
            for s in batches:
                for emp, email, first, disabled, generated in conn.execute(s):
                    links[emp] = IdentityLink(emp, email, first, disabled, bool(generated))
        return links

    def links_digest(self) -> str:
        """sha256 of every identity link as stored (what :meth:`load_links` returns), in
        employee id order, read without building the links."""
        stmt = select(
            IdentityLinkRow.employee_id,
            IdentityLinkRow.email,
            cast(IdentityLinkRow.first_seen, Text),
            cast(IdentityLinkRow.disabled_since, Text),
            IdentityLinkRow.generated,
        ).order_by(IdentityLinkRow.employee_id)
        with self._tx("digesting identity links") as conn:
            return rows_digest("links", conn.execute(stmt))

    def links_to(self, emails: Collection[str]) -> dict[str, IdentityLink]:
        """The links whose address is one of ``emails`` (compared lower-case): who owns the
        mailboxes a hook batch read, without loading every link."""
        wanted = sorted({e.strip().lower() for e in emails if e.strip()})
        links: dict[str, IdentityLink] = {}
        with self._tx("loading identity links by address") as conn:
            for chunk in chunks(wanted, 500):
                stmt = select(
                    IdentityLinkRow.employee_id,
                    IdentityLinkRow.email,
                    IdentityLinkRow.first_seen,
                    IdentityLinkRow.disabled_since,
                    IdentityLinkRow.generated,
                ).where(func.lower(IdentityLinkRow.email).in_(chunk))
                for emp, email, first, disabled, generated in conn.execute(stmt):
                    links[emp] = IdentityLink(emp, email, first, disabled, bool(generated))
        return links

    def link_emails(self) -> dict[str, str]:
        """Employee id -> linked address, and nothing else: on a big directory a fraction of
        :meth:`load_links` (no dates to convert), for checks that need the addresses only."""
        with self._tx("loading identity link addresses") as conn:
            rows = conn.execute(select(IdentityLinkRow.employee_id, IdentityLinkRow.email))
            return {emp: email for emp, email in rows}

    def count_links(self) -> int:
        """How many identity links are stored: the mailboxes the engine manages."""
        with self._tx("counting identity links") as conn:
            return int(conn.execute(select(func.count()).select_from(IdentityLinkRow)).scalar_one())

    def save_links(self, links: Iterable[IdentityLink]) -> int:
        """Insert or replace links by employee id, all in one transaction.

        Replacing is delete-then-insert, so two links may swap addresses in one call. An
        address already linked to another employee (not in this call) is refused.
        """
        items = list({link.employee_id: link for link in links}.values())
        if not items:
            return 0
        now = self.now()
        try:
            with self._tx("saving identity links") as conn:
                for chunk in chunks(items, self._batch):
                    _DELETE_BY_EMPLOYEE.run(conn, [{"w_eid": x.employee_id} for x in chunk])
                for chunk in chunks(items, self._batch):
                    rows = [
                        {
                            "employee_id": link.employee_id,
                            "email": link.email,
                            "first_seen": link.first_seen,
                            "disabled_since": link.disabled_since,
                            "generated": link.generated,
                        }
                        for link in chunk
                    ]
                    _INSERT_LINK.run(conn, rows, {"updated_at": now})
        except IntegrityError as exc:
            raise StagingError(
                f"saving identity links failed: an address is linked to two employees "
                f"({first_line(exc)})",
                hint="each mailbox address belongs to one employee; nothing was saved",
            ) from None
        return len(items)

    def delete_links(self, employee_ids: Sequence[str]) -> None:
        """Delete the links of these employees (absent ones are fine): one executemany."""
        if not employee_ids:
            return
        with self._tx("deleting identity links") as conn:
            for chunk in chunks(list(employee_ids), self._batch):
                _DELETE_BY_EMPLOYEE.run(conn, [{"w_eid": eid} for eid in chunk])

    def delete_link(self, employee_id: str) -> bool:
        with self._tx("deleting an identity link") as conn:
            result = conn.execute(
                delete(IdentityLinkRow).where(IdentityLinkRow.employee_id == employee_id)
            )
            return bool(result.rowcount)
