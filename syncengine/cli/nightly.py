"""The ``sync`` and ``demo`` commands."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from syncengine import service
from syncengine.cli.app import (
    State,
    cli_actor,
    echo_json,
    handle_errors,
    invoked_as,
    json_option,
    main,
    pass_state,
    release_options,
)
from syncengine.cli.progress import progress_for


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
@click.option(
    "--all",
    "all_tenants",
    is_flag=True,
    help="Every tenant of the config, each on its own (a failing one stops no other).",
)
@click.option("--jobs", type=click.IntRange(min=1), default=4, show_default=True,
              help="With --all: tenants synced at the same time.")  # fmt: skip
@click.option(
    "--full-read",
    is_flag=True,
    help="Gen 1: read every member and the whole department tree, not only what the "
    "user/list journal names (a full read is made anyway every [exmail] full_read_days).",
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
    all_tenants: bool,
    jobs: int,
    full_read: bool,
) -> None:
    """The nightly job: finish an interrupted apply, ingest HR, plan, apply, report, notify.

    A plan blocked by a brake applies nothing. One sync at a time per staging database (the
    run lock names the holder of a second one). Exit codes: 0 done (or nothing to do),
    1 error (source, Exmail, lock...), 3 blocked by a brake, 4 some actions failed. With
    --all, one line per tenant and the exit code of the first tenant (by name) that did not
    succeed.
    """
    if all_tenants and full_read:
        raise click.UsageError("--full-read works on one tenant (--tenant NAME), not with --all")
    if all_tenants:
        _sync_all(state, jobs=jobs, as_json=as_json, dry_run=dry_run, report=report,
                  allow_removals=allow_removals, allow_updates=allow_updates, force=force,
                  actor="schedule" if scheduled else cli_actor(), notify=notify)  # fmt: skip
        return
    if full_read:
        state.engine.read_in_full()
    # Gen 2: the directory read starts now, before the staging layer is even imported (see
    # syncengine.service.early_read); the night uses it unless it resumes an apply first.
    early = service.early_read_for_sync(state.engine, dry_run=dry_run, notify=notify,
                                        report=report)  # fmt: skip
    line = progress_for(as_json)
    try:
        result = service.sync(
            state.engine,
            dry_run=dry_run,
            allow_removals=allow_removals,
            allow_updates=allow_updates,
            force=force,
            actor="schedule" if scheduled else cli_actor(),
            report=report,
            notify=notify,
            progress=line,
            early=early,
        )
    finally:
        line.close()
        if early is not None:
            early.close()
    if as_json:
        echo_json(result.to_dict())
    else:
        for text in result.lines():
            click.echo(text)
    if result.exit_code:
        sys.exit(result.exit_code)


def _sync_all(state: State, *, jobs: int, as_json: bool, report: str | None,
              **kwargs: Any) -> None:  # fmt: skip
    """``sync --all``: every tenant, each with its own engine; one line (or JSON entry) each."""
    from syncengine.service.tenants import combined_exit_code, sync_tenants

    if state.tenant is not None:
        raise click.UsageError("--all and --tenant exclude each other")
    tenants = state.tenants
    if report is not None and tenants.multi and "{tenant}" not in report:
        raise click.UsageError("with --all, put {tenant} in --report FILE (one report each)")
    results = sync_tenants(
        tenants, jobs=jobs, report_for=report, **kwargs,
    )  # fmt: skip
    if as_json:
        echo_json({"tenants": [r.to_dict() for r in results],
                   "exit_code": combined_exit_code(results)})  # fmt: skip
    else:
        for r in results:
            click.echo(f"{r.tenant}: {r.headline()}")
    code = combined_exit_code(results)
    if code:
        sys.exit(code)


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


def _demo_applied(outcome: service.ApplyOutcome | None, folder: str, api: str) -> None:
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
        # Gen 1 has no "change at first login" field: the plan does not promise it there.
        change = "; each must be changed at first login" if api == "v2" else ""
        click.echo(f"  {report.passwords_delivered} initial password(s) in {where} (mode 0600), "
                   f"to hand over{change}")  # fmt: skip


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
    import time

    from syncengine import render

    color = sys.stdout.isatty()
    line = progress_for(False)
    rel = os.path.relpath(os.path.abspath(folder))
    cfg = os.path.join(rel, "syncengine.toml")

    def step(n: int, title: str) -> None:
        text = f"{n}. {title}"
        click.echo("\n" + (click.style(text, bold=True) if color else text))

    def show(result: service.DemoResult) -> None:
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
        _demo_applied(first.outcome, rel, result.api)
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
        _demo_applied(second.outcome, rel, result.api)
        if result.groups_created:
            created = result.groups_created
            click.echo(f"  Mail groups ([groups] in {cfg}): the first run created "
                       f"{len(created)}, e.g. {created[0]};")  # fmt: skip
            click.echo("  this run made them follow HR (the address stays, only members move):")
            for group_line in result.groups_followed:
                click.echo(f"    {group_line}")
        step(7, f"Done in {result.seconds:.1f} s: Exmail now has {result.mailboxes} mailboxes "
                f"in {result.departments} departments.")  # fmt: skip
        click.echo("\nWhat next:")
        se = invoked_as()
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

    service.demo(folder=folder, api=api, samples=samples, actor=cli_actor(), progress=line,
                 hold=show)  # fmt: skip
