"""The hook receiver's front door over real HTTP on loopback: every bad request is refused
with the right 4xx and leaves nothing stored and nothing applied; a good one is stored (202).

The worker is not running here, so "nothing applied" is also checked on the emulator's call
log: the receiver itself never calls Exmail.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import (
    HOOK_SECRET,
    Receiver,
    body_of,
    get_event,
    hook_headers,
    hooks_table,
    post_hook,
    running_receiver,
    seed_rows,
    upsert,
)

pytestmark = pytest.mark.timeout(60)

HIRE = upsert("d-1", "H0001", "新同事", "h0001@example.com", "研发中心/平台部")


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory("v2"))
    e.write(seed_rows(), hooks=hooks_table(max_body=4096))
    return e


@pytest.fixture
def rx(env: ApplyEnv) -> Iterator[Receiver]:
    with running_receiver(env, worker=False) as receiver:
        yield receiver


def stored(env: ApplyEnv) -> list[service.HookEventView]:
    return service.list_hook_events(service.Engine(env.config()))


def assert_nothing_happened(env: ApplyEnv) -> None:
    assert stored(env) == []
    assert env.emulator.calls() == []


def test_a_valid_event_is_stored_and_answered_202(env: ApplyEnv, rx: Receiver) -> None:
    r = post_hook(rx.client, HIRE)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["delivery_id"] == "d-1" and body["employee_id"] == "H0001"
    assert body["status"] == "received" and r.headers["location"] == f"/hooks/events/{body['id']}"
    [event] = stored(env)
    assert (event.id, event.kind, event.employee_id) == (body["id"], "upsert", "H0001")
    assert get_event(rx.client, body["id"])["status"] == "received"
    assert env.emulator.calls() == []  # the request never calls Exmail


def test_wrong_secret_is_401(env: ApplyEnv, rx: Receiver) -> None:
    r = post_hook(rx.client, HIRE, secret="not-the-secret")
    assert r.status_code == 401 and "signature" in r.json()["error"]
    assert HOOK_SECRET not in r.text
    assert_nothing_happened(env)


def test_a_changed_body_is_401(env: ApplyEnv, rx: Receiver) -> None:
    body = body_of(HIRE)
    headers = hook_headers(body)
    r = rx.client.post("/hooks/hr", content=body.replace(b"h0001", b"h0002"), headers=headers)
    assert r.status_code == 401
    assert_nothing_happened(env)


@pytest.mark.parametrize("skew", [-301, 301, -3600])
def test_a_stale_or_future_timestamp_is_401(env: ApplyEnv, rx: Receiver, skew: int) -> None:
    r = post_hook(rx.client, HIRE, ts=int(time.time()) + skew)
    assert r.status_code == 401 and "clock" in r.json()["error"]
    assert_nothing_happened(env)


def test_missing_signature_headers_are_401(env: ApplyEnv, rx: Receiver) -> None:
    r = rx.client.post("/hooks/hr", content=body_of(HIRE),
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 401
    assert_nothing_happened(env)


def test_a_replayed_delivery_is_409_and_stored_once(env: ApplyEnv, rx: Receiver) -> None:
    first = post_hook(rx.client, HIRE)
    assert first.status_code == 202
    # The same delivery id again, freshly signed and even with another body: refused.
    changed = upsert("d-1", "H0001", "别人", "other@example.com")
    again = post_hook(rx.client, changed)
    assert again.status_code == 409, again.text
    assert again.json()["id"] == first.json()["id"]
    assert len(stored(env)) == 1 and env.emulator.calls() == []


def test_the_delivery_id_may_come_in_a_header(env: ApplyEnv, rx: Receiver) -> None:
    doc = {k: v for k, v in HIRE.items() if k != "delivery_id"}
    r = post_hook(rx.client, doc, delivery="hdr-7")
    assert r.status_code == 202 and r.json()["delivery_id"] == "hdr-7"
    r = post_hook(rx.client, doc)
    assert r.status_code == 422 and r.json()["field"] == "delivery_id"
    r = post_hook(rx.client, HIRE, delivery="other")
    assert r.status_code == 422 and "differs" in r.json()["error"]
    assert [e.delivery_id for e in stored(env)] == ["hdr-7"]


def test_an_oversize_body_is_413(env: ApplyEnv, rx: Receiver) -> None:
    big = {**HIRE, "person": {**HIRE["person"], "position": "长" * 3000}}
    r = post_hook(rx.client, big)
    assert r.status_code == 413
    # Streamed without a Content-Length: cut off while reading, same answer.
    body = body_of(big)
    headers = hook_headers(body)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    r = rx.client.post("/hooks/hr", content=chunks(), headers=headers)
    assert r.status_code == 413
    assert_nothing_happened(env)


def test_malformed_json_is_400(env: ApplyEnv, rx: Receiver) -> None:
    body = b'{"kind": "upsert", "person": {'
    r = rx.client.post("/hooks/hr", content=body, headers=hook_headers(body))
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    body = b"[1, 2]"
    r = rx.client.post("/hooks/hr", content=body, headers=hook_headers(body))
    assert r.status_code == 400
    assert_nothing_happened(env)


def test_unknown_kind_is_422_naming_kind(env: ApplyEnv, rx: Receiver) -> None:
    r = post_hook(rx.client, {"kind": "promote", "delivery_id": "x", "employee_id": "E0001"})
    assert r.status_code == 422 and r.json()["field"] == "kind"
    assert "promote" in r.json()["error"]
    assert_nothing_happened(env)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"kind": "terminate", "delivery_id": "x"}, "employee_id"),
        ({"kind": "terminate", "delivery_id": "x", "employee_id": "E1", "end_date": "soon"},
         "end_date"),
        ({"kind": "terminate", "delivery_id": "x", "employee_id": "E1", "extra": 1}, "extra"),
        ({"kind": "department_change", "delivery_id": "x", "employee_id": "E1"}, "departments"),
        ({"kind": "upsert", "delivery_id": "x", "person": {}}, "person"),
        # The HR record goes through [mapping]: a bad address is named by its HR column.
        (upsert("x", "H9", "坏地址", "not an address"), "person.email"),
        (upsert("x", "", "无工号", "a@example.com"), "person.employee_id"),
    ],
)  # fmt: skip
def test_an_invalid_payload_is_422_naming_the_field(
    env: ApplyEnv, rx: Receiver, document: dict[str, object], field: str
) -> None:
    r = post_hook(rx.client, document)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field, r.json()
    assert_nothing_happened(env)


def test_a_non_json_content_type_is_415(env: ApplyEnv, rx: Receiver) -> None:
    body = body_of(HIRE)
    headers = {**hook_headers(body), "Content-Type": "text/plain"}
    r = rx.client.post("/hooks/hr", content=body, headers=headers)
    assert r.status_code == 415
    assert_nothing_happened(env)


def test_event_status_needs_a_signature(env: ApplyEnv, rx: Receiver) -> None:
    event_id = post_hook(rx.client, HIRE).json()["id"]
    assert rx.client.get(f"/hooks/events/{event_id}").status_code == 401
    other = f"/hooks/events/{event_id + 1}"
    headers = hook_headers(f"/hooks/events/{event_id}".encode())
    assert rx.client.get(other, headers=headers).status_code == 401  # signed for another id
    assert rx.client.get(other, headers=hook_headers(other.encode())).status_code == 404
    data = get_event(rx.client, event_id)
    assert "payload" not in data and "person" not in json.dumps(data)


def test_health_and_metrics(env: ApplyEnv, rx: Receiver) -> None:
    post_hook(rx.client, HIRE)
    post_hook(rx.client, HIRE)  # a replay: counted as 409
    health = rx.client.get("/healthz")
    assert health.status_code == 503  # no worker in this fixture
    assert health.json()["queue_depth"] == 1
    metrics = rx.client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = metrics.text.splitlines()
    assert "syncengine_event_queue_depth 1" in lines
    assert 'syncengine_hook_requests_total{code="202"} 1' in lines
    assert 'syncengine_hook_requests_total{code="409"} 1' in lines
    assert "syncengine_worker_alive 0" in lines
    assert "# TYPE syncengine_actions_total counter" in lines
    age = next(x for x in lines if x.startswith("syncengine_event_queue_oldest_age_seconds "))
    assert float(age.split()[1]) >= 0


def test_without_a_secret_hooks_are_off(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(seed_rows())
    with running_receiver(env, worker=False) as receiver:
        r = post_hook(receiver.client, HIRE)
        assert r.status_code == 503 and "[hooks] secret" in r.json()["error"]
    assert stored(env) == []


def test_a_hook_sender_with_httpx_only(env: ApplyEnv, rx: Receiver) -> None:
    """The sample script signs and sends exactly like the tests' own signing."""
    import runpy

    sender = runpy.run_path(str(Path(__file__).resolve().parents[2] / "samples" / "hooks"
                                / "send_hook.py"))  # fmt: skip
    doc = upsert("sample-1", "S0001", "样例", "s0001@example.com")
    status, answer = sender["send"](rx.base_url + "/hooks/hr", HOOK_SECRET,
                                    json.dumps(doc).encode())  # fmt: skip
    assert status == 202, answer
    assert [e.delivery_id for e in stored(env)] == ["sample-1"]
    status, answer = sender["send"](rx.base_url + "/hooks/hr", "wrong",
                                    json.dumps(doc).encode())  # fmt: skip
    assert status == 401
