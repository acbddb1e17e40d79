"""The shrink brake's baseline is the last *good* snapshot, not merely the previous one.

A truncated export that arrives two nights running must stay blocked on the second night:
comparing it with the first truncated snapshot would show no shrink and disable everyone it
lost. The baseline moves only when a whole-directory plan is applied (after review, with the
release the brake names), so a real reduction is accepted once and then becomes normal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_plan_command import ROWS, Workspace

pytestmark = pytest.mark.timeout(120)

ALL = [
    ("E0001", "zhangsan@example.com"),
    ("E0002", "lisi@example.com"),
    ("E0003", "wangwu@example.com"),
    ("E0004", "zhaoliu@example.com"),
]


@pytest.fixture
def ws(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> Workspace:
    return Workspace(tmp_path, emulator_factory("v2"))


def test_truncated_export_twice_stays_blocked(ws: Workspace) -> None:
    ws.ingest(*ROWS.values())
    ws.link(*ALL)
    applied = ws.run("apply", "--yes", "--force")  # the first night: accepted as good
    assert applied.exit_code == 0, applied.output

    for night in (2, 3):  # the same truncated export, two nights running
        ws.ingest(ROWS["E0001"], ROWS["E0005"])
        result = ws.run("plan", "--detailed-exitcode")
        assert result.exit_code == 3, f"night {night}: {result.output}"
        assert "shrank from 5 to 2 people" in result.output


def test_a_released_reduction_becomes_the_new_baseline(ws: Workspace) -> None:
    ws.ingest(*ROWS.values())
    ws.link(*ALL)
    assert ws.run("apply", "--yes", "--force").exit_code == 0
    ws.ingest(ROWS["E0001"], ROWS["E0005"])
    assert ws.run("plan").exit_code == 3
    released = ws.run("apply", "--yes", "--allow-removals", "2")
    assert released.exit_code == 0, released.output

    ws.ingest(ROWS["E0001"], ROWS["E0005"])  # the reduction was real: nothing to brake now
    result = ws.run("plan", "--detailed-exitcode")
    assert result.exit_code in (0, 2), result.output
    assert "shrank" not in result.output
