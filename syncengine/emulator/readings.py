"""The readings of the protocol that the sources leave open, played on demand.

protocol-decisions.md fixes one reading of each open question for the emulator; the real
service may follow another. Each alternative here is an emulator option (``EmulatorOptions``
field, ``syncengine emulator`` flag, ``POST /_emulator/faults`` key), so the client can be tested
against every one:

- ``listen_ver = "separate"``: Gen 1 ``listen`` sends a mail event WITHOUT ``Ver``; the version
  bump comes as its own ``{"Ver":...}`` answer to a later call. What was pushed is remembered
  per token (a fresh token, after a restart or an expiry, is sent the mail again: a client must
  de-duplicate by ``MailId``).
- ``invalid_token_answer``: an unknown or expired token refused with the errcode (the default),
  with ``{"error":"invalid_token"}`` alone (Gen 1), or with HTTP 401.
- ``newcount_dates = "required"``: Gen 2 ``mail/newcount`` refuses a call without its dates.
- ``user_mod = "reset"``: Gen 1 ``user/sync`` MOD resets every field it does not carry (the
  reading under which working clients resend the whole record).
- ``dept_visible_after = S``: a department created less than S seconds ago is not yet visible
  to a member ADD/MOD (Gen 1 1310 party_not_found, Gen 2 60003), as a client of the old API
  observed ("a new party needs a moment").
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from starlette.responses import JSONResponse

from syncengine.emulator.model import ApiError, Token
from syncengine.emulator.runtime import Runtime


def listen_answer(rt: Runtime, tok: Token, ver: int) -> dict[str, Any] | None:
    """What ``listen`` answers a client at version ``ver`` now; None: nothing yet (hold)."""
    if rt.reading("listen_ver") != "separate":
        return rt.directory.first_event_after(ver)
    with rt.lock:
        pushed = rt.listen_pushed.get(tok.token, 0)
    event = rt.directory.first_event_after(max(ver, pushed))
    if event is not None:
        with rt.lock:
            rt.listen_pushed[tok.token] = int(event["Ver"])
        return {k: v for k, v in event.items() if k != "Ver"}
    if pushed > ver:
        return {"Ver": str(pushed)}
    return None


def invalid_token(rt: Runtime, body: dict[str, Any]) -> JSONResponse:
    """The refusal of an unknown or expired token; ``body`` is the errcode form of it."""
    answer = rt.reading("invalid_token_answer")
    if answer == "error" and rt.api == "v1":
        return JSONResponse({"error": "invalid_token"})
    if answer == "http401":
        return JSONResponse(body if rt.api == "v2" else {"error": "invalid_token"}, status_code=401)
    return JSONResponse(body)


MOD_RESETS: dict[str, Any] = {
    "position": "",
    "tel": "",
    "mobile": "",
    "extid": "",
    "gender": "0",
    "slaves": [],
    "department": [],
}
"""What a Gen 1 MOD leaves in a field it omits under ``user_mod = "reset"`` (the name is
required and ``OpenType`` documents "0 = leave as is", so those two keep their values)."""


def mod_body(rt: Runtime, body: dict[str, Any]) -> dict[str, Any]:
    """The member fields a Gen 1 MOD changes: ``body``, or under "reset" every field."""
    if rt.reading("user_mod") != "reset":
        return body
    return {**MOD_RESETS, **body}


def note_new_departments(rt: Runtime, before: Iterable[int]) -> None:
    """Stamp the departments that exist now and did not in ``before`` with their birth time."""
    old = set(before)
    now = time.monotonic()
    with rt.lock:
        for dept_id in list(rt.directory.depts):
            if dept_id not in old:
                rt.dept_born[dept_id] = now


def check_visible(rt: Runtime, dept_ids: Iterable[Any]) -> None:
    """Refuse a member ADD/MOD into a department younger than ``dept_visible_after``."""
    delay = float(rt.reading("dept_visible_after"))
    if delay <= 0:
        return
    now = time.monotonic()
    with rt.lock:
        for raw in dept_ids:
            born = rt.dept_born.get(raw) if isinstance(raw, int) else None
            if born is not None and now - born < delay:
                raise ApiError(60003, 1310, f"department {raw} not found (created moments ago)")
