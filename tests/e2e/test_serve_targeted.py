"""A hook batch reads only the people it touches (issue 14), and keeps every guard: calls
are counted by the emulator over real HTTP, conflicts with people outside the batch are still
conflicts, and the brakes judge the whole directory, not the batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, _endpoint, people
from tests.e2e.test_serve_support import (
    hooks_table,
    post_hook,
    running_receiver,
    seed_rows,
    settled_event,
    upsert,
)

pytestmark = pytest.mark.timeout(120)

EXTRA = 40
"""New hires the initial sync creates, so that the directory is bigger than any batch."""

LISTINGS = {"user/list", "user/simplelist", "partyuser/list"}
"""The calls that read many members at once: a targeted batch makes none of them."""


def make_env(tmp_path: Path, emulator: RunningEmulator, extra: int = EXTRA) -> ApplyEnv:
    env = ApplyEnv(tmp_path, emulator)
    env.write([*seed_rows(), *people(extra)], hooks=hooks_table())
    plan = env.ingest_and_plan()
    r = env.cli("apply", str(plan), "--yes")
    assert r.exit_code == 0, r.output
    return env


@pytest.fixture(params=["v1", "v2"])
def env(request: pytest.FixtureRequest, tmp_path: Path,
        emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:  # fmt: skip
    return make_env(tmp_path, emulator_factory(request.param))


def reads_since(env: ApplyEnv, mark: int) -> list[str]:
    writes = {_endpoint(c) for c in env.write_calls(since=mark)}
    return [e for e in map(_endpoint, env.emulator.calls(mark)) if e not in writes]


def metric(rx: Any, line_start: str) -> int:
    lines = rx.client.get("/metrics").text.splitlines()
    found = [x for x in lines if x.startswith(line_start)]
    return int(float(found[0].split()[-1])) if found else 0


def test_a_batch_reads_only_the_people_it_touches(env: ApplyEnv) -> None:
    assert len(env.users()) >= EXTRA + 4
    with running_receiver(env, worker=False) as rx:
        # A first event warms what a serve process keeps (token, Gen 2 department ids).
        dept = people(21)[20]["departments"]
        doc = upsert("warm", "T00120", "测试员120", "t120@example.com", dept, position="预热")
        assert post_hook(rx.client, doc).status_code == 202
        assert rx.backend.process() == 1
        mark = len(env.emulator.calls())
        for i, eid in enumerate(("T00100", "T00101", "T00102")):
            doc = upsert(f"u-{i}", eid, f"测试员{100 + i}", f"t{100 + i}@example.com",
                         people(3)[i]["departments"], position="架构师")  # fmt: skip
            assert post_hook(rx.client, doc).status_code == 202
        taken = rx.backend.process()
        assert taken == 3
        reads = reads_since(env, mark)
        assert not LISTINGS & set(reads), reads  # no whole-directory read
        # A field change in the department the mailbox is in: no department call at all.
        assert not {"department/list", "party/list"} & set(reads), reads
        gets = reads.count("user/get")
        # One user/get per person to read it (and on Gen 1 one more by the update, which
        # sends the whole record back); then department reads and a token: O(batch).
        assert 3 <= gets <= 2 * 3, reads
        assert len(reads) <= 2 * 3, reads
        assert metric(rx, 'syncengine_hook_reads_total{scope="targeted"}') == 2
        assert metric(rx, 'syncengine_hook_reads_total{scope="full"}') == 0
        events = rx.backend.repo.list_events(limit=10)
        assert [e.status for e in events] == ["applied"] * 4, events
        for i in range(3):
            assert env.users()[f"t{100 + i}@example.com"]["position"] == "架构师"
    untouched = env.users()["t103@example.com"]
    assert untouched["position"] != "架构师"


def test_an_address_taken_by_someone_outside_the_batch_is_a_conflict(env: ApplyEnv) -> None:
    before = env.users()
    with running_receiver(env) as rx:
        # E0002 asks for E0003's address: E0003 is not in the batch.
        doc = upsert("steal-1", "E0002", "李四", "wangwu@example.com", "研发中心/移动部",
                     position="工程师", mobile="13800000002", gender="女")  # fmt: skip
        event = settled_event(rx.client, post_hook(rx.client, doc).json()["id"])
        assert event["status"] == "failed" and "conflict" in event["last_error"], event
        assert "wangwu@example.com" in event["last_error"]
        # A new hire asking for a linked member's address is refused the same way.
        doc = upsert("steal-2", "H0100", "新人", "t105@example.com", "销售部")
        event = settled_event(rx.client, post_hook(rx.client, doc).json()["id"])
        assert event["status"] == "failed" and "conflict" in event["last_error"], event
        assert metric(rx, 'syncengine_hook_reads_total{scope="full"}') == 0
    after = env.users()
    assert after == before  # nothing was clobbered, nobody was created


def test_an_alias_nobody_explains_falls_back_to_the_whole_directory(env: ApplyEnv) -> None:
    # san.zhang@ is E0001's alias since the seed (no address change of ours explains it):
    # the targeted read cannot name its holder, so the batch reads the whole directory.
    before = env.users()
    with running_receiver(env) as rx:
        doc = upsert("alias-1", "H0200", "别名", "san.zhang@example.com", "销售部")
        event = settled_event(rx.client, post_hook(rx.client, doc).json()["id"])
        assert event["status"] == "failed", event
        assert metric(rx, 'syncengine_hook_reads_total{scope="full"}') == 1
    assert env.users() == before


def test_the_brakes_judge_the_whole_directory_not_the_batch(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = make_env(tmp_path, emulator_factory("v2"))
    managed = len(env.users()) - 1  # E0004 is disabled and not linked
    with running_receiver(env, worker=False) as rx:
        # One leaver of ~44: the shrink brake counts the whole snapshot (a batch of one
        # person judged alone would have "shrunk" from 44 people to 1) and 1/44 disables
        # is under the default 10 % share.
        r = post_hook(rx.client, {"kind": "terminate", "delivery_id": "t-1",
                                  "employee_id": "T00110", "end_date": "2020-01-31"})  # fmt: skip
        assert rx.backend.process() == 1
        event = rx.backend.repo.get_event(r.json()["id"])
        assert event is not None and event.status == "applied", event
        assert int(env.users()["t110@example.com"]["enable"]) == 0
        # Five more in one batch: 5 of the managed mailboxes is over 10 %: blocked.
        assert 5 / managed > 0.1
        ids = []
        for n in range(111, 116):
            leaver = {"kind": "terminate", "delivery_id": f"t-{n}", "employee_id": f"T00{n}",
                      "end_date": "2020-01-31"}  # fmt: skip
            r = post_hook(rx.client, leaver)
            ids.append(r.json()["id"])
        mark = len(env.emulator.calls())
        batch = rx.backend.process_batch()
        assert batch.events == 5 and batch.failed == 5, batch
        assert batch.error is not None and "disable" in batch.error, batch
        assert env.write_calls(since=mark) == []
        for event_id in ids:
            stored = rx.backend.repo.get_event(event_id)
            assert stored is not None and "brake" in (stored.last_error or ""), stored


def test_a_hire_into_a_new_department_creates_it_from_a_targeted_read(env: ApplyEnv) -> None:
    with running_receiver(env) as rx:
        new = "新事业部/新小组"
        doc = upsert("hire-new-dept", "H0300", "新部门人", "xinbumen@example.com", new)
        event = settled_event(rx.client, post_hook(rx.client, doc).json()["id"])
        assert event["status"] == "applied", event
        assert metric(rx, 'syncengine_hook_reads_total{scope="targeted"}') == 1
    user = env.users()["xinbumen@example.com"]
    assert set(user.get("paths") or []) == {"新事业部/新小组"}, user
    paths = {d["path"] for d in env.emulator.state()["departments"]}
    assert {"新事业部", "新事业部/新小组"} <= paths


def test_a_big_gen2_batch_reads_the_directory_once_and_keeps_the_conflicts(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    # 84 managed mailboxes: 20 updates are under the default 30 % brake (and over it
    # against the batch alone).
    env = make_env(tmp_path, emulator_factory("v2"), extra=80)
    before = env.users()
    with running_receiver(env, worker=False) as rx:
        hires = people(20)
        for i, row in enumerate(hires):
            doc = upsert(f"big-{i}", row["employee_id"], row["name"], row["email"],
                         row["departments"], position="大批")  # fmt: skip
            assert post_hook(rx.client, doc).status_code == 202
        steal = upsert("big-steal", "E0002", "李四", "wangwu@example.com", "研发中心/移动部",
                       position="工程师", mobile="13800000002", gender="女")  # fmt: skip
        steal_id = post_hook(rx.client, steal).json()["id"]
        mark = len(env.emulator.calls())
        batch = rx.backend.process_batch()
        assert (batch.events, batch.applied, batch.failed) == (21, 20, 1), batch
        reads = reads_since(env, mark)
        assert reads.count("user/list") == 1 and "user/get" not in reads, reads
        assert metric(rx, 'syncengine_hook_reads_total{scope="whole"}') == 1
        stolen = rx.backend.repo.get_event(steal_id)
        assert stolen is not None and "conflict" in (stolen.last_error or ""), stolen
    after = env.users()
    assert after["wangwu@example.com"] == before["wangwu@example.com"]
    assert after["lisi@example.com"] == before["lisi@example.com"]
    assert all(after[row["email"]]["position"] == "大批" for row in hires)
