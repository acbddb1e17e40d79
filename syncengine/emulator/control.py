"""The test-control API under ``/_emulator/`` (mounted only when the options say so).

Seed, reset, faults, token expiry, mail delivery, the call log and the state. These calls are
never counted in the call log and never suffer injected faults.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncengine.emulator.model import ApiError, SeedError, password_matches
from syncengine.emulator.runtime import Runtime


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.emulator
    return rt


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("the body must be a JSON object")
    return data


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def seed(request: Request) -> Response:
    try:
        body = await _json(request)
        _rt(request).directory.load_seed(body)
    except (ValueError, SeedError) as exc:
        return _bad(str(exc))
    return JSONResponse({"ok": True})


async def reset(request: Request) -> Response:
    d = _rt(request).directory
    d.load_seed(d.seed)
    return JSONResponse({"ok": True})


async def faults(request: Request) -> Response:
    rt = _rt(request)
    if request.method == "GET":
        return JSONResponse(rt.faults.as_dict())
    try:
        current = rt.set_faults(await _json(request))
    except (ValueError, TypeError) as exc:
        return _bad(str(exc))
    return JSONResponse(current.as_dict())


async def expire_tokens(request: Request) -> Response:
    return JSONResponse({"expired": _rt(request).directory.expire_tokens()})


async def mail(request: Request) -> Response:
    try:
        body = await _json(request)
        to = str(body["to"])
    except (ValueError, KeyError) as exc:
        return _bad(f"need a JSON body with 'to' ({exc})")
    try:
        event = _rt(request).directory.deliver_mail(
            to,
            str(body.get("sender", '"Emulator" <sender@example.net>')),
            str(body.get("subject", "Hello")),
            str(body.get("summary", "")),
        )
    except ApiError as exc:
        return _bad(exc.message, 404)
    return JSONResponse(event)


async def edit_user(request: Request) -> Response:
    """A change made in the admin console (管理后台), behind the API client's back: the
    Gen 2-shaped fields of ``body`` laid over the member ``userid``, journaled like any write
    (so Gen 1 ``user/list`` reports it as a MOD)."""
    try:
        body = await _json(request)
        userid = str(body.pop("userid"))
    except (ValueError, KeyError) as exc:
        return _bad(f"need a JSON body with 'userid' ({exc})")
    try:
        _rt(request).directory.update_user(userid, body)
    except ApiError as exc:
        return _bad(exc.message, 404 if exc.v1 == 1301 else 400)
    return JSONResponse({"ok": True})


async def calls(request: Request) -> Response:
    try:
        since = int(request.query_params.get("since", "0"))
    except ValueError:
        return _bad("since must be an integer")
    return JSONResponse(_rt(request).calls_since(since))


async def clear_calls(request: Request) -> Response:
    _rt(request).clear_calls()
    return JSONResponse({"ok": True})


async def state(request: Request) -> Response:
    rt = _rt(request)
    return JSONResponse({**rt.directory.public_state(), "listen_waiting": rt.listen_waiting})


async def check_password(request: Request) -> Response:
    """Whether a member's stored password hash matches (the hash itself never leaves)."""
    try:
        body = await _json(request)
        userid, password = str(body["userid"]), str(body["password"])
    except (ValueError, KeyError) as exc:
        return _bad(f"need userid and password ({exc})")
    d = _rt(request).directory
    with d.lock:
        user = d.users.get(userid.strip().lower())
        ok = user is not None and password_matches(user.password_hash, password)
    return JSONResponse({"ok": ok})


ROUTES = [
    Route("/_emulator/seed", seed, methods=["POST"]),
    Route("/_emulator/reset", reset, methods=["POST"]),
    Route("/_emulator/faults", faults, methods=["GET", "POST"]),
    Route("/_emulator/expire-tokens", expire_tokens, methods=["POST"]),
    Route("/_emulator/mail", mail, methods=["POST"]),
    Route("/_emulator/user", edit_user, methods=["POST"]),
    Route("/_emulator/calls", calls, methods=["GET"]),
    Route("/_emulator/calls/clear", clear_calls, methods=["POST"]),
    Route("/_emulator/state", state, methods=["GET"]),
    Route("/_emulator/check-password", check_password, methods=["POST"]),
]
