"""One progress display for ingest, mailbox reads, planning and apply (``cli/progress.py``).

On a terminal: a live line with the count, the rate and the time left, drawn by rich; checked
here in a real pseudo-terminal around the real CLI. Not a terminal (CliRunner, cron): quiet,
a line now and then only for a stage that runs longer than a minute. With ``--json``:
nothing but the document.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.cli.progress import progress_for
from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> ApplyEnv:
    e = ApplyEnv(tmp_path, emulator_factory("v2"))
    e.write(base_rows() + people(30))
    return e


def test_not_a_terminal_short_stages_write_nothing(env: ApplyEnv) -> None:
    """CliRunner is not a terminal: stages shorter than a minute print nothing, so the
    output scripts read is what it was (no carriage returns, no counts)."""
    r = env.cli("ingest")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    assert "Read 33 records" in r.stdout

    plan = env.root / "plan.json"
    r = env.cli("plan", "--out", str(plan))
    assert r.exit_code == 0, r.output
    assert "reading mailboxes" not in r.stderr and "planning" not in r.stderr
    assert r.stderr.startswith("HR snapshot #1 ")  # the freshness line plan always wrote
    assert r.stdout.startswith("Plan ")

    r = env.cli("apply", str(plan), "--yes")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    assert "applying" not in r.stdout and "done" in r.stdout


def test_with_json_there_is_no_progress_at_all(env: ApplyEnv) -> None:
    r = env.cli("ingest", "--json")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    json.loads(r.stdout)
    plan = env.root / "plan.json"
    r = env.cli("plan", "--out", str(plan))
    assert r.exit_code == 0, r.output
    r = env.cli("apply", str(plan), "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert r.stderr == ""
    assert json.loads(r.stdout)["applied"]["status"] == "applied"


def _run_in_pty(env: ApplyEnv, *args: str) -> tuple[int, str, str]:
    """The real ``syncengine`` with its stderr on a pseudo-terminal: (exit code, stdout,
    what the terminal showed with the escape sequences removed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "syncengine"), "--config", str(env.config_path),
         *args],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=env.root,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "140"},
    )  # fmt: skip
    os.close(slave)
    screen = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "the command stopped writing for a minute"
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    code = proc.wait(timeout=60)
    return code, out, ANSI.sub("", screen.decode(errors="replace")).replace("\r", "\n")


def test_on_a_terminal_apply_shows_count_rate_and_time_left(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    # 120 ms a call: the apply lasts long enough (over a second) for a rate and a time left.
    env = ApplyEnv(tmp_path, emulator_factory("v2", latency_ms=120))
    env.write(base_rows() + people(30))
    assert env.cli("ingest").exit_code == 0
    plan = env.root / "plan.json"
    assert env.cli("plan", "--out", str(plan)).exit_code == 0
    actions = len(json.loads(plan.read_text(encoding="utf-8"))["actions"])

    code, out, screen = _run_in_pty(env, "apply", str(plan), "--yes")
    assert code == 0, screen
    lines = [ln.rstrip() for ln in screen.splitlines() if ln.startswith("applying")]
    assert lines and f" {actions}/{actions}  100%" in lines[-1], screen
    pattern = r"\b\d+/\d+\s+\d+%\s+\d+/s, \d:\d\d:\d\d left$"
    running = [ln for ln in lines if re.search(pattern, ln)]
    assert running, screen  # count, percentage, time left and rate while it runs
    assert "done" in out  # the outcome still goes to stdout


def test_on_a_terminal_ingest_counts_without_a_total(env: ApplyEnv) -> None:
    code, out, screen = _run_in_pty(env, "ingest")
    assert code == 0, screen
    assert re.search(r"^reading\s.*\b33/33\b", screen, re.M), screen
    assert "Read 33 records" in out


def test_quiet_lines_tell_a_long_stage_is_alive_and_its_time_left() -> None:
    now = [100.0]
    stream = io.StringIO()
    progress = progress_for(False, stream=stream, clock=lambda: now[0], log_every=30.0)
    progress.ingest("reading", 500)  # a short stage: nothing
    now[0] += 29.0
    progress.ingest("storing", 500)  # ends "reading" after 29 s: still nothing
    now[0] += 1.0
    for done in range(0, 1001, 10):  # ends "storing" after 1.5 s; apply starts at 130.5
        now[0] += 0.5  # 20 actions per second
        progress.apply(done, 1000)
    progress.apply(1000, 1000)  # the same final count again: not a second line
    progress.close()
    lines = stream.getvalue().splitlines()
    assert lines == [
        "applying: 600/1,000 so far, about 20 s left, 20/s",
        "applying: 1,000/1,000 in 50.0 s, 20/s",
    ]


def test_json_output_has_no_display_and_a_terminal_is_told_by_the_stream() -> None:
    assert not progress_for(True).shown
    assert progress_for(False, stream=io.StringIO()).shown


def test_on_a_terminal_plan_shows_reading_planning_and_the_address_checks(env: ApplyEnv) -> None:
    """Planning is not silent while Exmail checks the addresses to create."""
    assert env.cli("ingest").exit_code == 0
    code, out, screen = _run_in_pty(env, "plan")
    assert code == 0, screen
    assert re.search(r"^reading mailboxes\s.*\b(\d+)/\1\b", screen, re.M), screen
    assert re.search(r"^planning\s.*\b33/33\b", screen, re.M), screen
    assert re.search(r"^checking addresses\s.*\b(\d+)/\1\b", screen, re.M), screen
    assert out.startswith("Plan ")
