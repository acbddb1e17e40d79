"""The ``syncengine`` command line: parse, call :mod:`syncengine.service`, render, exit.

Thin on purpose: no query, no HTTP request and no business rule lives here. Every
:class:`~syncengine.errors.SyncEngineError` becomes a one-paragraph message on stderr and its
documented exit code, never a traceback (``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from syncengine import __version__, service
from syncengine.config import Config, load_config
from syncengine.errors import EXIT_ERROR, SyncEngineError

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Per-invocation CLI state: the config path and the lazily loaded config."""

    def __init__(self, config_path: str | None, debug: bool):
        self.config_path = config_path
        self.debug = debug
        self._config: Config | None = None
        self._engine: service.Engine | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def engine(self) -> service.Engine:
        """The process's one Engine (built on first use, closed when the command ends)."""
        if self._engine is None:
            self._engine = service.Engine(self.config)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


pass_state = click.make_pass_decorator(State)


def handle_errors(func: F) -> F:
    """Print a SyncEngineError as a clear message and exit with its code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SyncEngineError as exc:
            ctx = click.get_current_context(silent=True)
            state = ctx.find_object(State) if ctx else None
            if state is not None and state.debug:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return cast(F, wrapper)


def echo_json(data: Any) -> None:
    """Machine output: one JSON document on stdout, UTF-8, stable key order."""
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $SYNCENGINE_CONFIG, else ./syncengine.toml).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="syncengine")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, debug: bool) -> None:
    """Keep Tencent Exmail in step with the HR system, safely."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = State(config_path, debug)
    ctx.call_on_close(ctx.obj.close)


def json_option(help: str) -> Callable[[F], F]:
    """``--json``: the command's result as one JSON document on stdout (declared once)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def release_options(func: F) -> F:
    """``--allow-removals N``, ``--allow-updates N`` and ``--force``: the releases a brake
    names, given after review (``plan``, ``apply`` and ``sync`` take the same three)."""
    func = click.option("--force", is_flag=True, help="After review: release every brake.")(func)
    func = click.option(
        "--allow-updates",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help="After review: release the update brake for up to N updates.",
    )(func)
    func = click.option(
        "--allow-removals",
        type=click.IntRange(min=0),
        default=None,
        metavar="N",
        help="After review: release the removal brakes for up to N disables/deletes.",
    )(func)
    return func


def _invoked_as() -> str:
    """How the user can type this command again: ``syncengine`` when that is on PATH, else the
    path they used (``.venv/bin/syncengine`` after the README's install)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "syncengine"
    if os.path.basename(argv0) != "syncengine":
        return "syncengine"  # python -m, or a test runner
    on_path = shutil.which("syncengine")
    if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
        return "syncengine"
    rel = os.path.relpath(argv0)
    return rel if not rel.startswith("..") else argv0


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


@main.group()
def db() -> None:
    """The staging database: create, migrate and inspect its schema."""


@db.command("upgrade")
@pass_state
@handle_errors
def db_upgrade_command(state: State) -> None:
    """Create or migrate the staging database to this version's schema."""
    before, after = service.db_upgrade(state.config)
    if before == after:
        click.echo(f"database already at {after} (up to date)")
    else:
        click.echo(f"database upgraded from {before or 'empty'} to {after}")


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
    show_progress = not as_json and sys.stderr.isatty()

    def progress(stage: str, count: int) -> None:
        if show_progress:
            click.echo(f"\r{stage}: {count:,} ...", err=True, nl=stage == "storing")

    report = service.ingest(state.engine, progress=progress)
    if as_json:
        echo_json(report.to_dict())
        return
    counts = report.counts
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
            "rng_seed": rng_seed,
        },
        control=control,
        control_anywhere=control_anywhere,
        on_ready=ready,
    )


@main.command("plan")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the plan to FILE in the chosen --format (json: the file 'apply' takes).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default=None,
    help="text (the default on stdout), json (the applyable plan file) or html (one page "
    "for approvers). Default with --out: json.",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 2 when the plan has changes (0: none, 3: blocked, 1: error).",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="EMPLOYEE_ID",
    help="Plan for these employees alone and explain each step (repeatable).",
)
@release_options
@json_option("Print a JSON summary (and the plan).")
@pass_state
@handle_errors
def plan_command(
    state: State,
    out_path: str | None,
    fmt: str | None,
    detailed_exitcode: bool,
    only: tuple[str, ...],
    allow_removals: int | None,
    allow_updates: int | None,
    force: bool,
    as_json: bool,
) -> None:
    """Show what a sync would change: compare the current HR snapshot with the live Exmail
    directory, save the plan and print it (or write it with --out).

    Exit codes: 0 no changes, 2 changes (with --detailed-exitcode), 3 blocked by a safety
    brake (always; the plan is still saved and shown with how to release it), 1 error.
    """
    import time

    from syncengine import render
    from syncengine.errors import EXIT_BLOCKED, EXIT_CHANGES

    fmt = fmt or ("json" if out_path else "text")
    show_progress = not as_json and sys.stderr.isatty()
    last = [0.0]

    def progress(stage: str, done: int, total: int | None) -> None:
        if not show_progress:
            return
        now = time.monotonic()
        final = total is not None and done >= total
        if stage == "reading mailboxes" and not final and now - last[0] < 0.2:
            return
        last[0] = now
        if stage == "planning":  # keep the last read count on its own line
            click.echo(f"\nplanning {done:,} people ...", err=True)
            return
        of = f" / {total:,}" if total else ""
        click.echo(f"\r{stage}: {done:,}{of} ...", err=True, nl=False)

    result = service.make_plan(
        state.engine,
        only=list(only) if only else None,
        allow_removals=allow_removals,
        allow_updates=allow_updates,
        force=force,
        progress=progress,
    )
    plan = result.plan
    if fmt == "json":
        document = render.render_json(plan)
    elif fmt == "html":
        document = render.render_html(
            plan, release=result.release, names=result.names, plan_id=result.plan_id
        )
    else:
        color = out_path is None and not as_json and sys.stdout.isatty()
        document = render.render_text(plan, color=color, release=result.release,
                                      names=result.names)  # fmt: skip
        if plan.explanations:
            document = (
                render.render_explanation(plan, color=color, names=result.names) + "\n" + document
            )

    if out_path is not None:
        _write_file(out_path, document)
    if as_json:
        data = result.to_dict()
        data["out"] = out_path
        data["format"] = fmt
        if out_path is None:
            data["plan"] = plan.to_dict()
        echo_json(data)
    elif out_path is not None:
        click.echo(f"{render.summary_line(plan, result.release)}")
        click.echo(f"Saved as plan #{result.plan_id} ({fmt}): {out_path}")
        for reason in plan.unreleased(result.release):
            click.echo(f"blocked: {reason.message} — {reason.how_to_release}", err=True)
    else:
        click.echo(document, nl=False)
        if fmt == "text":
            click.echo(f"(saved as plan #{result.plan_id}; write it with --out FILE)", err=True)

    if result.blocked:
        sys.exit(EXIT_BLOCKED)
    if detailed_exitcode and plan.has_changes:
        sys.exit(EXIT_CHANGES)


def _write_file(path: str, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a plan."""
    import os
    import tempfile

    from syncengine.errors import PlanError

    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".plan-", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise PlanError(
            f"cannot write the plan: {exc.strerror or exc}",
            where=path,
            hint="choose a writable path for --out (the plan is saved in the database anyway)",
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


# --- apply and audit (issue 5) -------------------------------------------------------------


def _cli_actor() -> str:
    """``cli:<user>`` for the audit log's "who started it"."""
    import getpass
    import os

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def _apply_progress(enabled: bool) -> Callable[[int, int], None] | None:
    if not enabled:
        return None
    import time

    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.2:
            return
        last[0] = now
        click.echo(f"\rapplying: {done:,} / {total:,} actions", err=True, nl=done >= total)

    return progress


def _echo_apply_outcome(outcome: service.ApplyOutcome) -> None:
    for report in outcome.reports:
        counts = report.counts
        what = "resumed plan" if report.resumed else "plan"
        plan_ref = f"#{report.plan_id} " if report.plan_id is not None else ""
        head = f"{what} {plan_ref}({report.checksum[:12]}): {report.status}"
        if report.status == "no-changes":
            click.echo(f"{head}: nothing to do")
            continue
        if report.status.startswith("already-"):
            click.echo(f"{head}: this plan was applied before; nothing was written "
                       "(make a new plan with 'syncengine plan')")  # fmt: skip
        else:
            click.echo(
                f"{head}: {counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
                f"{counts.get('skipped', 0)} skipped"
                + (f", {counts['already_done']} done earlier" if counts.get("already_done") else "")
                + f" ({report.calls} API calls, {report.seconds:.1f} s, run {report.run_id})"
            )
        for f in report.failures:
            who = f" (employee {f.employee_id})" if f.employee_id else ""
            click.echo(f"  {f.status:<7} {f.key}{who}: {f.reason}")
        if report.passwords_delivered:
            click.echo(
                f"{report.passwords_delivered} initial password(s) written to "
                f"{report.password_file} (mode 0600): hand them over, then delete the file"
            )


@main.command("apply")
@click.argument("planfile", required=False, type=click.Path(dir_okay=False))
@click.option("--checksum", default=None, help="The reviewed plan's checksum; refuse any other.")
@release_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--resume", is_flag=True, help="Only finish the apply an interruption left.")
@json_option("Print the outcome as JSON.")
@pass_state
@handle_errors
def apply_command(
    state: State,
    planfile: str | None,
    checksum: str | None,
    allow_removals: int | None,
    allow_updates: int | None,
    force: bool,
    yes: bool,
    resume: bool,
    as_json: bool,
) -> None:
    """Apply a reviewed plan to Exmail (PLANFILE from 'syncengine plan --out'), or plan now,
    show the plan and ask before applying it.

    Refused before any write when the checksum or config differs, a brake blocks the plan
    (release with --allow-removals/--allow-updates/--force), another apply runs, or Exmail
    changed since the plan was made (plan again). An interrupted apply is finished first.
    Exit codes: 0 applied, 1 error or refused, 3 blocked, 4 some actions failed (listed).
    """
    from syncengine import render
    from syncengine.errors import EXIT_FAILED_ACTIONS, SyncEngineError

    actor = _cli_actor()
    progress = _apply_progress(not as_json and sys.stderr.isatty())
    release: dict[str, Any] = {
        "allow_removals": allow_removals,
        "allow_updates": allow_updates,
        "force": force,
    }
    extra: dict[str, Any] = {}
    if resume:
        if planfile is not None:
            raise click.UsageError("--resume takes no PLANFILE")
        outcome = service.resume_apply(state.engine, actor=actor, progress=progress)
        if not outcome.reports and not as_json:
            click.echo("nothing to resume: no interrupted apply")
    elif planfile is not None:
        plan = service.read_plan_file(planfile)
        outcome = service.apply_plan(
            state.engine, plan, checksum=checksum, actor=actor, progress=progress, **release
        )
    else:

        def confirm(earlier: service.ApplyOutcome, result: service.PlanResult) -> bool:
            if earlier.reports and not as_json:
                _echo_apply_outcome(earlier)
            plan = result.plan
            if not as_json:
                click.echo(render.render_text(plan, color=sys.stdout.isatty(),
                                              release=result.release, names=result.names),
                           nl=False)  # fmt: skip
            if yes:
                return True
            if not sys.stdin.isatty():
                raise SyncEngineError(
                    "refusing to apply without confirmation: there is no terminal to ask on",
                    where="apply",
                    hint="review the plan, then run again with --yes (or apply a saved plan "
                    "file with 'syncengine apply PLANFILE --yes')",
                )
            return click.confirm(f"Apply these {len(plan.actions)} change(s)?", default=False)

        result, maybe = service.plan_and_apply(
            state.engine, confirm=confirm, actor=actor, progress=progress, **release
        )
        if maybe is None:
            click.echo("cancelled: nothing was applied", err=True)
            sys.exit(1)
        outcome = maybe
        extra = {"plan": result.to_dict()}
    if as_json:
        echo_json({**outcome.to_dict(), **extra})
    else:
        _echo_apply_outcome(outcome)
    if outcome.failed:
        if not as_json:
            click.echo("some actions failed (listed above); fix the cause and run "
                       "'syncengine plan' / 'syncengine apply' again", err=True)  # fmt: skip
        sys.exit(EXIT_FAILED_ACTIONS)


AUDIT_COLUMNS = (
    "id", "at", "run_id", "actor", "plan_id", "action_key", "kind", "target", "employee_id",
    "email", "result", "call", "attempt", "attempts", "errcode", "errmsg", "duration_ms", "diffs",
)  # fmt: skip


def _parse_since(value: str | None) -> Any:
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD) or ISO time", param_hint="--since"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@main.command("audit")
@click.option("--run", "run_id", type=int, default=None, help="Only this run.")
@click.option("--employee", "employee_id", default=None, help="Only this HR employee id.")
@click.option("--email", default=None, help="Only this mailbox address.")
@click.option("--since", default=None, help="Only rows at or after DATE (YYYY-MM-DD or ISO).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="The newest N rows.")
@json_option("Print a JSON array.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per audit row).")
@pass_state
@handle_errors
def audit_command(
    state: State,
    run_id: int | None,
    employee_id: str | None,
    email: str | None,
    since: str | None,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """What happened to whom, when and why: the audit log, oldest first.

    One row per action outcome (result done/failed/skipped, attempts, field diffs) and one
    per API call made for it (call, result ok/retry/error, errcode and text, duration).
    """
    import csv
    import dataclasses

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    rows = service.query_audit(
        state.engine,
        run_id=run_id,
        employee_id=employee_id,
        email=email,
        since=_parse_since(since),
        limit=limit,
    )
    records = [{k: dataclasses.asdict(r)[k] for k in AUDIT_COLUMNS} for r in rows]
    if as_json:
        echo_json(records)
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(AUDIT_COLUMNS)
        for rec in records:
            writer.writerow(
                [
                    json.dumps(v, ensure_ascii=False, sort_keys=True)
                    if isinstance(v, dict)
                    else ("" if v is None else (v.isoformat() if hasattr(v, "isoformat") else v))
                    for v in rec.values()
                ]
            )
        return
    if not records:
        click.echo("no audit rows match")
        return
    for r in rows:
        when = r.at.isoformat(sep=" ", timespec="seconds") if r.at else "?"
        who = f"employee {r.employee_id} " if r.employee_id else ""
        if r.call:
            line = f"{when}  run {r.run_id}  {r.action_key}  call {r.call} #{r.attempt}: {r.result}"
        else:
            line = (f"{when}  run {r.run_id}  {r.actor}  {r.action_key}  {who}-> {r.result}"
                    f" ({r.attempts} call(s))")  # fmt: skip
        if r.errcode:
            line += f"  [{r.errcode}]"
        if r.errmsg:
            line += f"  {r.errmsg}"
        if r.duration_ms is not None:
            line += f"  {r.duration_ms} ms"
        click.echo(line)
        for field, change in sorted((r.diffs or {}).items()):
            if isinstance(change, dict):
                click.echo(f"      {field}: {change.get('old')!r} -> {change.get('new')!r}")


# --- sync: the nightly job (issue 5) -------------------------------------------------------


class _ProgressLine:
    """One self-overwriting progress line on stderr: a bar when the total is known."""

    WIDTH = 30

    def __init__(self) -> None:
        import time

        self._clock = time.monotonic
        self._last = 0.0
        self._stage: str | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = self._clock()
        final = total is not None and done >= total
        if stage == self._stage and not final and now - self._last < 0.1:
            return
        if self._stage is not None and stage != self._stage:
            click.echo("", err=True)
        self._stage, self._last = stage, now
        if total:
            filled = min(self.WIDTH, self.WIDTH * done // total)
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = f"{stage:<18} [{bar}] {done:,} / {total:,}"
        else:
            text = f"{stage:<18} {done:,}"
        click.echo(f"\r{text}", err=True, nl=False)

    def close(self) -> None:
        if self._stage is not None:
            click.echo("", err=True)


@main.command("sync")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Ingest and plan, apply nothing; list the API calls the plan would make.",
)
@click.option(
    "--report",
    "report",
    default=None,
    metavar="FILE",
    help="Also write the run report as JSON to FILE; {date}, {datetime} and {run} "
    "in FILE are filled in (e.g. reports/sync-{date}.json).",
)
@json_option("Print the run report as JSON.")
@release_options
@click.option(
    "--scheduled",
    is_flag=True,
    help="Record the run as started by the schedule (cron, systemd timer).",
)
@click.option(
    "--notify/--no-notify",
    default=None,
    help="Send the [notifications] (default: yes, except with --dry-run).",
)
@pass_state
@handle_errors
def sync_command(
    state: State,
    dry_run: bool,
    report: str | None,
    as_json: bool,
    allow_removals: int | None,
    allow_updates: int | None,
    force: bool,
    scheduled: bool,
    notify: bool | None,
) -> None:
    """The nightly job: finish an interrupted apply, ingest HR, plan, apply, report, notify.

    A plan blocked by a brake applies nothing. One sync at a time per staging database (the
    run lock names the holder of a second one). Exit codes: 0 done (or nothing to do),
    1 error (source, Exmail, lock...), 3 blocked by a brake, 4 some actions failed.
    """
    show = not as_json and sys.stderr.isatty()
    line = _ProgressLine() if show else None
    try:
        result = service.sync(
            state.engine,
            dry_run=dry_run,
            allow_removals=allow_removals,
            allow_updates=allow_updates,
            force=force,
            actor="schedule" if scheduled else _cli_actor(),
            report=report,
            notify=notify,
            progress=line,
        )
    finally:
        if line is not None:
            line.close()
    if as_json:
        echo_json(result.to_dict())
    else:
        for text in result.lines():
            click.echo(text)
    if result.exit_code:
        sys.exit(result.exit_code)


# --- demo: the README's first command (issue 5) --------------------------------------------

DEMO_EXAMPLES = 3
"""Actions shown per section of the demo's first (large) plan."""


def _demo_plan_digest(result: service.PlanResult) -> None:
    """A large plan in brief: the count of each section and its first few actions."""
    from syncengine import render

    plan = result.plan
    for section in render.SECTIONS:
        actions = [a for a in plan.actions if a.kind in section.kinds]
        if not actions:
            continue
        click.echo(f"  {section.title} ({len(actions)})")
        for a in actions[:DEMO_EXAMPLES]:
            who = render.employee_label(a, result.names)
            click.echo(f"    {section.mark} {render.action_label(a)}" + (f"  {who}" if who else "")
                       + f"  — {a.reason}")  # fmt: skip
        if len(actions) > DEMO_EXAMPLES:
            click.echo(f"    ... and {len(actions) - DEMO_EXAMPLES} more")
    if plan.unmanaged:
        click.echo(f"  Left alone: {len(plan.unmanaged)} unmanaged ({', '.join(plan.unmanaged)})")
    if plan.protected:
        click.echo(f"  Never touched: {len(plan.protected)} protected "
                   f"({', '.join(plan.protected)})")  # fmt: skip


def _demo_applied(outcome: service.ApplyOutcome | None, folder: str) -> None:
    report = outcome.applied if outcome else None
    if report is None:
        click.echo("  nothing to apply")
        return
    c = report.counts
    click.echo(f"  {c.get('done', 0)} done, {c.get('failed', 0)} failed, "
               f"{c.get('skipped', 0)} skipped — {report.calls} API calls in "
               f"{report.seconds:.1f} s (run {report.run_id})")  # fmt: skip
    for f in report.failures:
        click.echo(f"  {f.status}: {f.key}: {f.reason}")
    if report.passwords_delivered:
        import os

        where = os.path.relpath(report.password_file or "", folder)
        click.echo(f"  {report.passwords_delivered} initial password(s) in {where} (mode 0600), "
                   "to hand over; each must be changed at first login")  # fmt: skip


@main.command("demo")
@click.option(
    "--dir",
    "folder",
    default=".demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The demo's working folder (made afresh on every run).",
)
@click.option(
    "--api",
    type=click.Choice(["v1", "v2"]),
    default="v2",
    show_default=True,
    help="Which Exmail API generation the emulator speaks.",
)
@click.option(
    "--samples",
    "samples",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder with the sample config and HR files (default: the source tree's).",
)
@click.option(
    "--keep-running", is_flag=True, help="Leave the emulator running at the end (Ctrl+C stops it)."
)
@handle_errors
def demo_command(folder: str, api: str, samples: str | None, keep_running: bool) -> None:
    """Run the whole flow on built-in defaults: a local Exmail emulator and the sample HR
    export. Ingest, plan, apply, show the audit log; then change four HR rows (a hire, a
    move, a leaver, a name change) and run again to show the incremental plan.

    Needs no network and no config: everything goes into --dir (default ./.demo).
    """
    import os
    import time

    from syncengine import render

    color = sys.stdout.isatty()
    line = _ProgressLine() if sys.stderr.isatty() else None
    rel = os.path.relpath(os.path.abspath(folder))
    cfg = os.path.join(rel, "syncengine.toml")

    def step(n: int, title: str) -> None:
        text = f"{n}. {title}"
        click.echo("\n" + (click.style(text, bold=True) if color else text))

    def show(result: service.DemoResult) -> None:
        if line is not None:
            line.close()
        click.echo(f"syncengine demo: the Exmail emulator ({result.api}) is running at "
                   f"{result.base_url} with the built-in demo directory "
                   f"({result.seed_mailboxes} mailboxes).")  # fmt: skip
        click.echo(f"Working copy of samples/ in {rel}/ (config {cfg}, SQLite database, "
                   "HR files).")  # fmt: skip
        first = result.first
        c = first.ingest.counts
        step(1, "Ingest the HR export")
        click.echo(f"  {first.ingest.source}")
        click.echo(f"  {first.ingest.rows} rows: {c['people']} people in {c['departments']} "
                   f"departments; {c['quarantined']} held back:")  # fmt: skip
        for p in first.ingest.problems:
            click.echo(f"    {p}")
        step(2, "Plan: compare HR with the live Exmail directory")
        click.echo(f"  {render.summary_line(first.plan.plan, first.plan.release)}")
        _demo_plan_digest(first.plan)
        step(3, "Apply the plan (checkpointed, retried, audited)")
        _demo_applied(first.outcome, rel)
        step(4, f"The audit log, a few rows (all of them: syncengine --config {cfg} audit)")
        for r in result.audit:
            items = sorted((r.diffs or {}).items())
            diffs = ", ".join(
                f"{k}: {v.get('old')!r} → {v.get('new')!r}" if isinstance(v, dict) else k
                for k, v in items[:3]
            ) + (f", ... ({len(items) - 3} more)" if len(items) > 3 else "")  # fmt: skip
            who = f" {r.employee_id}" if r.employee_id else ""
            click.echo(f"  {r.at:%H:%M:%S} {r.kind:<17} {r.target}{who} → {r.result}"
                       + (f"  [{diffs}]" if diffs else ""))  # fmt: skip
        step(5, f"HR changes four rows (in {rel}/hr-export.csv)")
        marks = {"hire": "+", "move": "~", "rename": "~", "leaver": "-"}
        for ch in result.changes:
            click.echo(f"  {marks.get(ch.kind, '*')} {ch.kind:<7} {ch.employee_id} {ch.name}: "
                       f"{ch.detail}")  # fmt: skip
        second = result.second
        c = second.ingest.counts
        step(6, "Run again: only what changed")
        click.echo(f"  ingest: {c['new']} new, {c['changed']} changed, {c['gone']} gone")
        text = render.render_text(second.plan.plan, color=color, release=second.plan.release,
                                  names=second.plan.names)  # fmt: skip
        for text_line in text.rstrip("\n").split("\n"):
            click.echo(f"  {text_line}" if text_line else "")
        _demo_applied(second.outcome, rel)
        step(7, f"Done in {result.seconds:.1f} s: Exmail now has {result.mailboxes} mailboxes "
                f"in {result.departments} departments.")  # fmt: skip
        click.echo("\nWhat next:")
        se = _invoked_as()
        nexts = [
            (f"{se} --config {cfg} audit --employee {result.changes[-1].employee_id}",
             "what happened to one person, when and why"),
            (f"{se} --config {cfg} audit --json", "the whole audit log, for machines"),
            (f"{se} demo --keep-running", "keep the emulator up; then, in another terminal:"),
            (f"  {se} --config {cfg} plan", "the plan against the running emulator"),
            (f"  {se} --config {cfg} sync --dry-run", "the nightly job, writing nothing"),
            (f"{se} emulator --help", "a standalone emulator (faults, latency, seeds)"),
            ("README.md", "connect your HR source and Exmail; schedule the nightly sync"),
        ]  # fmt: skip
        width = max(len(cmd) for cmd, _ in nexts) + 2
        for cmd, why in nexts:
            click.echo(f"  {cmd:<{width}}{why}")
        if keep_running:
            click.echo(f"\nThe emulator keeps running at {result.base_url} (Ctrl+C stops it).")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                click.echo("stopped")

    service.demo(folder=folder, api=api, samples=samples, actor=_cli_actor(), progress=line,
                 hold=show)  # fmt: skip


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
    restart are worked off at once.
    """

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
    for e in events:
        when = e.received_at.isoformat(sep=" ", timespec="seconds")
        line = (f"#{e.id}  {when}  {e.kind:<17} {e.employee_id or '-':<10} {e.status:<8} "
                f"delivery {e.delivery_id}, {e.attempts} attempt(s)")  # fmt: skip
        if e.run_id is not None:
            line += f", run {e.run_id}"
        if e.status == "received" and e.next_attempt_at is not None:
            line += f", next try {e.next_attempt_at.isoformat(sep=' ', timespec='seconds')}"
        click.echo(line)
        if e.last_error:
            click.echo(f"      {e.last_error}")
