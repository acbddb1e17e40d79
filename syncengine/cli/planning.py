"""The ``plan``, ``apply`` and ``audit`` commands."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from syncengine import service
from syncengine.cli.app import (
    State,
    cli_actor,
    echo_apply_outcome,
    echo_json,
    handle_errors,
    json_option,
    main,
    pass_state,
    release_options,
    write_file,
)
from syncengine.cli.progress import progress_for
from syncengine.clock import local, shown
from syncengine.errors import SyncEngineError


@main.command("plan")
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the plan to FILE; the format follows the extension (.json .html .txt). An "
    "HTML page is written with the JSON file of the same plan beside it (FILE.json).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "html"]),
    default=None,
    help="text (the default on stdout), json (the applyable plan file) or html (one page "
    "for approvers). Default with --out: from the extension, else json.",
)
@click.option("--lang", type=click.Choice(["zh", "en"]), default=None,
              help="Language: of the HTML page (default: [review] lang) and of the text "
              "(default: en).")  # fmt: skip
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
@click.option(
    "--refresh",
    is_flag=True,
    help="Ingest the HR source first (as 'syncengine ingest'), so the plan sees the latest "
    "export. Without it the plan uses the last ingested snapshot and says how old it is.",
)
@click.option(
    "--full-read",
    is_flag=True,
    help="Gen 1: read every member and the whole department tree, not only what the "
    "user/list journal names (a full read is made anyway every [exmail] full_read_days).",
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
    lang: str | None,
    refresh: bool,
    full_read: bool,
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
    from syncengine import render, review
    from syncengine.errors import EXIT_BLOCKED, EXIT_CHANGES

    try:
        fmt = review.output_format(out_path, fmt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    service.check_only(state.engine, only)
    if full_read:
        state.engine.read_in_full()
    with progress_for(as_json) as progress:
        if refresh:
            ingested = service.ingest(state.engine, progress=progress.ingest)
            progress.close()
            if not as_json:
                click.echo(f"ingested snapshot #{ingested.snapshot_id}: {ingested.people:,} "
                           f"people, {ingested.quarantined:,} quarantined", err=True)  # fmt: skip
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
        document = service.render_plan(
            state.engine, plan, "html", plan_id=result.plan_id, release=result.release, lang=lang
        )
    else:
        color = out_path is None and not as_json and sys.stdout.isatty()
        document = render.render_text(plan, color=color, release=result.release,
                                      names=result.names, lang=lang or "en",
                                      zone=state.config.review.zone)  # fmt: skip
        if plan.explanations:
            document = (
                render.render_explanation(plan, color=color, names=result.names) + "\n" + document
            )

    json_beside = review.json_beside(out_path) if out_path and fmt == "html" else None
    if json_beside is not None:
        write_file(str(json_beside), render.render_json(plan))
    if out_path is not None:
        write_file(out_path, document)
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
        if json_beside is not None:
            click.echo(f"The plan file to apply (same plan): {json_beside}")
        for reason in plan.unreleased(result.release):
            click.echo(f"blocked: {reason.message} — {reason.how_to_release}", err=True)
    else:
        click.echo(document, nl=False)
        if fmt == "text":
            click.echo(f"(saved as plan #{result.plan_id}; write it with --out FILE)", err=True)
    if result.snapshot_age is not None and not as_json and (fmt == "text" or out_path):
        from syncengine.freshness import describe  # (a document on stdout stays clean)

        for line in describe(result.snapshot_age, state.config.timezone):
            click.echo(line, err=True)

    if result.blocked:
        sys.exit(EXIT_BLOCKED)
    if detailed_exitcode and plan.has_changes:
        sys.exit(EXIT_CHANGES)


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
    from syncengine.errors import EXIT_FAILED_ACTIONS

    actor = cli_actor()
    display = progress_for(as_json)
    progress = display.apply
    release: dict[str, Any] = {
        "allow_removals": allow_removals,
        "allow_updates": allow_updates,
        "force": force,
    }
    extra: dict[str, Any] = {}
    try:
        if resume:
            if planfile is not None:
                raise click.UsageError("--resume takes no PLANFILE")
            outcome = service.resume_apply(state.engine, actor=actor, progress=progress)
            if not outcome.reports and not as_json:
                click.echo("nothing to resume: no interrupted apply")
        elif planfile is not None:
            outcome = service.apply_plan_file(
                state.engine, planfile, checksum=checksum, actor=actor, progress=progress,
                after_decode=_keep_for_good, **release,
            )  # fmt: skip
        else:

            def confirm(earlier: service.ApplyOutcome, result: service.PlanResult) -> bool:
                display.close()  # the resumed apply's line ends before the plan is shown
                if earlier.reports and not as_json:
                    echo_apply_outcome(earlier)
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
    finally:
        display.close()
    if as_json:
        echo_json({**outcome.to_dict(), **extra})
    else:
        echo_apply_outcome(outcome)
    if outcome.failed:
        if not as_json:
            click.echo("some actions failed (listed above); fix the cause and run "
                       "'syncengine plan' / 'syncengine apply' again", err=True)  # fmt: skip
        sys.exit(EXIT_FAILED_ACTIONS)


def _keep_for_good(plan: object) -> None:
    """The plan just decoded (~50 objects per action) lives until this command ends.

    The heap is frozen, so that the garbage collections the apply triggers no longer walk it
    (for 10,000 creates, 0.3 s of full collections that could never free any of it), and the
    plan is held by a frozen list that holds itself: no collection frees it object by object
    after the last call (0.01 s); the process exits with it (its memory goes back whole). When
    the command ends, the heap is unfrozen for a process that goes on (a test's runner): the
    plan is then garbage like any other."""
    import gc

    kept: list[object] = [plan]
    kept.append(kept)
    gc.freeze()
    click.get_current_context().call_on_close(gc.unfreeze)


AUDIT_COLUMNS = (
    "id", "at", "run_id", "actor", "plan_id", "action_key", "kind", "target", "employee_id",
    "email", "result", "call", "attempt", "attempts", "errcode", "errmsg", "duration_ms", "diffs",
)  # fmt: skip


def _parse_since(value: str | None, zone: Any) -> Any:
    """``--since``: a date or a time without offset is on the company's clock."""
    if value is None:
        return None
    from datetime import datetime

    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD) or ISO time", param_hint="--since"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=zone)


def _csv_value(value: Any, zone: Any) -> Any:
    """A CSV cell: times on the company's clock with their offset, dates as ISO."""
    from datetime import datetime

    if isinstance(value, datetime):
        return local(value, zone).isoformat()
    return value.isoformat() if hasattr(value, "isoformat") else value


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
        since=_parse_since(since, state.config.timezone),
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
                    else ("" if v is None else _csv_value(v, state.config.timezone))
                    for v in rec.values()
                ]
            )
        return
    if not records:
        click.echo("no audit rows match")
        return
    zone = state.config.timezone
    for r in rows:
        when = shown(r.at, zone)
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
