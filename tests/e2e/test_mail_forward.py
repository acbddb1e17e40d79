"""``mail watch --forward URL``: a mail delivered in the emulator reaches a real local
receiver once, signed; a restart neither repeats nor loses it (cursor in ``watch_state``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import ConfigError
from syncengine.hooks.forward import ForwardError
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import hooks_table, make_env
from tests.fixtures.notify_receiver import notification_receiver

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(params=["v1", "v2"])
def env(request: pytest.FixtureRequest, tmp_path: Path,
        emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:  # fmt: skip
    return make_env(ApplyEnv(tmp_path, emulator_factory(request.param, listen_hold=0.5)))


def watch(env: ApplyEnv, url: str, **kw: object) -> list[service.ForwardedMail]:
    return list(service.forward_mail(service.Engine(env.config()), url, interval=0.1, **kw))  # type: ignore[arg-type]


def test_a_new_mail_is_forwarded_once_across_restarts(env: ApplyEnv) -> None:
    with notification_receiver() as hook:
        assert watch(env, hook.url, timeout=1.0) == []  # first start: baseline / cursor
        env.emulator.deliver_mail("lisi@example.com", subject="周报")
        sent = watch(env, hook.url, max_events=1, timeout=20)
        assert [s.event.email for s in sent] == ["lisi@example.com"]
        [got] = hook.wait_for(1)
        assert got.signature_ok and got.answered == 200
        doc = got.document
        assert doc["event"] == "new_mail" and doc["email"] == "lisi@example.com"
        assert doc["new_count"] >= 1
        assert got.headers["x-syncengine-delivery"] == doc["delivery_id"]
        # A restart: the stored cursor says this mail was handled.
        assert watch(env, hook.url, timeout=1.5) == []
        assert len(hook.received) == 1
        # Mail that arrives while the watcher is down is still forwarded on the next start.
        env.emulator.deliver_mail("wangwu@example.com")
        later = watch(env, hook.url, max_events=1, timeout=20)
        assert [s.event.email for s in later] == ["wangwu@example.com"]
        assert len(hook.wait_for(2)) == 2


def test_a_failing_receiver_is_retried_and_then_the_event_waits(env: ApplyEnv) -> None:
    with notification_receiver() as hook:
        watch(env, hook.url, timeout=1.0)
        env.emulator.deliver_mail("zhangsan@example.com")
        hook.answer_with(503)  # one refusal, then 200
        sent = watch(env, hook.url, max_events=1, timeout=20)
        assert [s.attempts for s in sent] == [2]
        assert [r.answered for r in hook.wait_for(2)] == [503, 200]

        env.emulator.deliver_mail("lisi@example.com")
        hook.answer_with(503, 503, 503)  # more than the 3 attempts configured
        with pytest.raises(ForwardError) as info:
            watch(env, hook.url, max_events=1, timeout=20)
        assert "3 attempt" in str(info.value)
        # The cursor did not move: the next start sends it.
        sent = watch(env, hook.url, max_events=1, timeout=20)
        assert [s.event.email for s in sent] == ["lisi@example.com"]


def test_the_cli_forwards_and_prints_the_events(env: ApplyEnv) -> None:
    with notification_receiver() as hook:
        watch(env, hook.url, timeout=1.0)
        env.emulator.deliver_mail("wangwu@example.com")
        r = env.cli("mail", "watch", "--forward", hook.url, "--interval", "0.1",
                    "--max-events", "1", "--timeout", "20")  # fmt: skip
        assert r.exit_code == 0, r.output
        assert '"email": "wangwu@example.com"' in r.output and '"forwarded": true' in r.output
        assert len(hook.wait_for(1)) == 1


def test_forwarding_needs_a_secret_and_an_http_url(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")), forward={"secret": None})
    with pytest.raises(ConfigError, match="secret"):
        watch(env, "http://127.0.0.1:9/x", timeout=0.1)
    r = env.cli("mail", "watch", "--forward", "http://127.0.0.1:9/x", "--timeout", "0.1")
    assert r.exit_code == 1 and "[hooks.forward] secret" in r.output
    env.write(hooks=hooks_table())
    with pytest.raises(ConfigError, match="http"):
        watch(env, "ftp://example.com/x", timeout=0.1)
