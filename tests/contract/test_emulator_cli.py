"""``syncengine emulator``: the real command in a child process, and its refusals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from syncengine.cli import main

pytestmark = pytest.mark.timeout(60)


def _read_banner(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Press Ctrl+C"):
            return


READINGS = {"listen_ver": "separate", "user_mod": "reset", "dept_visible_after": 2.0,
            "invalid_token_answer": "http401", "newcount_dates": "required"}  # fmt: skip
READING_FLAGS = [
    "--listen-ver", "separate", "--user-mod", "reset", "--dept-visible-after", "2",
    "--invalid-token-answer", "http401", "--newcount-dates", "required",
]  # fmt: skip


def test_command_serves_and_prints_url_and_demo_credentials(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from syncengine.cli import main; main()",
            "emulator",
            "--api",
            "v1",
            "--port",
            "0",
            "--control",
            "--listen-hold",
            "1",
            *READING_FLAGS,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
    )
    try:
        lines: list[str] = []
        reader = threading.Thread(target=_read_banner, args=(proc, lines), daemon=True)
        reader.start()
        reader.join(30)
        assert not reader.is_alive(), f"no banner; stderr: {proc.stderr}"
        text = "".join(lines)
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", text)
        assert url, text
        assert 'client_id = "admin@example.com"' in text and "[exmail]" in text
        token = httpx.post(
            url.group(1) + "/cgi-bin/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "admin@example.com",
                "client_secret": "0123456789abcdef0123456789abcdef",
            },
            timeout=10,
        )
        assert token.status_code == 200
        assert httpx.get(url.group(1) + "/_emulator/state", timeout=10).status_code == 200
        faults = httpx.get(url.group(1) + "/_emulator/faults", timeout=10).json()
        assert {k: faults[k] for k in READINGS} == READINGS
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert not state.exists()  # no --state given: nothing written


def test_control_on_a_public_address_is_refused() -> None:
    result = CliRunner().invoke(main, ["emulator", "--host", "0.0.0.0", "--control"])
    assert result.exit_code == 1
    assert "--control-anywhere" in result.output


def test_a_bad_seed_file_names_the_entry(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        '{"corp_id": "c", "domains": ["x.example"], "departments": ["a:b"]}', encoding="utf-8"
    )
    result = CliRunner().invoke(main, ["emulator", "--seed", str(seed), "--port", "0"])
    assert result.exit_code == 1
    assert "departments[0]" in result.output and "illegal characters" in result.output
    missing = CliRunner().invoke(main, ["emulator", "--seed", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "nope.json" in missing.output
