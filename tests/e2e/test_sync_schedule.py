"""The scheduling samples really run: the cron line through /bin/sh and the systemd unit's
ExecStart with its environment, each with the sample's paths pointed at a temporary
folder, against the emulator over real HTTP."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import REPO, ApplyEnv, base_rows, people

pytestmark = pytest.mark.timeout(120)

SAMPLES = REPO / "samples"
VENV_BIN = Path(sys.executable).parent
SECRET_VAR = "EXMAIL_CONTACTS_SECRET"


class Machine:
    """The sample's absolute paths, mapped into a temporary folder."""

    def __init__(self, root: Path, env: ApplyEnv):
        self.root = root
        self.etc = root / "etc" / "syncengine"
        self.state = root / "var" / "lib" / "syncengine"
        self.logs = root / "var" / "log" / "syncengine"
        for d in (self.etc, self.state, self.logs):
            d.mkdir(parents=True)
        # The config, with the Exmail secret taken from the environment file.
        text = env.config_path.read_text(encoding="utf-8")
        secret = env.emulator.seed["secrets"]["contacts"]
        assert f'contacts = "{secret}"' in text
        text = text.replace(f'contacts = "{secret}"', f'contacts = "env:{SECRET_VAR}"')
        (self.etc / "syncengine.toml").write_text(text, encoding="utf-8")
        (self.etc / "syncengine.env").write_text(f"{SECRET_VAR}={secret}\n", encoding="utf-8")
        (self.etc / "syncengine.env").chmod(0o600)

    def localise(self, text: str) -> str:
        return (
            text.replace("/opt/syncengine/.venv/bin/", f"{VENV_BIN}/")
            .replace("/etc/syncengine/", f"{self.etc}/")
            .replace("/var/lib/syncengine", str(self.state))
            .replace("/var/log/syncengine", str(self.logs))
        )

    def report(self) -> dict[str, object]:
        today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()  # company's day
        path = self.state / "reports" / f"sync-{today}.json"
        assert path.exists(), sorted(p.name for p in self.state.rglob("*"))
        data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
        return data


@pytest.fixture
def machine(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> tuple[Machine, ApplyEnv]:
    env = ApplyEnv(tmp_path / "work", emulator_factory("v2"))
    env.root.mkdir()
    env.write(base_rows() + people(6))
    m = Machine(tmp_path / "machine", env)
    shutil.copy(env.root / "hr.csv", m.etc / "hr.csv")  # next to the machine's config
    return m, env


def cron_entry() -> tuple[list[str], str, str]:
    """(the five time fields, the user, the command) of the sample's one job line."""
    lines = [
        ln
        for ln in (SAMPLES / "cron" / "syncengine").read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#") and "=" not in ln.split()[0]
    ]
    assert len(lines) == 1, lines
    fields = lines[0].split(None, 6)
    return fields[:5], fields[5], fields[6]


def test_cron_sample_line_runs_a_locked_nightly_sync(machine: tuple[Machine, ApplyEnv]) -> None:
    m, env = machine
    when, user, command = cron_entry()
    assert when == ["30", "2", "*", "*", "*"] and user == "syncengine"
    assert "%" not in command.replace("\\%", "")  # cron would cut the line at a bare %
    command = m.localise(command.replace("\\%", "%"))
    clean_env = {"PATH": f"/usr/local/bin:/usr/bin:/bin:{VENV_BIN}", "HOME": str(m.root)}

    done = subprocess.run(["/bin/sh", "-c", command], env=clean_env, timeout=90,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, (
        done.stdout,
        done.stderr,
        (m.logs / "sync.log").read_text(errors="replace"),
    )
    report = m.report()
    assert report["status"] == "succeeded" and report["actor"] == "schedule"
    assert "sync succeeded" in (m.logs / "sync.log").read_text(encoding="utf-8")
    env.assert_converged()

    # While the previous night still holds the flock, a start is skipped, nothing written.
    calls_before = len(env.write_calls())
    with (m.state / "sync.flock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        skipped = subprocess.run(["/bin/sh", "-c", command], env=clean_env, timeout=30,
                                 capture_output=True, text=True)  # fmt: skip
    assert skipped.returncode != 0
    assert len(env.write_calls()) == calls_before


def unit_settings(path: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            settings.setdefault(m.group(1), []).append(m.group(2))
    return settings


def test_systemd_sample_exec_start_runs_with_its_environment(
    machine: tuple[Machine, ApplyEnv],
) -> None:
    m, env = machine
    service_unit = SAMPLES / "systemd" / "syncengine-sync.service"
    s = unit_settings(service_unit)
    assert s["Type"] == ["oneshot"] and s["User"] == ["syncengine"]
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(m.root)}
    for file in s["EnvironmentFile"]:
        for line in Path(m.localise(file)).read_text().splitlines():
            key, _, value = line.partition("=")
            environment[key] = value
    for item in s["Environment"]:
        key, _, value = m.localise(item).partition("=")
        environment[key] = value
    argv = shlex.split(m.localise(s["ExecStart"][0]))
    assert "%" not in s["ExecStart"][0]  # systemd would expand a % specifier
    done = subprocess.run(argv, env=environment, cwd=m.localise(s["WorkingDirectory"][0]),
                          timeout=90, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "sync succeeded" in done.stdout
    report = m.report()
    assert report["status"] == "succeeded" and report["actor"] == "schedule"
    env.assert_converged()

    timer = unit_settings(SAMPLES / "systemd" / "syncengine-sync.timer")
    assert timer["OnCalendar"] == ["*-*-* 02:30:00 Asia/Shanghai"]  # the company's clock
    assert timer["Persistent"] == ["true"]
    assert timer["Unit"] == [service_unit.name]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_samples_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    folder = tmp_path / "units"
    folder.mkdir()
    for name in ("syncengine-sync.service", "syncengine-sync.timer", "syncengine-serve.service"):
        text = (SAMPLES / "systemd" / name).read_text(encoding="utf-8")
        (folder / name).write_text(text.replace("/opt/syncengine/.venv/bin/", f"{VENV_BIN}/"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "syncengine-sync.timer",
         "syncengine-sync.service", "syncengine-serve.service"],
        cwd=folder, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_systemd_serve_sample_runs_and_logs_each_request(
    machine: tuple[Machine, ApplyEnv],
) -> None:
    import httpx

    m, _env = machine
    unit = SAMPLES / "systemd" / "syncengine-serve.service"
    s = unit_settings(unit)
    assert s["Type"] == ["exec"] and s["Restart"] == ["on-failure"]
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(m.root)}
    for file in s["EnvironmentFile"]:
        for line in Path(m.localise(file)).read_text().splitlines():
            key, _, value = line.partition("=")
            environment[key] = value
    for item in s["Environment"]:
        key, _, value = m.localise(item).partition("=")
        environment[key] = value
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = shlex.split(m.localise(s["ExecStart"][0]).replace("--port 8088", f"--port {port}"))
    proc = subprocess.Popen(argv, env=environment, cwd=m.localise(s["WorkingDirectory"][0]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.1)
    finally:
        proc.terminate()  # systemd's KillSignal=SIGTERM
        out, err = proc.communicate(timeout=int(s["TimeoutStopSec"][0].rstrip("s")))
    assert proc.returncode in (0, -15), (out, err)
    assert '"GET /healthz" 200' in err, err
