"""The HTTP JSON connector against a small real HR API (Starlette + uvicorn on loopback).

The API below serves the same 53 people in each paging style the connector speaks, and
misbehaves on purpose on some routes: a 503 before the answer, a connection dropped in the
middle of a body, an answer slower than the client's timeout, a 401, HTML instead of JSON, a
redirect, a cursor that loops, a next link to another host.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from syncengine.connectors.base import make_connector
from syncengine.connectors.http_source import HttpConnector, redact_url
from syncengine.errors import ConfigError, SourceError
from tests.fixtures.loopback import serve_in_thread

pytestmark = pytest.mark.timeout(60)

TOKEN = "tok-9f8e7d6c5b4a"
API_KEY = "key-0a1b2c3d"
SURNAMES = "王李张刘陈杨黄赵周吴徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静磊洋艳勇军杰娟涛明超"
PEOPLE = [
    {
        "employee_id": f"H{2001 + i}",
        "name": SURNAMES[i % len(SURNAMES)] + GIVEN[(i * 3) % len(GIVEN)],
        "department": ["研发中心/平台部", "销售部/华东区", "人力资源部"][i % 3],
        "email": f"h{2001 + i}@example.com",
        "status": "离职" if i % 17 == 5 else "在职",
    }
    for i in range(53)
]


@dataclass
class ApiState:
    """What the API saw, so tests can check what the connector sent."""

    calls: Counter[str] = field(default_factory=Counter)
    auth_seen: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, key: str) -> int:
        with self.lock:
            self.calls[key] += 1
            return self.calls[key]


STATE = ApiState()


def _int(request: Request, name: str, default: int) -> int:
    return int(request.query_params.get(name, default))


def _authorised(request: Request) -> bool:
    STATE.auth_seen.append(request.headers.get("authorization"))
    return request.headers.get("authorization") == f"Bearer {TOKEN}"


async def page_style(request: Request) -> Response:
    if not _authorised(request):
        return JSONResponse({"error": "unauthorised"}, status_code=401)
    page, size = _int(request, "page", 1), _int(request, "page_size", 20)
    chunk = PEOPLE[(page - 1) * size : page * size]
    return JSONResponse({"data": {"items": chunk, "total": len(PEOPLE)}})


async def offset_style(request: Request) -> Response:
    """Caps the limit at 20, as many real APIs do."""
    offset, limit = _int(request, "offset", 0), min(20, _int(request, "limit", 20))
    return JSONResponse({"results": PEOPLE[offset : offset + limit]})


async def cursor_style(request: Request) -> Response:
    start = int(request.query_params.get("after", "0"))
    chunk = PEOPLE[start : start + 10]
    nxt = str(start + 10) if start + 10 < len(PEOPLE) else None
    return JSONResponse({"items": chunk, "meta": {"next_cursor": nxt}})


async def next_in_body(request: Request) -> Response:
    p = _int(request, "p", 0)
    chunk = PEOPLE[p * 12 : (p + 1) * 12]
    nxt = f"/next-body?p={p + 1}&kind=people" if (p + 1) * 12 < len(PEOPLE) else None
    return JSONResponse({"records": chunk, "links": {"next": nxt}})


async def next_in_header(request: Request) -> Response:
    if request.headers.get("x-api-key") != API_KEY:
        return JSONResponse({"error": "bad key"}, status_code=403)
    p = _int(request, "p", 0)
    chunk = PEOPLE[p * 25 : (p + 1) * 25]
    headers = {}
    if (p + 1) * 25 < len(PEOPLE):
        base = str(request.url.replace(query=f"p={p + 1}"))
        headers["Link"] = f'<{base}>; rel="next", <{request.url}>; rel="self"'
    return JSONResponse(chunk, headers=headers)


async def flaky(request: Request) -> Response:
    """503 (with Retry-After) for the first ``fail`` calls of each ``case``, then the list."""
    n = STATE.hit("flaky:" + request.query_params["case"])
    if n <= _int(request, "fail", 1):
        return PlainTextResponse("busy", status_code=503, headers={"Retry-After": "0"})
    return JSONResponse({"items": PEOPLE[:5]})


async def drop(request: Request) -> Response:
    """The first call of each ``case`` sends half a body, then the connection is cut."""
    n = STATE.hit("drop:" + request.query_params["case"])
    body = json.dumps({"items": PEOPLE}).encode()
    if n > 1:
        return Response(body, media_type="application/json")

    async def half() -> AsyncIterator[bytes]:
        yield body[: len(body) // 2]
        raise ConnectionResetError("cut on purpose by the test API")

    return StreamingResponse(
        half(), media_type="application/json", headers={"Content-Length": str(len(body))}
    )


async def slow(request: Request) -> Response:
    n = STATE.hit("slow:" + request.query_params["case"])
    if n == 1:
        await asyncio.sleep(2.0)
    return JSONResponse({"items": PEOPLE[:3]})


async def html(request: Request) -> Response:
    return Response("<html>login</html>", media_type="text/html")


async def empty(request: Request) -> Response:
    return JSONResponse({"items": []})


async def redirect(request: Request) -> Response:
    return Response(status_code=302, headers={"Location": "https://sso.example.com/?token=abc"})


async def looping_cursor(request: Request) -> Response:
    return JSONResponse({"items": PEOPLE[:2], "next": "same"})


async def evil_next(request: Request) -> Response:
    return JSONResponse({"items": PEOPLE[:2], "next": "https://attacker.example.net/steal"})


async def not_a_list(request: Request) -> Response:
    return JSONResponse({"items": {"employee_id": "x"}})


APP = Starlette(
    routes=[
        Route("/page", page_style),
        Route("/offset", offset_style),
        Route("/cursor", cursor_style),
        Route("/next-body", next_in_body),
        Route("/next-header", next_in_header),
        Route("/flaky", flaky),
        Route("/drop", drop),
        Route("/slow", slow),
        Route("/html", html),
        Route("/empty", empty),
        Route("/redirect", redirect),
        Route("/loop", looping_cursor),
        Route("/evil-next", evil_next),
        Route("/not-a-list", not_a_list),
    ]
)


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    """The test API on a free loopback port, served by uvicorn in a thread."""
    server = serve_in_thread(APP)
    try:
        yield server.base_url
    finally:
        server.stop()


FAST_RETRY = {"backoff": 0.01, "backoff_max": 0.05, "timeout": 5.0}


def connector(options: dict[str, Any], tmp_path: Path) -> HttpConnector:
    conn = make_connector({"type": "http", **FAST_RETRY, **options}, tmp_path)
    assert isinstance(conn, HttpConnector)
    return conn


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["employee_id"] for r in records]


ALL_IDS = [p["employee_id"] for p in PEOPLE]


@pytest.fixture
def token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HR_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_HR_KEY", API_KEY)


def test_page_number_paging_with_bearer_token(api: str, tmp_path: Path, token_env: None) -> None:
    conn = connector(
        {
            "url": f"{api}/page",
            "token": "env:TEST_HR_TOKEN",
            "records_path": "data.items",
            "paging": "page",
            "page_size": 10,
        },
        tmp_path,
    )
    records = list(conn.records())
    assert ids(records) == ALL_IDS
    assert records[0] == PEOPLE[0]  # Chinese text arrives intact
    assert conn.pages_read == 7  # 5 full pages of 10, a short one of 3, then an empty one


def test_page_paging_stops_at_the_total_the_body_gives(
    api: str, tmp_path: Path, token_env: None
) -> None:
    conn = connector(
        {
            "url": f"{api}/page",
            "token": "env:TEST_HR_TOKEN",
            "records_path": "data.items",
            "paging": "page",
            "page_size": 10,
            "total_path": "data.total",
        },
        tmp_path,
    )
    assert ids(list(conn.records())) == ALL_IDS
    assert conn.pages_read == 6  # no request for the empty page after the total


def test_page_paging_without_a_size_parameter_stops_on_the_empty_page(
    api: str, tmp_path: Path, token_env: None
) -> None:
    conn = connector(
        {
            "url": f"{api}/page",
            "token": "env:TEST_HR_TOKEN",
            "records_path": "data.items",
            "paging": "page",
            "page_size_param": "",
            "first_page": 1,
        },
        tmp_path,
    )
    assert ids(list(conn.records())) == ALL_IDS
    assert conn.pages_read == 4  # the server's own 20 per page: 20, 20, 13, then empty


def test_offset_limit_paging_survives_a_server_that_caps_the_limit(
    api: str, tmp_path: Path
) -> None:
    """The API gives at most 20 per page whatever the limit: short pages do not end the list."""
    conn = connector(
        {"url": f"{api}/offset", "records_path": "results", "paging": "offset", "page_size": 25},
        tmp_path,
    )
    assert ids(list(conn.records())) == ALL_IDS
    assert conn.pages_read == 4  # 20, 20, 13, then an empty page


def test_cursor_paging(api: str, tmp_path: Path) -> None:
    conn = connector(
        {
            "url": f"{api}/cursor",
            "records_path": "items",
            "paging": "cursor",
            "cursor_path": "meta.next_cursor",
            "cursor_param": "after",
        },
        tmp_path,
    )
    assert ids(list(conn.records())) == ALL_IDS
    assert conn.pages_read == 6


def test_next_link_in_the_body_relative_url(api: str, tmp_path: Path) -> None:
    conn = connector(
        {
            "url": f"{api}/next-body",
            "records_path": "records",
            "paging": "next_link",
            "next_path": "links.next",
        },
        tmp_path,
    )
    assert ids(list(conn.records())) == ALL_IDS
    assert conn.pages_read == 5


def test_next_link_in_the_link_header_with_a_named_api_key_header(
    api: str, tmp_path: Path, token_env: None
) -> None:
    conn = connector(
        {
            "url": f"{api}/next-header",
            "token": "env:TEST_HR_KEY",
            "auth_header": "X-API-Key",
            "paging": "next_link",
        },
        tmp_path,
    )
    assert ids(list(conn.records())) == ALL_IDS
    assert conn.pages_read == 3


def test_503_then_ok_is_retried(api: str, tmp_path: Path) -> None:
    conn = connector({"url": f"{api}/flaky?case=a&fail=2", "records_path": "items"}, tmp_path)
    assert len(list(conn.records())) == 5
    assert conn.attempts == 3
    assert STATE.calls["flaky:a"] == 3


def test_a_dropped_connection_mid_body_is_retried(api: str, tmp_path: Path) -> None:
    conn = connector({"url": f"{api}/drop?case=a", "records_path": "items"}, tmp_path)
    assert ids(list(conn.records())) == ALL_IDS
    assert STATE.calls["drop:a"] == 2


def test_a_timeout_is_retried(api: str, tmp_path: Path) -> None:
    conn = connector(
        {"url": f"{api}/slow?case=a", "records_path": "items", "timeout": 0.3}, tmp_path
    )
    assert len(list(conn.records())) == 3
    assert conn.attempts == 2


def test_retries_are_bounded_and_end_in_a_source_error(api: str, tmp_path: Path) -> None:
    conn = connector(
        {"url": f"{api}/flaky?case=b&fail=99", "records_path": "items", "retries": 2}, tmp_path
    )
    with pytest.raises(SourceError) as err:
        list(conn.records())
    assert "503" in str(err.value) and "tried 3 times" in str(err.value)
    assert STATE.calls["flaky:b"] == 3


def test_401_is_a_source_error_at_once_with_the_status(
    api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_HR_TOKEN", "wrong-token-value")
    before = len(STATE.auth_seen)
    conn = connector(
        {"url": f"{api}/page", "token": "env:TEST_HR_TOKEN", "records_path": "data.items"},
        tmp_path,
    )
    with pytest.raises(SourceError) as err:
        list(conn.records())
    text = str(err.value)
    assert "HTTP 401" in text and "source.token" in text
    assert "wrong-token-value" not in text
    assert len(STATE.auth_seen) - before == 1  # a 4xx is not retried
    assert STATE.auth_seen[-1] == "Bearer wrong-token-value"


def test_a_page_that_is_not_json_is_a_source_error(api: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not JSON"):
        list(connector({"url": f"{api}/html"}, tmp_path).records())


def test_zero_records_is_a_source_error(api: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="zero records"):
        list(connector({"url": f"{api}/empty", "records_path": "items"}, tmp_path).records())


def test_wrong_records_path_names_the_keys_found(api: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError) as err:
        list(connector({"url": f"{api}/empty", "records_path": "data.rows"}, tmp_path).records())
    assert "records_path 'data.rows'" in str(err.value) and "items" in str(err.value)
    with pytest.raises(SourceError, match="not a list"):
        list(connector({"url": f"{api}/not-a-list", "records_path": "items"}, tmp_path).records())


def test_redirects_are_not_followed(api: str, tmp_path: Path, token_env: None) -> None:
    conn = connector({"url": f"{api}/redirect", "token": "env:TEST_HR_TOKEN"}, tmp_path)
    with pytest.raises(SourceError) as err:
        list(conn.records())
    assert "HTTP 302" in str(err.value)
    assert "token=***" in str(err.value) and "abc" not in str(err.value)


def test_a_looping_cursor_and_a_foreign_next_link_are_refused(
    api: str, tmp_path: Path, token_env: None
) -> None:
    loop = connector(
        {"url": f"{api}/loop", "records_path": "items", "paging": "cursor", "cursor_path": "next"},
        tmp_path,
    )
    with pytest.raises(SourceError, match="twice"):
        list(loop.records())
    evil = connector(
        {
            "url": f"{api}/evil-next",
            "token": "env:TEST_HR_TOKEN",
            "records_path": "items",
            "paging": "next_link",
            "next_path": "next",
        },
        tmp_path,
    )
    with pytest.raises(SourceError, match="leaves the configured host"):
        list(evil.records())


def test_max_pages_is_a_source_error_not_a_truncated_list(api: str, tmp_path: Path) -> None:
    conn = connector(
        {
            "url": f"{api}/offset",
            "records_path": "results",
            "paging": "offset",
            "page_size": 10,
            "max_pages": 3,
        },
        tmp_path,
    )
    with pytest.raises(SourceError, match="max_pages"):
        list(conn.records())


def test_refused_connection_is_retried_then_a_source_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = connector({"url": f"http://127.0.0.1:{port}/x", "retries": 1}, tmp_path)
    with pytest.raises(SourceError) as err:
        list(conn.records())
    assert "ConnectError" in str(err.value) and "tried 2 times" in str(err.value)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "ftp://hr.example.com/list"}, "source.url"),
        ({"url": "https://hr/x", "paging": "cursor"}, "source"),
        ({"url": "https://hr/x", "paging": "pages"}, "source.paging"),
        ({"url": "https://hr/x", "retries": 100}, "source.retries"),
        ({"url": "https://hr/x", "headers": {"Authorization": "Bearer x"}}, "source.headers"),
        ({"url": "https://hr/x", "token": "env:TEST_UNSET_VARIABLE_XYZ"}, "source.token"),
        ({"url": "https://hr/x", "recordpath": "a"}, "source.recordpath"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        make_connector({"type": "http", **options}, tmp_path)
    assert key in str(err.value)


def test_describe_and_messages_hide_secrets(tmp_path: Path) -> None:
    conn = make_connector(
        {
            "type": "http",
            "url": "https://svc:pa55w0rd@hr.example.com/api?access_token=abc123&dept=all",
            "token": "literal-token-value",
            "paging": "cursor",
            "cursor_path": "next",
        },
        tmp_path,
    )
    text = conn.describe()
    assert "pa55w0rd" not in text and "abc123" not in text and "literal-token" not in text
    assert "svc:***@hr.example.com" in text and "dept=all" in text and "cursor paging" in text
    assert redact_url("https://hr.example.com/x?api_key=1&page=2") == (
        "https://hr.example.com/x?api_key=***&page=2"
    )
