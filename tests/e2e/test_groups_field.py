"""Mail groups from an HR field, end to end: ``[mapping.labels]`` keeps the HR column
(here the ``position`` column, as a "title" label), ``[[groups.by_field]]`` makes one group per
distinct value; ``sync --dry-run`` lists exactly the group calls the real ``sync`` sends,
through the CLI, a real SQLite staging file and the emulator over real HTTP, both
generations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people
from tests.e2e.test_groups_dryrun import dry_then_real
from tests.e2e.test_groups_resume import (
    test_sigkill_during_group_creation_then_resume as kill_then_resume,
)
from tests.e2e.test_sync import run_json

pytestmark = pytest.mark.timeout(150)

BY_TITLE = {"by_field": [{"field": "title", "template": "role-{value}@example.com",
                          "name": "{field} {value}"}]}  # fmt: skip


def live(env: ApplyEnv) -> dict[str, list[str]]:
    return {g["groupid"]: sorted(g["userlist"]) for g in env.emulator.state()["groups"]}


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_group_per_value_follows_hr(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory(api))
    rows = base_rows() + people(6)  # positions 工程师0..2 for the new hires
    env.write(rows, groups=BY_TITLE)
    env.extra["mapping"] = {"labels": {"title": "position"}}
    env.write()
    first = dry_then_real(env)
    created = "group/create" if api == "v2" else "group/add"
    # 架构师, 工程师 (李四), 工程师0, 工程师1, 工程师2; 赵六 has no position: no group
    assert first == Counter({created: 5}), first
    groups = live(env)
    assert groups["role-gongchengshi0@example.com"] == ["t100@example.com",
                                                        "t103@example.com"]  # fmt: skip
    assert groups["role-jiagoushi@example.com"] == ["zhangsan@example.com"]
    assert not any(g.startswith("dept-") for g in groups)  # no department template: none
    with Repository(staging_db.make_engine(f"sqlite:///{env.db_path}")) as repo:
        keys = {g.key: g.address for g in repo.load_groups()}
    assert keys["field:title:架构师"] == "role-jiagoushi@example.com"

    # T00100 changes title, 张三 takes a title that is already a mailbox's address.
    moved = [dict(r, position="工程师1") if r["employee_id"] == "T00100" else r for r in rows]
    moved[0] = dict(moved[0], position="lisi")
    env.write(moved)
    second = dry_then_real(env)
    if api == "v2":  # one whole-list update per changed group, the retiring one to the keeper
        assert second == Counter({"group/update": 2, "group/delete": 1, "group/create": 1})
    else:
        assert second["group/delete"] == 1 and second["group/add"] == 1
        assert second["group/addmember"] == 1 and second["group/deletemember"] == 1
    groups = live(env)
    assert groups["role-gongchengshi0@example.com"] == ["t103@example.com"]
    assert groups["role-gongchengshi1@example.com"] == ["t100@example.com",
                                                        "t101@example.com",
                                                        "t104@example.com"]  # fmt: skip
    assert "role-jiagoushi@example.com" not in groups  # no keeper: deleted with its value
    assert groups["role-lisi@example.com"] == ["zhangsan@example.com"]
    code, out = run_json(env)
    assert code == 0 and out["plan"]["has_changes"] is False, out


def test_a_value_whose_address_is_a_mailbox_is_a_conflict(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    env = ApplyEnv(tmp_path, emulator_factory("v1"))
    rows = [dict(r, position="zhaoliu") if r["employee_id"] == "E0001" else r
            for r in base_rows()]  # fmt: skip
    env.extra["mapping"] = {"labels": {"title": "position"}}
    env.write(rows, groups={"by_field": [{"field": "title", "template": "{value}@example.com"}]})
    code, out = run_json(env)
    assert code == 0, out
    assert [c["kind"] for c in out["conflicts"]] == ["group_address_taken"]
    assert "title 'zhaoliu'" in out["conflicts"][0]["message"]
    assert "zhaoliu@example.com" not in live(env)
    assert live(env)["gongchengshi@example.com"] == ["si.li@example.com"]


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_field_groups_survive_a_kill_and_resume(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    """The department groups' ``kill -9`` / ``apply --resume`` scenario, with groups from an
    HR field instead (projects 项目0..项目5 and two titles: eight groups)."""
    env = ApplyEnv(tmp_path, emulator_factory(api))
    env.extra["mapping"] = {"labels": {"title": "position"}}
    hires = [dict(r, position=f"项目{i % 6}") for i, r in enumerate(people(24))]
    env.write(base_rows() + hires, apply={"concurrency": 3},
              groups={**BY_TITLE, "keeper": "admin@example.com"})  # fmt: skip
    kill_then_resume(env)
    assert "role-xiangmu5@example.com" in live(env)
