"""``serve``'s access log: one line per HTTP request, with no secret and no body.

uvicorn's own access log prints the request target with its query string, and the SSO portal
link carries the signature and the user's address there (``/sso/login?user=...&sig=...``), so
it stays off; this ASGI middleware writes instead, after each response::

    2026-12-01 02:30:00+08:00 10.0.0.5 "POST /hooks/hr" 202 61B 4.2ms delivery=hr-1 ua="curl/8.5"

Time in the company's zone with its offset; the client address (the first
``X-Forwarded-For`` hop is *not* trusted: a reverse proxy's own log has the original client);
method and path, with the query reduced to its parameter names (``/sso/login?ts&sig&user``);
status, response bytes, duration; the ``X-Syncengine-Delivery`` id (an id, not a secret),
and the user agent; for a request the receiver refused, ``refused="<reason>"`` (so a refusal
is one line, not an access line and a warning). A request the server cut off as too slow is
logged by the server instead (:mod:`.server`). Headers that carry signatures or tokens and all
bodies are never read.
Lines go to stderr (journald keeps them under systemd) through the ``syncengine.access``
logger, which does not propagate, so ``--debug`` does not print them twice.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import parse_qsl

from syncengine.clock import shown
from syncengine.hooks.server import REFUSED_KEY

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOGGER = "syncengine.access"
LOGGED_KEY = "syncengine.access_logged"
"""Scope key set for the app: this request gets an access line (so a refusal is told there)."""
REFUSAL_KEY = "syncengine.refusal"
"""Scope key the app sets to the reason it refused the request; the access line shows it."""


def access_logger() -> logging.Logger:
    """The ``syncengine.access`` logger, writing bare lines to stderr (set up once)."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _clean(text: str, limit: int = 200) -> str:
    """No control characters or quotes from the outside world in a log line."""
    return "".join(c if c.isprintable() and c != '"' else "?" for c in text[:limit])


def request_target(scope: Scope) -> str:
    """The path, with the query reduced to its parameter names (values can be secrets)."""
    path = _clean(str(scope.get("path", "")))
    raw = scope.get("query_string", b"")
    query = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    names = sorted({_clean(k, 40) for k, _ in parse_qsl(query, keep_blank_values=True)})
    return path + ("?" + "&".join(names) if names else "")


class AccessLog:
    """ASGI middleware: one line per request after the response (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        zone: tzinfo,
        emit: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.app = app
        self.zone = zone
        self.emit = emit or access_logger().info
        self.clock = clock
        self.now = now

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        scope[LOGGED_KEY] = True
        started = self.clock()
        status = 0
        size = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, size
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
            elif message.get("type") == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if REFUSED_KEY not in scope:  # else the server cut it off and logged that line
                self.emit(self._line(scope, status or 500, size, self.clock() - started))

    def _line(self, scope: Scope, status: int, size: int, seconds: float) -> str:
        client = scope.get("client")
        who = _clean(str(client[0])) if client else "-"
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        delivery = headers.get("x-syncengine-delivery")
        agent = headers.get("user-agent")
        line = (f'{shown(self.now(), self.zone)} {who} "{_clean(str(scope.get("method", "")))} '
                f'{request_target(scope)}" {status} {size}B {seconds * 1000:.1f}ms')  # fmt: skip
        if delivery:
            line += f" delivery={_clean(delivery.decode('latin-1'), 100)}"
        if agent:
            line += f' ua="{_clean(agent.decode("latin-1"), 100)}"'
        refusal = scope.get(REFUSAL_KEY)
        if refusal:
            line += f' refused="{_clean(str(refusal), 300)}"'
        return line
