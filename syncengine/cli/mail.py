"""The ``sso-url`` and ``mail`` commands: single sign-on links, unread counts, new-mail watch."""

from __future__ import annotations

import json

import click

from syncengine import service
from syncengine.cli.app import (
    State,
    echo_json,
    handle_errors,
    json_option,
    main,
    pass_state,
)

# --- commands -----------------------------------------------------------------------------
# Each command parses its options, calls one function of syncengine.service, renders the
# result (text, or JSON with --json) and exits with a documented code.


@main.command("sso-url")
@click.argument("email")
@json_option("Print a JSON object.")
@pass_state
@handle_errors
def sso_url_command(state: State, email: str, as_json: bool) -> None:
    """Print a fresh single sign-on URL for the mailbox EMAIL (single use)."""
    url = service.sso_url(state.engine, email)
    if as_json:
        echo_json({"email": email, "login_url": url})
    else:
        click.echo(url)


@main.group("mail")
def mail_group() -> None:
    """Unread-mail counts and new-mail events."""


@mail_group.command("count")
@click.argument("email")
@json_option("Print a JSON object.")
@pass_state
@handle_errors
def mail_count_command(state: State, email: str, as_json: bool) -> None:
    """Print the unread-mail count of the mailbox EMAIL."""
    count = service.mail_count(state.engine, email)
    if as_json:
        echo_json({"email": email, "new_count": count})
    else:
        click.echo(str(count))


@mail_group.command("watch")
@click.option(
    "--user",
    "users",
    multiple=True,
    help="Mailbox to watch (repeatable). Gen 2 needs at least one; Gen 1 filters on them.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=None,
    help="Gen 2: seconds between polls of mail/newcount (default: exmail.poll_interval).",
)
@click.option("--max-events", type=click.IntRange(min=1), default=None, help="Stop after N.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Stop after S seconds.")
@click.option(
    "--forward",
    "forward_url",
    default=None,
    metavar="URL",
    help="POST each event to URL as signed JSON ([hooks.forward]), restart-safe; Gen 2 "
    "watches every managed mailbox unless --user is given.",
)
@pass_state
@handle_errors
def mail_watch_command(
    state: State,
    users: tuple[str, ...],
    interval: float | None,
    max_events: int | None,
    timeout: float | None,
    forward_url: str | None,
) -> None:
    """Print new-mail events as they arrive, one JSON object per line.

    Gen 1 long-polls the listen API; Gen 2 polls the unread counts of the given mailboxes.
    With --forward the events also go to the OA system, and the last one seen is kept in the
    staging database, so a restart neither repeats nor loses one.
    """
    import dataclasses

    if forward_url is not None:
        for sent in service.forward_mail(
            state.engine, forward_url, users=users, interval=interval,
            max_events=max_events, timeout=timeout,
        ):  # fmt: skip
            line = {**dataclasses.asdict(sent.event), "forwarded": True,
                    "attempts": sent.attempts}  # fmt: skip
            click.echo(json.dumps(line, ensure_ascii=False, sort_keys=True))
        return
    for event in service.watch_mail(
        state.engine, users=users, interval=interval, max_events=max_events, timeout=timeout
    ):
        click.echo(json.dumps(dataclasses.asdict(event), ensure_ascii=False, sort_keys=True))
