"""Gen 2 wire shapes: which application serves a call, what each writing action sends, a
department row, and the member fields' codes. Used by
:class:`~syncengine.providers.exmail_v2.ExmailV2Provider`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from syncengine.domain import (
    Gender,
)
from syncengine.errors import (
    FatalProviderError,
)
from syncengine.plan import ActionKind
from syncengine.providers.config import Gen2App
from syncengine.providers.http import (
    parse_errcode,
)

ROOT_ID = 1

WRITE_CALLS: dict[ActionKind, tuple[str, str]] = {
    ActionKind.CREATE_DEPARTMENT: ("POST", "department/create"),
    ActionKind.MOVE_DEPARTMENT: ("POST", "department/update"),
    ActionKind.DELETE_DEPARTMENT: ("GET", "department/delete"),
    ActionKind.CREATE_USER: ("POST", "user/create"),
    ActionKind.UPDATE_USER: ("POST", "user/update"),
    ActionKind.ADD_ALIAS: ("POST", "user/update"),
    ActionKind.ENABLE_USER: ("POST", "user/update"),
    ActionKind.DISABLE_USER: ("POST", "user/update"),
    ActionKind.SWAP_PRIMARY: ("GET", "user/swapalias"),
    ActionKind.DELETE_USER: ("GET", "user/delete"),
    ActionKind.CREATE_GROUP: ("POST", "group/create"),
    ActionKind.UPDATE_GROUP: ("POST", "group/update"),
    ActionKind.DELETE_GROUP: ("GET", "group/delete"),
    ActionKind.ADOPT_GROUP: ("POST", "group/update"),
}
"""What each writing action kind sends (method, endpoint); the others make no request."""
BATCHCHECK_LIMIT = 20
NEWCOUNT_WINDOW_DAYS = 30
"""``mail/newcount`` counts unread mail received in this many days up to today."""
EXMAIL_TZ = ZoneInfo("Asia/Shanghai")


def exmail_today() -> date:
    return datetime.now(EXMAIL_TZ).date()


APP_BY_PREFIX: dict[str, Gen2App] = {
    "department/": "contacts",
    "user/": "contacts",
    "group/": "contacts",
    "tag/": "contacts",
    "service/": "sso",
    "mail/": "mail",
    "log/": "log",
    "useroption/": "settings",
}
APP_TITLE: dict[Gen2App, str] = {
    "contacts": "通讯录管理 (contacts)",
    "sso": "单点登录 (single sign-on)",
    "mail": "新邮件提醒 (new-mail notice)",
    "log": "系统日志 (logs)",
    "settings": "功能设置 (settings)",
}


def app_for(call: str) -> Gen2App:
    """Which application's secret a call needs (a token only works for its application)."""
    for prefix, app in APP_BY_PREFIX.items():
        if call.startswith(prefix):
            return app
    raise ValueError(f"no Exmail application serves {call}")


@dataclass(frozen=True)
class Gen2Department:
    """One row of ``department/list`` with its path worked out (root: ``""``)."""

    id: int
    name: str
    parent_id: int
    order: int
    path: str


def department_row(call: str, item: Any, path: str = "") -> Gen2Department:
    """One department object of a list/search answer; a malformed one is a fatal error."""
    try:
        return Gen2Department(
            int(item["id"]),
            str(item.get("name", "")),
            int(item.get("parentid", 0) or 0),
            int(item.get("order", 0) or 0),
            path,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FatalProviderError(f"answered a malformed department: {item!r}", call=call) from None


GENDERS = {int(g): g for g in Gender}


def gender_of(value: Any) -> Gender:
    code = parse_errcode(value)  # "1", 1, "" all tolerated
    # Looked up, not constructed: an enum call costs more than the rest of a member's reading.
    return GENDERS.get(code, Gender.UNSET) if code is not None else Gender.UNSET


def enabled_of(value: Any) -> bool:
    code = parse_errcode(value)
    return code != 0  # absent means enabled
