"""Every command and subcommand has a help text, and ``--help`` works without a config."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from syncengine.cli import main


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, cmd in sorted(group.commands.items()):
        found.append((*prefix, name))
        if isinstance(cmd, click.Group):
            found.extend(all_commands(cmd, (*prefix, name)))
    return found


COMMANDS = all_commands(main)


def test_the_cli_has_the_documented_commands() -> None:
    top = {c[0] for c in COMMANDS}
    expected = {"ingest", "plan", "apply", "sync", "audit", "demo", "emulator", "serve"}
    assert expected <= top
    assert {"sso-url", "mail", "db", "events"} <= top


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"], env={"SYNCENGINE_CONFIG": ""})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    cmd: click.Command = main
    for name in command:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    assert (cmd.help or "").strip(), f"{' '.join(command)} has no help text"
