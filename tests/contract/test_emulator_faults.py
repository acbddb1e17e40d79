"""Injected faults, rate limits and the Gen 1 long poll, observed by a real httpx client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.fixtures.emulator import RawV1, RawV2

pytestmark = pytest.mark.timeout(90)

Factory = Callable[..., RunningEmulator]
PW = "Init#2026pass"


def test_fail_rate_one_answers_503_and_is_logged(emulator: RunningEmulator) -> None:
    raw_token = RawV2(emulator).token() if emulator.api == "v2" else RawV1(emulator).token()
    emulator.set_faults(fail_rate=1.0)
    emulator.clear_calls()
    with httpx.Client(base_url=emulator.base_url) as http:
        if emulator.api == "v2":
            response = http.get(
                "/cgi-bin/user/get",
                params={"access_token": raw_token, "userid": "lisi@example.com"},
            )
        else:
            response = http.post(
                "/openapi/user/get",
                data={"alias": "lisi@example.com"},
                headers={"Authorization": f"Bearer {raw_token}"},
            )
    assert response.status_code == 503
    calls = emulator.calls()
    assert [(c["status"], c["errcode"]) for c in calls] == [(503, None)]


def test_dropped_connection_is_seen_by_httpx_and_the_write_happened(
    emulator_factory: Factory,
) -> None:
    emu = emulator_factory("v2")
    raw = RawV2(emu)
    raw.token()
    emu.set_faults(drop_rate=1.0)  # default drop_when="after": the write took effect
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        raw.http.post(
            "/cgi-bin/user/create",
            params={"access_token": raw.token()},
            json={"userid": "dropped@example.com", "name": "丢", "department": [1], "password": PW},
        )
    assert any(u["userid"] == "dropped@example.com" for u in emu.state()["users"])
    assert emu.calls()[-1]["dropped"] is True
    emu.set_faults(drop_rate=0.0)
    again = raw.post(
        "user/create",
        {"userid": "dropped@example.com", "name": "丢", "department": [1], "password": PW},
    )
    assert again["errcode"] == 60102  # a blind retry meets the effect of the lost call
    raw.close()


def test_drop_before_means_no_effect(emulator_factory: Factory) -> None:
    emu = emulator_factory("v1", drop_rate=1.0, drop_when="before")
    raw = RawV1(emu)
    emu.set_faults(drop_rate=0.0)
    raw.token()
    emu.set_faults(drop_rate=1.0)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        raw.write(
            "user/sync", {"action": "2", "alias": "nope@example.com", "name": "N", "password": PW}
        )
    emu.set_faults(drop_rate=0.0)
    assert raw.json("user/get", {"alias": "nope@example.com"})["errcode"] == "1301"
    raw.close()


def test_fault_injection_is_repeatable_with_a_seed(emulator_factory: Factory) -> None:
    outcomes = []
    for _ in range(2):
        emu = emulator_factory("v2", fail_rate=0.5, rng_seed=42)
        with httpx.Client(base_url=emu.base_url) as http:
            outcomes.append(
                [
                    http.get("/cgi-bin/gettoken", params={"corpid": "x"}).status_code
                    for _ in range(30)
                ]
            )
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {200, 503}


def test_rate_limit_answers_45009_then_recovers_on_a_new_window(raw_v2: RawV2) -> None:
    raw_v2.token()
    raw_v2.emu.set_faults(rate_limit_per_token=2)
    codes = [raw_v2.get("user/get", userid="lisi@example.com")["errcode"] for _ in range(6)]
    assert codes[:2] == [0, 0]
    assert 45009 in codes[2:]
    raw_v2.emu.set_faults(rate_limit_per_token=0)
    assert raw_v2.get("user/get", userid="lisi@example.com")["errcode"] == 0


def test_rate_limit_gen1_is_1002(raw_v1: RawV1) -> None:
    raw_v1.token()
    raw_v1.emu.set_faults(rate_limit_per_token=2)
    answers = [raw_v1.json("user/get", {"alias": "lisi@example.com"}) for _ in range(6)]
    assert answers[0]["Alias"] == "lisi@example.com"
    assert {"errcode": "1002", "error": "temporarily_unavailable"} in answers[2:]


def test_latency_is_added_to_each_call(emulator_factory: Factory) -> None:
    emu = emulator_factory("v2", latency_ms=60)
    with httpx.Client(base_url=emu.base_url) as http:
        http.get("/cgi-bin/gettoken", params={"corpid": "x"})
    assert emu.calls()[-1]["ms"] >= 59  # asyncio may wake a hair early; the call is slowed


# --- listen ------------------------------------------------------------------------------


def _wait_until(predicate: Callable[[], bool], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_listen_is_woken_by_a_delivered_mail(emulator_factory: Factory) -> None:
    emu = emulator_factory("v1", listen_hold=30)
    raw = RawV1(emu)
    token = raw.token()
    result: dict[str, Any] = {}

    def poll() -> None:
        with httpx.Client(base_url=emu.base_url, timeout=60) as http:
            result["response"] = http.post(
                "/openapi/listen", data={"Ver": "0"}, headers={"Authorization": f"Bearer {token}"}
            )

    worker = threading.Thread(target=poll, daemon=True)
    worker.start()
    _wait_until(lambda: emu.state()["listen_waiting"] == 1)
    event = emu.deliver_mail("lisi@example.com", sender='"王" <w@example.net>', subject="周报")
    worker.join(20)
    assert not worker.is_alive(), "listen was not woken by the mail"
    body = result["response"].json()
    assert body == event
    assert body["UserName"] == "lisi@example.com" and body["Subject"] == "周报"
    assert body["NewCount"] == 1 and body["Ver"].isdigit()
    assert raw.json("mail/newcount", {"alias": "lisi@example.com"})["NewCount"] == "1"
    raw.close()


def test_listen_answers_ret_0_after_the_hold(emulator_factory: Factory) -> None:
    emu = emulator_factory("v1", listen_hold=0.3)
    raw = RawV1(emu)
    assert raw.json("listen", {"ver": "0"}) == {"Ret": 0}
    first = emu.deliver_mail("lisi@example.com")
    second = emu.deliver_mail("zhangsan@example.com")
    assert raw.json("listen", {"ver": "0"}) == first  # the first pending event
    assert raw.json("listen", {"ver": first["Ver"]}) == second
    assert raw.json("listen", {"ver": second["Ver"]}) == {"Ret": 0}
    raw.close()


def test_stop_releases_a_parked_listen(emulator_factory: Factory) -> None:
    emu = emulator_factory("v1", listen_hold=60)
    token = RawV1(emu).token()
    result: dict[str, Any] = {}

    def poll() -> None:
        try:
            with httpx.Client(base_url=emu.base_url, timeout=60) as http:
                result["body"] = http.post(
                    "/openapi/listen", data={"ver": "0"}, headers={"Authorization": token}
                ).json()
        except httpx.HTTPError as exc:
            result["error"] = exc

    worker = threading.Thread(target=poll, daemon=True)
    worker.start()
    _wait_until(lambda: emu.state()["listen_waiting"] == 1)
    emu.stop()
    worker.join(20)
    assert not worker.is_alive()
    assert result.get("body") == {"Ret": 0}


def test_busy_rate_answers_minus_1_or_1002(emulator: RunningEmulator) -> None:
    emulator.set_faults(busy_rate=1.0)
    with httpx.Client(base_url=emulator.base_url) as http:
        if emulator.api == "v2":
            answer = http.get("/cgi-bin/gettoken", params={"corpid": "wwdemo0001"})
            assert answer.json() == {"errcode": -1, "errmsg": "system busy"}
        else:
            answer = http.post("/openapi/user/get", data={"alias": "lisi@example.com"})
            assert answer.json() == {"errcode": "1002", "error": "temporarily_unavailable"}
    assert answer.status_code == 200
    assert emulator.calls()[-1]["errcode"] in (-1, 1002)


def test_a_client_gone_mid_body_is_logged_as_499_without_a_traceback(
    emulator: RunningEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A client killed while sending its body (a SIGKILLed worker) is an ordinary event for a
    server: the call is logged (status 499, "client closed the request"), and no "Exception in
    ASGI application" traceback reaches the log."""
    import socket

    token = RawV2(emulator).token() if emulator.api == "v2" else RawV1(emulator).token()
    path = "/cgi-bin/user/create" if emulator.api == "v2" else "/openapi/user/sync"
    query = f"?access_token={token}" if emulator.api == "v2" else ""
    auth = "" if emulator.api == "v2" else f"Authorization: Bearer {token}\r\n"
    emulator.clear_calls()
    head = (
        f"POST {path}{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
        "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    )
    with caplog.at_level("INFO"), socket.create_connection(("127.0.0.1", emulator.port)) as s:
        s.sendall(head.encode() + b'{"userid": "half')  # then the client is gone
        s.close()
        deadline = time.monotonic() + 10
        while not emulator.calls() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [(c["endpoint"], c["status"]) for c in emulator.calls()] == [(path, 499)]
    errors = [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, [r.getMessage() for r in errors]
