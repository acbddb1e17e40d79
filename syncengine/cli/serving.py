"""The ``serve`` and ``events`` commands."""

from __future__ import annotations

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
from syncengine.clock import shown

# --- hooks, events and the service process (issue 6) ---------------------------------------


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8088, show_default=True,
              help="Port to bind (0 = any free port).")  # fmt: skip
@pass_state
@handle_errors
def serve_command(state: State, host: str, port: int) -> None:
    """Run the HR hook receiver, its worker, the SSO endpoint and (with [hooks] schedule)
    the nightly sync in one process, until interrupted.

    POST /hooks/hr takes signed HR events and answers 202; the worker syncs the people they
    name. Also: GET /hooks/events/ID, /healthz, /metrics, /sso/login. Events stored before a
    restart are worked off at once. With [tenants] in the config (and no --tenant), every
    tenant on one port: POST /hooks/hr/NAME, the rest under /tenants/NAME/.
    """

    if state.tenants.multi and state.tenant is None:
        _serve_tenants(state, host, port)
        return

    def ready(start: service.ServeStart) -> None:
        click.echo(f"syncengine serve listening on {start.base_url}", err=True)
        if not start.hooks:
            click.echo("  hooks: off (set [hooks] secret to accept HR events)", err=True)
        if not start.sso:
            click.echo("  sso: off (set [hooks.sso] secret for portal links)", err=True)
        if start.schedule:
            click.echo(f"  nightly sync: cron {start.schedule!r}", err=True)
        if start.waiting:
            click.echo(f"  {start.waiting} stored event(s) waiting: working them off", err=True)

    service.serve(state.engine, host=host, port=port, on_ready=ready,
                  log_level="debug" if state.debug else "warning")  # fmt: skip


def _serve_tenants(state: State, host: str, port: int) -> None:
    """``serve`` of a config with [tenants]: every tenant on one port."""
    from syncengine.service.tenants import TenantsStart, serve_tenants

    def ready(start: TenantsStart) -> None:
        click.echo(f"syncengine serve listening on {start.base_url} for "
                   f"{len(start.tenants)} tenants", err=True)  # fmt: skip
        for name, info in start.tenants.items():
            parts = [f"hooks: POST /hooks/hr/{name}" if info["hooks"] else "hooks: off"]
            parts.append(f"sso: /tenants/{name}/sso/login" if info["sso"] else "sso: off")
            if info["schedule"]:
                parts.append(f"nightly sync: cron {info['schedule']!r}")
            click.echo(f"  {name}: " + ", ".join(parts), err=True)

    serve_tenants(state.tenants, host=host, port=port, on_ready=ready,
                  log_level="debug" if state.debug else "warning")  # fmt: skip


@main.command("events")
@click.option("--status", type=click.Choice(["received", "applied", "failed"]), default=None,
              help="Only events in this state.")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="The newest N events.")  # fmt: skip
@json_option("Print a JSON array.")
@pass_state
@handle_errors
def events_command(state: State, status: str | None, limit: int, as_json: bool) -> None:
    """HR hook events, newest first: received (waiting or retrying), applied, failed (why)."""
    events = service.list_hook_events(state.engine, status=status, limit=limit)
    if as_json:
        echo_json([e.to_dict() for e in events])
        return
    if not events:
        click.echo("no hook events" + (f" with status {status}" if status else ""))
        return
    zone = state.config.timezone
    for e in events:
        when = shown(e.received_at, zone)
        line = (f"#{e.id}  {when}  {e.kind:<17} {e.employee_id or '-':<10} {e.status:<8} "
                f"delivery {e.delivery_id}, {e.attempts} attempt(s)")  # fmt: skip
        if e.run_id is not None:
            line += f", run {e.run_id}"
        if e.status == "received" and e.next_attempt_at is not None:
            line += f", next try {shown(e.next_attempt_at, zone)}"
        click.echo(line)
        if e.last_error:
            click.echo(f"      {e.last_error}")
