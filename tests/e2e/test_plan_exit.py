"""Every command's process leaves its live objects out of the interpreter's last collection
(``syncengine.cli.app.freeze_at_exit``): the real commands in a child process, against the
emulator over real HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_plan_command import ROWS, Workspace

pytestmark = pytest.mark.timeout(120)

# An exit handler registered before the command runs is called after the command's own ones
# (last in, first out): it sees what the interpreter's final collection would walk.
CHILD = """
import atexit, gc, sys
atexit.register(lambda: print("FROZEN", gc.get_freeze_count(), file=sys.stderr))
from syncengine.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("command", [["plan", "--json"], ["sync", "--dry-run"]])
def test_the_heap_is_frozen_at_exit(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator], command: list[str]
) -> None:
    workspace = Workspace(tmp_path, emulator_factory("v2"))
    workspace.ingest(*ROWS.values())
    done = subprocess.run(
        [sys.executable, "-c", CHILD, "--config", str(workspace.config), *command],
        capture_output=True, text=True, timeout=100, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 2, 3), done.stderr
    frozen = [ln for ln in done.stderr.splitlines() if ln.startswith("FROZEN")]
    assert frozen and int(frozen[-1].split()[1]) > 10_000, done.stderr
