"""The shared HTTP layer of the Exmail clients: error table, token cache, redaction.

Odd transport edges (a connection dropped mid-response, a body that is not JSON, a token
refused twice) cannot be produced on demand by a real server, so these use
``httpx.MockTransport``; everything else is in the contract suite against the emulator.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from syncengine.config import parse_config
from syncengine.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConflictError,
    FatalProviderError,
    NotFoundError,
    ProviderError,
    RetriableProviderError,
)
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider
from syncengine.providers.http import (
    api_error,
    error_class,
    install_log_redaction,
    new_http_client,
    redact_text,
    redact_url,
)
from syncengine.providers.tokens import IssuedToken, TokenCache

SECRET = "S3cr3t-contacts-0123456789"
V1_SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = "tok-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

Handler = Callable[[httpx.Request], httpx.Response]


def v2_provider(handler: Handler) -> ExmailV2Provider:
    cfg = parse_config(
        {
            "exmail": {
                "api": "v2",
                "base_url": "http://exmail.test",
                "corp_id": "wm-corp",
                "secrets": {"contacts": SECRET, "mail": SECRET + "-mail"},
            }
        }
    )
    client = new_http_client(timeout=2, max_connections=4, transport=httpx.MockTransport(handler))
    return ExmailV2Provider(cfg.exmail, client)


def v1_provider(handler: Handler, token_auth: str = "form") -> ExmailV1Provider:
    cfg = parse_config(
        {
            "exmail": {
                "api": "v1",
                "base_url": "http://exmail.test",
                "client_id": "admin@corp.test",
                "client_secret": V1_SECRET,
                "token_auth": token_auth,
            }
        }
    )
    client = new_http_client(timeout=2, max_connections=4, transport=httpx.MockTransport(handler))
    return ExmailV1Provider(cfg.exmail, client)


def ok(body: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json=body)


# --- the error table ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (-1, RetriableProviderError),
        (45009, RetriableProviderError),
        ("1002", RetriableProviderError),
        (40001, AuthenticationError),
        (40014, AuthenticationError),
        ("1200", AuthenticationError),
        (60111, NotFoundError),
        (60003, NotFoundError),
        (600008, NotFoundError),
        ("1301", NotFoundError),
        ("1310", NotFoundError),
        ("1400", NotFoundError),
        (60102, AlreadyExistsError),
        (60008, AlreadyExistsError),
        (600015, AlreadyExistsError),
        ("1302", AlreadyExistsError),
        (600001, ConflictError),
        (600002, ConflictError),
        (600005, ConflictError),
        (600006, ConflictError),
        (60005, ConflictError),
        (60006, ConflictError),
        ("1303", ConflictError),
        ("1311", ConflictError),
        (60009, FatalProviderError),
        ("1100", FatalProviderError),
        (123456, FatalProviderError),
    ],
)
def test_errcode_maps_to_its_error_type(code: int | str, cls: type[ProviderError]) -> None:
    err = api_error("user/get", errcode=code, errmsg="some text", subject="a@corp.test")
    assert type(err) is cls
    assert err.retriable is (cls is RetriableProviderError)
    assert err.call == "user/get"
    assert "some text" in str(err) and "a@corp.test" in str(err) and str(code) in str(err)


def test_error_class_of_unknown_code_is_fatal() -> None:
    assert error_class(999999) is FatalProviderError


def test_unknown_errcode_is_fatal_with_its_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            return ok({"errcode": 0, "access_token": TOKEN, "expires_in": 7200})
        return ok({"errcode": 601234, "errmsg": "strange new failure"})

    with v2_provider(handler) as p, pytest.raises(FatalProviderError) as info:
        p.delete_user("a@corp.test")
    assert type(info.value) is FatalProviderError
    assert info.value.errcode == 601234
    assert "strange new failure" in str(info.value) and "user/delete" in str(info.value)


# --- token cache --------------------------------------------------------------------------


def test_token_cache_reuses_until_margin_then_refetches() -> None:
    now = [1000.0]
    issued = iter(["t1", "t2", "t3"])
    cache = TokenCache(lambda: IssuedToken(next(issued), 7200), name="t", clock=lambda: now[0])
    assert cache.get() == "t1"
    now[0] += 7200 - 301  # still outside the 300 s margin
    assert cache.get() == "t1"
    now[0] += 2  # inside the margin: refresh early
    assert cache.get() == "t2"
    assert cache.fetches == 2


def test_token_cache_invalidates_only_the_current_token() -> None:
    issued = iter(["t1", "t2", "t3"])
    cache = TokenCache(lambda: IssuedToken(next(issued), 7200), name="t")
    assert cache.get() == "t1"
    cache.invalidate("stale-other")
    assert cache.get() == "t1"
    cache.invalidate("t1")
    assert cache.get() == "t2"
    cache.invalidate("t1")  # a second thread reporting the same refusal: no new fetch
    assert cache.get() == "t2"
    assert "t2" not in repr(cache) and "t2" not in repr(IssuedToken("t2", 1))


def test_token_cache_fetches_once_for_many_threads() -> None:
    calls = []
    gate = threading.Event()

    def fetch() -> IssuedToken:
        calls.append(1)
        gate.wait(2)
        return IssuedToken("only", 7200)

    cache = TokenCache(fetch, name="t")
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get())) for _ in range(8)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(5)
    assert got == ["only"] * 8 and len(calls) == 1


# --- token refresh sequencing -------------------------------------------------------------


def test_v2_refused_token_is_refreshed_once_and_the_call_retried() -> None:
    seen: list[str] = []
    tokens = iter(["tok-old", "tok-new"])

    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/cgi-bin/", 1)[1]
        seen.append(name + ":" + request.url.params.get("access_token", "-"))
        if name == "gettoken":
            return ok({"errcode": 0, "access_token": next(tokens), "expires_in": 7200})
        if request.url.params["access_token"] == "tok-old":
            return ok({"errcode": 42001, "errmsg": "access_token expired"})
        return ok({"errcode": 0, "errmsg": "deleted"})

    with v2_provider(handler) as p:
        p.delete_user("a@corp.test")
    assert seen == ["gettoken:-", "user/delete:tok-old", "gettoken:-", "user/delete:tok-new"]


def test_v2_writes_carry_the_current_token_and_the_json_body_httpx_would_send() -> None:
    """The write path builds its requests itself (no ``Client.build_request``) and keeps the
    token's URL per token: after a refusal the resend and every later write carry the new
    token, never the old one; the body is byte for byte what ``httpx`` sends for ``json=``."""
    from syncengine.domain import UserUpdate

    seen: list[tuple[str, str, bytes, str]] = []
    tokens = iter(["tok-old", "tok-new"])

    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/cgi-bin/", 1)[1]
        token = request.url.params.get("access_token", "-")
        seen.append((name, token, request.read(), request.headers.get("content-type", "")))
        if name == "gettoken":
            return ok({"errcode": 0, "access_token": next(tokens), "expires_in": 7200})
        if token == "tok-old" and name == "user/update":
            return ok({"errcode": 42001, "errmsg": "access_token expired"})
        return ok({"errcode": 0, "errmsg": "ok"})

    with v2_provider(handler) as p:
        p.delete_user("a@corp.test")  # a query of its own: userid
        p.update_user("a@corp.test", UserUpdate(name="张三"))
        p.update_user("b@corp.test", UserUpdate(position="工程师"))
    calls = [(name, token) for name, token, _body, _type in seen]
    assert calls == [("gettoken", "-"), ("user/delete", "tok-old"), ("user/update", "tok-old"),
                     ("gettoken", "-"), ("user/update", "tok-new"),
                     ("user/update", "tok-new")]  # fmt: skip
    expected = httpx.Request("POST", "http://x", json={"userid": "a@corp.test", "name": "张三"})
    assert seen[2][2] == seen[4][2] == expected.read()
    assert seen[2][3] == seen[4][3] == "application/json"
    assert seen[5][2] == '{"userid":"b@corp.test","position":"工程师"}'.encode()


def test_v2_token_refused_twice_is_an_authentication_error_not_a_loop() -> None:
    counts = {"gettoken": 0, "call": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            counts["gettoken"] += 1
            return ok({"errcode": 0, "access_token": f"t{counts['gettoken']}", "expires_in": 7200})
        counts["call"] += 1
        return ok({"errcode": 40014, "errmsg": "invalid access_token"})

    with v2_provider(handler) as p, pytest.raises(AuthenticationError) as info:
        p.get_user("a@corp.test")
    assert counts == {"gettoken": 2, "call": 2}
    assert info.value.errcode == 40014


def test_v2_wrong_secret_names_the_config_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ok({"errcode": 40001, "errmsg": "invalid credential"})

    with v2_provider(handler) as p, pytest.raises(AuthenticationError) as info:
        p.get_user("a@corp.test")
    assert "exmail.secrets.contacts" in str(info.value)
    assert SECRET not in str(info.value)


def test_v1_token_refused_once_refreshes_with_bearer_header() -> None:
    seen: list[str] = []
    tokens = iter(["old", "new"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            form = dict(httpx.QueryParams(request.content.decode()))
            assert form["client_secret"] == V1_SECRET and form["client_id"] == "admin@corp.test"
            seen.append("token")
            return ok({"access_token": next(tokens), "expires_in": 86400, "token_type": "Bearer"})
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] == "Bearer old":
            return ok({"errcode": "1200", "error": "invalid_token"})
        return httpx.Response(200, content=b"")

    with v1_provider(handler) as p:
        p.delete_user("a@corp.test")
    assert seen == ["token", "Bearer old", "token", "Bearer new"]


def test_v1_basic_token_auth_sends_no_secret_in_the_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            assert V1_SECRET.encode() not in request.content
            assert request.headers["Authorization"].startswith("Basic ")
            return ok({"access_token": "t", "expires_in": 86400})
        return httpx.Response(200, content=b"")

    with v1_provider(handler, token_auth="basic") as p:
        p.delete_user("a@corp.test")


# --- transport failures and odd bodies ----------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ReadError("connection reset by peer"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError("connection refused"),
    ],
)
def test_dropped_connection_or_timeout_is_retriable(exc: httpx.TransportError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            return ok({"errcode": 0, "access_token": TOKEN, "expires_in": 7200})
        raise exc

    with v2_provider(handler) as p, pytest.raises(RetriableProviderError) as info:
        p.get_user("a@corp.test")
    assert info.value.retriable and info.value.call == "user/get"
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_dropped_connection_mid_body_is_retriable() -> None:
    """The headers arrive, then the peer goes away while the body streams."""

    class Broken(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b'{"errcode":0,"userlist":['
            raise httpx.RemoteProtocolError("peer closed connection mid-body")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            return ok({"errcode": 0, "access_token": TOKEN, "expires_in": 7200})
        if request.url.path.endswith("department/list"):
            return ok({"errcode": 0, "department": [{"id": 1, "name": "c", "parentid": 0}]})
        return httpx.Response(200, stream=Broken())

    with v2_provider(handler) as p, pytest.raises(RetriableProviderError):
        p.read_state()


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (503, RetriableProviderError),
        (502, RetriableProviderError),
        (429, RetriableProviderError),
        (404, FatalProviderError),
    ],
)
def test_http_status_mapping(status: int, cls: type[ProviderError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            return ok({"errcode": 0, "access_token": TOKEN, "expires_in": 7200})
        return httpx.Response(status, text="<html>busy</html>")

    with v2_provider(handler) as p, pytest.raises(cls) as info:
        p.delete_user("a@corp.test")
    assert type(info.value) is cls and info.value.http_status == status


def test_malformed_json_is_fatal_and_says_so() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            return ok({"errcode": 0, "access_token": TOKEN, "expires_in": 7200})
        return httpx.Response(200, text='{"errcode":0,"userid":')

    with v2_provider(handler) as p, pytest.raises(FatalProviderError) as info:
        p.get_user("a@corp.test")
    assert "not JSON" in str(info.value)


def test_v1_wrong_credentials_is_authentication_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    with v1_provider(handler) as p, pytest.raises(AuthenticationError) as info:
        p.get_user("a@corp.test")
    assert "invalid_client" in str(info.value) and "exmail.client_secret" in str(info.value)
    assert V1_SECRET not in str(info.value)


# --- redaction ----------------------------------------------------------------------------


def test_redact_url_hides_tokens_and_secrets() -> None:
    url = f"http://x/cgi-bin/gettoken?corpid=wm&corpsecret={SECRET}&access_token={TOKEN}"
    shown = redact_url(httpx.URL(url))
    assert SECRET not in shown and TOKEN not in shown and "corpid=wm" in shown
    assert redact_text(f"client_secret={V1_SECRET}&x=1") == "client_secret=***&x=1"


def test_secrets_absent_from_errors_reprs_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A failing call whose httpx exception text contains the full URL leaks nothing."""
    install_log_redaction()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("gettoken"):
            return ok({"errcode": 0, "access_token": TOKEN, "expires_in": 7200})
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    caplog.set_level(logging.DEBUG)
    p = v2_provider(handler)
    with pytest.raises(RetriableProviderError) as info:
        p.get_user("a@corp.test")
    rendered = [str(info.value), repr(info.value), repr(p), repr(p.token_cache("contacts"))]
    rendered += [r.getMessage() for r in caplog.records]
    rendered += [caplog.text]
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx did log
    for text in rendered:
        assert TOKEN not in text and SECRET not in text, text
    p.close()


def test_v1_secret_absent_from_logs(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/token":
            return ok({"access_token": TOKEN, "expires_in": 86400})
        return ok({"errcode": "1301", "error": "user_not_found"})

    caplog.set_level(logging.DEBUG)
    with v1_provider(handler) as p:
        assert p.get_user("a@corp.test") is None
        with pytest.raises(NotFoundError) as info:
            p.delete_user("a@corp.test")
        state = json.dumps(vars(info.value), default=str)
        rendered = [str(info.value), repr(p), caplog.text, state]
    for text in rendered:
        assert TOKEN not in text and V1_SECRET not in text


@settings(max_examples=200, deadline=None)
@given(
    token=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")),
        min_size=12,
        max_size=64,
    ),
    param=st.sampled_from(["access_token", "corpsecret", "client_secret"]),
)
def test_redacted_url_never_shows_the_secret(token: str, param: str) -> None:
    base = "http://exmail.test/cgi-bin/user/get"
    assume(token not in f"{base}?userid=a%40b.c&{param}=***")  # not a piece of the rest
    url = httpx.URL(base, params={"userid": "a@b.c", param: token})
    shown = redact_url(url)
    encoded = str(httpx.QueryParams({param: token})).partition("=")[2]
    assert token not in shown and encoded not in shown
    assert "userid=a%40b.c" in shown or "userid=a@b.c" in shown


@pytest.mark.parametrize(
    ("status", "body", "rejected"),
    [
        (200, {"errcode": 40014, "errmsg": "invalid access_token"}, True),
        (200, {"errcode": "42001", "errmsg": "expired"}, True),  # a string errcode, tolerated
        (200, {"errcode": 0, "userlist": [{"mobile": "13840014000"}]}, False),  # digits, code 0
        (200, {"errcode": 0, "errmsg": "ok", "userlist": []}, False),
        (401, {}, True),
    ],
)
def test_v2_token_rejection_is_read_from_the_errcode(
    status: int, body: dict[str, object], rejected: bool
) -> None:
    from syncengine.providers.http import v2_token_rejected

    response = httpx.Response(status, content=json.dumps(body).encode())
    assert v2_token_rejected(response) is rejected
