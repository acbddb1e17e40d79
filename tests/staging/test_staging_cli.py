"""``syncengine db upgrade`` / ``db current`` and ``service.open_staging`` on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncengine import service
from syncengine.cli import main
from syncengine.config import parse_config
from syncengine.errors import DatabaseBehindError, LockHeldError
from syncengine.staging import db as staging_db

HEAD = staging_db.head_revision()


def write_config(folder: Path, url: str) -> Path:
    path = folder / "syncengine.toml"
    path.write_text(
        "[exmail]\n"
        'corp_id = "wm-test"\n'
        'secrets = { contacts = "not-a-real-secret" }\n'
        "[database]\n"
        f'url = "{url}"\n',
        encoding="utf-8",
    )
    return path


def run(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args])
    return result.exit_code, result.output


def test_db_current_and_upgrade(database_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, database_url)

    code, out = run(config, "db", "current", "--json")
    assert code == 0, out
    status = json.loads(out)
    assert status["current"] is None and status["head"] == HEAD
    assert status["up_to_date"] is False

    code, out = run(config, "db", "current")
    assert code == 0 and "syncengine db upgrade" in out

    code, out = run(config, "db", "upgrade")
    assert code == 0, out
    assert f"from empty to {HEAD}" in out

    code, out = run(config, "db", "upgrade")
    assert code == 0 and "up to date" in out

    code, out = run(config, "db", "current", "--json")
    assert json.loads(out)["up_to_date"] is True and json.loads(out)["current"] == HEAD


def test_relative_sqlite_path_is_relative_to_the_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, "sqlite:///state/engine.db")
    (tmp_path / "state").mkdir()
    code, out = run(config, "db", "upgrade")
    assert code == 0, out
    assert (tmp_path / "state" / "engine.db").is_file()


def test_unreachable_database_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path, "postgresql://sync:pw-secret@127.0.0.1:1/none")
    code, out = run(config, "db", "current")
    assert code == 1
    assert "cannot open the staging database" in out and "127.0.0.1" in out
    assert "pw-secret" not in out and "Traceback" not in out


def test_open_staging_creates_a_new_sqlite_file(tmp_path: Path) -> None:
    config = parse_config(
        {
            "exmail": {"corp_id": "wm", "secrets": {"contacts": "x"}},
            "database": {"url": f"sqlite:///{tmp_path / 'new.db'}"},
        }
    )
    repo = service.open_staging(config)
    try:
        assert repo.current_snapshot() is None
    finally:
        repo.close()
    assert staging_db.current(config.database_url) == (HEAD, HEAD)


def test_open_staging_refuses_a_database_behind_the_code(staging_url: str) -> None:
    staging_db.downgrade(staging_url, "base")
    config = parse_config(
        {
            "exmail": {"corp_id": "wm", "secrets": {"contacts": "x"}},
            "database": {"url": staging_url},
        }
    )
    with pytest.raises(DatabaseBehindError, match="syncengine db upgrade"):
        service.open_staging(config)


def test_db_unlock_clears_a_lock_left_on_another_host(staging_url: str, tmp_path: Path) -> None:
    """A host that died holding the lock (PostgreSQL shared by several hosts) cannot be
    checked from here: the admin clears it, after seeing who held it."""
    config = write_config(tmp_path, staging_url)
    repo = service.open_staging(parse_config({"exmail": {"corp_id": "x", "secrets": {
        "contacts": "y"}}, "database": {"url": staging_url}}))  # fmt: skip
    try:
        repo.acquire_lock("apply", command="syncengine apply", pid=4242, hostname="gone-host")
        with pytest.raises(LockHeldError) as held:
            repo.acquire_lock("apply", command="syncengine apply")
        assert "syncengine db unlock apply" in str(held.value)

        code, out = run(config, "db", "unlock", "apply")  # shows the holder, changes nothing
        assert code == 1 and "pid 4242 on host gone-host" in out and "--yes" in out
        assert repo.get_lock("apply") is not None

        code, out = run(config, "db", "unlock", "apply", "--yes")
        assert code == 0, out
        assert "released" in out and "gone-host" in out
        assert repo.get_lock("apply") is None
        repo.acquire_lock("apply", command="syncengine apply")  # free again

        code, out = run(config, "db", "unlock", "sync", "--yes")
        assert code == 0 and "not held" in out
    finally:
        repo.close()


def test_db_unlock_refuses_a_live_holder_on_this_host(staging_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, staging_url)
    repo = service.open_staging(parse_config({"exmail": {"corp_id": "x", "secrets": {
        "contacts": "y"}}, "database": {"url": staging_url}}))  # fmt: skip
    try:
        repo.acquire_lock("apply", command="syncengine apply")  # this very process: alive
        code, out = run(config, "db", "unlock", "apply", "--yes")
        assert code == 1 and "alive" in out
        assert repo.get_lock("apply") is not None
    finally:
        repo.close()


def test_a_new_sqlite_database_is_created_private(tmp_path: Path) -> None:
    """The staging database holds personal data: 0600 whatever the umask, WAL files too."""
    import os
    import stat

    config = tmp_path / "syncengine.toml"
    config.write_text(
        '[exmail]\napi = "v2"\ncorp_id = "wx"\nsecrets = { contacts = "env:UNSET_13" }\n'
        '[database]\nurl = "sqlite:///staging.db"\n',
        encoding="utf-8",
    )
    old = os.umask(0o022)
    try:
        r = CliRunner().invoke(main, ["--config", str(config), "db", "upgrade"])
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    files = sorted(tmp_path.glob("staging.db*"))
    assert files, list(tmp_path.iterdir())
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f.name, oct(f.stat().st_mode))
