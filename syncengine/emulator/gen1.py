"""Gen 1 (the open protocol): ``POST /cgi-bin/token`` and form calls under ``/openapi/``.

Parameter names match case-insensitively; lists are repeated keys (comma lists are also
split for ``members``). Writes answer HTTP 200 with an empty body; reads answer bare JSON with
PascalCase keys; errors are ``{"errcode":"<digits>","error":"<snake_case>"}`` with HTTP 200.
The token may come as ``Authorization: Bearer``, a bare ``Authorization`` value, or an
``access_token`` form/query field. ``listen`` is a real long poll.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from syncengine.emulator import inputs, readings
from syncengine.emulator.model import (
    GEN1_ERRORS,
    MAX_CHECK,
    MAX_DEPARTMENTS,
    MAX_DEPTH,
    ROOT_ID,
    ApiError,
    Token,
    User,
    dept_name_problem,
    norm_email,
    split_path,
)
from syncengine.emulator.runtime import Runtime

log = logging.getLogger(__name__)

Params = dict[str, list[str]]
Result = dict[str, Any] | None  # None = write success, empty body
Handler = Callable[[Runtime, Token, Params], Awaitable[Result]]

STATUS_TO_ALLOW = {"inner": 0, "all": 1, "group": 2, "list": 3}


def _error(code: int) -> JSONResponse:
    return JSONResponse({"errcode": str(code), "error": GEN1_ERRORS[code]})


def _first(p: Params, key: str) -> str | None:
    values = p.get(key)
    return values[0] if values else None


def _need(p: Params, key: str) -> str:
    value = _first(p, key)
    if value is None or not value.strip():
        raise ApiError(40092, 1100, f"missing {key}")
    return value.strip()


async def read_params(request: Request) -> Params:
    """Query and form fields merged, names lower-cased, values kept in order."""
    pairs = list(parse_qsl(request.url.query, keep_blank_values=True))
    if request.method == "POST":
        raw = await request.body()
        ctype = request.headers.get("content-type", "")
        if raw and ("urlencoded" in ctype or not ctype):
            try:
                pairs += parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError:
                raise ApiError(40092, 1100, "the form body is not UTF-8") from None
    params: Params = {}
    for key, value in pairs:
        params.setdefault(key.lower(), []).append(value)
    return params


def party_list_of(rt: Runtime, user: User) -> list[str]:
    return [rt.directory.path_of(d) for d in user.department if d != ROOT_ID]


def _resolve_path(rt: Runtime, path: str) -> int:
    dept_id = rt.directory.find_path(path)
    if dept_id is None:
        raise ApiError(60003, 1310, f"party {path!r} not found")
    return dept_id


def _valid_path(path: str) -> list[str]:
    segs = split_path(path)
    if len(segs) > MAX_DEPTH:
        raise ApiError(60002, 1100, f"path {path!r} is deeper than {MAX_DEPTH} levels")
    for seg in segs:
        problem = dept_name_problem(seg)
        if problem:
            raise ApiError(problem[0], 1100, f"path {path!r}: {problem[1]}")
    return segs


# --- handlers ----------------------------------------------------------------------------


async def mail_authkey(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    alias = _need(p, "alias")
    userid = d.resolve(alias)
    if userid is None:
        raise ApiError(60111, 1301, f"user {alias} not found")
    return {"auth_key": d.issue_sso_key(userid, "v1", agent=tok.app)}


async def listen(rt: Runtime, tok: Token, p: Params) -> Result:
    ver = inputs.version(_first(p, "ver"), default="0")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + rt.listen_hold()
    while True:
        waiter = rt.notifier.current()  # taken before the check: no wake-up is lost
        event = readings.listen_answer(rt, tok, ver)
        if event is not None:
            return event
        remaining = deadline - loop.time()
        if remaining <= 0 or rt.closing:
            return {"Ret": 0}
        rt.listen_waiting += 1
        try:
            await asyncio.wait_for(waiter.wait(), timeout=remaining)
        except TimeoutError:
            pass
        finally:
            rt.listen_waiting -= 1


async def mail_newcount(rt: Runtime, tok: Token, p: Params) -> Result:
    alias = _need(p, "alias")
    d = rt.directory
    userid = d.resolve(alias)
    if userid is None:
        raise ApiError(60111, 1400, f"user {alias} not found")
    return {"Alias": norm_email(alias), "NewCount": str(d.new_count(userid))}


async def user_get(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    alias = _need(p, "alias")
    with d.lock:
        userid = d.resolve(alias)
        if userid is None:
            raise ApiError(60111, 1301, f"user {alias} not found")
        u = d.users[userid]
        parties = party_list_of(rt, u)
        open_type = 1 if u.enable else 2
        return {
            "Alias": u.userid,
            "Name": u.name,
            "Gender": u.gender,
            "SlaveList": ",".join(u.slaves),
            "Position": u.position,
            "Tel": u.tel,
            "Mobile": u.mobile,
            "ExtId": u.extid,
            "PartyList": {"Count": len(parties), "List": [{"Value": x} for x in parties]},
            "OpenType": open_type,
            "Status": open_type,
        }


def _sync_body(rt: Runtime, p: Params, *, adding: bool) -> dict[str, Any]:
    """user/sync fields -> the directory's member fields (present ones only)."""
    body: dict[str, Any] = {}
    for key, target in (
        ("name", "name"),
        ("position", "position"),
        ("tel", "tel"),
        ("mobile", "mobile"),
        ("extid", "extid"),
    ):
        value = _first(p, key)
        if value is not None:
            body[target] = value
    gender = _first(p, "gender")
    if gender is not None and gender.strip() not in ("", "0"):
        body["gender"] = gender
    open_type = (_first(p, "opentype") or "0").strip() or "0"
    if open_type not in ("0", "1", "2"):
        raise ApiError(40092, 1100, f"invalid OpenType {open_type!r} (0, 1 or 2)")
    if open_type != "0":
        body["enable"] = 1 if open_type == "1" else 0
    password = _first(p, "password")
    if password:
        md5 = (_first(p, "md5") or "0").strip()
        if md5 not in ("0", "1"):
            raise ApiError(40092, 1100, f"invalid Md5 {md5!r} (0 or 1)")
        body["password_md5" if md5 == "1" else "password"] = password
    if "partypath" in p:
        values = [v for v in p["partypath"] if v.strip().strip("/")]
        if len(values) > MAX_DEPARTMENTS:
            raise ApiError(60105, 1100, f"at most {MAX_DEPARTMENTS} PartyPath values")
        body["department"] = [_resolve_path(rt, v) for v in values]
        readings.check_visible(rt, body["department"])
    if "slave" in p:
        body["slaves"] = [v for v in p["slave"] if v.strip()]
    if adding and "name" not in body:
        raise ApiError(60112, 1100, "Name is required to add a member")
    return body


async def user_sync(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    action = _need(p, "action")
    alias = norm_email(_need(p, "alias"))
    if action == "2":
        with d.write():
            body = _sync_body(rt, p, adding=True)
            d.create_user({**body, "userid": alias})
    elif action == "3":
        with d.write():
            if alias not in d.users:
                raise ApiError(60111, 1301, f"user {alias} not found")
            d.update_user(alias, readings.mod_body(rt, _sync_body(rt, p, adding=False)))
    elif action == "1":
        d.delete_user(alias)
    else:
        raise ApiError(40092, 1100, f"invalid Action {action!r} (1 DEL, 2 ADD, 3 MOD)")
    return None


async def user_list(rt: Runtime, tok: Token, p: Params) -> Result:
    ver, changes = rt.directory.changes_since(inputs.version(_first(p, "ver")))
    return {
        "Ver": ver,
        "Count": len(changes),
        "List": [{"Alias": a, "Action": act} for a, act in changes],
    }


async def user_check(rt: Runtime, tok: Token, p: Params) -> Result:
    names = [v for v in p.get("email", []) if v.strip()]
    if len(names) > MAX_CHECK:
        raise ApiError(600027, 1100, f"at most {MAX_CHECK} names per call")
    d = rt.directory
    with d.lock:
        found = [{"Email": n, "Type": d.address_kind(n)} for n in names]
    return {"Count": len(found), "List": found}


async def party_sync(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    action = _need(p, "action")
    dst = _first(p, "dstpath") or ""
    if action == "2":
        if not split_path(dst):
            raise ApiError(40092, 1100, "DstPath is required")
        _valid_path(dst)
        before = list(d.depts)
        d.ensure_path(dst)
        readings.note_new_departments(rt, before)
    elif action == "1":
        if not split_path(dst):
            raise ApiError(60007, 1100, "the root party cannot be deleted")
        with d.write():
            d.delete_dept(_resolve_path(rt, dst))
    elif action == "3":
        src = _first(p, "srcpath") or ""
        segs = _valid_path(dst)
        if not split_path(src) or not segs:
            raise ApiError(40092, 1100, "SrcPath and DstPath are required")
        with d.write():
            src_id = _resolve_path(rt, src)
            parent_id = _resolve_path(rt, "/".join(segs[:-1]))
            existing = d.find_path(dst)
            if existing is not None and existing != src_id:
                raise ApiError(60008, 1100, f"party {dst!r} already exists")
            d.update_dept(src_id, name=segs[-1], parentid=parent_id)
    else:
        raise ApiError(40092, 1100, f"invalid Action {action!r} (1 DEL, 2 ADD, 3 MOD)")
    return None


async def party_list(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    with d.lock:
        dept_id = _resolve_path(rt, _first(p, "partypath") or "")
        names = [x.name for x in d.children(dept_id)]
    return {"Count": len(names), "List": [{"Value": n} for n in names]}


async def partyuser_list(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    with d.lock:
        dept_id = _resolve_path(rt, _first(p, "partypath") or "")
        members = [u.userid for u in d.dept_members(dept_id)]
    return {"Count": len(members), "List": [{"Value": m} for m in members]}


def _members(p: Params) -> list[str]:
    return [m.strip() for v in p.get("members", []) for m in v.split(",") if m.strip()]


async def group_add(rt: Runtime, tok: Token, p: Params) -> Result:
    status = (_first(p, "status") or "all").strip().lower()
    if status not in STATUS_TO_ALLOW:
        raise ApiError(600013, 1100, f"invalid status {status!r} (all, inner, group, list)")
    body: dict[str, Any] = {
        "groupid": _need(p, "group_admin"),
        "groupname": _first(p, "group_name") or "",
        "userlist": _members(p),
        "allow_type": STATUS_TO_ALLOW[status],
    }
    rt.directory.create_group(body, empty_allow_list_ok=True)
    return None


async def group_delete(rt: Runtime, tok: Token, p: Params) -> Result:
    rt.directory.delete_group(_need(p, "group_alias"))
    return None


def _allow_list(p: Params) -> list[str]:
    accounts = [a.strip() for v in p.get("allow_list", []) for a in v.split(",") if a.strip()]
    if not accounts:
        raise ApiError(600014, 1100, "allow_list is empty")
    return accounts


async def group_addallowlist(rt: Runtime, tok: Token, p: Params) -> Result:
    """Only for a group whose posting right is the allow list (status ``list``)."""
    d = rt.directory
    with d.write():
        group = d.get_group(_need(p, "group_alias"))
        if group.allow_type != 3:
            raise ApiError(600014, 1100, f"{group.groupid} does not post by allow list")
        d.update_group(
            group.groupid,
            {"allow_userlist": group.allow_userlist + _allow_list(p)},
            empty_allow_list_ok=True,
        )
    return None


async def group_delallowlist(rt: Runtime, tok: Token, p: Params) -> Result:
    """May not empty the list (V14 §3.3.13)."""
    d = rt.directory
    with d.write():
        group = d.get_group(_need(p, "group_alias"))
        if group.allow_type != 3:
            raise ApiError(600014, 1100, f"{group.groupid} does not post by allow list")
        gone = {d.resolve(a) or norm_email(a) for a in _allow_list(p)}
        left = [a for a in group.allow_userlist if a not in gone]
        if not left:
            raise ApiError(600023, 1100, "the allow list may not become empty")
        d.update_group(group.groupid, {"allow_userlist": left})
    return None


async def group_addmember(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    with d.write():
        group = d.get_group(_need(p, "group_alias"))
        d.update_group(
            group.groupid, {"userlist": group.userlist + _members(p)}, empty_allow_list_ok=True
        )
    return None


async def group_deletemember(rt: Runtime, tok: Token, p: Params) -> Result:
    d = rt.directory
    with d.write():
        group = d.get_group(_need(p, "group_alias"))
        gone = {d.resolve(m) or norm_email(m) for m in _members(p)}
        d.update_group(
            group.groupid,
            {"userlist": [u for u in group.userlist if u not in gone]},
            empty_allow_list_ok=True,
        )
    return None


async def user_swapalias(rt: Runtime, tok: Token, p: Params) -> Result:
    rt.directory.swap_alias(_need(p, "alias"), _need(p, "slavealias"))
    return None


ENDPOINTS: dict[str, Handler] = {
    "mail/authkey": mail_authkey,
    "listen": listen,
    "mail/newcount": mail_newcount,
    "user/get": user_get,
    "user/sync": user_sync,
    "user/list": user_list,
    "user/check": user_check,
    "party/sync": party_sync,
    "party/list": party_list,
    "partyuser/list": partyuser_list,
    "group/add": group_add,
    "group/delete": group_delete,
    "group/addmember": group_addmember,
    "group/deletemember": group_deletemember,
    "group/addallowlist": group_addallowlist,
    "group/delallowlist": group_delallowlist,
    "user/swapalias": user_swapalias,
}


def _client_credentials(request: Request, p: Params) -> tuple[str, str]:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return _first(p, "client_id") or "", _first(p, "client_secret") or ""


async def token_endpoint(request: Request) -> Response:
    """``/cgi-bin/token``: OAuth2 client credentials (form fields or HTTP Basic)."""
    rt: Runtime = request.app.state.emulator
    try:
        p = await read_params(request)
    except ApiError:
        return JSONResponse({"error": "invalid_request"}, status_code=400)
    if (_first(p, "grant_type") or "") != "client_credentials":
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
    client_id, secret = _client_credentials(request, p)
    client_id = norm_email(client_id)
    known = rt.directory.v1_clients.get(client_id)
    if not client_id or known is None or not secret or secret != known:
        return JSONResponse({"error": "invalid_client"}, status_code=401)
    token, expires = rt.directory.issue_token("v1", client_id, rt.token_lifetime())
    return JSONResponse(
        {"access_token": token, "token_type": "Bearer", "expires_in": expires, "refresh_token": ""}
    )


def _call_token(request: Request, p: Params) -> str:
    header = request.headers.get("authorization", "").strip()
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    if header and not header.lower().startswith("basic "):
        return header
    return (_first(p, "access_token") or "").strip()


async def endpoint(request: Request) -> Response:
    """Every ``/openapi/...`` call: token, rate limit, parameters, then the handler."""
    rt: Runtime = request.app.state.emulator
    name = request.path_params["path"].strip("/").lower()
    handler = ENDPOINTS.get(name)
    if handler is None:
        return PlainTextResponse(f"no such endpoint /openapi/{name}", status_code=404)
    try:
        p = await read_params(request)
    except ApiError as exc:
        return _error(exc.v1)
    tok = rt.directory.check_token(_call_token(request, p), "v1")
    if tok is None:
        return readings.invalid_token(rt, {"errcode": "1200", "error": GEN1_ERRORS[1200]})
    if not rt.allow(tok.token):
        return _error(1002)
    try:
        result = await handler(rt, tok, p)
    except ApiError as exc:
        return _error(exc.v1)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # A value no handler expected: the real service answers invalid_param, not HTTP 500.
        log.info("emulator: %s refused a malformed parameter (%s)", name, type(exc).__name__)
        return _error(1100)
    if result is None:
        return Response(b"", status_code=200)
    return JSONResponse(result)
