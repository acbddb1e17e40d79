"""Gen 2 writes go on the libcurl handle pool without an httpx request or response around a
call that succeeds (providers/direct.CurlJsonPost). Against the emulator over real HTTP:
the answers, the token refresh, the errors (status, dropped connection), the pace and the
redaction are those of the httpx path."""

from __future__ import annotations

import gzip
import json
import logging
import threading
from collections.abc import Callable
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest

from syncengine import service
from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.config import parse_config
from syncengine.domain import Mailbox, UserUpdate
from syncengine.errors import AlreadyExistsError, RetriableProviderError
from syncengine.providers.exmail_v2 import ExmailV2Provider
from tests.fixtures.emulator import RunningEmulator

pytestmark = pytest.mark.timeout(60)
PW = "Init-Passw0rd!x"


def build(emu: RunningEmulator) -> tuple[ExmailV2Provider, CallPolicy]:
    calls = CallPolicy(RetryPolicy(max_attempts=1))
    provider = service.build_provider(parse_config({"exmail": emu.exmail_config()}), calls=calls)
    assert isinstance(provider, ExmailV2Provider)
    return provider, calls


def test_writes_create_update_and_refresh_a_refused_token(
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory("v2")
    provider, calls = build(emu)
    with closing(provider):
        provider.create_user(Mailbox("w1@example.com", "王一", "E1", ()), password=PW)
        emu.expire_tokens()
        provider.update_user("w1@example.com", UserUpdate(name="王二", position="工程师"))
        with pytest.raises(AlreadyExistsError) as info:
            provider.create_user(Mailbox("w1@example.com", "王一", "E1", ()), password=PW)
    assert info.value.http_status == 200 and "w1@example.com" in str(info.value)
    user = next(u for u in emu.state()["users"] if u["userid"] == "w1@example.com")
    assert (user["name"], user["position"]) == ("王二", "工程师")
    requests = calls.stats.snapshot().requests  # every request paced and counted
    assert requests["user/update"] == 2  # refused once, resent once with a fresh token
    assert requests["gettoken"] == 2 and requests["user/create"] == 2


def test_a_failed_write_is_typed_and_names_no_token(
    emulator_factory: Callable[..., RunningEmulator], caplog: pytest.LogCaptureFixture
) -> None:
    emu = emulator_factory("v2")
    provider, _calls = build(emu)
    caplog.set_level(logging.DEBUG)
    with closing(provider):
        provider.update_user("lisi@example.com", UserUpdate(position="a"))  # a token first
        token = provider.token_cache("contacts").get()
        emu.set_faults(fail_rate=1.0)
        with pytest.raises(RetriableProviderError) as status:
            provider.update_user("lisi@example.com", UserUpdate(position="b"))
        emu.set_faults(fail_rate=0.0, drop_rate=1.0)
        with pytest.raises(RetriableProviderError) as dropped:
            provider.update_user("lisi@example.com", UserUpdate(position="c"))
        emu.set_faults(drop_rate=0.0)
    assert status.value.http_status == 503 and "HTTP 503" in str(status.value)
    assert "connection failed or dropped" in str(dropped.value)
    assert "access_token=***" in str(dropped.value)
    for text in (str(status.value), str(dropped.value), caplog.text):
        assert token not in text


class _Exmail(BaseHTTPRequestHandler):
    """A Gen 2 server for what the emulator never answers: gzip-encoded bodies (an invalid
    token among them) and a 429 with Retry-After."""

    tokens: ClassVar[int] = 0
    seen: ClassVar[list[tuple[str, str]]] = []

    def log_message(self, *_args: object) -> None:
        return None

    def _answer(self, status: int, body: dict[str, object], *, gzipped: bool = False,
                extra: dict[str, str] | None = None) -> None:  # fmt: skip
        data = json.dumps(body).encode()
        if gzipped:
            data = gzip.compress(data)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # gettoken
        type(self).tokens += 1
        self._answer(200, {"errcode": 0, "access_token": f"tok-{self.tokens}", "expires_in": 7200})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        token = parse_qs(url.query).get("access_token", [""])[0]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((url.path, token))
        if body.get("position") == "busy":
            self._answer(429, {"errcode": 45009, "errmsg": "busy"}, extra={"Retry-After": "7"})
        elif token == "tok-1":
            self._answer(200, {"errcode": 40014, "errmsg": "invalid access_token"}, gzipped=True)
        else:
            self._answer(200, {"errcode": 0, "errmsg": "ok"}, gzipped=True)


def test_encoded_answers_and_a_retry_after_take_the_httpx_way() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exmail)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    config = parse_config({"exmail": {"api": "v2", "base_url": base, "corp_id": "wm-corp",
                                      "secrets": {"contacts": "s3cret-contacts"}}})  # fmt: skip
    provider = service.build_provider(config, calls=CallPolicy(RetryPolicy(max_attempts=1)))
    try:
        with closing(provider):
            provider.update_user("a@example.com", UserUpdate(name="甲"))  # gzip: refused, resent
            with pytest.raises(RetriableProviderError) as info:
                provider.update_user("a@example.com", UserUpdate(position="busy"))
    finally:
        server.shutdown()
        server.server_close()
    assert _Exmail.tokens == 2
    assert _Exmail.seen == [("/cgi-bin/user/update", "tok-1"), ("/cgi-bin/user/update", "tok-2"),
                            ("/cgi-bin/user/update", "tok-2")]  # fmt: skip
    assert info.value.http_status == 429 and info.value.retry_after == 7.0
    assert "tok-2" not in str(info.value)
