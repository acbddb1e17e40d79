"""``syncengine serve`` against hostile or careless clients (issue 11), as a real process over
real HTTP, with the emulator behind it:

* a captured signed hook resent with a new (unsigned) delivery header is a replay;
* bodies nested thousands deep, 5,000-digit numbers, ``Infinity`` and absurd event ids are
  400/404, never 500;
* SSO portal links are single use, and an address outside the company's domains is refused;
* a signed upsert carrying the address of an unmanaged or protected mailbox fails with the
  reason and leaves the mailbox alone (hooks never adopt).

The slow-client guard (timeouts, connection cap, one log line per refusal) has its own module,
``test_serve_slow_clients``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_restart import free_port, serve_process
from tests.e2e.test_serve_support import (
    body_of,
    hook_headers,
    make_env,
    portal_link,
    post_hook,
    settled_event,
    upsert,
)

pytestmark = pytest.mark.timeout(120)


class Served:
    """A running ``syncengine serve`` process and a client on it."""

    def __init__(self, env: ApplyEnv, client: httpx.Client) -> None:
        self.env = env
        self.client = client


@pytest.fixture(params=["v1", "v2"])
def served(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> Iterator[Served]:
    env = make_env(ApplyEnv(tmp_path, emulator_factory(request.param)))
    port = free_port()
    with serve_process(env, port) as proc:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield Served(env, client)
        proc.terminate()
        _, err = proc.communicate(timeout=20)
        text = err.decode("utf-8", "replace")
        assert "Traceback" not in text, text


def raw_post(client: httpx.Client, body: bytes, **headers: Any) -> httpx.Response:
    return client.post("/hooks/hr", content=body, headers=hook_headers(body, **headers))


def test_a_captured_hook_resent_with_a_new_delivery_header_is_a_replay(served: Served) -> None:
    document = upsert("", "R0001", "重放", "replay@example.com")
    del document["delivery_id"]
    body = body_of(document)
    assert b"delivery_id" not in body
    headers = hook_headers(body, delivery="hr-original")
    first = served.client.post("/hooks/hr", content=body, headers=headers)
    assert first.status_code == 202, first.text
    # The attacker keeps timestamp, signature and body, and only changes the unsigned header.
    forged = {**headers, "X-Syncengine-Delivery": "hr-forged-2"}
    again = served.client.post("/hooks/hr", content=body, headers=forged)
    assert again.status_code == 409, again.text
    assert "received before" in again.json()["error"]
    without = {k: v for k, v in headers.items() if k != "X-Syncengine-Delivery"}
    body_id = body.replace(b"{", b'{"delivery_id": "hr-forged-3", ', 1)
    assert served.client.post("/hooks/hr", content=body_id, headers=without).status_code == 401
    same = served.client.post("/hooks/hr", content=body, headers=headers)
    assert same.status_code == 409
    r = served.env.cli("events", "--json")
    assert r.exit_code == 0 and r.output.count('"delivery_id"') == 1, r.output
    # A genuine resend (signed afresh, same delivery id) is still recognised by its id.
    later = int(headers["X-Syncengine-Timestamp"]) + 1
    resigned = hook_headers(body, delivery="hr-original", ts=later)
    resent = served.client.post("/hooks/hr", content=body, headers=resigned)
    assert resent.status_code == 409 and "delivery id" in resent.json()["error"]


def hostile(delivery: str, value: bytes) -> bytes:
    """A valid upsert whose record carries one more HR field holding ``value``."""
    body = body_of(upsert(delivery, "N0001", "甲", "n0001@example.com"))
    return body.replace(b'"person": {', b'"person": {"x": ' + value + b", ", 1)


@pytest.mark.parametrize(
    ("what", "body"),
    [
        ("nested 5000 deep", hostile("n-1", b"[" * 5000 + b"]" * 5000)),
        ("nested 900 deep", hostile("n-2", b"[" * 900 + b"]" * 900)),
        ("5000-digit integer", hostile("n-3", b"7" * 5000)),
        ("4000-digit integer", hostile("n-4", b"7" * 4000)),
        ("Infinity", hostile("n-5", b"Infinity")),
        ("NaN", hostile("n-6", b"NaN")),
        ("long float", hostile("n-7", b"1." + b"5" * 5000 + b"e999999")),
    ],
)
def test_hostile_signed_bodies_are_400(served: Served, what: str, body: bytes) -> None:
    r = raw_post(served.client, body)
    assert r.status_code == 400, (what, r.status_code, r.text)
    assert r.json()["error"]
    assert served.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("event_id", ["9" * 30, "9" * 5000, "9223372036854775808", "0", "-1",
                                      "١٢", "1e3"])  # fmt: skip
def test_an_event_id_that_is_no_event_is_404(served: Served, event_id: str) -> None:
    path = f"/hooks/events/{event_id}"
    r = served.client.get(path, headers=hook_headers(path.encode()))
    assert r.status_code == 404, (r.status_code, r.text)


def test_a_portal_link_is_single_use(served: Served) -> None:
    link = portal_link("lisi@example.com")
    first = served.client.get(link)
    assert first.status_code == 302, first.text
    second = served.client.get(link)
    assert second.status_code == 403 and "used already" in second.text, second.text
    # A fresh link (another timestamp, so another signature) works.
    ts = int(link.split("ts=")[1].split("&")[0])
    fresh = served.client.get(portal_link("lisi@example.com", ts=ts + 1))
    assert fresh.status_code == 302, fresh.text


def test_a_used_link_is_refused_by_every_serve_process_on_the_database(served: Served) -> None:
    link = portal_link("wangwu@example.com")
    assert served.client.get(link).status_code == 302
    port = free_port()
    with serve_process(served.env, port):
        other = httpx.get(f"http://127.0.0.1:{port}{link}", timeout=10)
    assert other.status_code == 403 and "used already" in other.text, other.text


@pytest.mark.parametrize("user", ["someone@elsewhere.example.org", "lisi@example.com.evil.org"])
def test_an_address_outside_the_company_domains_is_refused(served: Served, user: str) -> None:
    r = served.client.get(portal_link(user))
    assert r.status_code == 403, (r.status_code, r.text)
    assert "not one of the company's domains" in r.text


@pytest.mark.parametrize(
    ("address", "reason"),
    [("hr-shared@example.com", "no HR record owns"), ("admin@example.com", "protected")],
)
def test_a_hook_never_adopts_a_mailbox_the_nightly_sync_leaves_alone(
    served: Served, address: str, reason: str
) -> None:
    before = served.env.users()[address]
    r = post_hook(served.client, upsert("adopt-1", "A0001", "冒名", address, "市场部"))
    assert r.status_code == 202, r.text
    event = settled_event(served.client, r.json()["id"])
    assert event["status"] == "failed", event
    assert reason in event["last_error"] and "never takes over" in event["last_error"]
    after = served.env.users()[address]
    assert after == before  # not renamed, no extid, not moved
    sso = served.client.get(portal_link(address))  # and still no way in by a portal link
    assert sso.status_code == 403, sso.text
    assert ("not managed" if "no HR" in reason else "protected") in sso.text, sso.text
    # The same upsert with a new address is an ordinary hire.
    r = post_hook(served.client, upsert("adopt-2", "A0001", "冒名", "a0001@example.com"))
    assert settled_event(served.client, r.json()["id"])["status"] == "applied"
    assert str(served.env.users()["a0001@example.com"]["extid"]) == "A0001"
