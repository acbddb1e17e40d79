"""Gen 2 writes go on the libcurl handle pool without an httpx request or response around a
call that succeeds (providers/direct.CurlJsonPost). Against the emulator over real HTTP:
the answers, the token refresh, the errors (status, dropped connection), the pace and the
redaction are those of the httpx path."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import closing

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
