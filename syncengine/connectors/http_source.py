"""The HTTP connector: an HR system's JSON API, read page by page.

Most HR suites (and in-house HR portals) expose their staff list as a paged JSON API. This
connector speaks the four paging styles found in the wild, picks the records out of each page
with a dotted path, and yields them as they arrive. A short page does not end the list: many
APIs cap the page size below what was asked, and stopping there would lose everyone after it.

* ``page``      ``?page=1&page_size=100``, ``page=2``... until an empty page, or until
                ``total_path`` (the body's total count) is reached;
* ``offset``    ``?offset=0&limit=100``, then the offset moves by what actually came back...
                until an empty page or the total;
* ``cursor``    the body names the next cursor (``cursor_path``), sent back as ``cursor_param``
                until it is null or empty;
* ``next_link`` the body names the next page's URL (``next_path``), or the ``Link: <...>;
                rel="next"`` header does, until there is none;
* ``none``      one request.

Transient failures (HTTP 5xx and 429, timeouts, refused or dropped connections) are retried with
exponential backoff, a bounded number of times (tenacity). A 4xx is a configuration problem and
fails at once with its status. Truncating the list would make everyone on the missing pages look
like a leaver, so a source that stops half way (retries exhausted, ``max_pages`` reached, a
cursor that repeats) fails the whole ingest instead.

The auth token comes from a secret and goes into one header (``Authorization: Bearer ...`` by
default, or any named header such as ``X-API-Key``); it is never logged or shown. Redirects are
not followed, and a next link to another host is refused, so the token only ever goes to the
configured host.

Config (``[source]``)::

    type = "http"
    url = "https://hr.example.com/api/v2/employees"
    token = "env:HR_API_TOKEN"
    records_path = "data.items"
    paging = "cursor"
    cursor_path = "data.next_cursor"
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncengine.callpolicy import RetryPolicy, retry_after
from syncengine.connectors.base import RawRecord
from syncengine.errors import SourceError
from syncengine.secrets import Secret

log = logging.getLogger(__name__)

Paging = Literal["none", "page", "offset", "cursor", "next_link"]
ParamValue = str | int | float | bool

# Query parameters whose values are credentials: masked in describe() and messages.
_SENSITIVE_PARAMS = ("token", "key", "secret", "password", "passwd", "auth", "signature", "sig")


class HttpOptions(BaseModel):
    """The ``[source]`` table of a ``type = "http"`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    token: Secret | None = None
    auth_header: str = Field(default="Authorization", min_length=1)
    auth_scheme: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    records_path: str = ""

    paging: Paging = "none"
    page_param: str = "page"
    first_page: int = 1
    page_size: int = Field(default=100, ge=1, le=100_000)
    page_size_param: str = "page_size"  # "" when the server alone decides the page size
    total_path: str = ""  # where the body gives the total count: saves the final empty page
    offset_param: str = "offset"
    limit_param: str = "limit"
    cursor_param: str = "cursor"
    cursor_path: str = ""
    next_path: str = ""  # "" with next_link paging: the Link header names the next page
    max_pages: int = Field(default=10_000, ge=1, le=1_000_000)

    timeout: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=4, ge=0, le=20)
    backoff: float = Field(default=0.5, ge=0, le=60)
    backoff_max: float = Field(default=30.0, ge=0, le=600)
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("headers")
    @classmethod
    def _no_secret_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if name.lower() in {"authorization", "x-api-key", "cookie"}:
                raise ValueError(
                    f"header {name!r} carries a credential: put it in token (a secret) and "
                    "name the header with auth_header"
                )
        return value

    @model_validator(mode="after")
    def _paging_needs(self) -> HttpOptions:
        if self.paging == "cursor" and not self.cursor_path:
            raise ValueError("paging = 'cursor' needs cursor_path (where the body names it)")
        if self.auth_scheme is not None and self.token is None:
            raise ValueError("auth_scheme is set but token is missing")
        return self

    @property
    def scheme(self) -> str:
        if self.auth_scheme is not None:
            return self.auth_scheme
        return "Bearer" if self.auth_header.lower() == "authorization" else ""


def redact_url(url: str) -> str:
    """The URL without a userinfo password or credential-like query values."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if any(s in k.lower() for s in _SENSITIVE_PARAMS) else v) for k, v in pairs],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_MISSING = object()


def dig(body: Any, path: str) -> Any:
    """Follow a dotted path (``data.items``, ``results.0.rows``) into a JSON body."""
    node = body
    if not path:
        return node
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


class _Transient(Exception):
    """A failure worth another try; carries the text for the final message."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class HttpConnector:
    """Reads the people (or departments) from a paged JSON API."""

    def __init__(
        self,
        options: HttpOptions,
        base_dir: Path,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.options = options
        self.base_dir = base_dir
        self._transport = transport
        self._sleep = sleep
        self.pages_read = 0
        self.attempts = 0

    def describe(self) -> str:
        style = "" if self.options.paging == "none" else f" ({self.options.paging} paging)"
        return f"http GET {redact_url(self.options.url)}{style}"

    # --- requests -------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        headers = {"Accept": "application/json", **self.options.headers}
        if self.options.token is not None:
            value = self.options.token.get_secret_value()
            scheme = self.options.scheme
            headers[self.options.auth_header] = f"{scheme} {value}" if scheme else value
        return httpx.Client(
            headers=headers,
            timeout=self.options.timeout,
            verify=self.options.verify_tls,
            follow_redirects=False,
            transport=self._transport,
        )

    def _get_once(
        self, client: httpx.Client, url: str, params: Mapping[str, ParamValue] | None
    ) -> tuple[Any, str | None]:
        """One GET: the JSON body and the ``Link: rel="next"`` target, or an error."""
        self.attempts += 1
        if params:
            # Merge with the URL's own query string (httpx's params= would replace it).
            url = str(httpx.URL(url).copy_merge_params(dict(params)))
        shown = redact_url(url)
        try:
            response = client.get(url)
            response.read()
        except httpx.TimeoutException as err:
            raise _Transient(f"timed out ({type(err).__name__})") from None
        except httpx.TransportError as err:
            raise _Transient(f"connection failed ({type(err).__name__}: {err})") from None
        status = response.status_code
        if status >= 500 or status == 429:
            raise _Transient(
                f"HTTP {status} {response.reason_phrase}",
                retry_after(response.headers.get("Retry-After")),
            )
        if 300 <= status < 400:
            location = redact_url(response.headers.get("Location", "?"))
            raise SourceError(
                f"the API answered HTTP {status}, a redirect to {location}",
                where=f"GET {shown}",
                hint="set source.url to the final address; redirects are not followed so "
                "that the token goes nowhere else",
            )
        if status >= 400:
            hint = {
                401: "the token was refused: check source.token and that it has not expired",
                403: "the token lacks the right to read this list: ask the HR system's admin",
                404: "check source.url",
            }.get(status, "check source.url and source.params")
            raise SourceError(
                f"the API answered HTTP {status} {response.reason_phrase}",
                where=f"GET {shown}",
                hint=hint,
            )
        try:
            return response.json(), response.links.get("next", {}).get("url")
        except (json.JSONDecodeError, UnicodeDecodeError):
            kind = response.headers.get("Content-Type", "unknown content type")
            raise SourceError(
                f"the answer is not JSON ({kind}, {len(response.content)} bytes)",
                where=f"GET {shown}",
                hint="check source.url points at the API, not a login page",
            ) from None

    def _get(
        self, client: httpx.Client, url: str, params: Mapping[str, ParamValue] | None
    ) -> tuple[Any, str | None]:
        o = self.options
        policy = RetryPolicy(max_attempts=o.retries + 1, backoff_initial=o.backoff,
                             backoff_max=o.backoff_max, jitter=0.0,
                             max_retry_seconds=math.inf)  # fmt: skip
        try:
            got: tuple[Any, str | None] = policy.call(
                lambda: self._get_once(client, url, params),
                lambda exc: isinstance(exc, _Transient),
                sleep=self._sleep,
            )
        except _Transient as err:
            tries = self.options.retries + 1
            raise SourceError(
                f"the API kept failing: {err.reason} (tried {tries} times)",
                where=f"GET {redact_url(url)}",
                hint="the HR API is down or overloaded; try again later or raise source.retries",
            ) from None
        return got

    # --- paging ---------------------------------------------------------------------------

    def _records_of(self, body: Any, url: str) -> list[RawRecord]:
        found = dig(body, self.options.records_path)
        where = f"GET {redact_url(url)}"
        if found is _MISSING:
            keys = ", ".join(sorted(body)) if isinstance(body, dict) else type(body).__name__
            raise SourceError(
                f"the answer has nothing at records_path {self.options.records_path!r} "
                f"(top-level keys: {keys})",
                where=where,
                hint="set source.records_path to the dotted path of the list of records",
            )
        if found is None:
            return []
        if not isinstance(found, list):
            raise SourceError(
                f"records_path {self.options.records_path!r} is a {type(found).__name__}, "
                "not a list",
                where=where,
                hint="set source.records_path to the dotted path of the list of records",
            )
        for index, item in enumerate(found):
            if not isinstance(item, dict):
                raise SourceError(
                    f"record {index} of the page is a {type(item).__name__}, not an object",
                    where=where,
                    hint="check source.records_path",
                )
        return found

    def _next_link(self, body: Any, url: str, response_links: str | None) -> str | None:
        if self.options.next_path:
            value = dig(body, self.options.next_path)
            link = value if isinstance(value, str) and value else None
        else:
            link = response_links
        if not link:
            return None
        target = urljoin(url, link)
        here, there = urlsplit(self.options.url), urlsplit(target)
        if (here.scheme, here.netloc) != (there.scheme, there.netloc):
            raise SourceError(
                f"the next-page link leaves the configured host ({redact_url(target)})",
                where=f"GET {redact_url(url)}",
                hint="the token is only sent to source.url's host; ask the HR system's admin",
            )
        return target

    def _pages(self, client: httpx.Client) -> Iterator[list[RawRecord]]:
        o = self.options
        base = dict(o.params)
        if o.paging == "none":
            records = self._records_of(self._get(client, o.url, base)[0], o.url)
            self.pages_read = 1
            yield records
            return
        if o.paging == "next_link":
            yield from self._next_link_pages(client)
            return
        page, offset, cursor, read = o.first_page, 0, None, 0
        seen_cursors: set[str] = set()
        for n in range(o.max_pages):
            params: dict[str, ParamValue] = dict(base)
            if o.paging == "page":
                params[o.page_param] = page
                if o.page_size_param:
                    params[o.page_size_param] = o.page_size
            elif o.paging == "offset":
                params[o.offset_param] = offset
                params[o.limit_param] = o.page_size
            elif cursor is not None:
                params[o.cursor_param] = cursor
            body = self._get(client, o.url, params)[0]
            records = self._records_of(body, o.url)
            self.pages_read = n + 1
            if records:
                yield records
            if o.paging == "cursor":
                nxt = dig(body, o.cursor_path)
                if nxt is _MISSING or nxt is None or nxt == "" or nxt is False:
                    return
                cursor = str(nxt)
                if cursor in seen_cursors:
                    raise SourceError(
                        f"the API handed out the cursor {cursor!r} twice (an endless loop)",
                        where=f"GET {redact_url(o.url)}",
                        hint="check source.cursor_path and source.cursor_param",
                    )
                seen_cursors.add(cursor)
                continue
            read += len(records)
            if not records or (o.total_path and self._total(body) <= read):
                return
            page += 1
            offset += len(records)
        self._too_many_pages()

    def _total(self, body: Any) -> int:
        value = dig(body, self.options.total_path)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SourceError(
                f"the answer has no whole number at total_path {self.options.total_path!r}",
                where=self.describe(),
                hint="fix source.total_path, or leave it out to page until an empty page",
            ) from None

    def _next_link_pages(self, client: httpx.Client) -> Iterator[list[RawRecord]]:
        o = self.options
        url: str | None = o.url
        params: dict[str, ParamValue] | None = dict(o.params)
        seen: set[str] = set()
        for n in range(o.max_pages):
            assert url is not None
            seen.add(url)
            body, links = self._get(client, url, params)
            records = self._records_of(body, url)
            self.pages_read = n + 1
            if records:
                yield records
            url = self._next_link(body, url, links)
            params = None  # the next link carries its own query string
            if url is None:
                return
            if url in seen:
                raise SourceError(
                    f"the next-page link points back to a page already read ({redact_url(url)})",
                    where=f"GET {redact_url(o.url)}",
                    hint="the HR API loops; ask its admin",
                )
        self._too_many_pages()

    def _too_many_pages(self) -> None:
        raise SourceError(
            f"stopped after source.max_pages = {self.options.max_pages} pages with more to come",
            where=self.describe(),
            hint="raise source.max_pages or source.page_size; a partial list is never used, "
            "since the people on the missing pages would look like leavers",
        )

    def records(self) -> Iterator[RawRecord]:
        count = 0
        with self._client() as client:
            for page in self._pages(client):
                for record in page:
                    count += 1
                    yield record
        if count == 0:
            raise SourceError(
                "the API returned zero records",
                where=self.describe(),
                hint="an empty HR source is refused so that nobody is treated as a leaver; "
                "check source.url, source.params and source.records_path",
            )
        log.info("read %d records in %d pages from %s", count, self.pages_read, self.describe())


def make_connector(options: Mapping[str, Any], base_dir: Path) -> HttpConnector:
    """Entry point ``http``: validate the options and build the connector.

    A bad option raises pydantic's ValidationError, which :func:`~syncengine.connectors.base.
    make_connector` reports as ``source.<option>`` (or ``departments.source.<option>``).
    """
    parsed = HttpOptions.model_validate(dict(options), context={"base_dir": base_dir})
    return HttpConnector(parsed, base_dir)
