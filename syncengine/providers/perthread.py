"""An httpx transport that gives each calling thread its own keep-alive pool.

httpx's ``HTTPTransport`` keeps one connection pool behind one lock, and on every request and
every response it walks all of the pool's connections (is it idle, has it expired: a
``poll()`` on each idle socket). An apply at concurrency 64 keeps 66 connections, so each
create paid for 66 such checks twice, under a lock the 64 threads queue for: a cost that
grows with the concurrency, which is exactly what an apply wants to raise.

A thread of ours sends one request at a time and waits for the answer, so it needs its own
connection, not a share of a common pool: :class:`PerThreadTransport` hands each thread its
own ``httpx.HTTPTransport`` (the same httpx/httpcore on the wire, same TLS and timeouts),
whose pool holds that thread's one or two connections. The pools of threads that have ended
are closed when a new thread arrives and on :meth:`close`, so a long-running process
(``serve``) whose threads come and go keeps no dead thread's sockets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx


class PerThreadTransport(httpx.BaseTransport):
    """One ``factory()`` transport per calling thread (see the module docstring)."""

    def __init__(self, factory: Callable[[], httpx.BaseTransport] | None = None) -> None:
        self._factory = factory or _keepalive_transport
        self._local = threading.local()
        self._lock = threading.Lock()
        self._by_thread: dict[threading.Thread, httpx.BaseTransport] = {}
        self._closed = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport: httpx.BaseTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = self._new()
        return transport.handle_request(request)

    def _new(self) -> httpx.BaseTransport:
        gone: list[httpx.BaseTransport] = []
        with self._lock:
            if self._closed:
                raise RuntimeError("the HTTP transport is closed")
            for thread in [t for t in self._by_thread if not t.is_alive()]:
                gone.append(self._by_thread.pop(thread))
            transport = self._factory()
            self._by_thread[threading.current_thread()] = transport
        self._local.transport = transport
        for old in gone:  # an ended thread's connections
            old.close()
        return transport

    @property
    def pools(self) -> int:
        """How many per-thread transports are open (for tests and diagnostics)."""
        with self._lock:
            return len(self._by_thread)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            transports = list(self._by_thread.values())
            self._by_thread.clear()
        for transport in transports:
            transport.close()


def _keepalive_transport() -> httpx.BaseTransport:
    # No cap on connections: a thread normally holds one, and a request it makes while its
    # first one is still open (a token fetch inside an auth flow) must not wait for itself.
    return httpx.HTTPTransport(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=2)
    )
