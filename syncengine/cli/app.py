"""The ``syncengine`` command group and what its commands share (state, errors, options,
progress, output). The commands live in the sibling modules, one per job; parse, call
:mod:`syncengine.service`, render, exit.

Thin on purpose: no query, no HTTP request and no business rule lives here. Every
:class:`~syncengine.errors.SyncEngineError` becomes a one-paragraph message on stderr and its
documented exit code, never a traceback (``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from syncengine import __version__, service
from syncengine.errors import EXIT_USAGE, SyncEngineError

if TYPE_CHECKING:
    from syncengine.config import Config
    from syncengine.tenants import Tenants

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Per-invocation CLI state: the config path and the lazily loaded config."""

    def __init__(self, config_path: str | None, debug: bool, tenant: str | None = None):
        self.config_path = config_path
        self.debug = debug
        self.tenant = tenant
        self._tenants: Tenants | None = None
        self._config: Config | None = None
        self._engine: service.Engine | None = None

    @property
    def tenants(self) -> Tenants:
        """Every tenant the config describes (one nameless one for a plain config)."""
        if self._tenants is None:
            # Imported on first use: the config's models pull in pydantic, httpx and the
            # executor's settings, which --help and a usage error never need.
            from syncengine.importing import loading

            with loading():
                from syncengine.tenants import load_tenants

                self._tenants = load_tenants(self.config_path)
        return self._tenants

    @property
    def config(self) -> Config:
        """The config of the tenant this command works on (``--tenant``, or the only one)."""
        if self._config is None:
            self._config = self.tenants.choose(self.tenant).config
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


TENANT_HELP = "The tenant (company) to work on, in a config with [tenants] (or $SYNCENGINE_TENANT)."


def _remember_tenant(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    state = ctx.find_object(State)
    if value is not None and state is not None:
        state.tenant = value


def tenant_option() -> click.Option:
    """``--tenant NAME``, declared once: every command takes it (added by the group)."""
    return click.Option(["--tenant"], metavar="NAME", default=None, expose_value=False,
                        callback=_remember_tenant, help=TENANT_HELP)  # fmt: skip


class _Commands(click.Group):
    """The command group whose usage errors exit 64 (EX_USAGE) instead of click's 2: exit 2
    is ``plan --detailed-exitcode``'s "there are changes", and a typo must not read as that.

    Every command added to it (and to its sub-groups) takes ``--tenant NAME``."""

    group_class = type  # sub-groups (db, mail) are of this class too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name == "tenant" for p in cmd.params):
            cmd.params.append(tenant_option())
        super().add_command(cmd, name)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as exc:
            setattr(exc, "exit_code", EXIT_USAGE)  # noqa: B010  (a ClassVar in the stubs)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            setattr(exc, "exit_code", EXIT_USAGE)  # noqa: B010  (a ClassVar in the stubs)
            raise


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $SYNCENGINE_CONFIG, else ./syncengine.toml).",
)
@click.option("--tenant", default=None, metavar="NAME", help=TENANT_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="syncengine")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, tenant: str | None, debug: bool) -> None:
    """Keep Tencent Exmail in step with the HR system, safely."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from syncengine.tenant_log import install_log_tenant

    install_log_tenant()
    freeze_at_exit()
    ctx.obj = State(config_path, debug, tenant)
    ctx.call_on_close(ctx.obj.close)


@functools.cache
def freeze_at_exit() -> None:
    """Once per process: ``gc.freeze()`` when the interpreter exits.

    At exit the interpreter walks every object still alive in one last garbage collection:
    after a 100,000-person plan some 280,000 (pypinyin's phrase dictionary, SQLAlchemy's
    metadata...), about 0.3 s after the plan is written; 0.05 s of a 10,000-person no-op
    ``sync``. Frozen objects are left out of that walk; they are still freed as the
    interpreter clears its modules (files and connections are closed by their owners before)."""
    atexit.register(gc.freeze)


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


def invoked_as() -> str:
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


def write_file(path: str, text: str) -> None:
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


def cli_actor() -> str:
    """``cli:<user>`` for the audit log's "who started it"."""
    import getpass
    import os

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


def echo_apply_outcome(outcome: service.ApplyOutcome) -> None:
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
