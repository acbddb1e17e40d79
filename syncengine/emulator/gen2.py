"""Gen 2 (current API, ``/cgi-bin/...``): JSON in, ``errcode``/``errmsg`` always out.

``access_token`` comes in the query string (also on POST); a token works only for its own
application's endpoints (602005 otherwise). GET endpoints read the query, POST endpoints a
JSON body. API-level errors are HTTP 200 with the documented code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from syncengine.emulator import inputs, readings
from syncengine.emulator.model import (
    MAX_CHECK,
    ROOT_ID,
    SSO_LIFETIME,
    ApiError,
    Dept,
    Directory,
    User,
    dept_name_problem,
    norm_email,
)
from syncengine.emulator.runtime import Runtime

log = logging.getLogger(__name__)

Params = dict[str, Any]
Handler = Callable[[Runtime, Request, Params], dict[str, Any]]


def _ok(errmsg: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"errcode": 0, "errmsg": errmsg, **extra}


def _err(code: int, message: str) -> JSONResponse:
    return JSONResponse({"errcode": code, "errmsg": message})


def _int(value: Any, code: int, what: str) -> int:
    if isinstance(value, bool):
        raise ApiError(code, 1100, f"invalid {what} {value!r}")
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise ApiError(code, 1100, f"invalid {what} {value!r}") from None


def _required(params: Params, key: str, code: int) -> Any:
    value = params.get(key)
    if value is None or value == "":
        raise ApiError(code, 1100, f"missing {key}")
    return value


def _date(value: Any, what: str) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ApiError(40092, 1100, f"invalid {what} {value!r} (YYYY-MM-DD)") from None


def user_json(user: User, *, enable_as_string: bool = False) -> dict[str, Any]:
    """As the reference shows it: gender a string; enable an int (a string in user/list)."""
    return {
        "userid": user.userid,
        "name": user.name,
        "department": list(user.department),
        "position": user.position,
        "mobile": user.mobile,
        "tel": user.tel,
        "extid": user.extid,
        "gender": str(user.gender),
        "enable": str(user.enable) if enable_as_string else user.enable,
        "slaves": list(user.slaves),
        "cpwd_login": user.cpwd_login,
    }


def dept_json(dept: Dept) -> dict[str, Any]:
    return {"id": dept.id, "name": dept.name, "parentid": dept.parentid, "order": dept.order}


# --- departments -------------------------------------------------------------------------


def department_create(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    d = rt.directory
    name = str(p.get("name", ""))
    parentid = _int(_required(p, "parentid", 60124), 60124, "parentid")
    order = _int(p.get("order", 0), 40092, "order")
    before = list(d.depts)
    new_id = d.create_dept(name, parentid, order)
    readings.note_new_departments(rt, before)
    return _ok("created", id=new_id)


def department_update(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    dept_id = _int(_required(p, "id", 60127), 60123, "id")
    rt.directory.update_dept(
        dept_id,
        name=None if p.get("name") in (None, "") else str(p["name"]),
        parentid=None
        if p.get("parentid") in (None, "")
        else _int(p["parentid"], 60124, "parentid"),
        order=None if p.get("order") in (None, "") else _int(p["order"], 40092, "order"),
    )
    return _ok("updated")


def department_delete(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    rt.directory.delete_dept(_int(_required(p, "id", 60127), 60123, "id"))
    return _ok("deleted")


def department_list(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    d = rt.directory
    dept_id = _int(p.get("id") or ROOT_ID, 60123, "id")
    with d.lock:
        d.get_dept(dept_id)
        depts = [d.depts[i] for i in d.subtree(dept_id)]
        ordered = sorted(depts, key=lambda x: x.order)  # stable: parents first on ties
        return _ok(department=[dept_json(x) for x in ordered])


def department_search(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    d = rt.directory
    name = str(p.get("name", ""))
    problem = dept_name_problem(name)
    if problem:
        raise ApiError(problem[0], 1100, problem[1])
    fuzzy = str(p.get("fuzzy", 0)).strip()
    if fuzzy not in ("0", "1"):
        raise ApiError(600034, 1100, f"invalid fuzzy {p.get('fuzzy')!r} (0 or 1)")
    with d.lock:
        found = [
            {**dept_json(x), "path": d.path_of(x.id)}
            for x in (d.depts[i] for i in d.subtree(ROOT_ID))
            if x.id != ROOT_ID and (name in x.name if fuzzy == "1" else x.name == name)
        ]
    return _ok(department=found)


# --- users -------------------------------------------------------------------------------


def _user_body(p: Params) -> Params:
    body = {
        k: v
        for k, v in p.items()
        if k
        in {
            "name",
            "department",
            "position",
            "mobile",
            "tel",
            "extid",
            "gender",
            "slaves",
            "password",
            "cpwd_login",
            "enable",
        }
    }
    return body


def _dept_ids(p: Params) -> list[Any]:
    raw = p.get("department")
    if not isinstance(raw, list):
        return []
    ids: list[Any] = []
    for item in raw:
        try:
            ids.append(int(item))
        except (TypeError, ValueError, OverflowError):
            ids.append(item)  # the directory refuses it with its own errcode
    return ids


def user_create(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    if not p.get("userid"):
        raise ApiError(40003, 1100, "missing userid")
    if "department" not in p:
        raise ApiError(40092, 1100, "missing department (a list of department ids)")
    readings.check_visible(rt, _dept_ids(p))
    rt.directory.create_user({**_user_body(p), "userid": str(p["userid"])})
    return _ok("created")


def user_update(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    userid = str(_required(p, "userid", 40003))
    readings.check_visible(rt, _dept_ids(p))
    rt.directory.update_user(userid, _user_body(p))
    return _ok("updated")


def user_delete(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    rt.directory.delete_user(str(_required(p, "userid", 40003)))
    return _ok("deleted")


def user_get(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    d = rt.directory
    with d.lock:
        user = d.get_user(str(_required(p, "userid", 40003)))
        return _ok(**user_json(user))


def _listed_users(rt: Runtime, p: Params) -> list[User]:
    dept_id = _int(_required(p, "department_id", 60003), 60003, "department_id")
    fetch_child = str(p.get("fetch_child", 0)).strip()
    if fetch_child not in ("0", "1"):
        raise ApiError(40092, 1100, f"invalid fetch_child {p.get('fetch_child')!r}")
    return rt.directory.users_in(dept_id, fetch_child == "1")


def user_simplelist(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    with rt.directory.lock:
        users = _listed_users(rt, p)
        return _ok(
            userlist=[
                {"userid": u.userid, "name": u.name, "department": list(u.department)}
                for u in users
            ]
        )


def user_list(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    with rt.directory.lock:
        users = _listed_users(rt, p)
        return _ok(userlist=[user_json(u, enable_as_string=True) for u in users])


def user_batchcheck(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    names = p.get("userlist")
    if not isinstance(names, list) or not names:
        raise ApiError(40092, 1100, "userlist must be a non-empty list")
    if len(names) > MAX_CHECK:
        raise ApiError(600027, 1100, f"at most {MAX_CHECK} names per call (got {len(names)})")
    d = rt.directory
    with d.lock:
        return _ok(list=[{"user": str(n), "type": d.address_kind(str(n))} for n in names])


def user_swapalias(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    alias = str(_required(p, "alias", 40003))
    slave = str(_required(p, "slavealias", 600004))
    rt.directory.swap_alias(alias, slave)
    return _ok("ok")


# --- groups ------------------------------------------------------------------------------

_GROUP_KEYS = {"groupname", "userlist", "grouplist", "department", "allow_type", "allow_userlist"}


def group_create(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    body = {k: v for k, v in p.items() if k in _GROUP_KEYS}
    rt.directory.create_group({**body, "groupid": str(p.get("groupid", ""))})
    return _ok("created")


def group_update(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    groupid = str(_required(p, "groupid", 600007))
    rt.directory.update_group(groupid, {k: v for k, v in p.items() if k in _GROUP_KEYS})
    return _ok("updated")


def group_delete(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    rt.directory.delete_group(str(_required(p, "groupid", 600007)))
    return _ok("deleted")


def group_get(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    d = rt.directory
    with d.lock:
        g = d.get_group(str(_required(p, "groupid", 600007)))
        return _ok(
            groupid=g.groupid,
            groupname=g.groupname,
            userlist=list(g.userlist),
            grouplist=list(g.grouplist),
            department=list(g.department),
            allow_type=g.allow_type,
            allow_userlist=list(g.allow_userlist),
        )


# --- sso, mail ---------------------------------------------------------------------------


def get_login_url(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    userid = norm_email(str(_required(p, "userid", 40003)))
    key = rt.directory.issue_sso_key(userid, "v2")
    base = str(request.base_url).rstrip("/")
    url = (
        f"{base}/cgi-bin/login?fun=bizopenssologin&method=openapi"
        f"&userid={quote(userid, safe='@')}&authkey={key}"
    )
    return _ok(login_url=url, expires_in=int(SSO_LIFETIME))


def mail_newcount(rt: Runtime, request: Request, p: Params) -> dict[str, Any]:
    userid = str(_required(p, "userid", 40003))
    begin = _date(p.get("begin_date"), "begin_date")
    end = _date(p.get("end_date"), "end_date")
    if rt.reading("newcount_dates") == "required" and not (begin and end):
        raise ApiError(40092, 1100, "begin_date and end_date are required")
    if begin and end and begin > end:
        raise ApiError(40092, 1100, "begin_date is after end_date")
    return _ok(count=rt.directory.new_count(userid, begin, end))


# endpoint -> (application, allowed methods, handler)
ENDPOINTS: dict[str, tuple[str, tuple[str, ...], Handler]] = {
    "department/create": ("contacts", ("POST",), department_create),
    "department/update": ("contacts", ("POST",), department_update),
    "department/delete": ("contacts", ("GET",), department_delete),
    "department/list": ("contacts", ("GET",), department_list),
    "department/search": ("contacts", ("POST",), department_search),
    "user/create": ("contacts", ("POST",), user_create),
    "user/update": ("contacts", ("POST",), user_update),
    "user/delete": ("contacts", ("GET",), user_delete),
    "user/get": ("contacts", ("GET",), user_get),
    "user/simplelist": ("contacts", ("GET",), user_simplelist),
    "user/list": ("contacts", ("GET",), user_list),
    "user/batchcheck": ("contacts", ("POST",), user_batchcheck),
    "user/swapalias": ("contacts", ("GET", "POST"), user_swapalias),
    "group/create": ("contacts", ("POST",), group_create),
    "group/update": ("contacts", ("POST",), group_update),
    "group/delete": ("contacts", ("GET",), group_delete),
    "group/get": ("contacts", ("GET",), group_get),
    "service/get_login_url": ("sso", ("GET",), get_login_url),
    "mail/newcount": ("mail", ("GET", "POST"), mail_newcount),
}


def _gettoken(rt: Runtime, request: Request) -> Response:
    d: Directory = rt.directory
    corpid = request.query_params.get("corpid", "")
    secret = request.query_params.get("corpsecret", "")
    if not corpid or corpid != d.corp_id:
        return _err(40013, "invalid corpid")
    app = next((a for a, s in d.app_secrets.items() if s and s == secret), None)
    if app is None:
        return _err(40001, "invalid credential")
    token, expires = d.issue_token("v2", app, rt.token_lifetime())
    return JSONResponse(_ok(access_token=token, expires_in=expires))


async def endpoint(request: Request) -> Response:
    """Every Gen 2 call: token, application, method, body, then the handler."""
    rt: Runtime = request.app.state.emulator
    name = request.path_params["path"].strip("/")
    if name == "gettoken":
        if request.method != "GET":
            return _err(43001, "require GET method")
        return _gettoken(rt, request)
    spec = ENDPOINTS.get(name)
    if spec is None:
        return PlainTextResponse(f"no such endpoint /cgi-bin/{name}", status_code=404)
    app, methods, handler = spec
    token_value = request.query_params.get("access_token", "")
    if not token_value:
        return _err(41001, "access_token missing")
    token = rt.directory.check_token(token_value, "v2")
    if token is None:
        code = rt.options.invalid_token_code
        return readings.invalid_token(rt, {"errcode": code, "errmsg": "invalid access_token"})
    if token.app != app:
        return _err(
            602005,
            f"no privilege to access this api: /cgi-bin/{name} needs the "
            f"{app} application's token, this one is for {token.app}",
        )
    if not rt.allow(token_value):
        return _err(45009, "api freq out of limit")
    if request.method not in methods:
        return _err(
            43001 if methods == ("GET",) else 43002, f"require {' or '.join(methods)} method"
        )
    params: Params = {k: v for k, v in request.query_params.items() if k != "access_token"}
    if request.method == "POST":
        raw = await request.body()
        if raw.strip():
            try:
                params.update(inputs.json_object(raw))
            except ApiError as exc:
                return _err(exc.v2, exc.message)
    try:
        return JSONResponse(handler(rt, request, params))
    except ApiError as exc:
        return _err(exc.v2, exc.message)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # A value of a shape no handler expected (a float where an id goes, a huge number):
        # the real service answers "invalid parameter", not a server error.
        log.info("emulator: %s refused a malformed parameter (%s)", name, type(exc).__name__)
        return _err(40092, f"invalid parameter ({type(exc).__name__})")
