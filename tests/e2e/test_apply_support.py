"""Shared set-up for the apply/audit end-to-end tests (no tests here).

``ApplyEnv`` is one config folder: an HR CSV written from a list of rows, a config pointing
at a running emulator and a SQLite staging file, and helpers to run the real CLI (in process
with CliRunner, or as a subprocess) and to compare the emulator's directory with HR.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from syncengine.cli import main
from syncengine.config import Config, load_config
from syncengine.emulator.app import CLIENT_CLOSED
from syncengine.emulator.harness import RunningEmulator

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

COLUMNS = ["employee_id", "name", "email", "aliases", "departments", "position", "mobile",
           "gender", "status"]  # fmt: skip

WRITE_CALLS_V2 = {
    "department/create", "department/update", "department/delete", "user/create",
    "user/update", "user/delete", "user/swapalias",
}  # fmt: skip
WRITE_CALLS_V1 = {"party/sync", "user/sync", "user/swapalias"}

WAIT_S = 60.0


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def person(eid: str, name: str, email: str, dept: str = "", **kw: str) -> dict[str, str]:
    row = {c: "" for c in COLUMNS}
    row.update(employee_id=eid, name=name, email=email, departments=dept, status="active")
    row.update(kw)
    return row


def people(n: int, *, start: int = 100, depts: Sequence[str] = ("工程部/后端组", "工程部/前端组",
           "销售部", "财务部/会计组/总账")) -> list[dict[str, str]]:  # fmt: skip
    """``n`` new hires with distinct addresses spread over nested departments."""
    return [
        person(f"T{start + i:05d}", f"测试员{start + i}", f"t{start + i}@example.com",
               depts[i % len(depts)], position=f"工程师{i % 3}", gender="男" if i % 2 else "女")
        for i in range(n)
    ]  # fmt: skip


def base_rows() -> list[dict[str, str]]:
    """The default seed's people as HR sees them, with changes the plan must carry out:
    E0001 changes position, E0002 changes address (alias + swap), E0004 comes back (enable)."""
    return [
        person("E0001", "张三", "zhangsan@example.com", "研发中心/平台部", position="架构师",
               mobile="13800000001", gender="男", aliases="san.zhang@example.com"),
        person("E0002", "李四", "si.li@example.com", "研发中心/移动部", position="工程师",
               mobile="13800000002", gender="女"),
        person("E0004", "赵六", "zhaoliu@example.com", "人力资源部", gender="女"),
    ]  # fmt: skip


@dataclass
class ApplyEnv:
    root: Path
    emulator: RunningEmulator
    rows: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.root / "syncengine.toml"

    @property
    def db_path(self) -> Path:
        return self.root / "staging.db"

    def write(self, rows: list[dict[str, str]] | None = None, **extra: Any) -> None:
        if rows is not None:
            self.rows = rows
        self.extra.update(extra)
        with (self.root / "hr.csv").open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS)
            w.writeheader()
            w.writerows(self.rows)
        self.config_path.write_text(_toml(self._config_data()), encoding="utf-8")

    def _config_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "exmail": {**self.emulator.exmail_config(), "timeout": 10},
            "database": {"url": f"sqlite:///{self.db_path}"},
            "source": {"type": "csv", "path": "hr.csv"},
            "mapping": {
                "email": "email", "aliases": {"field": "aliases", "split": ";"},
                "departments": {"field": "departments", "split": ";"}, "position": "position",
                "mobile": "mobile", "gender": "gender", "status": "status",
            },
            "apply": {"concurrency": 4, "rate_per_second": 0, "backoff_initial": 0.01,
                      "backoff_max": 0.05, "max_attempts": 12},
        }  # fmt: skip
        for table, values in self.extra.items():
            data[table] = {**data.get(table, {}), **values}
        return data

    def config(self) -> Config:
        return load_config(self.config_path)

    def cli(self, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(main, ["--config", str(self.config_path), *args], input=input,
                             catch_exceptions=False)  # fmt: skip

    def subprocess(self, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.Popen(
            [str(Path(PYTHON).parent / "syncengine"), "--config", str(self.config_path), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=self.root,
        )  # fmt: skip

    def kill_apply_when(
        self, plan_file: Path, what: str, check: Callable[[], bool], *, latency_ms: int
    ) -> int:
        """Run ``apply plan_file`` as a subprocess against the emulator slowed to
        ``latency_ms``, SIGKILL it once ``check()`` holds, let the calls it left in flight
        land, and restore the latency; the process's return code."""
        self.emulator.clear_calls()
        self.emulator.set_faults(latency_ms=latency_ms)
        proc = self.subprocess("apply", str(plan_file), "--json")
        try:
            wait_for(what, check)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
        time.sleep(0.3)  # let the emulator finish the calls the dead client left in flight
        self.emulator.set_faults(latency_ms=0)
        return proc.returncode

    def ingest_and_plan(self, out: str = "plan.json") -> Path:
        r = self.cli("ingest")
        assert r.exit_code == 0, r.output
        path = self.root / out
        r = self.cli("plan", "--out", str(path))
        assert r.exit_code in (0, 3), r.output
        return path

    # --- what the emulator holds -----------------------------------------------------

    def users(self) -> dict[str, dict[str, Any]]:
        return {u["userid"].lower(): u for u in self.emulator.state()["users"]}

    def write_calls(self, since: int = 0) -> list[dict[str, Any]]:
        """The write calls that reached the emulator's directory: not those it logged as 499
        (a client killed before its body was read: nothing was done)."""
        names = WRITE_CALLS_V2 if self.emulator.api == "v2" else WRITE_CALLS_V1
        return [c for c in self.emulator.calls(since)
                if _endpoint(c) in names and c["status"] != CLIENT_CLOSED]  # fmt: skip

    def assert_converged(self) -> None:
        """Every HR person has a mailbox with HR's fields; every department exists."""
        state = self.emulator.state()
        users = {u["userid"].lower(): u for u in state["users"]}
        paths = {d["path"] for d in state["departments"]}
        for row in self.rows:
            u = users.get(row["email"])
            assert u is not None, f"{row['email']} missing; have {sorted(users)[:20]}"
            assert u["name"] == row["name"]
            assert str(u.get("extid", "")) == row["employee_id"], u
            if row["departments"]:
                assert row["departments"] in paths
                assert set(u.get("paths") or []) == {row["departments"]}, (u, row)
            assert int(u.get("enable", 1)) == 1, u


def _endpoint(call: dict[str, Any]) -> str:
    path = str(call.get("endpoint") or call.get("path") or "")
    for prefix in ("/cgi-bin/", "/openapi/"):
        if path.startswith(prefix):
            return path[len(prefix) :]
    return path


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict) and not _inline(value):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for name, table in tables:
        out += f"\n[{name}]\n" + _toml(table, prefix=f"{name}.")
    return out


def _inline(value: dict[str, Any]) -> bool:
    return "field" in value


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):  # an array of inline tables too ([[review.approvers]])
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def audit_rows(env: ApplyEnv) -> list[Any]:
    from syncengine import service

    return service.query_audit(service.Engine(env.config()))


def assert_each_action_done_once(env: ApplyEnv, plan_file: Path) -> None:
    """Every action of the plan has exactly one outcome row ``done`` in the audit log, and
    no outcome row says ``failed`` for it."""
    from syncengine import service

    plan = service.read_plan_file(plan_file)
    rows = [r for r in audit_rows(env) if r.call is None and r.action_key]
    done: dict[str, int] = {}
    for r in rows:
        if r.result == "done":
            done[r.action_key] = done.get(r.action_key, 0) + 1
    keys = [a.key for a in plan.actions]
    assert {k: done.get(k, 0) for k in keys} == {k: 1 for k in keys}
    assert set(done) <= set(keys)


def secrets_of(emu: RunningEmulator) -> list[str]:
    """The credentials and the tokens the emulator hands out right now."""
    from tests.fixtures.emulator import RawV1, RawV2

    found: list[str] = []
    if emu.api == "v2":
        found += list(emu.seed["secrets"].values())
        raw2 = RawV2(emu)
        try:
            found += [raw2.token(app) for app in ("contacts",)]
        finally:
            raw2.close()
    else:
        found += [str(s) for s in emu.seed["v1_clients"].values()]
        raw1 = RawV1(emu)
        try:
            found.append(raw1.token())
        finally:
            raw1.close()
    return found


def assert_not_in_audit(env: ApplyEnv, needles: list[str]) -> None:
    import dataclasses

    rows = audit_rows(env)
    assert rows
    blob = json.dumps([dataclasses.asdict(r) for r in rows], ensure_ascii=False, default=str)
    for needle in needles:
        assert needle and needle not in blob, "a secret reached the audit log"
