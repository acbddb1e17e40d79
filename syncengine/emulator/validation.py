"""How the emulator validates the fields of a member or a mail group, and that a new address is
free, the way Exmail does (raising :class:`~syncengine.emulator.records.ApiError`).

Functions of a :class:`~syncengine.emulator.model.Directory`, called by it under its lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncengine.emulator.records import (
    FORBIDDEN_DEPT_CHARS,
    HASH_RE,
    MAX_DEPARTMENTS,
    MAX_EXTID_BYTES,
    MAX_GROUP_NESTING,
    MAX_NAME_BYTES,
    MAX_POSITION_BYTES,
    MAX_SLAVES,
    MD5_RE,
    MOBILE_RE,
    ROOT_ID,
    TEL_RE,
    ApiError,
    Group,
    User,
    as_list,
    byte_len,
    hash_password,
    is_email,
    md5_hex,
    norm_email,
    password_problem,
)

if TYPE_CHECKING:
    from syncengine.emulator.model import Directory


def check_new_address(d: Directory, addr: str, *, for_user: bool) -> None:
    """The address must be free: not a user, an alias or a group."""
    if addr in d.users:
        raise ApiError(
            60102 if for_user else 600024,
            1302 if for_user else 1303,
            f"{addr} is already a member's address",
        )
    if addr in d.aliases:
        raise ApiError(
            600001 if for_user else 600024,
            1302 if for_user else 1303,
            f"{addr} is already an alias of {d.aliases[addr]}",
        )
    if addr in d.groups:
        raise ApiError(
            600002 if for_user else 600024,
            1302 if for_user else 1303,
            f"{addr} is already a mail group",
        )


def user_fields(d: Directory, body: dict[str, Any], user: User | None) -> dict[str, Any]:
    """Validate the optional member fields of create/update; return the parsed ones."""
    out: dict[str, Any] = {}
    if "name" in body:
        name = str(body["name"])
        if (name or user is None) and not 1 <= byte_len(name) <= MAX_NAME_BYTES:
            raise ApiError(
                60112, 1100, f"name must be 1-{MAX_NAME_BYTES} bytes (got {byte_len(name)})"
            )
        if name:
            out["name"] = name
    elif user is None:
        raise ApiError(60112, 1100, "name is required")
    if "position" in body:
        position = str(body["position"])
        if byte_len(position) > MAX_POSITION_BYTES:
            raise ApiError(
                60104,
                1100,
                f"position must be at most {MAX_POSITION_BYTES} bytes (got {byte_len(position)})",
            )
        out["position"] = position
    if "mobile" in body:
        mobile = str(body["mobile"]).strip()
        if mobile and not MOBILE_RE.match(mobile):
            raise ApiError(60103, 1100, f"invalid mobile {mobile!r}")
        out["mobile"] = mobile
    if "tel" in body:
        tel = str(body["tel"]).strip()
        if not TEL_RE.match(tel):
            raise ApiError(600025, 1100, f"invalid tel {tel!r}")
        out["tel"] = tel
    if "extid" in body:
        extid = str(body["extid"])
        if byte_len(extid) > MAX_EXTID_BYTES or any(ord(c) < 32 for c in extid):
            raise ApiError(600026, 1100, f"invalid extid {extid!r}")
        out["extid"] = extid
    if "gender" in body:
        gender = str(body["gender"]).strip() or "0"
        if gender not in ("0", "1", "2"):
            raise ApiError(60114, 1100, f"invalid gender {body['gender']!r} (1 or 2)")
        out["gender"] = int(gender)
    if "enable" in body:
        enable = str(body["enable"]).strip()
        if enable not in ("0", "1"):
            raise ApiError(40092, 1100, f"invalid enable {body['enable']!r} (0 or 1)")
        out["enable"] = int(enable)
    if "cpwd_login" in body:
        cpwd = str(body["cpwd_login"]).strip()
        if cpwd not in ("0", "1"):
            raise ApiError(40092, 1100, f"invalid cpwd_login {body['cpwd_login']!r}")
        out["cpwd_login"] = int(cpwd)
    if "department" in body:
        raw = body["department"]
        if not isinstance(raw, list):
            raise ApiError(40092, 1100, "department must be a list of ids")
        ids: list[int] = []
        for item in raw:
            try:
                dept_id = int(item)
            except (TypeError, ValueError):
                raise ApiError(60003, 1310, f"invalid department id {item!r}") from None
            d.get_dept(dept_id)
            if dept_id not in ids:
                ids.append(dept_id)
        if len(ids) > MAX_DEPARTMENTS:
            raise ApiError(
                60105,
                1100,
                f"a member may be in at most {MAX_DEPARTMENTS} departments (got {len(ids)})",
            )
        out["department"] = ids or [ROOT_ID]
    elif user is None:
        out["department"] = [ROOT_ID]
    if "password_hash" in body and user is None:  # a seed kept in a state file
        if not HASH_RE.match(str(body["password_hash"])):
            raise ApiError(600003, 1100, "password_hash is not a hash this emulator made")
        out["password_hash"] = str(body["password_hash"])
    elif "password_md5" in body:
        md5 = str(body["password_md5"]).lower()
        if not MD5_RE.match(md5):
            raise ApiError(600003, 1100, "an MD5 password must be 32 hex digits")
        out["password_hash"] = hash_password(md5)
    elif "password" in body and (body["password"] or user is None):
        plain = str(body["password"])
        problem = password_problem(plain)
        if problem:
            raise ApiError(600003, 1100, f"invalid password: {problem}")
        out["password_hash"] = hash_password(md5_hex(plain))
    elif user is None:
        raise ApiError(600003, 1100, "password is required")
    if "slaves" in body:
        raw_slaves = body["slaves"]
        if not isinstance(raw_slaves, list):
            raise ApiError(600004, 1100, "slaves must be a list of addresses")
        slaves: list[str] = []
        for item in raw_slaves:
            addr = norm_email(str(item))
            if not addr:
                continue
            addr = d._check_corp_address(addr, 600004, "alias")
            if addr not in slaves:
                slaves.append(addr)
        if len(slaves) > MAX_SLAVES:
            raise ApiError(600006, 1100, f"at most {MAX_SLAVES} aliases (got {len(slaves)})")
        owner = user.userid if user else norm_email(str(body.get("userid", "")))
        for addr in slaves:
            if addr == owner:
                raise ApiError(600004, 1100, f"alias {addr} is the member's own address")
            if addr in d.users or addr in d.groups or d.aliases.get(addr, owner) != owner:
                raise ApiError(
                    600005, 1303, f"alias {addr} is already used by another member or group"
                )
        out["slaves"] = slaves
    return out


def group_fields(d: Directory, body: dict[str, Any], group: Group | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "groupname" in body or group is None:
        name = str(body.get("groupname", ""))
        if not 1 <= byte_len(name) <= MAX_NAME_BYTES:
            raise ApiError(600019, 1100, f"groupname must be 1-{MAX_NAME_BYTES} bytes")
        if set(name) & FORBIDDEN_DEPT_CHARS:
            raise ApiError(600019, 1100, "groupname contains illegal characters")
        out["groupname"] = name
    if "userlist" in body:
        users: list[str] = []
        for item in as_list(body["userlist"], 600010):
            addr = norm_email(str(item))
            if not is_email(addr):
                raise ApiError(600010, 1100, f"invalid userlist entry {item!r}")
            primary = d.resolve(addr)
            if primary is None:
                raise ApiError(600016, 1301, f"member {addr} not found")
            if primary not in users:
                users.append(primary)
        out["userlist"] = users
    if "grouplist" in body:
        subgroups: list[str] = []
        for item in as_list(body["grouplist"], 600011):
            addr = norm_email(str(item))
            if not is_email(addr):
                raise ApiError(600011, 1100, f"invalid grouplist entry {item!r}")
            if addr not in d.groups:
                raise ApiError(600017, 1301, f"group {addr} not found")
            if addr not in subgroups:
                subgroups.append(addr)
        out["grouplist"] = subgroups
    if "department" in body:
        depts: list[int] = []
        for item in as_list(body["department"], 600012):
            try:
                dept_id = int(item)
            except (TypeError, ValueError):
                raise ApiError(600012, 1100, f"invalid department {item!r}") from None
            if dept_id not in d.depts:
                raise ApiError(600018, 1310, f"department {dept_id} not found")
            if dept_id not in depts:
                depts.append(dept_id)
        out["department"] = depts
    if "allow_type" in body or group is None:
        allow = str(body.get("allow_type", "")).strip()
        if allow not in ("0", "1", "2", "3"):
            raise ApiError(600013, 1100, f"invalid allow_type {body.get('allow_type')!r} (0-3)")
        out["allow_type"] = int(allow)
    if "allow_userlist" in body:
        allowed: list[str] = []
        for item in as_list(body["allow_userlist"], 600014):
            primary = d.resolve(str(item))
            if primary is None:
                raise ApiError(600014, 1301, f"allow_userlist member {item!r} not found")
            if primary not in allowed:
                allowed.append(primary)
        out["allow_userlist"] = allowed
    return out


def check_group_shape(d: Directory, group: Group, *, empty_allow_list_ok: bool = False) -> None:
    """``empty_allow_list_ok``: Gen 1 creates an allow-list group first and fills the list
    with ``group/addallowlist`` afterwards; Gen 2 needs the list up front (600023)."""
    if not (group.userlist or group.grouplist or group.department):
        raise ApiError(600009, 1100, "a group needs members (userlist, grouplist or department)")
    if group.allow_type == 3 and not group.allow_userlist and not empty_allow_list_ok:
        raise ApiError(600023, 1100, "allow_type 3 needs allow_userlist")

    def depth(gid: str, seen: tuple[str, ...]) -> int:
        if gid in seen:
            raise ApiError(600020, 1100, f"group loop through {gid}")
        sub = group.grouplist if gid == group.groupid else d.groups[gid].grouplist
        return 1 + max((depth(s, (*seen, gid)) for s in sub), default=0)

    if depth(group.groupid, ()) > MAX_GROUP_NESTING:
        raise ApiError(600021, 1100, f"groups nest deeper than {MAX_GROUP_NESTING}")
