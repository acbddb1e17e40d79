"""The password file channel and the ``[apply]`` / ``[passwords]`` config tables."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from syncengine import service
from syncengine.config import parse_config
from syncengine.errors import ConfigError
from syncengine.executor import PasswordDelivery
from syncengine.passwords import FilePasswordDelivery

EXMAIL = {"api": "v2", "base_url": "http://127.0.0.1:9", "corp_id": "wx",
          "secrets": {"contacts": "s"}}  # fmt: skip


def test_file_is_private_and_lines_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pw.jsonl"
    sink = FilePasswordDelivery(path, run_id=7)
    sink.deliver(PasswordDelivery("E1", "a@example.com", "Xy7!abcdefghij"))
    sink.void("E1", "a@example.com", "create failed")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["password"] == "Xy7!abcdefghij" and lines[0]["run"] == 7
    assert lines[1] == {**lines[1], "void": True, "email": "a@example.com"}
    assert "password" not in lines[1]
    assert "Xy7" not in repr(sink)


def test_an_existing_readable_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "pw.jsonl"
    path.write_text("", encoding="utf-8")
    os.chmod(path, 0o644)
    FilePasswordDelivery(path).deliver(PasswordDelivery("E1", "a@example.com", "Xy7!abcdefgh"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unwritable_place_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    sink = FilePasswordDelivery(blocker / "pw.jsonl")
    with pytest.raises(ConfigError, match="password file"):
        sink.deliver(PasswordDelivery("E1", "a@example.com", "Xy7!abcdefgh"))


def test_default_password_file_sits_next_to_the_database(tmp_path: Path) -> None:
    config = parse_config({"exmail": EXMAIL, "database": {"url": "sqlite:///data/s.db"}},
                          path=tmp_path / "syncengine.toml")  # fmt: skip
    assert service.password_file_path(config) == tmp_path / "data" / "initial-passwords.jsonl"
    config = parse_config({"exmail": EXMAIL, "passwords": {"path": "pw/x.jsonl"}},
                          path=tmp_path / "syncengine.toml")  # fmt: skip
    assert service.password_file_path(config) == tmp_path / "pw" / "x.jsonl"


@pytest.mark.parametrize(
    ("table", "values", "message"),
    [
        ("passwords", {"delivery": "email"}, "passwords.delivery"),
        ("passwords", {"pth": "x"}, "passwords.pth: unknown key"),
        ("apply", {"concurrency": 0}, "apply.concurrency"),
        ("apply", {"retries": 3}, "apply.retries: unknown key"),
    ],
)
def test_config_tables_are_validated(table: str, values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"exmail": EXMAIL, table: values})


def test_apply_settings_come_from_the_config() -> None:
    config = parse_config({"exmail": EXMAIL, "apply": {"concurrency": 9, "rate_per_second": 3}})
    settings = config.apply.settings()
    assert settings.concurrency == 9 and settings.rate_per_second == 3 and settings.burst == 9


def test_a_password_made_again_by_a_later_run_marks_the_earlier_lines_superseded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pw.jsonl"
    for run in (1, 2, 3):  # a create whose outcome stayed unknown, made again twice
        sink = FilePasswordDelivery(path, run_id=run)
        sink.deliver(PasswordDelivery("E1", "a@example.com", f"Pw{run}!abcdefghij"))
        sink.close()
    other = FilePasswordDelivery(path, run_id=4)
    other.deliver(PasswordDelivery("E2", "b@example.com", "Qq1!abcdefghijkl"))
    other.void("E2", "b@example.com", "create failed")
    other.deliver(PasswordDelivery("E2", "b@example.com", "Qq2!abcdefghijkl"))  # after a void
    other.close()
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]
    a = [x for x in lines if x["email"] == "a@example.com"]
    assert [("password" in x, x.get("superseded", False), x.get("supersedes")) for x in a] == [
        (True, False, None), (False, True, None), (True, False, 1),
        (False, True, None), (True, False, 1),
    ]  # fmt: skip
    assert "run 3" in a[3]["reason"] and "password" not in a[3]
    current = [x for x in a if "password" in x][-1]
    assert current["password"] == "Pw3!abcdefghij"
    b = [x for x in lines if x["email"] == "b@example.com"]
    assert not any(x.get("superseded") for x in b), "a voided line needs no superseding"
