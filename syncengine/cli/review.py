"""The ``show`` and ``hash-password`` commands (issue 12: plan review and sign-off)."""

from __future__ import annotations

import click

from syncengine import service
from syncengine.cli.app import State, handle_errors, main, pass_state, write_file


@main.command("show")
@click.argument("plan_ref", metavar="PLANFILE|PLAN_ID|CHECKSUM")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html", "summary"]),
              default="text", show_default=True, help="How to render the plan.")  # fmt: skip
@click.option("--lang", type=click.Choice(["zh", "en"]), default=None,
              help="Language (default: [review] lang for html, en for text).")  # fmt: skip
@click.option("--out", "out_path", type=click.Path(dir_okay=False), default=None,
              help="Write to FILE instead of stdout.")  # fmt: skip
@pass_state
@handle_errors
def show_command(
    state: State, plan_ref: str, fmt: str, lang: str | None, out_path: str | None
) -> None:
    """Render a stored plan: a plan file, a plan id, or 12+ characters of its checksum.
    The same plan renders the same in every format, so the page an approver reads is the
    plan that gets applied."""
    document = service.show_plan(state.engine, plan_ref, fmt, lang=lang)
    if out_path is not None:
        write_file(out_path, document)
    else:
        click.echo(document, nl=False)


@main.command("hash-password")
def hash_password_command() -> None:
    """Ask for an approver's password (twice, hidden) and print its argon2 hash for
    [[review.approvers]] password_hash. The password itself is never stored or shown."""
    from argon2 import PasswordHasher

    password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 10:
        raise click.UsageError("use at least 10 characters")
    click.echo(PasswordHasher().hash(password))
