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


def _seconds_ms(value: object, default: float) -> int:
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
        curl = self._take()
        try:
            return self._perform(curl, request)
        finally:
            self._give_back(curl)

    def _perform(self, curl: pycurl.Curl, request: httpx.Request) -> httpx.Response:
        body = request.read()
        method = request.method.upper()
        curl.setopt(pycurl.URL, str(request.url))
        if method == "GET" and not body:
            curl.setopt(pycurl.HTTPGET, 1)
            curl.setopt(pycurl.CUSTOMREQUEST, None)
        else:
            curl.setopt(pycurl.POSTFIELDSIZE, len(body))
            curl.setopt(pycurl.COPYPOSTFIELDS, body)
            curl.setopt(pycurl.CUSTOMREQUEST, None if method == "POST" else method)
        # httpx's headers as they are (Host, Content-Length and Accept-Encoding included);
        # "Expect:" stops libcurl from adding its own 100-continue handshake.
        sent = [b"%s: %s" % pair for pair in request.headers.raw]
        sent.append(b"Expect:")
        curl.setopt(pycurl.HTTPHEADER, sent)
        timeout = request.extensions.get("timeout", {})
        connect = _seconds_ms(timeout.get("connect"), 15.0)
        read = _seconds_ms(timeout.get("read"), 15.0)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, connect)
        curl.setopt(pycurl.TIMEOUT_MS, connect + read)
        out, head = BytesIO(), BytesIO()
        curl.setopt(pycurl.WRITEFUNCTION, out.write)
        curl.setopt(pycurl.HEADERFUNCTION, head.write)
        try:
            curl.perform()
        except pycurl.error as exc:
            raise self._error(curl, exc, request) from None
        status = int(curl.getinfo(pycurl.RESPONSE_CODE))
        version, reason, headers = _parse_head(head.getvalue())
        return httpx.Response(
            status,
            headers=headers,
            content=out.getvalue(),
            request=request,
            extensions={"http_version": version, "reason_phrase": reason},
        )

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
