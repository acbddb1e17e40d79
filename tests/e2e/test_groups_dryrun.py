"""``sync --dry-run`` lists exactly the mail group requests the real ``sync`` then sends, on a
first night (groups created) and a night with moves and a leaver (only the member changes),
both generations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_BLOCKED
from tests.e2e.test_apply_support import ApplyEnv, _endpoint, base_rows, people
from tests.e2e.test_sync import last_seq, run_json

pytestmark = pytest.mark.timeout(150)


def group_calls(env: ApplyEnv, since: int) -> Counter[str]:
    return Counter(
        _endpoint(c) for c in env.emulator.calls(since) if _endpoint(c).startswith("group/")
    )


def dry_then_real(env: ApplyEnv) -> Counter[str]:
    mark = last_seq(env)
    code, dry = run_json(env, "--dry-run")
    assert code == 0, dry
    assert group_calls(env, mark) == Counter()
    promised = Counter(
        c.split()[1].split("/", 2)[2]
        for a in dry["would_call"]
        if a["kind"].endswith("_group")
        for c in a["calls"]
    )
    code, out = run_json(env)
    assert code == 0, out
    assert group_calls(env, mark) == promised  # exactly what the dry run listed
    return promised


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_the_dry_run_lists_the_group_calls_a_real_sync_makes(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory(api))
    rows = base_rows() + people(12)
    env.write(rows, groups={"template": "grp-{path_pinyin}@example.com"})
    first = dry_then_real(env)
    created = "group/create" if api == "v2" else "group/add"
    assert first[created] >= 5 and set(first) == {created}

    # Everyone of 后端组 moves to 前端组, one person leaves: 后端组's group goes (no keeper),
    # the others change members only.
    moved = [dict(r, departments="工程部/前端组") if r["departments"] == "工程部/后端组" else r
             for r in rows]  # fmt: skip
    moved[-1] = dict(moved[-1], status="terminated")
    env.write(moved)
    second = dry_then_real(env)
    assert second["group/delete"] == 1
    if api == "v2":
        assert set(second) == {"group/update", "group/delete"}
    else:
        assert set(second) <= {"group/addmember", "group/deletemember", "group/delete"}
        assert second["group/addmember"] == 1  # only 前端组 gains members
    code, out = run_json(env)
    assert code == 0 and out["plan"]["has_changes"] is False, out


def test_a_group_losing_most_of_its_members_blocks_the_sync_until_released(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    rows = people(24)  # six in each of four departments
    env.write(rows, groups={"template": "grp-{path_pinyin}@example.com"})
    code, out = run_json(env)
    assert code == 0, out
    backend = [i for i, r in enumerate(rows) if r["departments"] == "工程部/后端组"]
    assert len(backend) == 6
    moved = [dict(r, departments="工程部/前端组") if i in backend[:5] else r
             for i, r in enumerate(rows)]  # fmt: skip
    env.write(moved)
    mark = last_seq(env)
    r = env.cli("sync")
    assert r.exit_code == EXIT_BLOCKED, r.output
    assert "1 mail group(s) would lose more than 50%" in r.stdout and "loses 5 of 6" in r.stdout
    assert "--allow-removals 5" in r.stdout
    assert group_calls(env, mark) == Counter()
    code, out = run_json(env, "--allow-removals", "5")
    assert code == 0, out
    live = {g["groupid"]: g["userlist"] for g in env.emulator.state()["groups"]}
    assert len(live["grp-gongchengbu-houduanzu@example.com"]) == 1
    assert len(live["grp-gongchengbu-qianduanzu@example.com"]) == 11


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_member_whose_address_changes_stays_in_the_group(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory(api))
    rows = [dict(r, email="lisi@example.com") if r["employee_id"] == "E0002" else r
            for r in base_rows()]  # fmt: skip
    env.write(rows, groups={"template": "grp-{path_pinyin}@example.com"})
    code, out = run_json(env)
    assert code == 0, out
    mobile = "grp-yanfazhongxin-yidongbu@example.com"

    def members() -> list[str]:
        return next(g["userlist"] for g in env.emulator.state()["groups"] if g["groupid"] == mobile)

    assert members() == ["lisi@example.com"]
    env.write(base_rows())  # 李四's address becomes si.li@example.com (alias + swap)
    code, out = run_json(env)
    assert code == 0 and out["applied"]["counts"]["failed"] == 0, out
    assert members() == ["si.li@example.com"]
    mark = last_seq(env)
    code, out = run_json(env)  # the next night: nothing to do, nothing sent
    assert code == 0 and out["plan"]["has_changes"] is False, out
    assert group_calls(env, mark) == Counter() and members() == ["si.li@example.com"]
