"""The HTTP server settings of ``syncengine serve``: uvicorn with a guard against slow clients.

The receiver is reachable by anyone who can reach its port, signed or not, so the server must
not let a client hold a connection for free. uvicorn (0.30 to at least 0.54) has a keep-alive
timeout between requests and a size cap on a request head, but no time limit on *receiving* a
request: a client that sends half a head, or a head and then a trickle of body, keeps its
connection (and its slot) for as long as it likes. :func:`guarded_protocol` adds what is
missing on top of uvicorn's own HTTP/1.1 protocol class (the ``http=`` extension point of
:class:`uvicorn.Config`):

* **Head timeout**: the request line and headers must be complete within ``header_timeout``
  seconds of the connection opening (or of the first byte of a following keep-alive request).
* **Body timeout**: the whole body must arrive within ``body_timeout`` seconds of the head.
* **Connection cap**: past ``max_connections`` open connections a new one is answered ``503``
  and closed at once, before it can send anything.

A refused client gets ``408``/``503`` with ``Connection: close`` and exactly one WARNING line
naming its address, what was late and the limit; never a traceback. When the app was already
waiting for the body it sees an ordinary disconnect (the scope carries :data:`REFUSED_KEY`,
so it does not log the same refusal a second time).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from syncengine.hooks.config import HooksConfig

if TYPE_CHECKING:  # uvicorn is imported when a server is built, not when the CLI starts
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}

REFUSED_KEY = "syncengine.refused"
"""Scope key set by the protocol when it closed a request for being too slow."""


@dataclass(frozen=True)
class Limits:
    """How long a client may take and how many may be connected (``[hooks]`` keys)."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 200
    keep_alive: int = 30


def serve_limits(hooks: HooksConfig) -> Limits:
    """The limits ``[hooks]`` sets."""
    return Limits(hooks.header_timeout, hooks.body_timeout, hooks.max_connections)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "unknown client"


def guarded_protocol(limits: Limits) -> type[H11Protocol]:
    """uvicorn's H11Protocol with the head/body timeouts and the connection cap of ``limits``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _waiting_for: str = ""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                cap = limits.max_connections
                log.warning("refused %s: %d connections are open already ([hooks] "
                            "max_connections)", _peer(self.client), cap)  # fmt: skip
                self._refuse(503, "too many connections; try again later")
                return
            self._arm("head", limits.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self._between_requests():
                self._arm("head", limits.header_timeout)  # a following keep-alive request
            before = self.cycle
            super().data_received(data)
            cycle = self.cycle
            if cycle is None or cycle.response_complete or self.transport.is_closing():
                return  # no head yet (or only the previous request's): the head timer runs
            if not cycle.more_body:
                self._disarm()  # the whole request is in
            elif cycle is not before or self._waiting_for != "body":
                self._arm("body", limits.body_timeout)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self, what: str, seconds: float) -> None:
            self._disarm()
            self._waiting_for = what
            self._deadline = self.loop.call_later(seconds, self._too_slow, what, seconds)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._waiting_for = ""

        def _too_slow(self, what: str, seconds: float) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if what == "body" and cycle is not None and cycle.response_started:
                # Answered already (a 413 before the body was read), and logged by the app:
                # only the rest of the body is late. Close without a second answer or line.
                self.transport.close()
                return
            request = ""
            if what == "body" and self.scope is not None:
                request = f" ({self.scope['method']} {self.scope['path']})"
            log.warning("refused %s%s: the request %s was not complete after %g s "
                        "([hooks] %s_timeout)", _peer(self.client), request, what, seconds,
                        "header" if what == "head" else "body")  # fmt: skip
            self._refuse(408, f"request {what} not received in time", late_body=what == "body")

        def _refuse(self, status: int, message: str, *, late_body: bool = False) -> None:
            """Answer ``status`` (no response was started), then close the connection."""
            self._disarm()
            cycle = self.cycle
            if late_body and cycle is not None:  # the app waits for the body: it is not coming
                cycle.scope[REFUSED_KEY] = message  # type: ignore[literal-required]
                cycle.disconnected = True  # the app's own answer goes nowhere
                cycle.message_event.set()
            # Written as raw bytes: h11 cannot send a response before a request head arrived.
            body = (message + "\n").encode()
            head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    "Content-Type: text/plain; charset=utf-8\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
            self.transport.write(head.encode() + body)
            self.transport.close()

    return GuardedH11Protocol


def server_config(app: Any, limits: Limits, *, log_level: str = "warning") -> uvicorn.Config:
    """The uvicorn settings of ``serve`` (also used by the tests' in-process receiver)."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=limits.keep_alive,
        # A request head larger than this is refused by uvicorn with 400 (default 16 KiB).
        h11_max_incomplete_event_size=16 * 1024,
    )
