"""``syncengine demo``: the README's first command, in process and as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from syncengine import service
from syncengine.cli import main
from syncengine.errors import ConfigError
from syncengine.plan import ActionKind

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
INCREMENTAL = "Plan: 1 to create, 5 to change, 1 to disable, 0 to delete."


def test_demo_second_round_is_exactly_the_four_hr_changes(tmp_path: Path) -> None:
    result = service.demo(folder=tmp_path / "demo")

    first = result.first
    assert first.outcome is not None and first.outcome.applied is not None
    assert first.outcome.applied.status == "applied" and not first.outcome.failed
    assert first.outcome.applied.counts["done"] == len(first.plan.plan.actions) > 250
    assert result.audit and all(r.result == "done" and r.call is None for r in result.audit)

    kinds = [c.kind for c in result.changes]
    assert sorted(kinds) == ["hire", "leaver", "move", "rename"]
    by_kind = {c.kind: c.employee_id for c in result.changes}

    plan = result.second.plan.plan
    assert Counter(a.kind for a in plan.actions) == {
        ActionKind.CREATE_USER: 1, ActionKind.UPDATE_USER: 2, ActionKind.DISABLE_USER: 1,
        ActionKind.UPDATE_GROUP: 3,  # the mover's two department groups, the leaver's
    }  # fmt: skip
    actions = {a.employee_id: a for a in plan.actions}
    assert actions[by_kind["hire"]].kind is ActionKind.CREATE_USER
    assert actions[by_kind["leaver"]].kind is ActionKind.DISABLE_USER
    assert set(actions[by_kind["move"]].changes) == {"departments"}
    assert set(actions[by_kind["rename"]].changes) == {"name"}
    assert result.second.ingest.new == 1 and result.second.ingest.changed == 3

    second = result.second.outcome
    assert second is not None and second.applied is not None
    assert second.applied.counts["done"] == 7 and not second.failed
    # The department groups: created on the first run, following the move on the second.
    assert len(result.groups_created) > 10
    mover = next(a for a in plan.actions if a.employee_id == by_kind["move"])
    followed = "\n".join(result.groups_followed)
    assert f"- {mover.target}" in followed and f"+ {mover.target}" in followed
    assert result.mailboxes == 6 + 276  # seed + created in the two rounds

    # The folder is a working copy the user can go on with (offline commands).
    cfg = result.config_path
    r = CliRunner().invoke(main, ["--config", str(cfg), "audit", "--employee",
                                  by_kind["leaver"]])  # fmt: skip
    assert r.exit_code == 0 and "disable_user" in r.output


def test_demo_command_shows_the_incremental_plan_and_reruns_fresh(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    runner = CliRunner()
    r = runner.invoke(main, ["demo", "--dir", str(folder)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert INCREMENTAL in r.output
    assert "What next:" in r.output and "audit --employee" in r.output
    assert "Mail groups to change (3)" in r.output and "the first run created" in r.output
    assert "must be changed at first login" in r.output  # Gen 2 can force it
    assert (folder / service.DEMO_MARKER).exists()

    # A second run starts afresh: a new database, the same story.
    (folder / "leftover.txt").write_text("x")
    r = runner.invoke(main, ["demo", "--dir", str(folder), "--api", "v1"],
                      catch_exceptions=False)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert INCREMENTAL in r.output
    assert not (folder / "leftover.txt").exists()
    # Gen 1 has no such field: the demo does not promise what the plan cannot do.
    assert "initial password(s)" in r.output and "first login" not in r.output


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not made by 'syncengine demo'"):
        service.demo(folder=folder)
    assert (folder / "precious.txt").read_text() == "keep me"
    r = CliRunner().invoke(main, ["demo", "--dir", str(folder)])
    assert r.exit_code == 1 and "not made by 'syncengine demo'" in r.output


def test_demo_as_a_real_process_from_a_fresh_folder(tmp_path: Path) -> None:
    """What a new user runs after ``pip install -e .``: no config, no network, exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCENGINE_")}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "syncengine"), "demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert INCREMENTAL in done.stdout
    assert "Traceback" not in done.stderr
    assert (tmp_path / ".demo" / "syncengine.toml").exists()
    assert (tmp_path / ".demo" / "initial-passwords.jsonl").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("command", "words"),
    [(["demo"], ["--keep-running", "--dir", "--api"]),
     (["sync"], ["--dry-run", "--report", "--allow-removals", "--scheduled", "--notify"])],
)  # fmt: skip
def test_commands_have_help(command: list[str], words: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0
    for word in words:
        assert word in result.output
