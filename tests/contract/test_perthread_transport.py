"""Each calling thread gets its own keep-alive connection (real HTTP on loopback): a thread's
requests reuse its connection, two threads never share one, the connections of a thread that
ended are closed when a new thread arrives, and ``close`` closes them all."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from syncengine.providers.perthread import PerThreadTransport
from tests.fixtures.loopback import LoopbackServer, serve_in_thread

pytestmark = pytest.mark.timeout(60)


async def echo_peer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers the client's port: which connection the request came on."""
    if scope["type"] != "http":
        return
    body = str(scope["client"][1]).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = serve_in_thread(echo_peer)
    yield srv
    srv.stop()


def ports_from_thread(client: httpx.Client, n: int) -> list[str]:
    got: list[str] = []

    def run() -> None:
        got.extend(client.get("/").text for _ in range(n))

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    return got


def test_each_thread_keeps_its_own_connection(server: LoopbackServer) -> None:
    transport = PerThreadTransport()
    with httpx.Client(base_url=server.base_url, transport=transport) as client:
        first = ports_from_thread(client, 5)
        second = ports_from_thread(client, 5)
        assert len(set(first)) == 1 and len(set(second)) == 1  # kept alive, reused
        assert set(first) != set(second)  # never shared between threads
        # The first thread has ended: its pool was closed when the second one arrived.
        assert transport.pools == 1
        here = {client.get("/").text for _ in range(3)}
        assert len(here) == 1 and transport.pools == 1  # the second thread ended too
    assert transport.pools == 0
    with pytest.raises(RuntimeError, match="closed"):
        ports_from_thread_error(transport, server.base_url)


def ports_from_thread_error(transport: PerThreadTransport, base_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            transport.handle_request(httpx.Request("GET", base_url + "/"))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]
