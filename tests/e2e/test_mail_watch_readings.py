"""``mail watch`` under every reading of ``listen`` the sources leave open, over real HTTP.

The emulator plays each reading (protocol-decisions.md, "Robustness"): mail events with their
``Ver`` or without it (the bump comes as a separate answer), a server that holds ``listen`` or
one that answers at once, transient errors (1002 / -1) on a share of calls. Under each, every
delivered mail is reported exactly once, the call rate stays bounded, and the watch never
ends on a transient error; ``--forward`` also survives a restart with a fresh token (the
server pushes the mail again; the stored mail ids drop it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from syncengine import service
from syncengine.config import parse_config
from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_support import make_env
from tests.fixtures.notify_receiver import notification_receiver

pytestmark = pytest.mark.timeout(120)

MAILBOXES = ["zhangsan@example.com", "lisi@example.com", "wangwu@example.com"]
PACING = {"listen_min_interval": 0.1, "watch_backoff": 0.05, "watch_backoff_max": 0.2}
READINGS = [
    pytest.param({"listen_ver": "inline", "listen_hold": 0.5}, id="ver-inline-held"),
    pytest.param({"listen_ver": "separate", "listen_hold": 0.5}, id="ver-separate-held"),
    pytest.param({"listen_ver": "inline", "listen_hold": 0.0}, id="ver-inline-immediate"),
    pytest.param({"listen_ver": "separate", "listen_hold": 0.0}, id="ver-separate-immediate"),
]


def _config(emu: RunningEmulator, tmp_path: Path) -> Any:
    return parse_config({"exmail": {**emu.exmail_config(), **PACING, "timeout": 5},
                         "database": {"url": f"sqlite:///{tmp_path / 'staging.db'}"}})  # fmt: skip


def _watch(config: Any, **kw: Any) -> list[Any]:
    with closing(service.Engine(config)) as engine:
        return list(service.watch_mail(engine, **kw))


def _forward(config: Any, url: str, **kw: Any) -> list[service.ForwardedMail]:
    with closing(service.Engine(config)) as engine:
        return list(service.forward_mail(engine, url, **kw))


def _count(config: Any, email: str) -> int:
    with closing(service.Engine(config)) as engine:
        return service.mail_count(engine, email)


def _deliver_later(emu: RunningEmulator, count: int, every: float) -> threading.Thread:
    def run() -> None:
        for n in range(count):
            time.sleep(every)
            emu.deliver_mail(MAILBOXES[n % len(MAILBOXES)], subject=f"mail {n}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("reading", READINGS)
def test_each_mail_is_reported_once_under_each_reading(
    reading: dict[str, Any],
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    emu = emulator_factory("v1", busy_rate=0.05, rng_seed=11, **reading)
    before = emu.deliver_mail(MAILBOXES[0], subject="before the watch")  # start at Ver 0
    thread = _deliver_later(emu, 6, 0.25)
    started = time.monotonic()
    events = _watch(_config(emu, tmp_path), timeout=4.0)
    elapsed = time.monotonic() - started
    thread.join()
    ids = [e.mail_id for e in events]
    assert len(ids) == len(set(ids)) == 7, ids  # every mail, each once
    assert before["MailId"] in ids
    assert {e.subject for e in events} == {"before the watch"} | {f"mail {n}" for n in range(6)}
    listens = emu.call_counts().get("/openapi/listen", 0)
    # Paced: at most one quiet call per min interval, plus one per event / version bump.
    assert listens <= elapsed / PACING["listen_min_interval"] + 2 * 7 + 5, listens
    assert elapsed >= 3.9  # the watch ran to its timeout: no transient error ended it


def test_transient_errors_never_end_the_watch(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory("v1", busy_rate=0.5, fail_rate=0.1, rng_seed=3, listen_hold=0.2)
    thread = _deliver_later(emu, 3, 0.3)
    events = _watch(_config(emu, tmp_path), timeout=4.0)
    thread.join()
    assert sorted(e.subject for e in events) == ["mail 0", "mail 1", "mail 2"]
    errors = [c for c in emu.calls() if c["errcode"] == 1002 or c["status"] == 503]
    assert errors, "the emulator injected no error: the test proves nothing"


def test_gen2_poll_survives_transient_errors(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory("v2", busy_rate=0.4, rng_seed=5)
    thread = _deliver_later(emu, 3, 0.6)
    events = _watch(_config(emu, tmp_path), users=MAILBOXES, interval=0.1, timeout=3.5)
    thread.join()
    assert sorted(e.email for e in events) == sorted(MAILBOXES)
    assert any(c["errcode"] == -1 for c in emu.calls())


def test_gen2_newcount_always_sends_its_dates(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory("v2", newcount_dates="required")
    emu.deliver_mail(MAILBOXES[1])
    assert _count(_config(emu, tmp_path), MAILBOXES[1]) == 1


@pytest.mark.parametrize("reading", READINGS)
def test_forward_reports_each_mail_once_across_restarts_and_fresh_tokens(
    reading: dict[str, Any], tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory("v1", **reading)
    env = make_env(ApplyEnv(tmp_path, emu), {"exmail": PACING})
    with notification_receiver() as hook:
        emu.deliver_mail(MAILBOXES[0], subject="first")
        sent = _forward(env.config(), hook.url, max_events=1, timeout=10)
        assert [s.event.subject for s in sent] == ["first"]
        # A restart with a fresh token: a "separate" server pushes "first" again.
        emu.expire_tokens()
        emu.deliver_mail(MAILBOXES[1], subject="second")
        sent = _forward(env.config(), hook.url, timeout=2.0)
        assert [s.event.subject for s in sent] == ["second"]
        assert [r.document["subject"] for r in hook.wait_for(2)] == ["first", "second"]


OTHER_READINGS = [
    pytest.param("v1", {"user_mod": "reset"}, id="v1-mod-resets"),
    pytest.param("v1", {"dept_visible_after": 1.0}, id="v1-new-department-not-yet-visible"),
    pytest.param("v1", {"invalid_token_answer": "error"}, id="v1-token-refused-by-error-only"),
    pytest.param("v1", {"invalid_token_answer": "http401"}, id="v1-token-refused-by-http401"),
    pytest.param("v2", {"invalid_token_answer": "http401"}, id="v2-token-refused-by-http401"),
    pytest.param("v2", {"newcount_dates": "required"}, id="v2-newcount-dates-required"),
    pytest.param("v2", {"dept_visible_after": 1.0}, id="v2-new-department-not-yet-visible"),
]


@pytest.mark.parametrize(("api", "reading"), OTHER_READINGS)
def test_mail_watch_under_the_other_readings(
    api: str,
    reading: dict[str, Any],
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> None:
    """Every reading option of the emulator, with the tokens refused once mid-watch."""
    emu = emulator_factory(api, listen_hold=0.3, **reading)
    config = _config(emu, tmp_path)
    thread = _deliver_later(emu, 3, 0.4)
    expirer = threading.Timer(0.6, emu.expire_tokens)
    expirer.start()
    users = MAILBOXES if api == "v2" else ()
    events = _watch(config, users=users, interval=0.1, timeout=2.5)
    thread.join()
    expirer.join()
    assert sorted(e.email for e in events) == sorted(MAILBOXES)
    if api == "v1":
        assert len({e.mail_id for e in events}) == 3
