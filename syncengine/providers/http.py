"""The HTTP layer both Exmail clients share: errors, redaction, token auth, response decoding.

This is the ONE place that turns an HTTP status, an Exmail ``errcode`` or an httpx transport
failure into the typed errors of :mod:`syncengine.errors`. Every request a client sends is paced
by the process's :class:`~syncengine.callpolicy.CallPolicy` (:func:`install_pacing`), and the
clients retry their *reads* under that policy (:func:`is_read_call` tells a read from a write);
writes are retried action by action by the executor, which looks before redoing. An
invalid-token answer is handled by :class:`TokenAuth`, which fetches a fresh token and sends the
call once more.

Gen 2 puts ``access_token`` (and ``corpsecret`` at ``gettoken``) in the query string, so every
URL that could reach a message or a log line goes through :func:`redact_url` first, and
:func:`install_log_redaction` rewrites httpx's own "HTTP Request: ..." log lines.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from syncengine.callpolicy import CallPolicy, retry_after
from syncengine.domain import AddressKind
from syncengine.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConflictError,
    FatalProviderError,
    NotFoundError,
    ProviderError,
    RetriableProviderError,
)
from syncengine.providers.tokens import TokenCache

log = logging.getLogger("syncengine.providers")

# --- the error table ----------------------------------------------------------------------
# Gen 1 answers errcode as a string ("1301"), Gen 2 as an int; the code spaces do not overlap,
# so one table serves both. Codes not listed here are fatal, reported with Exmail's own text.

RETRIABLE_CODES: frozenset[int] = frozenset(
    {
        -1,  # Gen 2 system busy
        45009,  # Gen 2 API call limit exceeded
        40093,  # Gen 2 too much concurrency ("lower it and retry")
        1002,  # Gen 1 temporarily_unavailable (rate limit or transient fault)
    }
)
TOKEN_CODES_V2: frozenset[int] = frozenset({40014, 40001, 42001})
TOKEN_CODE_V1 = 1200
AUTH_CODES: frozenset[int] = frozenset(
    {
        40001,  # wrong CorpSecret, or a token still refused after one refresh
        40014,  # invalid access_token (after one refresh)
        42001,  # expired access_token (after one refresh)
        40013,  # invalid corpid
        40091,  # invalid secret
        602005,  # this application's token may not call this API (wrong secret configured)
        TOKEN_CODE_V1,
    }
)
NOT_FOUND_CODES: frozenset[int] = frozenset(
    {
        60111,  # userid not found
        60003,  # department not found
        60004,  # parent department not found
        600008,  # group not found
        1301,  # user_not_found
        1310,  # party_not_found
        1400,  # mail/newcount of an unknown account
    }
)
ALREADY_EXISTS_CODES: frozenset[int] = frozenset(
    {
        60102,  # userid exists
        60008,  # department name exists under that parent
        600015,  # group exists
        1302,  # user_exists
    }
)
CONFLICT_CODES: frozenset[int] = frozenset(
    {
        600001,  # userid clashes with an alias
        600002,  # userid clashes with a group
        600005,  # alias clashes
        600006,  # alias limit reached
        60005,  # department has members
        60006,  # department has children
        1303,  # alias_conflict
        1311,  # party_not_empty
    }
)

_HINTS: dict[type[ProviderError], str] = {
    RetriableProviderError: "transient; the same call may succeed later",
    AuthenticationError: "check the credentials in the [exmail] table of the config",
    NotFoundError: "the object does not exist in Exmail; read the state again",
    AlreadyExistsError: "the object exists already; compare it with what was asked",
    ConflictError: "an address or name clash, a limit, or a department that is not empty",
}


def error_class(errcode: int) -> type[ProviderError]:
    """The error type for an Exmail errcode (either generation)."""
    if errcode in RETRIABLE_CODES:
        return RetriableProviderError
    if errcode in AUTH_CODES:
        return AuthenticationError
    if errcode in NOT_FOUND_CODES:
        return NotFoundError
    if errcode in ALREADY_EXISTS_CODES:
        return AlreadyExistsError
    if errcode in CONFLICT_CODES:
        return ConflictError
    return FatalProviderError


def parse_errcode(value: Any) -> int | None:
    """Exmail's errcode as an int (Gen 1 sends digits in a string); None when absent/garbled."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def address_kind(code: int | None) -> AddressKind:
    """``user/check`` / ``user/batchcheck`` type as an AddressKind (unknown values: invalid)."""
    return AddressKind(code) if code in (-1, 0, 1, 2, 3) else AddressKind.INVALID


def api_error(
    call: str,
    *,
    errcode: int | str | None,
    errmsg: str | None,
    http_status: int | None = None,
    subject: str | None = None,
) -> ProviderError:
    """Build the typed error for an Exmail error answer.

    ``subject`` names what the call was about (an address, a department path) so the message
    says where; it never carries a secret.
    """
    code = parse_errcode(errcode)
    cls: type[ProviderError] = FatalProviderError if code is None else error_class(code)
    about = f" for {subject}" if subject else ""
    text = errmsg or "(no message)"
    shown = errcode if code is None else code
    message = f"Exmail answered errcode {shown} ({text}){about}"
    if code is None:
        message = f"Exmail answered an error ({text}){about}"
    hint = _HINTS.get(cls)
    if cls is FatalProviderError:
        hint = "Exmail refused the call; the message above is its own reason"
    return cls(
        message, call=call, errcode=errcode, errmsg=errmsg, http_status=http_status, hint=hint
    )


def status_error(
    call: str, response: httpx.Response, *, subject: str | None = None
) -> ProviderError:
    """The typed error for an HTTP status other than 200 (5xx/429 retriable, 401 auth)."""
    status = response.status_code
    about = f" for {subject}" if subject else ""
    body = _json_or_none(response)
    errcode = body.get("errcode") if body else None
    errmsg = None
    if body:
        errmsg = str(body.get("errmsg") or body.get("error") or "") or None
    detail = f": {errmsg}" if errmsg else ""
    message = f"HTTP {status} {response.reason_phrase}{detail}{about}"
    if status >= 500 or status == 429:
        err = RetriableProviderError(
            message,
            call=call,
            errcode=errcode,
            errmsg=errmsg,
            http_status=status,
            hint=_HINTS[RetriableProviderError],
        )
        err.retry_after = retry_after(response.headers.get("Retry-After"))
        return err
    if status in (401, 403):
        return AuthenticationError(
            message,
            call=call,
            errcode=errcode,
            errmsg=errmsg,
            http_status=status,
            hint=_HINTS[AuthenticationError],
        )
    if errcode is not None:
        return api_error(call, errcode=errcode, errmsg=errmsg, http_status=status, subject=subject)
    return FatalProviderError(
        message,
        call=call,
        http_status=status,
        hint="check exmail.base_url / exmail.openapi_url in the config",
    )


def transport_error(
    call: str, exc: httpx.HTTPError, *, subject: str | None = None
) -> ProviderError:
    """Translate an httpx failure; the text names the host and path, never the query string."""
    about = f" for {subject}" if subject else ""
    where = ""
    try:
        where = f" ({redact_url(exc.request.url)})"
    except RuntimeError:  # an exception without a request attached
        pass
    kind = type(exc).__name__
    if isinstance(exc, httpx.UnsupportedProtocol):
        return FatalProviderError(
            f"cannot call Exmail: unsupported URL{where}{about}",
            call=call,
            hint="exmail.base_url / exmail.openapi_url must start with http:// or https://",
        )
    if isinstance(exc, httpx.TimeoutException):
        return RetriableProviderError(
            f"no answer in time ({kind}){where}{about}",
            call=call,
            hint="transient; whether a write took effect is unknown - look before redoing",
        )
    if isinstance(exc, httpx.TransportError):
        reason = redact_text(str(exc)) or kind
        return RetriableProviderError(
            f"connection failed or dropped ({kind}: {reason}){where}{about}",
            call=call,
            hint="transient; whether a write took effect is unknown - look before redoing",
        )
    return FatalProviderError(f"HTTP failure ({kind}){where}{about}", call=call)


# --- redaction ----------------------------------------------------------------------------

SECRET_PARAMS = ("access_token", "corpsecret", "client_secret", "password", "ticket", "authkey")
_SECRET_RE = re.compile(r"(?i)\b(" + "|".join(SECRET_PARAMS) + r")=([^&\s'\"<>]*)")


def redact_url(url: httpx.URL | str) -> str:
    """A URL fit for a message: secret query parameters replaced by ``***``."""
    return redact_text(str(url))


def redact_text(text: str) -> str:
    """Replace the values of secret-looking ``name=value`` pairs in free text."""
    return _SECRET_RE.sub(lambda m: f"{m.group(1)}=***", text)


class _RedactingFilter(logging.Filter):
    """Rewrites httpx's ``HTTP Request: GET <url> ...`` records so tokens never reach a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                redact_url(a) if isinstance(a, httpx.URL | str) else a for a in args
            )
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


_FILTER = _RedactingFilter()


def install_log_redaction() -> None:
    """Attach the redacting filter to the loggers that print request URLs (idempotent)."""
    for name in ("httpx", "httpcore", "syncengine.providers"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


# --- token handling as an httpx Auth flow -------------------------------------------------


class TokenAuth(httpx.Auth):
    """Put the cached token on a request; on an invalid-token answer refresh once and resend.

    ``apply`` places the token (Gen 2: ``access_token`` query parameter; Gen 1: Bearer header);
    ``rejected`` recognises an invalid-token answer (Gen 2 40014/40001/42001, Gen 1 1200). The
    second answer is returned as it is: if the fresh token is refused too, the caller's error
    mapping reports an AuthenticationError.
    """

    requires_response_body = True

    def __init__(
        self,
        tokens: TokenCache,
        apply: Callable[[httpx.Request, str], None],
        rejected: Callable[[httpx.Response], bool],
    ):
        self._tokens = tokens
        self._apply = apply
        self._rejected = rejected

    def __repr__(self) -> str:
        return f"TokenAuth({self._tokens!r})"

    @property
    def tokens(self) -> TokenCache:
        """The token cache this flow takes its tokens from."""
        return self._tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._tokens.get()
        self._apply(request, token)
        response = yield request
        if self._rejected(response):
            log.info(
                "token refused by %s; fetching a fresh one and retrying once", _call_name(request)
            )
            self._tokens.invalidate(token)
            token = self._tokens.get()
            self._apply(request, token)
            yield request


def _call_name(request: httpx.Request) -> str:
    path = request.url.path
    for marker in ("/cgi-bin/", "/openapi/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def set_query_token(request: httpx.Request, token: str) -> None:
    """Gen 2: the token is always the ``access_token`` query parameter."""
    request.url = request.url.copy_set_param("access_token", token)


def set_bearer_token(request: httpx.Request, token: str) -> None:
    """Gen 1: ``Authorization: Bearer <token>`` (the documented form)."""
    request.headers["Authorization"] = f"Bearer {token}"


def _json_or_none(response: httpx.Response) -> dict[str, Any] | None:
    return _json_content_or_none(response.content)


def _json_content_or_none(content: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(content) if content.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


_V2_TOKEN_DIGITS = tuple(str(code).encode("ascii") for code in sorted(TOKEN_CODES_V2))


def v2_token_rejected(response: httpx.Response) -> bool:
    """40014/40001/42001, or HTTP 401 (a reading no source confirms, tolerated).

    An answer without any of the three codes' digits cannot be one (as a number or as a
    string, the errcode's digits are in the body): it is not decoded here, so the usual answer
    (a whole ``user/list`` directory among them) is decoded once, by the caller."""
    return v2_token_rejected_answer(response.status_code, response.content)


def v2_token_rejected_answer(status: int, content: bytes) -> bool:
    """:func:`v2_token_rejected` of an answer's status and (undecoded) body."""
    if status == 401:
        return True
    if not any(code in content for code in _V2_TOKEN_DIGITS):
        return False
    body = _json_content_or_none(content)
    return body is not None and parse_errcode(body.get("errcode")) in TOKEN_CODES_V2


def v1_token_rejected(response: httpx.Response) -> bool:
    """errcode 1200, ``{"error":"invalid_token"}`` without an errcode, or HTTP 401."""
    if response.status_code == 401:
        return True
    if b"1200" not in response.content and b"invalid_token" not in response.content:
        return False  # the usual answer: not decoded twice (the caller decodes it)
    body = _json_or_none(response)
    if body is None:
        return False
    return (
        parse_errcode(body.get("errcode")) == TOKEN_CODE_V1 or body.get("error") == "invalid_token"
    )


# --- sending and decoding -----------------------------------------------------------------


def send(
    client: httpx.Client,
    request: httpx.Request,
    call: str,
    *,
    auth: httpx.Auth | None = None,
    subject: str | None = None,
) -> httpx.Response:
    """Send a request; httpx failures become typed errors without the URL's secrets.

    The original httpx exception is not chained (``from None``): its ``request`` carries the
    unredacted URL, and a traceback printed with ``--debug`` must not show it.
    """
    try:
        response = client.send(request, auth=auth) if auth else client.send(request)
        response.read()
    except httpx.HTTPError as exc:
        err = transport_error(call, exc, subject=subject)
    else:
        log.debug("%s -> HTTP %s", call, response.status_code)
        return response
    log.info("%s failed: %s", call, err)
    raise err


def send_direct(
    transport: httpx.BaseTransport,
    request: httpx.Request,
    call: str,
    *,
    auth: httpx.Auth,
    pace: Callable[[str], None],
    subject: str | None = None,
) -> httpx.Response:
    """:func:`send` for the calls of a bulk read: what ``httpx.Client.send`` does for an
    Exmail call, driven here without the Client's per-request work that Exmail never needs
    (cookie jar, redirect handling, event hooks; about 150 µs a call, as much as libcurl and
    the server's answer together). The same parts do the work: the client's own transport,
    the :class:`TokenAuth` flow (the token, one refresh and resend), ``pace`` (the call
    policy's, as :func:`install_pacing` does) before each request that goes out, the same
    error mapping. The request must carry its headers and ``timeout`` extension (see
    :func:`form_request`)."""
    try:
        flow = auth.sync_auth_flow(request)
        request = next(flow)
        while True:
            pace(_call_name(request))
            response = transport.handle_request(request)
            response.request = request
            response.read()
            try:
                request = flow.send(response)
            except StopIteration:
                break
            response.close()
    except httpx.HTTPError as exc:
        err = transport_error(call, exc, subject=subject)
    else:
        log.debug("%s -> HTTP %s", call, response.status_code)
        return response
    log.info("%s failed: %s", call, err)
    raise err


class FormRequests:
    """Builds the form POSTs of one client without ``Client.build_request``: the client's
    default headers and timeout merged once, the body urlencoded with repeated keys for lists
    (as httpx encodes ``data=``)."""

    def __init__(self, client: httpx.Client) -> None:
        self._headers = httpx.Headers(client.headers)  # copied as it is by each Request
        self._headers["Content-Type"] = "application/x-www-form-urlencoded"
        self._extensions = {"timeout": client.timeout.as_dict()}

    def post(self, url: httpx.URL, form: Mapping[str, str | Sequence[str]]) -> httpx.Request:
        pairs = [
            (key, item)
            for key, value in form.items()
            for item in ([value] if isinstance(value, str) else value)
        ]
        return httpx.Request(
            "POST",
            url,
            content=urlencode(pairs).encode(),
            headers=self._headers,
            extensions=dict(self._extensions),
        )


def decode_json(
    call: str, response: httpx.Response, *, subject: str | None = None
) -> dict[str, Any]:
    """The JSON object of an answer, or a typed error for a status or body that is not one."""
    if response.status_code != 200:
        raise status_error(call, response, subject=subject)
    return decode_json_content(call, response.content, response.status_code)


def decode_json_content(call: str, content: bytes, status: int = 200) -> dict[str, Any]:
    """:func:`decode_json` for a body already known to be an answer to decode (HTTP 200)."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        excerpt = content[:80].decode("utf-8", "replace")
        raise FatalProviderError(
            f"Exmail answered a body that is not JSON: {redact_text(excerpt)!r}",
            call=call,
            http_status=status,
            hint="is exmail.base_url pointing at Exmail (or a proxy's page)?",
        ) from None
    if not isinstance(data, dict):
        raise FatalProviderError(
            f"Exmail answered JSON that is not an object ({type(data).__name__})",
            call=call,
            http_status=status,
        )
    return data


def new_http_client(
    *, timeout: float, max_connections: int, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """The httpx client a provider owns: keep-alive pool sized for the read concurrency.

    Its wire is libcurl (:class:`~syncengine.providers.curl_transport.CurlTransport`, one
    connection per concurrent request) unless the caller passes its own ``transport`` (tests).
    """
    install_log_redaction()
    if transport is None:
        from syncengine.providers.curl_transport import CurlTransport

        transport = CurlTransport()
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        headers={"User-Agent": "syncengine"},
        follow_redirects=False,
    )


READ_ENDPOINTS: frozenset[str] = frozenset(
    {"list", "get", "simplelist", "search", "check", "batchcheck", "newcount", "authkey",
     "get_login_url", "token", "gettoken"}
)  # fmt: skip
"""The last path segment of every Exmail call that only reads (both generations)."""


def is_read_call(call: str) -> bool:
    """Whether an Exmail call (``user/get``, ``party/sync``...) only reads, so that sending it
    again can never double an effect."""
    return call.rsplit("/", 1)[-1] in READ_ENDPOINTS


def is_retriable(exc: BaseException) -> bool:
    """The retry predicate of every Exmail call: a :class:`RetriableProviderError`."""
    return isinstance(exc, RetriableProviderError)


def install_pacing(client: httpx.Client, calls: CallPolicy) -> None:
    """Make every request ``client`` sends (token fetches and token-refresh resends included)
    wait for the process's shared pace and count in its call statistics."""

    def pace(request: httpx.Request) -> None:
        calls.pace(_call_name(request))

    hooks = dict(client.event_hooks)
    hooks["request"] = [*hooks.get("request", []), pace]
    client.event_hooks = hooks


def str_field(data: Mapping[str, Any], key: str) -> str:
    """A string field that may be missing, null or (tolerated) a number."""
    value = data.get(key)
    return "" if value is None else str(value)
