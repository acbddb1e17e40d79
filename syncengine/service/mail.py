"""Single sign-on, the unread count, new-mail watch and forwarding (Gen 1 listen, Gen 2 poll)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from syncengine.domain import (
    Mailbox,
    MailEvent,
    normalise_email,
)
from syncengine.errors import (
    ConfigError,
    NotFoundError,
)
from syncengine.hooks.app import SsoRefused
from syncengine.hooks.forward import Forwarder
from syncengine.hooks.guard import outside_domains
from syncengine.providers.base import MailboxProvider
from syncengine.service.engine import Engine
from syncengine.staging.repository import (
    Repository,
)

log = logging.getLogger(__name__)

LISTEN_POLL_SECONDS = 30.0
"""Longest single Gen 1 ``listen`` wait; above the server's usual 25 s hold."""


def sso_url(engine: Engine, email: str) -> str:
    """A fresh single sign-on URL for one member (Gen 2 get_login_url; Gen 1 auth key),
    under the same refusal rule as the portal's links (see :func:`sso_login_url`)."""
    return sso_login_url(engine, email)


def mail_count(engine: Engine, email: str) -> int:
    """The member's unread-mail count."""
    return engine.provider.new_mail_count(normalise_email(email))


def watch_mail(
    engine: Engine,
    *,
    users: Sequence[str] = (),
    interval: float | None = None,
    max_events: int | None = None,
    timeout: float | None = None,
    since: str | None = None,
) -> Iterator[MailEvent]:
    """New-mail events as they happen, until ``max_events`` or ``timeout`` seconds.

    Gen 1 long-polls ``listen`` (``users``, if given, filters the events; ``since`` is the
    version to start after, default now in epoch ms, so old mail is not replayed). Gen 2 has no
    push: it polls ``mail/newcount`` of each of ``users`` every ``interval`` seconds (default
    ``exmail.poll_interval``) and reports a rise of the count; the first poll is the baseline.
    """
    config, clock, sleep = engine.config, engine.clock, engine.sleep
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
    provider = engine.provider
    if provider.pushes_mail:
        events = _watch_listen(provider, wanted, since, deadline, clock)
    else:
        pace = interval if interval is not None else config.exmail.poll_interval
        events = _watch_poll(provider, wanted, pace, deadline, clock, sleep)
    for count, event in enumerate(events, 1):
        yield event
        if max_events is not None and count >= max_events:
            return


def _watch_listen(
    provider: MailboxProvider,
    users: list[str],
    since: str | None,
    deadline: float | None,
    clock: Callable[[], float],
) -> Iterator[MailEvent]:
    version = since if since is not None else str(int(time.time() * 1000))
    for events, _ in _listen_batches(provider, version, deadline, clock):
        for event in events:
            if not users or event.email in users:
                yield event


def _listen_batches(
    provider: MailboxProvider,
    version: str,
    deadline: float | None,
    clock: Callable[[], float],
) -> Iterator[tuple[list[MailEvent], str]]:
    """Gen 1 ``listen`` calls one after the other until ``deadline``: each answer's events and
    the version to listen from next (the server's, carried into the next call)."""
    while True:
        wait = LISTEN_POLL_SECONDS
        if deadline is not None:
            wait = min(wait, deadline - clock())
            if wait <= 0:
                return
        events, version = provider.listen(version, timeout=wait)
        yield list(events), version


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


def is_managed(repo: Repository, mailbox: Mailbox) -> bool:
    """Whether an HR record owns this mailbox: its extid names an employee whose identity link
    points at it (a lookup by key, not a scan of every link)."""
    if not mailbox.ext_id:
        return False
    link = repo.load_links([mailbox.ext_id]).get(mailbox.ext_id)
    return link is not None and normalise_email(link.email) == normalise_email(mailbox.email)


def sso_login_url(engine: Engine, email: str) -> str:
    """A fresh login URL for ``email``, refused (SsoRefused) for a protected, disabled or
    unmanaged account unless ``[hooks.sso]`` allows it. The one rule for ``sso-url`` and the
    portal's ``/sso/login``: an SSO link is a password-less way into someone's mail."""
    wanted = normalise_email(email)
    outside = outside_domains(wanted, engine.config.exmail.domains, engine.policy.domain)
    if outside:  # not one of ours: refused before Exmail is asked
        raise SsoRefused(outside, where="single sign-on", hint="check the address")
    rules = engine.config.hooks.sso
    provider = engine.provider
    mailbox = provider.get_user(wanted)
    if mailbox is None:
        raise NotFoundError(f"there is no mailbox {wanted}", call="single sign-on",
                            hint="check the address")  # fmt: skip
    primary = normalise_email(mailbox.email)
    hint = "an administrator can allow it with [hooks.sso] {} = true"
    policy = engine.policy
    if not rules.allow_protected and (policy.is_protected(primary)
                                      or policy.is_protected(wanted)):  # fmt: skip
        raise SsoRefused(f"{primary} is a protected account", where="single sign-on",
                         hint=hint.format("allow_protected"))  # fmt: skip
    if not rules.allow_disabled and not mailbox.enabled:
        raise SsoRefused(f"{primary} is disabled", where="single sign-on",
                         hint=hint.format("allow_disabled"))  # fmt: skip
    if not rules.allow_unmanaged and not is_managed(engine.repo, mailbox):
        raise SsoRefused(f"{primary} is not managed by syncengine (no HR record owns it)",
                         where="single sign-on",
                         hint=hint.format("allow_unmanaged"))  # fmt: skip
    return provider.login_url(primary)


# --- new-mail forwarding (issue 6) ----------------------------------------------------------

WATCH_V1_CURSOR = "mail-watch:v1:version"
WATCH_V2_CURSOR = "mail-watch:v2:counts"


@dataclass(frozen=True)
class ForwardedMail:
    """One new-mail event sent to the OA system."""

    event: MailEvent
    attempts: int


def _watched_users(repo: Repository, users: Sequence[str]) -> list[str]:
    """The mailboxes to poll: the given ones, else every managed (linked) one."""
    if users:
        return sorted({normalise_email(u) for u in users})
    return sorted({normalise_email(lk.email) for lk in repo.load_links().values()
                   if lk.disabled_since is None})  # fmt: skip


def forward_mail(
    engine: Engine,
    url: str,
    *,
    users: Sequence[str] = (),
    interval: float | None = None,
    max_events: int | None = None,
    timeout: float | None = None,
) -> Iterator[ForwardedMail]:
    """``mail watch --forward URL``: new-mail events, each POSTed (signed, retried) to
    ``url`` before it is yielded, restart-safe.

    Gen 1 holds the ``listen`` long poll and stores the last version in staging
    (``watch_state``) after each forwarded batch, so a restart neither loses nor repeats mail
    (the very first start begins at "now"). Gen 2 polls ``mail/newcount`` of ``users`` (default:
    every managed mailbox) at ``interval`` (``[hooks.forward] interval``, else
    ``exmail.poll_interval``), one call at a time, and stores the counts: a rise is a new-mail
    event, also across a restart. A URL that keeps failing raises ForwardError with the cursor
    left where it was, so the event is sent on the next start.
    """
    config, clock, sleep = engine.config, engine.clock, engine.sleep
    fwd = config.hooks.forward
    if fwd.secret is None:
        raise ConfigError("forwarding needs a signing secret", where="[hooks.forward] secret",
                          hint='set secret = "env:SYNCENGINE_FORWARD_SECRET"')  # fmt: skip
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{url!r} is not an http(s) URL", where="--forward")
    if max_events is not None and max_events <= 0:
        return
    forwarder = Forwarder(url, fwd.secret.get_secret_value(), attempts=fwd.attempts,
                          backoff=fwd.backoff, backoff_max=fwd.backoff_max,
                          timeout=fwd.timeout, transport=engine.forward_transport,
                          sleep=sleep)  # fmt: skip
    repo = engine.repo
    provider = engine.provider
    deadline = None if timeout is None else clock() + timeout
    sent = 0
    try:
        if provider.pushes_mail:
            wanted = {normalise_email(u) for u in users}
            version = repo.get_cursor(WATCH_V1_CURSOR)
            if version is None:
                version = str(int(time.time() * 1000))
                repo.set_cursor(WATCH_V1_CURSOR, version)
            for events, new_version in _listen_batches(provider, version, deadline, clock):
                for event in events:
                    if wanted and event.email not in wanted:
                        continue
                    tries = forwarder.send(dataclasses.asdict(event))
                    sent += 1
                    yield ForwardedMail(event, tries)
                    if max_events is not None and sent >= max_events:
                        repo.set_cursor(WATCH_V1_CURSOR, event.version or new_version)
                        return
                if new_version != version:
                    version = new_version
                    repo.set_cursor(WATCH_V1_CURSOR, version)
        else:
            watched = _watched_users(repo, users)
            if not watched:
                raise ConfigError("no mailbox to watch: none is managed yet",
                                  where="mail watch --forward",
                                  hint="pass --user EMAIL, or run a sync first")  # fmt: skip
            pace = interval or fwd.interval or config.exmail.poll_interval
            raw = repo.get_cursor(WATCH_V2_CURSOR)
            counts: dict[str, int] = json.loads(raw) if raw else {}
            while True:
                started = clock()
                for email in watched:
                    count = provider.new_mail_count(email)
                    previous = counts.get(email)
                    if previous is not None and count > previous:
                        event = MailEvent(email=email, new_count=count)
                        tries = forwarder.send({**dataclasses.asdict(event),
                                                "previous_count": previous})  # fmt: skip
                        sent += 1
                        counts[email] = count
                        repo.set_cursor(WATCH_V2_CURSOR, json.dumps(counts, sort_keys=True))
                        yield ForwardedMail(event, tries)
                        if max_events is not None and sent >= max_events:
                            return
                    elif previous != count:
                        counts[email] = count  # first sight or mail read: the new baseline
                        repo.set_cursor(WATCH_V2_CURSOR, json.dumps(counts, sort_keys=True))
                now = clock()
                pause = max(0.0, pace - (now - started))
                if deadline is not None:
                    if now >= deadline:
                        return
                    pause = min(pause, deadline - now)
                sleep(pause)
    finally:
        forwarder.close()
