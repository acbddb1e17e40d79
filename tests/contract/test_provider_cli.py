"""The commands of issue 2 that talk to Exmail (``sso-url``, ``mail count``, ``mail watch``),
run through click's CliRunner with a real config file, against the emulator on loopback."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from syncengine.cli import main
from tests.fixtures.emulator import RunningEmulator

pytestmark = pytest.mark.timeout(60)


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def write_config(tmp_path: Path, emu: RunningEmulator, **overrides: Any) -> Path:
    table = {**emu.exmail_config(), **overrides}
    lines = ["[exmail]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    path = tmp_path / "syncengine.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(config: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


def test_sso_url_prints_a_working_login_url(emulator: RunningEmulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, emulator)
    # No sync has linked the seed's people: allow unmanaged accounts (the refusal rule has
    # its own tests in tests/e2e/test_sso.py).
    with config.open("a", encoding="utf-8") as fh:
        fh.write("[hooks.sso]\nallow_unmanaged = true\n")
    result = run(config, "sso-url", "zhangsan@example.com")
    assert result.exit_code == 0, result.output
    url = result.output.strip()
    assert httpx.get(url, timeout=10).status_code == 200

    result = run(config, "sso-url", "zhangsan@example.com", "--json")
    data = json.loads(result.output)
    assert data["email"] == "zhangsan@example.com" and data["login_url"].startswith("http")


def test_sso_url_of_unknown_user_is_a_clear_error(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    result = run(write_config(tmp_path, emulator), "sso-url", "nobody@example.com")
    assert result.exit_code == 1
    assert "nobody@example.com" in result.output and "Traceback" not in result.output


def test_mail_count(emulator: RunningEmulator, tmp_path: Path) -> None:
    config = write_config(tmp_path, emulator)
    emulator.deliver_mail("lisi@example.com")
    result = run(config, "mail", "count", "lisi@example.com")
    assert result.exit_code == 0 and result.output.strip() == "1"
    result = run(config, "mail", "count", "lisi@example.com", "--json")
    assert json.loads(result.output) == {"email": "lisi@example.com", "new_count": 1}


def test_wrong_secret_names_the_key_and_hides_the_secret(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    if emulator.api == "v2":
        secrets = {**emulator.exmail_config()["secrets"], "mail": "not-the-mail-secret"}
        config = write_config(tmp_path, emulator, secrets=secrets)
        key, secret = "exmail.secrets.mail", "not-the-mail-secret"
    else:
        config = write_config(tmp_path, emulator, client_secret="not-the-v1-secret")
        key, secret = "exmail.client_secret", "not-the-v1-secret"
    result = run(config, "mail", "count", "lisi@example.com")
    assert result.exit_code == 1
    assert key in result.output and secret not in result.output


def test_mail_watch_prints_one_json_line_per_event(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    emulator.set_faults(listen_hold=0.5)
    config = write_config(tmp_path, emulator)
    first_poll = "mail/newcount" if emulator.api == "v2" else "listen"

    def deliver_after_first_poll() -> None:
        for _ in range(400):
            if any(e.endswith(first_poll) for e in emulator.call_counts()):
                break
            threading.Event().wait(0.05)
        emulator.deliver_mail("lisi@example.com", subject="第一封")
        emulator.deliver_mail("lisi@example.com", subject="第二封")

    sender = threading.Thread(target=deliver_after_first_poll)
    sender.start()
    result = run(
        config,
        "mail",
        "watch",
        "--user",
        "lisi@example.com",
        "--interval",
        "0.1",
        "--max-events",
        "2" if emulator.api == "v1" else "1",
        "--timeout",
        "20",
    )
    sender.join(10)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    assert events and all(e["email"] == "lisi@example.com" for e in events)
    if emulator.api == "v1":
        assert [e["subject"] for e in events] == ["第一封", "第二封"]
    else:  # a poll sees the count rise (by one or both mails)
        assert events[0]["new_count"] in (1, 2)


def test_mail_watch_ends_at_timeout(emulator: RunningEmulator, tmp_path: Path) -> None:
    emulator.set_faults(listen_hold=0.2)
    config = write_config(tmp_path, emulator)
    result = run(
        config,
        "mail",
        "watch",
        "--user",
        "lisi@example.com",
        "--interval",
        "0.1",
        "--timeout",
        "0.5",
    )
    assert result.exit_code == 0 and result.output == ""


def test_gen2_mail_watch_needs_a_user(emulator_factory: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path, emulator_factory("v2"))
    result = run(config, "mail", "watch", "--timeout", "1")
    assert result.exit_code == 1 and "--user" in result.output


@pytest.mark.parametrize("command", [["sso-url"], ["mail"], ["mail", "count"], ["mail", "watch"]])
def test_commands_have_help(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
