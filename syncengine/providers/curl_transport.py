"""An httpx transport over libcurl (pycurl): the wire under both Exmail clients.

Why: a Gen 1 full read is one ``user/get`` per member (10,000 calls for 10,000 people), and
on the development machine httpx's own transport (httpcore + h11, pure Python) costs about
390 µs of client CPU per call where libcurl costs about 70 µs: with the emulator on the other
core, httpx alone held the read to a quarter of the server's rate. Only the wire changes:
requests are still built, authenticated (:class:`~syncengine.providers.http.TokenAuth`),
paced (event hooks), decoded and mapped to errors by httpx and :mod:`.http`, and tests still
pass their own httpx transport (``MockTransport``) instead of this one.

A request takes an idle curl handle (or makes one) and gives it back when done; each handle
keeps its own keep-alive connection (libcurl's per-handle connection cache), so
``read_concurrency`` reading threads use that many connections, whichever threads they are;
libcurl releases the GIL while it waits on the network. libcurl failures become
the httpx exceptions httpx's own transport raises for the same failure (a timeout, a refused
or dropped connection), so :func:`~syncengine.providers.http.transport_error` maps them as
before. libcurl does not decode the body (no ``ACCEPT_ENCODING``): httpx does, from the
headers, as with its own transport. Redirects are not followed (neither does the client).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

import certifi
import httpx
import pycurl

# libcurl error codes (curl/curl.h) and the httpx exception of the same failure.
_UNSUPPORTED_PROTOCOL = 1
_COULDNT_RESOLVE_PROXY = 5
_COULDNT_RESOLVE_HOST = 6
_COULDNT_CONNECT = 7
_OPERATION_TIMEDOUT = 28
_SSL_CONNECT_ERROR = 35
_TOO_MANY_REDIRECTS = 47
_GOT_NOTHING = 52
_SEND_ERROR = 55
_RECV_ERROR = 56
_PARTIAL_FILE = 18

_CONNECT_ERRORS = {_COULDNT_RESOLVE_PROXY, _COULDNT_RESOLVE_HOST, _COULDNT_CONNECT,
                   _SSL_CONNECT_ERROR}  # fmt: skip
_PROTOCOL_ERRORS = {_GOT_NOTHING, _PARTIAL_FILE}


def timeout_ms(value: object, default: float = 15.0) -> int:
    """An httpx timeout (seconds, None: unset) as libcurl's milliseconds, at least 1."""
    seconds = value if isinstance(value, int | float) else default
    return max(1, int(seconds * 1000))


def _parse_head(raw: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """(HTTP version, reason, headers) of the last response head libcurl wrote (an interim
    ``100 Continue`` head comes before it). Collected by ``BytesIO.write`` and split once
    here: a Python call per header line cost more than the rest of the transport."""
    head = raw[raw.rfind(b"HTTP/") :] if b"HTTP/" in raw else raw
    lines = head.split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return version or b"HTTP/1.1", rest.partition(b" ")[2], headers


@dataclass(frozen=True)
class CurlAnswer:
    """A response as libcurl received it (the last head, the body as sent: not decoded)."""

    status: int
    version: bytes
    reason: bytes
    headers: list[tuple[bytes, bytes]]
    content: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first header of that name (case-insensitive), None when absent."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def response(self, request: httpx.Request) -> httpx.Response:
        """The answer as the :class:`httpx.Response` httpx's own transport would give."""
        return httpx.Response(
            self.status,
            headers=self.headers,
            content=self.content,
            request=request,
            extensions={"http_version": self.version, "reason_phrase": self.reason},
        )


class CurlTransport(httpx.BaseTransport):
    """:class:`httpx.BaseTransport` over a pool of pycurl handles (see the module doc)."""

    def __init__(self, *, verify: bool = True) -> None:
        self._verify = verify
        self._idle: list[pycurl.Curl] = []  # handles not in use, the last returned on top
        self._lock = threading.Lock()

    def _take(self) -> pycurl.Curl:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self.new_handle()

    def new_handle(self) -> pycurl.Curl:
        """A curl handle with this transport's fixed options (TLS checks, no redirects)."""
        curl = pycurl.Curl()
        curl.setopt(pycurl.NOSIGNAL, 1)
        curl.setopt(pycurl.TCP_NODELAY, 1)
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.CAINFO, certifi.where())
        if not self._verify:
            curl.setopt(pycurl.SSL_VERIFYPEER, 0)
            curl.setopt(pycurl.SSL_VERIFYHOST, 0)
        return curl

    def _give_back(self, curl: pycurl.Curl) -> None:
        with self._lock:
            self._idle.append(curl)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        timeout = request.extensions.get("timeout", {})
        connect = timeout_ms(timeout.get("connect"))
        read = timeout_ms(timeout.get("read"))
        # httpx's headers as they are (Host, Content-Length and Accept-Encoding included).
        sent = [b"%s: %s" % pair for pair in request.headers.raw]
        answer = self.perform(
            request.method, str(request.url), sent, body, connect, read, lambda: request
        )
        return answer.response(request)

    def perform(
        self,
        method: str,
        url: str,
        headers: list[bytes],
        body: bytes,
        connect_ms: int,
        read_ms: int,
        request: Callable[[], httpx.Request],
    ) -> CurlAnswer:
        """One request as it goes on the wire: ``headers`` as complete lines (libcurl adds
        none of its own but the request line), ``body`` sent as it is. A failure is raised
        as the httpx exception of the same failure, carrying ``request()`` (built only then:
        a caller that sends without an httpx request makes one for the error alone)."""
        curl = self._take()
        try:
            method = method.upper()
            curl.setopt(pycurl.URL, url)
            if method == "GET" and not body:
                curl.setopt(pycurl.HTTPGET, 1)
                curl.setopt(pycurl.CUSTOMREQUEST, None)
            else:
                curl.setopt(pycurl.POSTFIELDSIZE, len(body))
                curl.setopt(pycurl.COPYPOSTFIELDS, body)
                curl.setopt(pycurl.CUSTOMREQUEST, None if method == "POST" else method)
            # "Expect:" stops libcurl from adding its own 100-continue handshake.
            curl.setopt(pycurl.HTTPHEADER, [*headers, b"Expect:"])
            curl.setopt(pycurl.CONNECTTIMEOUT_MS, connect_ms)
            curl.setopt(pycurl.TIMEOUT_MS, connect_ms + read_ms)
            out, head = BytesIO(), BytesIO()
            curl.setopt(pycurl.WRITEFUNCTION, out.write)
            curl.setopt(pycurl.HEADERFUNCTION, head.write)
            try:
                curl.perform()
            except pycurl.error as exc:
                raise self._error(curl, exc, request()) from None
            status = int(curl.getinfo(pycurl.RESPONSE_CODE))
            version, reason, headers_in = _parse_head(head.getvalue())
            return CurlAnswer(status, version, reason, headers_in, out.getvalue())
        finally:
            self._give_back(curl)

    @staticmethod
    def error(curl: pycurl.Curl, exc: pycurl.error, request: httpx.Request) -> httpx.HTTPError:
        """The httpx exception of the libcurl failure ``exc`` of ``curl``'s transfer."""
        return CurlTransport._error(curl, exc, request)

    @staticmethod
    def _error(curl: pycurl.Curl, exc: pycurl.error, request: httpx.Request) -> httpx.HTTPError:
        code = int(exc.args[0]) if exc.args else 0
        text = str(exc.args[1]) if len(exc.args) > 1 else "libcurl error"
        message = f"{text} (libcurl error {code})"
        if code == _OPERATION_TIMEDOUT:
            connected = float(curl.getinfo(pycurl.CONNECT_TIME)) > 0
            if connected:
                return httpx.ReadTimeout(message, request=request)
            return httpx.ConnectTimeout(message, request=request)
        if code == _UNSUPPORTED_PROTOCOL:
            return httpx.UnsupportedProtocol(message, request=request)
        if code in _CONNECT_ERRORS:
            return httpx.ConnectError(message, request=request)
        if code == _SEND_ERROR:
            return httpx.WriteError(message, request=request)
        if code == _RECV_ERROR:
            return httpx.ReadError(message, request=request)
        if code in _PROTOCOL_ERRORS:
            return httpx.RemoteProtocolError(message, request=request)
        return httpx.TransportError(message, request=request)

    def close(self) -> None:
        """Close the idle handles and their connections (a request in flight keeps its own
        handle until it ends; closing it then is the garbage collector's job)."""
        with self._lock:
            handles, self._idle = self._idle, []
        for curl in handles:
            curl.close()
