"""The ``db``, ``ingest`` and ``emulator`` commands."""

from __future__ import annotations

import sys

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
from syncengine.cli.progress import progress_for
from syncengine.errors import EXIT_ERROR


@main.group()
def db() -> None:
    """The staging database: create, migrate and inspect its schema."""


@db.command("upgrade")
@click.option("--all", "all_tenants", is_flag=True, help="Every tenant's database (or schema).")
@pass_state
@handle_errors
def db_upgrade_command(state: State, all_tenants: bool) -> None:
    """Create or migrate the staging database to this version's schema (on PostgreSQL with
    [tenants]: the tenant's schema, created when missing)."""
    configs = [t.config for t in state.tenants] if all_tenants else [state.config]
    for config in configs:
        before, after = service.db_upgrade(config)
        who = f"{config.tenant}: " if config.tenant else ""
        if before == after:
            click.echo(f"{who}database already at {after} (up to date)")
        else:
            click.echo(f"{who}database upgraded from {before or 'empty'} to {after}")


@db.command("current")
@json_option("Print JSON.")
@pass_state
@handle_errors
def db_current_command(state: State, as_json: bool) -> None:
    """Show the database's schema revision and the one this version needs."""
    status = service.db_current(state.config)
    if as_json:
        echo_json(
            {
                "url": status.url,
                "current": status.current,
                "head": status.head,
                "up_to_date": status.up_to_date,
                "known": status.known,
            }
        )
        return
    click.echo(f"database: {status.url}")
    click.echo(f"current:  {status.current or '(empty: no schema yet)'}")
    click.echo(f"head:     {status.head}")
    if status.up_to_date:
        click.echo("up to date")
    elif not status.known:
        click.echo("the database is newer than this syncengine: upgrade syncengine")
    else:
        click.echo("behind: run 'syncengine db upgrade'")


@db.command("unlock")
@click.argument("name", type=click.Choice(["apply", "sync"]))
@click.option("--yes", is_flag=True, help="Clear it (without: only show who holds it).")
@pass_state
@handle_errors
def db_unlock_command(state: State, name: str, yes: bool) -> None:
    """Clear a run lock left by a host that is gone (refused while its holder is alive here).

    A lock left by a dead process on this host is taken over by the next run by itself; a
    holder on another host cannot be checked from here, so an admin clears it after looking.
    """
    holder = service.lock_holder(state.engine, name) if not yes else None
    if not yes:
        if holder is None:
            click.echo(f"the lock {name!r} is not held")
            return
        click.echo(f"the lock {name!r} is held by {holder.describe()}")
        click.echo(f"if that process is gone for good: syncengine db unlock {name} --yes")
        sys.exit(EXIT_ERROR)
    cleared = service.db_unlock(state.engine, name)
    if cleared is None:
        click.echo(f"the lock {name!r} is not held")
    else:
        click.echo(f"released the lock {name!r}; it was held by {cleared.describe()}")


@main.command("ingest")
@json_option("Print the report as JSON.")
@pass_state
@handle_errors
def ingest_command(state: State, as_json: bool) -> None:
    """Read the HR source into a new snapshot; print counts and every problem row.

    Rows with a problem are quarantined: not synced and never treated as leavers. Exit 1 when
    the source fails as a whole (the previous snapshot then stays current).
    """
    with progress_for(as_json) as progress:
        report = service.ingest(state.engine, progress=progress.ingest)
    if as_json:
        echo_json(report.to_dict())
        return
    counts = report.counts
    if report.source_unchanged:
        click.echo(
            f"{report.source} is unchanged since snapshot {report.previous_snapshot_id} "
            f"(same bytes, same config): its {report.rows:,} records are reused, not read or copied"
        )
    else:
        click.echo(f"Read {report.rows:,} records from {report.source}")
    previous = report.previous_snapshot_id
    click.echo(
        f"Snapshot {report.snapshot_id} is now current"
        + (f" (previous: {previous})" if previous is not None else " (the first one)")
    )
    for key in ("people", "departments", "new", "changed", "gone", "quarantined"):
        click.echo(f"  {key:<12} {counts[key]:>7,}")
    if report.problems:
        click.echo(
            f"Problems ({len(report.problems)}; these rows are held back until HR fixes them):"
        )
        for p in report.problems:
            click.echo(f"  {p}")
    if report.notes:
        click.echo("Notes:")
        for p in report.notes:
            click.echo(f"  {p}")
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command("emulator")
@click.option(
    "--api",
    type=click.Choice(["v1", "v2"]),
    default="v2",
    show_default=True,
    help="Which Exmail API generation to emulate.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port to bind (0 = any free port).",
)
@click.option(
    "--seed",
    "seed_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Seed file (JSON or TOML); default: the built-in demo directory.",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="State file: loaded at start if present, written after each change.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Added latency per call, in milliseconds.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of calls answered with HTTP 503.",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of calls whose connection is dropped (after the call took effect).",
)
@click.option(
    "--busy-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Fraction of calls answered 'system busy' (Gen 2 -1, Gen 1 1002).",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Calls per second per token (0 = unlimited); over it: 45009 / 1002.",
)
@click.option(
    "--token-lifetime",
    type=click.FloatRange(min=1),
    default=None,
    help="Token lifetime in seconds (default: 7200 for v2, 86400 for v1).",
)
@click.option(
    "--listen-hold",
    type=click.FloatRange(min=0),
    default=25.0,
    show_default=True,
    help="Seconds a Gen 1 listen long poll is held when nothing happens.",
)
@click.option(
    "--listen-ver",
    type=click.Choice(["inline", "separate"]),
    default="inline",
    show_default=True,
    help="Gen 1 listen: Ver inside each mail event, or mail events without it and the version "
    "bump as a separate answer (a reading the sources leave open).",
)
@click.option(
    "--newcount-dates",
    type=click.Choice(["optional", "required"]),
    default="optional",
    show_default=True,
    help="Gen 2 mail/newcount: whether begin_date/end_date are required (sources disagree).",
)
@click.option(
    "--invalid-token-answer",
    type=click.Choice(["errcode", "error", "http401"]),
    default="errcode",
    show_default=True,
    help="How an unknown or expired token is refused: the errcode, Gen 1's "
    '{"error":"invalid_token"} alone, or HTTP 401.',
)
@click.option(
    "--user-mod",
    type=click.Choice(["keep", "reset"]),
    default="keep",
    show_default=True,
    help="Gen 1 user/sync MOD: keep the fields it omits, or reset them (sources disagree).",
)
@click.option(
    "--dept-visible-after",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds a new department stays invisible to member ADD/MOD (1310 / 60003).",
)
@click.option(
    "--rng-seed", type=int, default=None, help="Seed for fault injection, for repeatable runs."
)
@click.option(
    "--control/--no-control",
    default=False,
    show_default=True,
    help="Serve the test-control API under /_emulator/.",
)
@click.option("--control-anywhere", is_flag=True, help="Allow --control on a non-loopback address.")
@pass_state
@handle_errors
def emulator_command(
    state: State,
    api: str,
    host: str,
    port: int,
    seed_path: str | None,
    state_path: str | None,
    latency_ms: float,
    fail_rate: float,
    drop_rate: float,
    busy_rate: float,
    rate_limit: float,
    token_lifetime: float | None,
    listen_hold: float,
    listen_ver: str,
    newcount_dates: str,
    invalid_token_answer: str,
    user_mod: str,
    dept_visible_after: float,
    rng_seed: int | None,
    control: bool,
    control_anywhere: bool,
) -> None:
    """Run a local Exmail emulator (both API generations) until interrupted."""

    def ready(start: service.EmulatorStart) -> None:
        click.echo(f"Exmail emulator ({start.api}) listening on {start.base_url}")
        if start.control:
            click.echo(f"Control API: {start.base_url}/_emulator/")
        if start.state_file:
            click.echo(f"State file: {start.state_file}")
        if start.config_snippet:
            click.echo("Demo credentials (put this in syncengine.toml):\n")
            click.echo(start.config_snippet + "\n")
        click.echo("Press Ctrl+C to stop.")

    service.run_emulator(
        api=api,
        host=host,
        port=port,
        seed_path=seed_path,
        state_path=state_path,
        options={
            "latency_ms": latency_ms,
            "fail_rate": fail_rate,
            "drop_rate": drop_rate,
            "busy_rate": busy_rate,
            "rate_limit_per_token": rate_limit,
            "token_lifetime": token_lifetime,
            "listen_hold": listen_hold,
            "listen_ver": listen_ver,
            "newcount_dates": newcount_dates,
            "invalid_token_answer": invalid_token_answer,
            "user_mod": user_mod,
            "dept_visible_after": dept_visible_after,
            "rng_seed": rng_seed,
        },
        control=control,
        control_anywhere=control_anywhere,
        on_ready=ready,
    )
