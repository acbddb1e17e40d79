"""Gen 1 incremental read: the nightly run reads only what ``user/list`` says changed.

Through the real CLI against the Gen 1 emulator over HTTP, with a real SQLite staging file:
a quiet night sends ``user/list`` once and nothing else (no ``party/list``: the tree is the
stored one, kept current by the engine's own party writes), also with 200 departments; a
change made behind the engine's back (in the emulator's admin console through its control
API, or by another Gen 1 client's ``user/sync`` / ``party/sync``) is seen by the next run,
a department created or renamed with members included; a department the plan creates has its
parent listed first; a cursor the server refuses (a directory re-seeded, so its journal starts
after the cursor), a missing one, or a full read due by ``full_read_days`` (weekly by
default) reads every member again; and the plan made from an incremental read is the plan
made from a full one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.emulator.seed import big_seed
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people, person

pytestmark = pytest.mark.timeout(240)

STORE = "exmail.v1.directory"
TREE = "exmail.v1.parties"


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
    # The tree is the stored one: no party/list at all (it used to be one per party).
    assert seen.get("party/list", 0) == 0, (seen, parties(emu))
    assert sum(seen.values()) <= 2, seen  # user/list (and a token when it expired)
    assert not env.write_calls(since)


def stored_rows(env: ApplyEnv) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(env.db_path) as db:
        rows = db.execute("SELECT name, value, updated_at FROM watch_state").fetchall()
    return {name: (value, updated) for name, value, updated in rows}


def test_a_quiet_night_leaves_the_stored_directory_as_it_was(env: ApplyEnv) -> None:
    """Nothing in the journal, the same version: the 10,000-member row is not encoded and
    written again (a quarter of a second on a quiet night); a change rewrites it."""
    before = stored_rows(env)
    sync(env)
    after = stored_rows(env)
    assert after[STORE] == before[STORE] and after[TREE] == before[TREE]
    env.emulator.control("POST", "user", {"userid": "t101@example.com", "position": "厨师"})
    sync(env)
    assert stored_rows(env)[STORE][1] != before[STORE][1]


def stored_tree(env: ApplyEnv) -> list[str]:
    with sqlite3.connect(env.db_path) as db:
        row = db.execute("SELECT value FROM watch_state WHERE name = ?", (TREE,)).fetchone()
    assert row is not None, "no stored tree"
    tree: list[str] = json.loads(row[0])["parties"]
    return tree


def gen1_write(emu: RunningEmulator, call: str, form: dict[str, str]) -> None:
    """A write by another Gen 1 client (the same admin account), behind the engine's back."""
    with httpx.Client(base_url=emu.base_url, timeout=10) as http:
        token = gen1_token(http, emu)
        answer = http.post(
            "/openapi/" + call, data=form, headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 200 and not answer.content.strip(), answer.text


def test_a_quiet_night_in_200_departments_makes_fewer_than_50_calls(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    """1,000 members in 200 departments, HR as the server has them: the first run reads in
    full (one party/list per department), the next makes a handful of calls."""
    seed = big_seed(1000, 200)
    emu = emulator_factory("v1", seed=seed)
    env = ApplyEnv(tmp_path, emu)
    env.write([
        person(u["extid"], u["name"], u["userid"], u["department"][0],
               position=u["position"], gender="男" if u["gender"] == "1" else "女")
        for u in seed["users"]
    ])  # fmt: skip
    since = last_seq(emu)
    report = sync(env)
    full = counts(emu, since)
    assert full.get("party/list") == 201 and full.get("user/get") == 1000, full
    assert report["status"] in ("succeeded", "no-changes"), report
    since = last_seq(emu)
    sync(env)
    quiet = counts(emu, since)
    assert sum(quiet.values()) < 50, quiet
    assert quiet.get("party/list", 0) == 0 and quiet.get("user/get", 0) == 0, quiet
    assert len(stored_tree(env)) == 200


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


def test_a_department_renamed_behind_the_engines_back_is_seen_next_night(
    env: ApplyEnv,
) -> None:
    """The emulator journals a MOD for each member of a renamed party (their PartyList
    changed): the next night reads them, finds 市场销售部 unknown, lists the root again (not
    the whole tree), and puts HR's 销售部 back."""
    emu = env.emulator
    gen1_write(emu, "party/sync", {"Action": "3", "SrcPath": "销售部", "DstPath": "市场销售部"})
    since = last_seq(emu)
    sync(env)
    env.assert_converged()
    seen = counts(emu, since)
    assert seen.get("user/get", 0) >= 7, seen
    assert 1 <= seen.get("party/list", 0) < parties(emu), (seen, parties(emu))
    assert "销售部" in stored_tree(env)
    since = last_seq(emu)
    sync(env)  # and the night after is quiet again
    assert counts(emu, since).get("party/list", 0) == 0


def test_a_department_created_behind_the_engines_back_with_a_member_is_seen(
    env: ApplyEnv,
) -> None:
    emu = env.emulator
    new = "工程部/新成立组/一队"
    gen1_write(emu, "party/sync", {"Action": "2", "DstPath": new})
    gen1_write(emu, "user/sync", {"Action": "3", "Alias": "t101@example.com", "PartyPath": new})
    since = last_seq(emu)
    actions = plan_actions(env)
    seen = counts(emu, since)
    # The member's PartyList names a department the stored tree does not know: 工程部's
    # level is listed again and the new subtree walked (3 calls, not one per party).
    assert 1 <= seen.get("party/list", 0) <= 4, seen
    assert {"工程部/新成立组", "工程部/新成立组/一队"} <= set(stored_tree(env))
    hr = next(r["departments"] for r in env.rows if r["email"] == "t101@example.com")
    moved = [a["changes"] for a in actions if a.get("employee_id") == "T00101"]
    assert moved == [{"departments": [[new], [hr]]}], actions  # HR's department back
    sync(env)
    assert env.users()["t101@example.com"]["paths"] == [hr]


def test_a_department_the_plan_creates_has_its_parent_listed_first(env: ApplyEnv) -> None:
    """工程部/新组 was made (empty) behind the engine's back, so the stored tree does not know
    it and the plan creates it: the create lists 工程部 first, finds it there, and counts it
    as done; the hire lands in it, and the next night lists nothing."""
    emu = env.emulator
    gen1_write(emu, "party/sync", {"Action": "2", "DstPath": "工程部/新组"})
    env.write([*env.rows, person("T09001", "新人", "xin@example.com", "工程部/新组",
                                 gender="男")])  # fmt: skip
    since = last_seq(emu)
    report = sync(env)
    assert report["status"] == "succeeded", report
    seen = counts(emu, since)
    assert seen.get("party/list", 0) >= 1, seen
    assert env.users()["xin@example.com"]["paths"] == ["工程部/新组"]
    assert "工程部/新组" in stored_tree(env)
    # A department the engine creates itself is in the stored tree too.
    env.write([*env.rows, person("T09002", "又一个", "you@example.com", "财务部/审计组",
                                 gender="女")])  # fmt: skip
    sync(env)
    assert "财务部/审计组" in stored_tree(env)
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("party/list", 0) == 0


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


def age_full_read(env: ApplyEnv, days: float) -> None:
    """Make the stored directory's last full read ``days`` old."""
    with sqlite3.connect(env.db_path) as db:
        (text,) = db.execute("SELECT value FROM watch_state WHERE name = ?", (STORE,)).fetchone()
        data = json.loads(text)
        data["full_read_at"] = time.time() - days * 86400
        db.execute("UPDATE watch_state SET value = ? WHERE name = ?", (json.dumps(data), STORE))


def test_the_weekly_full_read_still_happens_at_its_interval(env: ApplyEnv) -> None:
    """Default settings (``full_read_days`` 7): a directory last read in full six days ago is
    read incrementally, one read eight days ago in full (every member, the whole tree), and
    the night after that is quiet again."""
    emu = env.emulator
    members = len(env.users())
    age_full_read(env, 6)
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("user/get", 0) == 0
    age_full_read(env, 8)
    since = last_seq(emu)
    sync(env)
    seen = counts(emu, since)
    assert seen.get("user/get", 0) == members and seen.get("party/list") == parties(emu), seen
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("user/get", 0) == 0


def test_a_missing_tree_is_walked_again_without_a_full_read(env: ApplyEnv) -> None:
    emu = env.emulator
    with sqlite3.connect(env.db_path) as db:
        db.execute("DELETE FROM watch_state WHERE name = ?", (TREE,))
    since = last_seq(emu)
    sync(env)
    seen = counts(emu, since)
    assert seen.get("party/list") == parties(emu) and seen.get("user/get", 0) == 0, seen
    assert len(stored_tree(env)) == parties(emu) - 1  # the root is not stored
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("party/list", 0) == 0


def test_full_read_flag_reads_every_member_once(env: ApplyEnv) -> None:
    """``sync --full-read`` / ``plan --full-read``: this run reads in full (every member, the
    whole tree); the stored cursor stays, so the next night is incremental again."""
    emu = env.emulator
    members = len(env.users())
    for command in (("sync", "--json", "--full-read"), ("plan", "--json", "--full-read")):
        since = last_seq(emu)
        r = env.cli(*command)
        assert r.exit_code == 0, r.output
        seen = counts(emu, since)
        assert seen.get("user/get") == members and seen.get("party/list") == parties(emu), seen
    since = last_seq(emu)
    sync(env)
    assert counts(emu, since).get("user/get", 0) == 0
    r = env.cli("sync", "--all", "--full-read")
    assert r.exit_code == 64 and "--full-read works on one tenant" in r.output, r.output


def test_a_server_that_does_not_journal_moved_members_still_gets_them_reread(
    env: ApplyEnv,
) -> None:
    """A server that does not journal the members of a renamed department (the emulator does;
    the sources are silent): simulated by moving the stored cursor past the rename's entries.
    One member edited since names the new path, the root is listed again, 销售部 is gone, and
    every stored member of it is read again: the run puts them all back."""
    emu = env.emulator
    gen1_write(emu, "party/sync", {"Action": "3", "SrcPath": "销售部", "DstPath": "市场销售部"})
    with httpx.Client(base_url=emu.base_url, timeout=10) as http:
        token = gen1_token(http, emu)
        answer = http.post("/openapi/user/list", data={"Ver": "0"},
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        version = str(answer.json()["Ver"])
    with sqlite3.connect(env.db_path) as db:
        (text,) = db.execute("SELECT value FROM watch_state WHERE name = ?", (STORE,)).fetchone()
        data = json.loads(text)
        data["version"] = version  # the rename's journal entries are skipped
        db.execute("UPDATE watch_state SET value = ? WHERE name = ?", (json.dumps(data), STORE))
    in_sales = [r["email"] for r in env.rows if r["departments"] == "销售部"]
    assert len(in_sales) >= 3, in_sales
    emu.control("POST", "user", {"userid": in_sales[0], "position": "厨师"})
    since = last_seq(emu)
    sync(env)
    seen = counts(emu, since)
    assert seen.get("user/get", 0) >= len(in_sales), seen
    assert seen.get("party/list", 0) < parties(emu), seen
    env.assert_converged()
