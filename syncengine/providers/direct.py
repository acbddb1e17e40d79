"""Sending a provider's calls without ``httpx.Client`` doing its per-call work.

Three pieces, each keeping what the client path does for an Exmail call:

* :class:`JsonRequests` builds a client's requests (its default headers and timeout, a JSON
  body encoded exactly as httpx encodes ``json=``) for :func:`~.http.send_direct`;
* :class:`QueryToken` puts Gen 2's ``access_token`` on a URL, keeping the URL per token;
* :class:`CurlJsonPost` sends Gen 2's JSON POSTs (every write) straight on the libcurl handle
  pool, without an httpx request or response around a call that succeeds: about a third of
  the client CPU of a write. It keeps every behaviour of the httpx path: the pace before each
  request that goes out, the token (one refresh and resend on an invalid-token answer),
  the client's headers and timeouts, the error mapping (a transport failure is the httpx
  exception of that failure, mapped by :func:`~.http.transport_error`; an answer other than
  HTTP 200, or one with a ``Content-Encoding`` to undo, becomes the ``httpx.Response`` httpx
  would have made and goes through :func:`~.http.decode_json`), and no URL with its token in
  a message or a log line.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from syncengine.providers.http import (
    TokenAuth,
    decode_json,
    decode_json_content,
    set_query_token,
    transport_error,
    v2_token_rejected_answer,
)

if TYPE_CHECKING:  # pycurl is imported by whoever made a CurlTransport, not here
    from syncengine.providers.curl_transport import CurlAnswer, CurlTransport

log = logging.getLogger("syncengine.providers")


class JsonRequests:
    """Builds one client's requests without ``Client.build_request`` (see
    :func:`send_direct`): the client's default headers and timeout merged once, a JSON body
    encoded exactly as httpx encodes ``json=`` (UTF-8, no spaces, no NaN), query ``params``
    merged into the URL as httpx merges them."""

    def __init__(self, client: httpx.Client) -> None:
        self._headers = httpx.Headers(client.headers)  # copied as it is by each Request
        self._json_headers = httpx.Headers(client.headers)
        self._json_headers["Content-Type"] = "application/json"
        self._extensions = {"timeout": client.timeout.as_dict()}

    def build(
        self,
        method: str,
        url: httpx.URL,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Request:
        if body is None:
            return httpx.Request(
                method,
                url,
                params=dict(params) if params else None,
                headers=self._headers,
                extensions=dict(self._extensions),
            )
        content = json.dumps(
            body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
        return httpx.Request(
            method,
            url,
            params=dict(params) if params else None,
            content=content,
            headers=self._json_headers,
            extensions=dict(self._extensions),
        )


class QueryToken:
    """:func:`set_query_token` for one client, with the URL of a call that has no query of
    its own (every Gen 2 write with a JSON body) kept per token: the same ``access_token``
    parameter on the same URL, without parsing a URL again for each call (a URL parse and
    rebuild is a tenth of a write's client CPU). A new token starts an empty table."""

    def __init__(self) -> None:
        # The token and its table as one value: a thread reads both in one step.
        self._table: tuple[str, dict[str, httpx.URL]] = ("", {})

    def __call__(self, request: httpx.Request, token: str) -> None:
        url = request.url
        if url.query:
            set_query_token(request, token)
            return
        known, urls = self._table
        if token != known:  # another token: a table of its own
            urls = {}
            self._table = (token, urls)
        key = str(url)
        found = urls.get(key)
        if found is None:
            found = urls[key] = url.copy_set_param("access_token", token)
        request.url = found


class CurlJsonPost:
    """Gen 2 JSON POSTs of one client on its :class:`CurlTransport` (see the module doc)."""

    def __init__(
        self, client: httpx.Client, transport: CurlTransport, pace: Callable[[str], None]
    ) -> None:
        from syncengine.providers.curl_transport import timeout_ms

        self._transport = transport
        self._pace = pace
        self._sent: tuple[str, dict[str, tuple[httpx.URL, str]]] = ("", {})  # per token
        self._connect_ms = timeout_ms(client.timeout.connect)
        self._read_ms = timeout_ms(client.timeout.read)
        self._headers: dict[str, list[bytes]] = {}  # per host: the lines every POST sends
        self._client_headers = httpx.Headers(client.headers)
        self._client_headers["Content-Type"] = "application/json"

    @classmethod
    def over(cls, client: httpx.Client, pace: Callable[[str], None]) -> CurlJsonPost | None:
        """The poster for ``client``; None when its wire is not a :class:`CurlTransport`
        (a test's own transport): its calls then take the httpx path."""
        module = sys.modules.get("syncengine.providers.curl_transport")
        transport = client._transport
        if module is None or not isinstance(transport, module.CurlTransport):
            return None
        return cls(client, transport, pace)

    @property
    def transport(self) -> CurlTransport:
        return self._transport

    def pace(self, call: str) -> None:
        """The shared pace before a request goes out (counted as one request)."""
        self._pace(call)

    def target(self, url: httpx.URL, token: str) -> tuple[httpx.URL, str]:
        """``url`` with the ``access_token`` (as an httpx URL and as the text sent)."""
        return self._url(url, token)

    def lines(self, url: httpx.URL) -> list[bytes]:
        """The header lines every POST to ``url``'s host sends, Content-Length left out."""
        return self._lines(url)

    @property
    def timeouts_ms(self) -> tuple[int, int]:
        """(connect, read) timeouts in ms, as libcurl takes them."""
        return self._connect_ms, self._read_ms

    def _url(self, url: httpx.URL, token: str) -> tuple[httpx.URL, str]:
        """``url`` (no query of its own) with the ``access_token``, kept per token."""
        known, urls = self._sent
        if token != known:  # another token: a table of its own (one value, read at once)
            urls = {}
            self._sent = (token, urls)
        key = url.path
        found = urls.get(key)
        if found is None:
            with_token = url.copy_set_param("access_token", token)
            found = urls[key] = (with_token, str(with_token))
        return found

    def _lines(self, url: httpx.URL) -> list[bytes]:
        """The header lines httpx would send to ``url``'s host, Content-Length left out."""
        key = url.netloc.decode("ascii")
        lines = self._headers.get(key)
        if lines is None:
            probe = httpx.Request("POST", url, headers=self._client_headers, content=b"")
            lines = [b"%s: %s" % (name, value) for name, value in probe.headers.raw
                     if name.lower() != b"content-length"]  # fmt: skip
            self._headers[key] = lines
        return lines

    def encode(self, body: Mapping[str, Any]) -> bytes:
        """A JSON body encoded exactly as httpx encodes ``json=``."""
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
            "utf-8"
        )

    def post(
        self,
        call: str,
        url: httpx.URL,
        body: Mapping[str, Any],
        auth: TokenAuth,
        subject: str | None,
    ) -> dict[str, Any]:
        """The decoded answer of a 200 (errcode not looked at: the caller's), or the typed
        error of anything else."""
        content = self.encode(body)
        headers = [*self._lines(url), b"Content-Length: %d" % len(content)]
        tokens = auth.tokens
        token = tokens.get()
        status, body_out, response = self._send(call, url, token, headers, content, subject)
        if v2_token_rejected_answer(status, body_out):
            log.info("token refused by %s; fetching a fresh one and retrying once", call)
            tokens.invalidate(token)
            token = tokens.get()
            status, body_out, response = self._send(call, url, token, headers, content, subject)
        log.debug("%s -> HTTP %s", call, status)
        return self.data(call, body_out, response, subject)

    @staticmethod
    def data(
        call: str, content: bytes, response: httpx.Response | None, subject: str | None
    ) -> dict[str, Any]:
        """The decoded answer (see :meth:`answered`), or the typed error of it."""
        if response is None:
            return decode_json_content(call, content)
        return decode_json(call, response, subject=subject)

    def _send(
        self,
        call: str,
        url: httpx.URL,
        token: str,
        headers: list[bytes],
        content: bytes,
        subject: str | None,
    ) -> tuple[int, bytes, httpx.Response | None]:
        """One request: its status and (decoded) body, with the ``httpx.Response`` httpx
        would have made when it is not the usual answer (a status other than 200, or a body
        with a ``Content-Encoding`` to undo)."""
        sent, text = self._url(url, token)
        self._pace(call)
        try:
            answer = self._transport.perform(
                "POST", text, headers, content, self._connect_ms, self._read_ms,
                lambda: httpx.Request("POST", sent),
            )  # fmt: skip
        except httpx.HTTPError as exc:
            err = transport_error(call, exc, subject=subject)
            log.info("%s failed: %s", call, err)
            raise err from None
        if answer.status == 200 and answer.header(b"content-encoding") is None:
            return answer.status, answer.content, None
        return self.answered(call, sent, headers, content, answer, subject)

    @staticmethod
    def answered(
        call: str,
        sent: httpx.URL,
        headers: list[bytes],
        content: bytes,
        answer: CurlAnswer,
        subject: str | None,
    ) -> tuple[int, bytes, httpx.Response]:
        """An answer other than a plain 200 as the ``httpx.Response`` httpx would have made
        (its body decoded as httpx decodes it); a body that does not decode is the typed
        error of that failure."""
        request = httpx.Request("POST", sent, headers=headers_of(headers), content=content)
        try:
            response = answer.response(request)
            response.read()  # decoded as httpx decodes it
        except httpx.HTTPError as exc:  # a body that does not decode
            err = transport_error(call, exc, subject=subject)
            log.info("%s failed: %s", call, err)
            raise err from None
        return response.status_code, response.content, response


def headers_of(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Header lines (``b"Name: value"``) as httpx's header pairs."""
    pairs = []
    for line in lines:
        name, _, value = line.partition(b":")
        pairs.append((name.strip(), value.strip()))
    return pairs
