"""Notifications to WeCom, DingTalk and Feishu group bots, each against a local stand-in that
checks the request the way the real service documents it (tests/fixtures/chatbot_receiver)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from syncengine.chatbots import dingtalk_sign, feishu_sign
from syncengine.notify import NotificationsConfig, Notifier
from tests.fixtures.chatbot_receiver import (
    DINGTALK_SECRET,
    DINGTALK_TOKEN,
    FEISHU_SECRET,
    FEISHU_TOKEN,
    WECOM_KEY,
    Bots,
    chat_bots,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def bots() -> Iterator[Bots]:
    with chat_bots() as b:
        yield b


def config(bots: Bots, **overrides: Any) -> NotificationsConfig:
    entries = [
        {"kind": "wecom", "url": bots.wecom_url, "name": "ops-wecom"},
        {"kind": "dingtalk", "url": bots.dingtalk_url, "secret": DINGTALK_SECRET},
        {"kind": "feishu", "url": bots.feishu_url, "secret": FEISHU_SECRET},
    ]
    table = {"bots": entries, "backoff": 0.01, "backoff_max": 0.02, "attempts": 3, **overrides}
    return NotificationsConfig.model_validate(table)


def send(notifier: Notifier, text: str = "同步完成: 3 created, 1 disabled") -> list[Any]:
    return notifier.send("finished", {"status": "succeeded"}, subject="sync succeeded",
                         text=text)  # fmt: skip


def test_each_bot_gets_its_own_format_and_signature(bots: Bots) -> None:
    results = send(Notifier(config(bots)))
    assert [(r.channel, r.ok, r.attempts) for r in results] == [("bot", True, 1)] * 3, results
    (wecom,) = bots.of("wecom")
    assert wecom.accepted and "同步完成" in wecom.document["markdown"]["content"]
    (ding,) = bots.of("dingtalk")
    assert ding.accepted and ding.document["markdown"]["title"] == "sync succeeded"
    (fei,) = bots.of("feishu")
    assert fei.accepted and "同步完成" in fei.document["content"]["text"]
    # reports show a bot by name or by host only: its URL holds the token
    labels = " ".join(r.target for r in results)
    assert WECOM_KEY not in labels and DINGTALK_TOKEN not in labels and FEISHU_TOKEN not in labels


def test_a_wrong_secret_is_refused_by_the_service_and_not_retried(bots: Bots) -> None:
    cfg = NotificationsConfig.model_validate({
        "bots": [{"kind": "dingtalk", "url": bots.dingtalk_url, "secret": "SECwrong0000"},
                 {"kind": "feishu", "url": bots.feishu_url, "secret": "wrong-secret"}],
        "attempts": 3, "backoff": 0.01})  # fmt: skip
    results = send(Notifier(cfg))
    assert [(r.ok, r.attempts) for r in results] == [(False, 1), (False, 1)]
    assert "310000" in (results[0].error or "") and "19021" in (results[1].error or "")
    for r in results:
        assert "SECwrong" not in (r.error or "") and DINGTALK_TOKEN not in (r.error or "")


def test_rate_limit_codes_are_retried(bots: Bots) -> None:
    bots.busy.update(wecom=1, dingtalk=1, feishu=1)
    results = send(Notifier(config(bots)))
    assert [(r.ok, r.attempts) for r in results] == [(True, 2)] * 3, results


def test_long_reports_are_clipped_to_each_service_limit(bots: Bots) -> None:
    results = send(Notifier(config(bots)), text="行" * 10000)  # 30,000 bytes
    assert all(r.ok for r in results), results
    (wecom,) = bots.of("wecom")
    assert len(wecom.document["markdown"]["content"].encode()) <= 4096


def test_signatures_match_the_documented_examples() -> None:
    # DingTalk's and Feishu's documented recipes, computed by hand for fixed inputs
    import base64
    import hashlib
    import hmac

    ts = "1700000000000"
    want = base64.b64encode(hmac.new(b"SECx", f"{ts}\nSECx".encode(), hashlib.sha256).digest())
    assert dingtalk_sign("SECx", ts) == want.decode()
    ts = "1700000000"
    want = base64.b64encode(hmac.new(f"{ts}\nfx".encode(), b"", hashlib.sha256).digest())
    assert feishu_sign("fx", ts) == want.decode()


def test_sync_notifies_the_three_bots_through_the_cli(
    bots: Bots, tmp_path: Any, emulator_factory: Any
) -> None:
    import json

    from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(base_rows() + people(2), notifications={
        "backoff": 0.01, "attempts": 2,
        "bots": [{"kind": "wecom", "url": bots.wecom_url},
                 {"kind": "dingtalk", "url": bots.dingtalk_url, "secret": DINGTALK_SECRET},
                 {"kind": "feishu", "url": bots.feishu_url, "secret": FEISHU_SECRET}]})  # fmt: skip
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    notes = json.loads(r.stdout)["notifications"]
    assert [(n["channel"], n["ok"]) for n in notes] == [("bot", True)] * 3, notes
    assert all(m.accepted for m in bots.messages) and len(bots.messages) == 3
    for secret in (WECOM_KEY, DINGTALK_TOKEN, DINGTALK_SECRET, FEISHU_TOKEN, FEISHU_SECRET):
        assert secret not in r.output
    assert "succeeded" in bots.of("feishu")[0].document["content"]["text"]
