"""``apply PLANFILE``'s start: the plan file recognised as a saved plan's document, the live
directory read under the lock while the file decodes (Gen 2), and what must still refuse."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine import service
from syncengine.emulator.harness import RunningEmulator
from syncengine.errors import EXIT_ERROR
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository, document_sha256
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["v1", "v2"])
def env(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    emulator_factory: Callable[..., RunningEmulator],
) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory(request.param))
    e.write(base_rows() + people(12))
    return e


def _repo(env: ApplyEnv) -> Repository:
    return Repository(staging_db.make_engine(f"sqlite:///{env.db_path}"))


def test_the_plan_file_is_found_as_the_saved_plans_document(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    plan = service.read_plan_file(plan_file)
    with _repo(env) as repo:
        found = repo.plan_of_document(document_sha256(plan_file.read_bytes()))
        assert found is not None and found.checksum == plan.checksum
        edited = plan_file.read_text(encoding="utf-8").replace("测试员100", "测试员999")
        assert repo.plan_of_document(document_sha256(edited)) is None


def test_a_plan_resumed_first_makes_the_early_read_stale(env: ApplyEnv) -> None:
    """Plan A was being applied when the process died before its first action; plan B was
    made from the same directory. ``apply B`` reads the directory while B decodes, then
    finishes A first: A wrote, so that read no longer tells whether B is stale. It is read
    again, and B (planned before A's creates) is refused as stale."""
    first = env.ingest_and_plan("a.json")
    a = service.read_plan_file(first)
    with _repo(env) as repo:
        header = repo.plan_header(a.checksum)
        assert header is not None
        repo.set_plan_status(header.id, "applying")  # killed before its first action
    second = env.ingest_and_plan("b.json")
    b = service.read_plan_file(second)
    assert b.checksum != a.checksum and b.state_fingerprint == a.state_fingerprint

    r = env.cli("apply", str(second))

    assert r.exit_code == EXIT_ERROR, r.output
    assert "stale plan" in r.output
    env.assert_converged()  # by plan A, resumed
    with _repo(env) as repo:
        statuses = [repo.plan_header(p.checksum) for p in (a, b)]
        assert [h.status if h else None for h in statuses] == ["applied", "abandoned"]


def test_a_plan_file_decodes_without_garbage_collections(env: ApplyEnv) -> None:
    plan_file = env.ingest_and_plan()
    runs: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    gc.collect()
    gc.callbacks.append(count)
    try:
        for _ in range(20):  # ~50 objects per action: several collections' worth
            plan = service.read_plan_file(plan_file)
    finally:
        gc.callbacks.remove(count)
    assert plan.actions and runs == []
    assert gc.isenabled()


def test_an_edited_copy_of_a_saved_plan_is_still_refused(env: ApplyEnv) -> None:
    """The stored checksum is taken only for the saved document's exact bytes."""
    plan_file = env.ingest_and_plan()
    text = plan_file.read_text(encoding="utf-8")
    for name, edited in {
        "name.json": text.replace("测试员100", "测试员999"),
        "spaces.json": text.replace('"name": "测试员100"', '"name":  "测试员100"'),
    }.items():
        assert edited != text
        path = plan_file.with_name(name)
        path.write_text(edited, encoding="utf-8")
        r = env.cli("apply", str(path), "--json")
        if name == "spaces.json":  # the same plan, written differently: the same checksum
            assert r.exit_code == 0, r.output
            assert json.loads(r.output)["applied"]["status"] == "applied"
        else:
            assert r.exit_code == EXIT_ERROR and "checksum mismatch" in r.output


def test_the_apply_command_leaves_its_callers_heap_as_it_found_it(env: ApplyEnv) -> None:
    """The command freezes the heap once the plan is decoded (the apply's collections skip
    the plan); a process that goes on after it (this test runner) gets it back unfrozen."""
    plan_file = env.ingest_and_plan()
    gc.unfreeze()
    r = env.cli("apply", str(plan_file), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["applied"]["status"] == "applied"
    assert gc.get_freeze_count() == 0
