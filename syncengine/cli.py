"""The ``syncengine`` command line: parse, call :mod:`syncengine.service`, render, exit.

Thin on purpose: no query, no HTTP request and no business rule lives here. Every
:class:`~syncengine.errors.SyncEngineError` becomes a one-paragraph message on stderr and its
documented exit code, never a traceback (``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from syncengine import __version__, service  # noqa: F401  (the commands below use it)
from syncengine.config import Config, load_config
from syncengine.errors import SyncEngineError

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Per-invocation CLI state: the config path and the lazily loaded config."""

    def __init__(self, config_path: str | None, debug: bool):
        self.config_path = config_path
        self.debug = debug
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


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


# --- commands -----------------------------------------------------------------------------
# Each command parses its options, calls one function of syncengine.service, renders the
# result (text, or JSON with --json) and exits with a documented code.
