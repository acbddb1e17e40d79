"""``sync --dry-run`` lists exactly the mail group requests the real ``sync`` then sends, on a
first night (groups created) and a night with moves and a leaver (only the member changes),
both generations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
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
