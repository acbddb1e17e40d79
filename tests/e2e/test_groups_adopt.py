"""Adoption end to end (Gen 2): a department group that already exists in Exmail is read
with ``group/get`` and taken over when ``[groups] adopt`` lists it (an ``adopt_group`` action
with its reason, audited, then owned like a group the engine created); an existing group not
listed stays a conflict. ``sync --dry-run`` lists exactly the calls the real ``sync`` sends.
Through the CLI, a real SQLite staging file and the emulator over real HTTP."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_ERROR
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository
from tests.e2e.test_apply_support import ApplyEnv, _endpoint, base_rows
from tests.e2e.test_sync import last_seq, run_json

pytestmark = pytest.mark.timeout(150)

SEED = Path(__file__).resolve().parents[2] / "samples" / "emulator-seed.json"
HR = "grp-renliziyuanbu@example.com"  # 人力资源部: 赵六
MOBILE = "grp-yanfazhongxin-yidongbu@example.com"  # 研发中心/移动部: 李四


def group_writes(env: ApplyEnv, since: int) -> Counter[str]:
    return Counter(
        e for c in env.emulator.calls(since)
        if (e := _endpoint(c)).startswith("group/") and e != "group/get"
    )  # fmt: skip


def dry_then_real(env: ApplyEnv) -> Counter[str]:
    """The group writes a dry run lists are the ones the real sync sends (both plan the same
    way, so both read the existing group with group/get; the dry run writes nothing)."""
    mark = last_seq(env)
    code, dry = run_json(env, "--dry-run")
    assert code == 0, dry
    assert group_writes(env, mark) == Counter()
    promised = Counter(
        c.split()[1].split("/", 2)[2]
        for a in dry["would_call"]
        if a["kind"].endswith("_group")
        for c in a["calls"]
    )
    mark = last_seq(env)
    code, out = run_json(env)
    assert code == 0, out
    assert group_writes(env, mark) == promised
    return promised


def seeded(emu: RunningEmulator) -> RunningEmulator:
    seed = copy.deepcopy(json.loads(SEED.read_text(encoding="utf-8")))
    seed["groups"] += [
        {"groupid": HR, "groupname": "HR team", "userlist": ["wangwu@example.com",
                                                              "zhangsan@example.com"]},
        {"groupid": MOBILE, "groupname": "mobile", "userlist": ["zhangsan@example.com"]},
    ]  # fmt: skip
    emu.reseed(seed)
    return emu


def test_a_listed_existing_group_is_adopted_and_then_owned(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, seeded(emulator_factory("v2")))
    env.write(base_rows(), groups={"template": "grp-{path_pinyin}@example.com", "adopt": [HR]})
    code, dry = run_json(env, "--dry-run")
    assert code == 0, dry
    adopt = next(a for a in dry["would_call"] if a["kind"] == "adopt_group")
    assert adopt["target"] == HR
    assert [c["message"] for c in dry["conflicts"] if MOBILE in c["message"]], dry["conflicts"]

    calls = dry_then_real(env)
    assert calls == Counter({"group/create": 1, "group/update": 1}), calls
    groups = {g["groupid"]: g for g in env.emulator.state()["groups"]}
    assert groups[HR]["userlist"] == ["zhaoliu@example.com"]  # wangwu, zhangsan removed
    assert groups[HR]["groupname"] == "人力资源部"
    assert groups[MOBILE]["userlist"] == ["zhangsan@example.com"]  # not listed: untouched
    gets = [c for c in env.emulator.calls() if c["endpoint"].endswith("group/get")]
    assert gets, "the existing group is read with group/get before it is adopted"
    with Repository(staging_db.make_engine(f"sqlite:///{env.db_path}")) as repo:
        owned = {g.address: g for g in repo.load_groups()}
        audit = [e for e in repo.query_audit(email=HR) if e.kind == "adopt_group"]
    assert owned[HR].key == "dept:人力资源部" and owned[HR].members == ("zhaoliu@example.com",)
    assert any(e.result == "done" for e in audit), audit

    # Owned from now on: a quiet night, then a newcomer joins with a minimal update.
    code, out = run_json(env)
    assert code == 0 and out["plan"]["has_changes"] is False, out
    env.write([*base_rows(), dict(base_rows()[2], employee_id="E0009", name="新人",
                                  email="xinren@example.com")])  # fmt: skip
    calls = dry_then_real(env)
    assert calls == Counter({"group/update": 1}), calls
    groups = {g["groupid"]: g for g in env.emulator.state()["groups"]}
    assert groups[HR]["userlist"] == ["xinren@example.com", "zhaoliu@example.com"]


def test_gen1_refuses_adoption_before_any_call(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, seeded(emulator_factory("v1")))
    env.write(base_rows(), groups={"template": "grp-{path_pinyin}@example.com",
                                   "adopt_existing": True})  # fmt: skip
    mark = last_seq(env)
    r = env.cli("sync")
    assert r.exit_code == EXIT_ERROR, r.output
    assert "groups.adopt_existing: Gen 1" in r.output and "no group/get" in r.output
    assert env.emulator.calls(mark) == []
