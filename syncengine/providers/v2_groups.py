"""Gen 2 mail groups (``group/*``), read and written. A mixin of
:class:`~syncengine.providers.exmail_v2.ExmailV2Provider`, which supplies :attr:`call` and the
department lookups."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from syncengine.domain import (
    normalise_email,
)
from syncengine.errors import (
    NotFoundError,
)
from syncengine.providers.base import GroupPosting, MailGroup
from syncengine.providers.http import (
    parse_errcode,
    str_field,
)


class V2Groups:
    """The group calls of the Gen 2 provider."""

    call: Callable[..., dict[str, Any]]
    """``call(name, *, params=None, body=None, subject=None)``: one call (the provider's)."""
    department_id: Callable[[str], int]
    department_path: Callable[[int], str]

    def _group_body(self, group: MailGroup) -> dict[str, Any]:
        body: dict[str, Any] = {
            "groupid": group.address,
            "groupname": group.name,
            "allow_type": int(group.posting),
        }
        if group.members:
            body["userlist"] = list(group.members)
        if group.groups:
            body["grouplist"] = list(group.groups)
        if group.departments:
            body["department"] = [self.department_id(p) for p in group.departments]
        if group.posting == GroupPosting.ALLOW_LIST:
            body["allow_userlist"] = list(group.allow_list)
        return body

    def create_group(self, group: MailGroup) -> None:
        self.call("group/create", body=self._group_body(group), subject=group.address)

    def update_group(self, group: MailGroup) -> None:
        """Replace the group's name, members and posting rights with ``group``'s."""
        self.call("group/update", body=self._group_body(group), subject=group.address)

    def delete_group(self, address: str) -> None:
        self.call("group/delete", params={"groupid": address}, subject=address)

    can_read_groups = True

    def change_group(self, group: MailGroup, *, add: Sequence[str], remove: Sequence[str]) -> None:
        """Gen 2 has no member add/remove call: one ``group/update`` with the whole new list
        (``add`` / ``remove`` are what the plan shows; the body is ``group``). The member
        list is always sent, also empty: Exmail then refuses a group left without members
        (600009) rather than keeping the old list silently."""
        body = self._group_body(group)
        body["userlist"] = list(group.members)
        self.call("group/update", body=body, subject=group.address)

    def get_group(self, address: str) -> MailGroup | None:
        try:
            data = self.call("group/get", params={"groupid": address}, subject=address)
        except NotFoundError:
            return None
        posting = parse_errcode(data.get("allow_type"))
        departments = tuple(
            self.department_path(d)
            for d in (parse_errcode(x) for x in data.get("department") or [])
            if d is not None
        )
        return MailGroup(
            address=normalise_email(str_field(data, "groupid") or address),
            name=str_field(data, "groupname"),
            members=tuple(normalise_email(str(u)) for u in data.get("userlist") or []),
            groups=tuple(normalise_email(str(g)) for g in data.get("grouplist") or []),
            departments=departments,
            posting=GroupPosting(posting) if posting in (0, 1, 2, 3) else GroupPosting.COMPANY,
            allow_list=tuple(normalise_email(str(u)) for u in data.get("allow_userlist") or []),
        )
