"""Gen 1 incremental read: the nightly run reads only what ``user/list`` says changed.

Through the real CLI against the Gen 1 emulator over HTTP, with a real SQLite staging file:
a quiet night sends ``user/list`` once, walks the party tree and makes no ``user/get``; a
change made behind the engine's back (in the emulator's admin console through its control
API, or by another Gen 1 client's ``user/sync``) is seen by the next run; a cursor the server
refuses (a directory re-seeded, so its journal starts after the cursor), a missing one, or a
full read due by ``full_read_days`` reads every member again; and the plan made from an
incremental read is the plan made from a full one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(240)

STORE = "exmail.v1.directory"


def endpoint(call: dict[str, Any]) -> str:
    return str(call.get("endpoint") or "").removeprefix("/openapi/").removeprefix("/cgi-bin/")


def counts(emu: RunningEmulator, since: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for call in emu.calls(since):
        out[endpoint(call)] = out.get(endpoint(call), 0) + 1
    return out


def last_seq(emu: RunningEmulator) -> int:
    calls = emu.calls()
    return int(calls[-1]["seq"]) if calls else 0


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    """A Gen 1 company of 36 people that the engine has synced (and read once more since)."""
    emu = emulator_factory("v1")
    env = ApplyEnv(tmp_path, emu)
    env.write([*base_rows(), *people(30)])
    for _ in range(2):  # the first sync writes; the second reads its own writes back
        r = env.cli("sync", "--json")
        assert r.exit_code == 0, r.output
    env.assert_converged()
    return env


def gen1_token(http: httpx.Client, emu: RunningEmulator) -> str:
    """A token of another Gen 1 client (the same admin account)."""
    cfg = emu.exmail_config()
    form = {"grant_type": "client_credentials", "client_id": cfg["client_id"],
            "client_secret": cfg["client_secret"]}  # fmt: skip
    token: str = http.post("/cgi-bin/token", data=form).json()["access_token"]
    return token


def sync(env: ApplyEnv) -> dict[str, Any]:
    r = env.cli("sync", "--json")
    assert r.exit_code == 0, r.output
    report: dict[str, Any] = json.loads(r.output)
    return report


def plan_actions(env: ApplyEnv) -> list[dict[str, Any]]:
    r = env.cli("plan", "--json")
    assert r.exit_code in (0, 2), r.output
    plan = json.loads(r.output)["plan"]
    actions: list[dict[str, Any]] = plan["actions"]
    return actions


def parties(emu: RunningEmulator) -> int:
    return len(emu.state()["departments"])


def test_a_quiet_night_lists_changes_once_and_gets_no_member(env: ApplyEnv) -> None:
    emu = env.emulator
    since = last_seq(emu)
    sync(env)
    seen = counts(emu, since)
    assert seen.get("user/get", 0) == 0, seen
    assert seen.get("user/list") == 1, seen
    assert seen.get("partyuser/list", 0) == 0, seen
    # party/list once per party (the root included): departments are not in the journal.
    assert seen.get("party/list") == parties(emu), (seen, parties(emu))
    assert sum(seen.values()) < 50, seen
    assert not env.write_calls(since)


def test_an_admin_console_change_is_seen_by_the_next_run(env: ApplyEnv) -> None:
    emu = env.emulator
    emu.control("POST", "user", {"userid": "t101@example.com", "position": "厨师"})
    since = last_seq(emu)
    report = sync(env)
    seen = counts(emu, since)
    # The changed member was read (once for the plan, once more by the MOD's whole-record
    # write), and the run put HR's position back.
    assert 1 <= seen.get("user/get", 0) <= 3, seen
    assert report["status"] == "succeeded", report
    assert env.users()["t101@example.com"]["position"] == "工程师1"


def test_another_clients_gen1_write_is_seen_by_the_next_run(env: ApplyEnv) -> None:
    emu = env.emulator
    with httpx.Client(base_url=emu.base_url, timeout=10) as http:
        token = gen1_token(http, emu)
        answer = http.post(
            "/openapi/user/sync",
            data={"Action": "3", "Alias": "t102@example.com", "Name": "改过的名字"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200 and not answer.content.strip(), answer.text
    assert env.users()["t102@example.com"]["name"] == "改过的名字"
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("user/get", 0) >= 1
    assert env.users()["t102@example.com"]["name"] == "测试员102"


def test_a_department_renamed_behind_the_engines_back_rereads_its_members(
    env: ApplyEnv,
) -> None:
    """The emulator does not journal the members of a renamed party (a real server may not
    either): the vanished path makes the reader fetch them again."""
    emu = env.emulator
    with httpx.Client(base_url=emu.base_url, timeout=10) as http:
        token = gen1_token(http, emu)
        answer = http.post(
            "/openapi/party/sync",
            data={"Action": "3", "SrcPath": "销售部", "DstPath": "市场销售部"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200 and not answer.content.strip(), answer.text
    since = last_seq(emu)
    sync(env)
    # HR's 销售部 is made again and its members are moved back into it.
    env.assert_converged()
    assert counts(emu, since).get("user/get", 0) >= 7


def test_a_refused_cursor_falls_back_to_a_full_read(env: ApplyEnv) -> None:
    """Re-seeding starts a new journal: the stored cursor is older than its start, the
    server refuses it (1100), and the run reads every member."""
    emu = env.emulator
    emu.reseed(emu.seed)  # the default six people only: HR's 30 new hires are gone
    since = last_seq(emu)
    # The six are as the seed has them again (E0002's address swap undone, which the link
    # guard refuses to redo: exit 4); what matters here is what the run read.
    r = env.cli("sync", "--json")
    assert r.exit_code in (0, 4), r.output
    seen = counts(emu, since)
    refused = [c for c in emu.calls(since) if endpoint(c) == "user/list" and c["errcode"]]
    # (the re-seed dropped the token too: 1200, a fresh token, then the cursor's 1100)
    assert "1100" in {str(c["errcode"]) for c in refused}, refused
    assert seen.get("user/get", 0) >= len(emu.seed["users"]), seen
    # The full read saw the hires gone, so the run made them again.
    users = env.users()
    assert all(row["email"] in users for row in people(30)), sorted(users)


def test_a_missing_cursor_or_a_due_full_read_reads_every_member(env: ApplyEnv) -> None:
    emu = env.emulator
    members = len(env.users())
    with sqlite3.connect(env.db_path) as db:
        db.execute("DELETE FROM watch_state WHERE name = ?", (STORE,))
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("user/get", 0) == members
    # full_read_days = 0: every read is a full one.
    env.write(exmail={"full_read_days": 0})
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("user/get", 0) == members
    # Back to the default: the next night is incremental again.
    env.extra["exmail"].pop("full_read_days")
    env.write()
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("user/get", 0) == 0


def test_the_plan_from_an_incremental_read_is_the_plan_from_a_full_one(env: ApplyEnv) -> None:
    emu = env.emulator
    emu.control("POST", "user", {"userid": "t103@example.com", "position": "厨师"})
    emu.control("POST", "user", {"userid": "t104@example.com", "enable": 0})
    env.write([*env.rows[:-1], *people(2, start=500)])  # a leaver and two hires in HR
    r = env.cli("ingest")
    assert r.exit_code == 0, r.output
    since = last_seq(emu)
    incremental = plan_actions(env)
    assert counts(emu, since).get("user/get", 0) < 10
    env.write(exmail={"full_read_days": 0})
    since = last_seq(emu)
    full = plan_actions(env)
    assert counts(emu, since).get("user/get", 0) == len(env.users())
    assert incremental, "nothing to plan: nothing compared"
    assert incremental == full
