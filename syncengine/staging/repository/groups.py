"""The mail groups the engine owns (the ledger :mod:`syncengine.groups` plans against)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from syncengine.groups import OwnedGroup
from syncengine.staging.models import MailGroupRow
from syncengine.staging.repository.core import RepositoryCore


class GroupsRepository(RepositoryCore):
    """Owned mail groups: one row per group, replaced whole after each group action."""

    def load_groups(self) -> list[OwnedGroup]:
        stmt = select(
            MailGroupRow.group_key,
            MailGroupRow.address,
            MailGroupRow.name,
            MailGroupRow.members,
            MailGroupRow.retiring_since,
            MailGroupRow.posting,
            MailGroupRow.allow_list,
        ).order_by(MailGroupRow.group_key)
        with self._tx("loading owned mail groups") as conn:
            return [
                OwnedGroup(
                    key,
                    address,
                    name,
                    tuple(str(m) for m in members or ()),
                    since,
                    int(posting or 0),
                    tuple(str(a) for a in allow or ()),
                )
                for key, address, name, members, since, posting, allow in conn.execute(stmt)
            ]

    def save_group(self, group: OwnedGroup) -> None:
        """Insert or replace the group stored under ``group.key`` (its address is kept)."""
        with self._tx(f"saving mail group {group.address}") as conn:
            conn.execute(delete(MailGroupRow).where(MailGroupRow.group_key == group.key))
            conn.execute(delete(MailGroupRow).where(MailGroupRow.address == group.address))
            conn.execute(
                insert(MailGroupRow).values(
                    address=group.address,
                    group_key=group.key,
                    name=group.name,
                    members=list(group.members),
                    posting=group.posting,
                    allow_list=list(group.allow_list),
                    retiring_since=group.retiring_since,
                    updated_at=self.now(),
                )
            )

    def delete_group(self, address: str) -> bool:
        with self._tx(f"deleting mail group {address}") as conn:
            result = conn.execute(delete(MailGroupRow).where(MailGroupRow.address == address))
            return bool(result.rowcount)
