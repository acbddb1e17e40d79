"""The Gen 1 wire shapes: decoding ``user/get`` answers and list wrappers, encoding the
``user/sync`` form, and what each writing action sends. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from syncengine.domain import Gender, Mailbox, MailEvent, normalise_email, normalise_path
from syncengine.plan import Action, ActionKind
from syncengine.providers.base import ApiCall
from syncengine.providers.http import parse_errcode, str_field


def gender_of(value: Any) -> Gender:
    code = parse_errcode(value)
    return Gender(code) if code in (0, 1, 2) else Gender.UNSET


def split_aliases(value: Any) -> tuple[str, ...]:
    """``SlaveList`` is a comma-joined string (tolerate a JSON list too)."""
    items = value if isinstance(value, list) else str(value or "").split(",")
    return tuple(normalise_email(str(a)) for a in items if str(a).strip())


def list_values(data: Mapping[str, Any] | None) -> list[str]:
    """The ``Value``s of a ``{"Count":n,"List":[{"Value":...}]}`` wrapper."""
    if not data:
        return []
    items = data.get("List") or []
    return [str(i.get("Value", "")) for i in items if isinstance(i, Mapping)]


WRITE_CALLS: dict[ActionKind, tuple[str, str]] = {
    ActionKind.CREATE_DEPARTMENT: ("party/sync", "Action=2 add"),
    ActionKind.MOVE_DEPARTMENT: ("party/sync", "Action=3 modify"),
    ActionKind.DELETE_DEPARTMENT: ("party/sync", "Action=1 delete"),
    ActionKind.CREATE_USER: ("user/sync", "Action=2 add"),
    ActionKind.UPDATE_USER: ("user/sync", "Action=3 modify"),
    ActionKind.ADD_ALIAS: ("user/sync", "Action=3 modify"),
    ActionKind.ENABLE_USER: ("user/sync", "Action=3 modify"),
    ActionKind.DISABLE_USER: ("user/sync", "Action=3 modify"),
    ActionKind.SWAP_PRIMARY: ("user/swapalias", ""),
    ActionKind.DELETE_USER: ("user/sync", "Action=1 delete"),
    ActionKind.CREATE_GROUP: ("group/add", ""),
    ActionKind.UPDATE_GROUP: ("group/addmember", "and/or group/deletemember"),
    ActionKind.DELETE_GROUP: ("group/delete", ""),
}
"""What each writing action kind sends (endpoint, the Action it carries)."""


def planned_calls(action: Action) -> tuple[ApiCall, ...]:
    """The calls a writing action will send (for a dry run's list); () for the rest."""
    if action.kind not in WRITE_CALLS:
        return ()
    group = action.group
    if action.kind is ActionKind.UPDATE_GROUP and group is not None:
        return tuple(  # only the calls the member changes need
            ApiCall("POST", "/openapi/" + call, f"{len(members)} member(s)")
            for call, members in (("group/addmember", group.add),
                                  ("group/deletemember", group.remove))
            if members
        )  # fmt: skip
    endpoint, note = WRITE_CALLS[action.kind]
    return (ApiCall("POST", "/openapi/" + endpoint, note),)


def mailbox_from(data: Mapping[str, Any]) -> Mailbox:
    """A ``user/get`` answer as a :class:`Mailbox` (``PartyList`` paths normalised)."""
    parties = data.get("PartyList")
    departments = [
        normalise_path(p) for p in list_values(parties if isinstance(parties, Mapping) else None)
    ]
    return Mailbox(
        email=normalise_email(str_field(data, "Alias")),
        name=str_field(data, "Name"),
        ext_id=str_field(data, "ExtId"),
        departments=tuple(dict.fromkeys(p for p in departments if p)),
        aliases=split_aliases(data.get("SlaveList")),
        position=str_field(data, "Position"),
        tel=str_field(data, "Tel"),
        mobile=str_field(data, "Mobile"),
        gender=gender_of(data.get("Gender")),
        enabled=parse_errcode(data.get("OpenType")) != 2,
    )


def user_form(
    *,
    name: str | None,
    gender: Gender | None,
    position: str | None,
    tel: str | None,
    mobile: str | None,
    ext_id: str | None,
    departments: Sequence[str] | None,
    aliases: Sequence[str] | None,
    enabled: bool | None,
) -> dict[str, str | list[str]]:
    """The ``user/sync`` fields of a member (None: not sent)."""
    form: dict[str, str | list[str]] = {}
    for key, value in (
        ("Name", name),
        ("Position", position),
        ("Tel", tel),
        ("Mobile", mobile),
        ("ExtId", ext_id),
    ):
        if value is not None:
            form[key] = value
    if gender is not None:
        form["Gender"] = str(int(gender))
    if departments is not None:
        paths = [normalise_path(p) for p in departments if normalise_path(p)]
        form["PartyPath"] = paths or [""]  # one empty PartyPath: the root alone
    if aliases is not None:
        form["Slave"] = list(aliases) or [""]  # one empty Slave clears the list
    if enabled is not None:
        form["OpenType"] = "1" if enabled else "2"
    return form


def listen_events(data: Mapping[str, Any], version: str) -> tuple[list[MailEvent], str]:
    """A ``listen`` answer: (events, the version to send next time)."""
    new_version = str_field(data, "Ver") or version
    user = str_field(data, "UserName")
    if not user:
        return [], new_version  # {"Ret":0} (nothing) or a bare version bump
    event = MailEvent(
        email=normalise_email(user),
        new_count=parse_errcode(data.get("NewCount")) or 0,
        version=new_version,
        mail_id=str_field(data, "MailId"),
        sender=str_field(data, "Sender"),
        subject=str_field(data, "Subject"),
    )
    return [event], new_version
