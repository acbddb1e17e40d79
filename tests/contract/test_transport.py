"""The Exmail client's own transport (providers/transport.py) against real sockets.

A server that closes a keep-alive connection while it sits idle (without saying
``Connection: close``) must not make the next request fail: the idle socket is seen closed
and a new one is opened. A connection dropped in the middle of an answer is an httpx
transport error (which the clients treat as retriable); a refused port is a connect error.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from syncengine.providers.transport import StdlibTransport

ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


class OneShotServer:
    """Answers each connection's first request, then closes it (or cuts the answer short)."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer)

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


@pytest.fixture
def one_shot() -> Iterator[OneShotServer]:
    server = OneShotServer(ANSWER)
    yield server
    server.close()


def test_an_idle_connection_closed_by_the_server_is_not_reused(one_shot: OneShotServer) -> None:
    with httpx.Client(transport=StdlibTransport(), timeout=5) as client:
        for _ in range(3):
            response = client.post(f"http://127.0.0.1:{one_shot.port}/openapi/user/get",
                                   data={"Alias": "a@example.com"})  # fmt: skip
            assert response.status_code == 200
            assert response.json() == {"ok": True}
    assert one_shot.connections == 3


def test_an_answer_cut_short_is_a_transport_error() -> None:
    server = OneShotServer(ANSWER[:-4])
    try:
        with (
            httpx.Client(transport=StdlibTransport(), timeout=5) as client,
            pytest.raises(httpx.TransportError),
        ):
            client.get(f"http://127.0.0.1:{server.port}/openapi/user/get")
    finally:
        server.close()


def test_a_refused_port_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with (
            httpx.Client(transport=StdlibTransport(), timeout=5) as client,
            pytest.raises(httpx.ConnectError),
        ):
            client.get(f"http://127.0.0.1:{port}/")


def test_keep_alive_reuses_one_connection() -> None:
    """A server that keeps the connection open gets every request on one socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[int] = []

    def serve() -> None:
        conn, _ = listener.accept()
        accepted.append(1)
        with conn:
            buffer = b""
            for _ in range(5):
                while b"\r\n\r\n" not in buffer:
                    buffer += conn.recv(65536)
                _, _, buffer = buffer.partition(b"\r\n\r\n")
                conn.sendall(ANSWER)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with httpx.Client(transport=StdlibTransport(), timeout=5) as client:
            for _ in range(5):
                assert client.get(f"http://127.0.0.1:{port}/x").json() == {"ok": True}
        thread.join(5)
        assert accepted == [1]
    finally:
        listener.close()
