"""The ``check`` command: the ``[exmail]`` config against the live service, read-only."""

from __future__ import annotations

import sys

import click

from syncengine import service
from syncengine.cli.app import State, echo_json, handle_errors, json_option, main, pass_state


@main.command("check")
@json_option("Print a JSON object.")
@pass_state
@handle_errors
def check_command(state: State, as_json: bool) -> None:
    """Check the [exmail] config against the live service, read-only.

    Fetches a token for each credential (Gen 2: every application secret), makes one list
    call and asks Exmail whether each configured domain is the company's. Nothing is
    written. Exit 0 when everything works, 1 when something does not (each line says what
    and which config key to look at).
    """
    result = service.check_exmail(state.config)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(f"Exmail API {result.api}: " + ", ".join(
            f"{name} {url}" for name, url in result.endpoints.items()))  # fmt: skip
        for probe in result.probes:
            mark = "ok  " if probe.ok and not probe.warning else ("warn" if probe.ok else "FAIL")
            where = f" (check {probe.key})" if not probe.ok and probe.key else ""
            click.echo(f"  {mark} {probe.name}: {probe.detail}{where}")
        click.echo("all checks passed" if result.ok else "some checks failed")
    if not result.ok:
        sys.exit(1)
