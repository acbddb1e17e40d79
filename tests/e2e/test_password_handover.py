"""Initial passwords handed over to the new hire (WeCom app message) or to a signed relay,
through the real ``sync`` CLI against the emulator, with local stand-ins for the receivers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people
from tests.fixtures.notify_receiver import notification_receiver
from tests.fixtures.wecom_app import AGENT_ID, APP_SECRET, CORP_ID, wecom_app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    return ApplyEnv(tmp_path, emulator_factory("v2"))


def password_lines(env: ApplyEnv) -> list[dict[str, Any]]:
    path = env.root / "initial-passwords.jsonl"
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_new_hires_get_their_password_as_a_wecom_app_message(env: ApplyEnv) -> None:
    hires = people(3)
    with wecom_app(users={"T00100", "T00101"}) as app:  # T00102 is not in WeCom yet
        env.write(base_rows() + hires, passwords={"handover": {
            "channel": "wecom_app", "corp_id": CORP_ID, "agent_id": AGENT_ID,
            "secret": APP_SECRET, "base_url": app.base_url}})  # fmt: skip
        r = env.cli("sync", "--json")
        assert r.exit_code == 0, r.output
        report = json.loads(r.stdout)
    assert APP_SECRET not in r.output
    lines = password_lines(env)
    current = {x["email"]: x["password"] for x in lines if "password" in x}
    by_user = {m["touser"]: m for m in app.sent}
    assert set(by_user) == {"T00100", "T00101", "T00102"}
    for m in app.sent:
        assert m["safe"] == 1 and m["agentid"] == AGENT_ID
    msg = by_user["T00100"]["text"]["content"]
    assert "t100@example.com" in msg and current["t100@example.com"] in msg
    handed = {x["email"] for x in lines if x.get("handed_over") == "wecom_app"}
    assert handed == {"t100@example.com", "t101@example.com"}, lines
    applied = report["applied"]
    assert applied["passwords_handed_over"] == 2, applied
    (error,) = applied["handover_errors"]
    assert "T00102" in error and "t102@example.com" in error
    assert current["t102@example.com"] not in r.output, "a password never reaches the report"


def test_a_signed_relay_receives_the_password(env: ApplyEnv) -> None:
    with notification_receiver("relay-secret-0001") as rx:
        env.write(base_rows() + people(1), passwords={"handover": {
            "channel": "webhook", "url": rx.url, "secret": "relay-secret-0001"}})  # fmt: skip
        r = env.cli("sync", "--json")
        assert r.exit_code == 0, r.output
        (got,) = rx.wait_for(1)
    assert got.signature_ok, got.headers
    doc = got.document
    assert doc["event"] == "initial_password" and doc["employee_id"] == "T00100"
    current = [x for x in password_lines(env) if "password" in x][-1]
    assert doc["password"] == current["password"] and doc["email"] == "t100@example.com"


def test_handover_needs_its_settings(env: ApplyEnv) -> None:
    env.write(base_rows(), passwords={"handover": {"channel": "wecom_app", "secret": "x"}})
    r = env.cli("plan")
    assert r.exit_code == 1 and "passwords.handover" in r.output and "corp_id" in r.output
