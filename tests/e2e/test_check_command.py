"""``syncengine check``: the [exmail] table against a live service (the emulator over real
HTTP), read-only; each thing that is wrong is named with the config key to look at."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from syncengine.cli import main
from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import _toml

pytestmark = pytest.mark.timeout(60)

WRITES = ("create", "update", "delete", "sync", "swapalias", "add", "member", "allowlist")


def run_check(tmp_path: Path, exmail: dict[str, Any], *args: str) -> tuple[int, str]:
    config = tmp_path / "syncengine.toml"
    config.write_text(_toml({"exmail": exmail}), encoding="utf-8")
    r = CliRunner().invoke(main, ["--config", str(config), "check", *args])
    return r.exit_code, r.output


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_working_config_passes_and_nothing_is_written(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory(api)
    code, out = run_check(tmp_path, emu.exmail_config(), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] and doc["api"] == api
    names = [p["name"] for p in doc["probes"]]
    assert any(n.startswith("token") for n in names) and "list" in names
    assert "domain example.com" in names
    if api == "v2":  # one token per configured application
        assert sum(n.startswith("token") for n in names) == len(emu.seed["secrets"])
    written = [c for c in emu.calls() if any(w in c["endpoint"].rsplit("/", 1)[-1] for w in WRITES)]
    assert written == []


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_domain_that_is_not_the_companys_is_named(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory(api)
    table = {**emu.exmail_config(), "domains": ["example.com", "not-ours.test"]}
    code, out = run_check(tmp_path, table)
    assert code == 1, out
    assert "ok   domain example.com" in out
    assert "FAIL domain not-ours.test" in out and "(check exmail.domains)" in out
    assert out.rstrip().endswith("some checks failed")


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_wrong_secret_is_named_with_its_key(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory(api)
    table = emu.exmail_config()
    if api == "v2":
        table["secrets"] = {**table["secrets"], "sso": "wrong-sso-secret"}
    else:
        table["client_secret"] = "f" * 32
    code, out = run_check(tmp_path, table)
    assert code == 1, out
    if api == "v2":
        assert "FAIL token 单点登录 (single sign-on)" in out and "exmail.secrets.sso" in out
        assert "ok   token 通讯录管理 (contacts)" in out  # the others are still checked
        assert "ok   list" in out and "wrong-sso-secret" not in out
    else:
        assert "FAIL token" in out and "exmail.client_id / exmail.client_secret" in out
        assert "f" * 32 not in out


def test_an_unreachable_api_is_a_failure_not_a_traceback(tmp_path: Path) -> None:
    table = {"api": "v2", "base_url": "http://127.0.0.1:9", "corp_id": "wm",
             "secrets": {"contacts": "s"}, "timeout": 2}  # fmt: skip
    code, out = run_check(tmp_path, table)
    assert code == 1 and "Traceback" not in out
    assert "FAIL token 通讯录管理 (contacts)" in out and "connection" in out
