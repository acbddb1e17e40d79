"""``syncengine serve`` writes one access-log line per request, without secrets or bodies:
the real CLI as a subprocess, signed requests over loopback, the emulator behind it."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_restart import free_port, serve_process
from tests.e2e.test_serve_support import HOOK_SECRET, SSO_SECRET, make_env, portal_link, post_hook
from tests.e2e.test_serve_support import upsert as upsert_event

pytestmark = pytest.mark.timeout(120)


def test_one_line_per_request_and_nothing_secret(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory("v2")))
    port = free_port()
    with serve_process(env, port) as proc:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            event = upsert_event(
                "log-1", "L0001", "日志", "rizhi@example.com", mobile="13900000001"
            )
            assert post_hook(client, event, delivery="log-1").status_code == 202
            link = portal_link("zhangsan@example.com")
            assert client.get(link).status_code in (302, 403)
            assert client.get("/healthz").status_code in (200, 503)
        proc.terminate()
        proc.wait(10)
        assert proc.stderr is not None
        err = proc.stderr.read().decode("utf-8", "replace")
    lines = [x for x in err.splitlines() if re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+08:00 ", x)]
    hooks = [x for x in lines if '"POST /hooks/hr"' in x]
    sso = [x for x in lines if '"GET /sso/login?sig&ts&user"' in x]
    assert len(hooks) == 1 and " 202 " in hooks[0] and "delivery=log-1" in hooks[0], err
    assert len(sso) == 1, err
    assert any('"GET /healthz"' in x for x in lines), err
    sig = link.split("sig=")[1]
    for secret in (HOOK_SECRET, SSO_SECRET, sig, "zhangsan@example.com", "13900000001", "日志"):
        assert secret not in err, secret
