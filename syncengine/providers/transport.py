"""A lean httpx transport: keep-alive sockets, responses parsed by ``http.client``.

Why: a Gen 1 directory read is one ``user/get`` per member, so the client's cost per request
bounds the read. httpx's default transport (httpcore + h11) spends about 0.3 ms of CPU per
request on connection-pool bookkeeping and header validation; writing the request's bytes
(head and body in one send) and parsing the answer with the standard library's
``http.client.HTTPResponse`` costs about 0.1 ms. The httpx ``Client`` above stays as it is
(token auth flow, the pacing hook of the call policy, redaction, the typed errors, the
``MockTransport`` seam of the tests); only the bytes on the wire change hands.

Idle connections are kept per (scheme, host, port), at most ``max_keepalive`` of them. Before
one is reused it is checked: a connection the server closed while it sat idle (readable with
nothing asked: EOF) is dropped, so a request never goes out on a dead socket (where a write
would fail after it may or may not have been read). Failures are raised as the httpx
exceptions the callers already translate (timeouts, connect errors, dropped connections).
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import certifi
import httpx

Key = tuple[str, str, int]


class StdlibTransport(httpx.BaseTransport):
    """HTTP/1.1 with keep-alive: sockets of our own, responses parsed by ``http.client``
    (see the module docstring)."""

    def __init__(self, *, max_keepalive: int = 10) -> None:
        self._max_keepalive = max(1, max_keepalive)
        self._idle: dict[Key, list[socket.socket]] = {}
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    def _idle_socket(self, key: Key) -> socket.socket | None:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                sock = idle.pop()
                if _still_open(sock):
                    return sock
                sock.close()
        return None

    def _connect(self, key: Key, timeout: float | None) -> socket.socket:
        scheme, host, port = key
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            sock = self._context().wrap_socket(sock, server_hostname=host)
        return sock

    def _checkin(self, key: Key, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self._max_keepalive:
                idle.append(sock)
                return
        sock.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}", request=request)
        key = (scheme, url.host, url.port or (443 if scheme == "https" else 80))
        timeouts = request.extensions.get("timeout", {})
        head = [request.method.encode("ascii") + b" " + url.raw_path + b" HTTP/1.1"]
        head.extend(name + b": " + value for name, value in request.headers.raw)
        # Head and body in one send: no Nagle / delayed-ACK wait, one system call.
        data = b"\r\n".join(head) + b"\r\n\r\n" + request.read()
        sock = self._idle_socket(key)
        if sock is None:
            with _translated(request, connecting=True):
                sock = self._connect(key, timeouts.get("connect"))
        try:
            with _translated(request, connecting=False):
                sock.settimeout(timeouts.get("read"))
                sock.sendall(data)
                response = http.client.HTTPResponse(sock, method=request.method)
                response.begin()
                content = response.read()
        except BaseException:
            sock.close()
            raise
        if response.will_close:
            sock.close()
        else:
            self._checkin(key, sock)
        return httpx.Response(
            status_code=response.status,
            headers=response.getheaders(),
            stream=httpx.ByteStream(content),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": response.reason.encode("latin-1"),
            },
        )

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for sock in socks:
                sock.close()


def _still_open(sock: socket.socket) -> bool:
    """An idle keep-alive connection is reusable when nothing is waiting on it to be read
    (a readable idle socket means the server closed it, or sent what nobody asked for)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


@contextmanager
def _translated(request: httpx.Request, *, connecting: bool) -> Iterator[None]:
    """``http.client`` / socket failures as the httpx exceptions the clients translate."""
    try:
        yield
    except TimeoutError as exc:
        late = httpx.ConnectTimeout if connecting else httpx.ReadTimeout
        raise late(str(exc) or "timed out", request=request) from exc
    except ssl.SSLError as exc:
        raise httpx.ConnectError(f"TLS: {exc}", request=request) from exc
    except (http.client.RemoteDisconnected, http.client.IncompleteRead) as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except http.client.HTTPException as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except (socket.gaierror, ConnectionRefusedError) as exc:
        raise httpx.ConnectError(str(exc), request=request) from exc
    except OSError as exc:
        failed = httpx.ConnectError if connecting else httpx.ReadError
        raise failed(str(exc) or type(exc).__name__, request=request) from exc
