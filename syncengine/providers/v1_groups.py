"""Gen 1 mail groups (``group/*``): written by the engine, never read back (Gen 1 has no
``group/get``). A mixin of :class:`~syncengine.providers.exmail_v1.ExmailV1Provider`, which
supplies :attr:`call`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from syncengine.errors import FatalProviderError
from syncengine.providers.base import GroupPosting, MailGroup


class V1Groups:
    """The group calls of the Gen 1 provider."""

    call: Callable[..., dict[str, Any] | None]
    """``call(name, form, *, subject=None)``: one form POST (the provider's)."""

    def create_group(self, group: MailGroup) -> None:
        """``group/add`` (+ ``group/addallowlist`` for an allow-list group)."""
        if group.groups or group.departments:
            raise FatalProviderError(
                f"Gen 1 mail groups hold member accounts only, not groups or departments "
                f"({group.address})",
                call="group/add",
                hint="list the member accounts instead, or use the Gen 2 API",
            )
        self.call(
            "group/add",
            {
                "group_name": group.name,
                "group_admin": group.address,
                "status": group.posting.v1_status,
                "members": list(group.members),
            },
            subject=group.address,
        )
        if group.posting == GroupPosting.ALLOW_LIST and group.allow_list:
            self.add_group_allow_list(group.address, group.allow_list)

    def delete_group(self, address: str) -> None:
        self.call("group/delete", {"group_alias": address}, subject=address)

    can_read_groups = False
    """Gen 1 has no ``group/get``: the engine's ledger is its only view of its groups."""

    def change_group(self, group: MailGroup, *, add: Sequence[str], remove: Sequence[str]) -> None:
        """``group/addmember`` then ``group/deletemember`` (adds first: Exmail refuses a group
        left without members). Gen 1 has no group update, so the name and posting right stay
        as created."""
        if add:
            self.add_group_members(group.address, add)
        if remove:
            self.remove_group_members(group.address, remove)

    def get_group(self, address: str) -> MailGroup | None:
        """Gen 1 cannot read a group back: always None (see ``can_read_groups``)."""
        return None

    def add_group_members(self, address: str, members: Iterable[str]) -> None:
        self.call(
            "group/addmember", {"group_alias": address, "members": list(members)}, subject=address
        )

    def remove_group_members(self, address: str, members: Iterable[str]) -> None:
        self.call(
            "group/deletemember",
            {"group_alias": address, "members": list(members)},
            subject=address,
        )

    def add_group_allow_list(self, address: str, accounts: Iterable[str]) -> None:
        self.call(
            "group/addallowlist",
            {"group_alias": address, "allow_list": ",".join(accounts)},
            subject=address,
        )

    def remove_group_allow_list(self, address: str, accounts: Iterable[str]) -> None:
        self.call(
            "group/delallowlist",
            {"group_alias": address, "allow_list": ",".join(accounts)},
            subject=address,
        )
