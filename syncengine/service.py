"""The use-cases of the engine, and the one place that wires adapters together.

The CLI, the hook receiver and the benchmarks call these functions; nothing else builds a
provider, a connector or a database session from the configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

import httpx

from syncengine.config import Config
from syncengine.domain import MailEvent, normalise_email
from syncengine.errors import ConfigError
from syncengine.providers.base import MailboxProvider
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider
from syncengine.providers.http import new_http_client
from syncengine.staging import db as staging_db
from syncengine.staging.repository import Repository

# --- Exmail provider, SSO and mail (issue 2) ---------------------------------------------

LISTEN_POLL_SECONDS = 30.0
"""Longest single Gen 1 ``listen`` wait; above the server's usual 25 s hold."""


def build_provider(
    config: Config, *, transport: httpx.BaseTransport | None = None
) -> MailboxProvider:
    """The provider of the configured API generation, owning its own httpx client.

    ``transport`` lets tests and benchmarks inject an httpx transport; the caller closes the
    provider (``provider.close()``).
    """
    ex = config.exmail
    client = new_http_client(
        timeout=ex.timeout, max_connections=ex.read_concurrency + 2, transport=transport
    )
    if ex.api == "v1":
        return ExmailV1Provider(ex, client)
    return ExmailV2Provider(ex, client)


def sso_url(config: Config, email: str, *, transport: httpx.BaseTransport | None = None) -> str:
    """A fresh single sign-on URL for one member (Gen 2 get_login_url; Gen 1 auth key)."""
    provider = build_provider(config, transport=transport)
    try:
        return provider.login_url(normalise_email(email))
    finally:
        provider.close()


def mail_count(config: Config, email: str, *, transport: httpx.BaseTransport | None = None) -> int:
    """The member's unread-mail count."""
    provider = build_provider(config, transport=transport)
    try:
        return provider.new_mail_count(normalise_email(email))
    finally:
        provider.close()


def watch_mail(
    config: Config,
    *,
    users: Sequence[str] = (),
    interval: float | None = None,
    max_events: int | None = None,
    timeout: float | None = None,
    since: str | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[MailEvent]:
    """New-mail events as they happen, until ``max_events`` or ``timeout`` seconds.

    Gen 1 long-polls ``listen`` (``users``, if given, filters the events; ``since`` is the
    version to start after, default now in epoch ms, so old mail is not replayed). Gen 2 has no
    push: it polls ``mail/newcount`` of each of ``users`` every ``interval`` seconds (default
    ``exmail.poll_interval``) and reports a rise of the count; the first poll is the baseline.
    """
    wanted = [normalise_email(u) for u in users]
    if config.exmail.api == "v2" and not wanted:
        raise ConfigError(
            "Gen 2 cannot push new-mail events; name the mailboxes to poll",
            where="mail watch",
            hint="pass --user EMAIL (repeatable)",
        )
    if max_events is not None and max_events <= 0:
        return
    deadline = None if timeout is None else clock() + timeout
    provider = build_provider(config, transport=transport)
    try:
        if isinstance(provider, ExmailV1Provider):
            events = _watch_listen(provider, wanted, since, deadline, clock)
        else:
            pace = interval if interval is not None else config.exmail.poll_interval
            events = _watch_poll(provider, wanted, pace, deadline, clock, sleep)
        for count, event in enumerate(events, 1):
            yield event
            if max_events is not None and count >= max_events:
                return
    finally:
        provider.close()


def _watch_listen(
    provider: ExmailV1Provider,
    users: list[str],
    since: str | None,
    deadline: float | None,
    clock: Callable[[], float],
) -> Iterator[MailEvent]:
    version = since if since is not None else str(int(time.time() * 1000))
    while True:
        wait = LISTEN_POLL_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - clock())
            if wait <= 0:
                return
        events, version = provider.listen(version, timeout=wait)
        for event in events:
            if not users or event.email in users:
                yield event


def _watch_poll(
    provider: MailboxProvider,
    users: list[str],
    interval: float,
    deadline: float | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Iterator[MailEvent]:
    last: dict[str, int] = {}
    while True:
        started = clock()
        for email in users:
            count = provider.new_mail_count(email)
            previous = last.get(email)
            last[email] = count
            if previous is not None and count > previous:
                yield MailEvent(email=email, new_count=count)
        now = clock()
        pause = max(0.0, interval - (now - started))
        if deadline is not None:
            if now >= deadline:
                return
            pause = min(pause, deadline - now)
        sleep(pause)


# --- staging database (issue 3) -----------------------------------------------------------


def open_staging(config: Config) -> Repository:
    """The staging repository of this config, its schema checked (the caller closes it).

    A database behind the code raises DatabaseBehindError naming ``syncengine db upgrade``; a
    brand-new empty SQLite file is created and migrated on the spot (logged).
    """
    engine = staging_db.make_engine(config.database_url)
    try:
        staging_db.check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return Repository(engine)


def db_current(config: Config) -> staging_db.SchemaStatus:
    """Where the configured database stands: its revision and the code's head."""
    engine = staging_db.make_engine(config.database_url)
    try:
        return staging_db.schema_status(engine)
    finally:
        engine.dispose()


def db_upgrade(config: Config) -> tuple[str | None, str | None]:
    """Migrate the configured database to the code's head: (revision before, after)."""
    return staging_db.upgrade(config.database_url)
