"""Request bodies and refusals, shared by everything ``serve`` answers (the hook receiver and
the review pages): a body is read under a byte cap, never buffered beyond it, and a client
that vanishes mid-body is one refusal line, not an ASGI traceback."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request

from syncengine.hooks.access_log import LOGGED_KEY, REFUSAL_KEY
from syncengine.hooks.server import REFUSED_KEY

log = logging.getLogger("syncengine.hooks.app")

GONE = "the client disconnected before the body was complete"


class TooLarge(Exception):
    """The body passed the cap (by its Content-Length, or as it streamed)."""


class Gone(Exception):
    """The client disconnected before its body was complete (or was cut off as too slow)."""


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes (never buffered beyond it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge
            chunks.append(chunk)
    except ClientDisconnect:
        raise Gone from None
    return b"".join(chunks)


def peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "unknown client"


def tell(request: Request, code: int, message: str) -> None:
    """Log a refusal as one bounded line (no body, no signature, no secret in it): on the
    request's access line when the access log is on, else as a WARNING line of its own."""
    shown = message if len(message) <= 300 else message[:300] + "..."
    if request.scope.get(LOGGED_KEY):
        request.scope[REFUSAL_KEY] = shown
        return
    log.warning("refused %s %s from %s: %d %s", request.method, request.url.path[:200],
                peer(request), code, shown.replace("\n", " "))  # fmt: skip


def tell_gone(request: Request) -> None:
    """Log a body cut off by its client, unless the server cut it off and logged that."""
    if REFUSED_KEY not in request.scope:
        tell(request, 400, GONE)
