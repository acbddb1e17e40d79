"""Mail groups under ``syncengine serve``: a hook moves a person through a real ``serve``
process (the mailbox moves at once), and the nightly job that ``serve`` schedules makes the
department groups follow (created on the first night, the move on the next, nothing after)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv
from tests.e2e.test_serve_restart import free_port, serve_process
from tests.e2e.test_serve_support import make_env, post_hook, upsert, wait_until

pytestmark = pytest.mark.timeout(150)

GROUPS = {"template": "grp-{path_pinyin}@example.com", "keeper": "admin@example.com"}


def groups(env: ApplyEnv) -> dict[str, list[str]]:
    state: dict[str, Any] = env.emulator.state()
    return {g["groupid"]: sorted(g["userlist"]) for g in state["groups"]}


def night(env: ApplyEnv) -> None:
    backend = service.HookBackend(service.Engine(env.config()))
    try:
        backend.scheduled_sync()  # what serve's scheduler runs at the cron minute
        assert backend.metrics.value("syncengine_runs_total", kind="sync",
                                     status="succeeded") == 1  # fmt: skip
    finally:
        backend.close()


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_groups_follow_a_hook_move_at_the_nightly_run_of_serve(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(ApplyEnv(tmp_path, emulator_factory(api)), {"groups": GROUPS},
                   schedule="30 2 * * *")  # fmt: skip
    platform = "grp-yanfazhongxin-pingtaibu@example.com"
    mobile = "grp-yanfazhongxin-yidongbu@example.com"
    assert groups(env)[platform] == ["zhangsan@example.com"]  # the initial sync made them
    assert groups(env)[mobile] == ["lisi@example.com"]

    port = free_port()
    with serve_process(env, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            r = post_hook(client, upsert("move-1", "E0001", "张三", "zhangsan@example.com",
                                         "研发中心/移动部", position="高级工程师",
                                         mobile="13800000001", gender="男",
                                         aliases="san.zhang@example.com"))  # fmt: skip
            assert r.status_code == 202, r.text
        wait_until("the hook applied", lambda: [e.status for e in service.list_hook_events(
            service.Engine(env.config()))] == ["applied"], timeout=60)  # fmt: skip
    assert env.users()["zhangsan@example.com"]["paths"] == ["研发中心/移动部"]
    # The HR export agrees by the night; serve's nightly job moves the group membership.
    env.write([dict(r, departments="研发中心/移动部") if r["employee_id"] == "E0001" else r
               for r in env.rows])  # fmt: skip
    night(env)
    live = groups(env)
    assert live[mobile] == ["lisi@example.com", "zhangsan@example.com"]
    assert live[platform] == ["admin@example.com"]  # retiring: emptied down to the keeper
    env.emulator.clear_calls()
    night(env)
    assert not [c for c in env.emulator.calls() if "group/" in c["endpoint"]]
