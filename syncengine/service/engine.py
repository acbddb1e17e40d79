"""The one wiring point: an :class:`Engine` built once per process from the ``Config``.

It owns what every use case needs and nothing decides twice: the staging repository, the
Exmail provider of the configured generation, the one :class:`~syncengine.callpolicy.CallPolicy`
that paces and retries every Exmail call (reads and writes), and the seams tests and
benchmarks replace (the httpx transports, ``sleep``, the clocks). The use cases in this package
take an engine; only this module builds adapters from the config.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from syncengine import clock
from syncengine.callpolicy import CallPolicy
from syncengine.config import Config
from syncengine.errors import SyncEngineError
from syncengine.executor import ExecutorSettings
from syncengine.importing import loading
from syncengine.policy import Policy
from syncengine.policy_config import policy_from_config
from syncengine.providers.base import MailboxProvider
from syncengine.secrets import known_value
from syncengine.statuses import RunKind, RunStatus

if TYPE_CHECKING:
    import httpx

    from syncengine.staging.repository import Repository

SEEN_STATE_SECONDS = 60.0
"""How long a directory state this engine read counts as the live one for the stale-plan check,
provided nothing was written since (see :meth:`Engine.remember_state`)."""

PACE_MARGIN = 0.9
"""The pacer runs this fraction of ``rate_per_second``, so that network and scheduling jitter
never make a one-second window at the server hold more than the configured number of calls."""


def open_staging(config: Config) -> Repository:
    """The staging repository of this config, its schema checked (the caller closes it).

    A database behind the code raises DatabaseBehindError naming ``syncengine db upgrade``; a
    brand-new empty SQLite file is created and migrated on the spot (logged).
    """
    # Imported here: SQLAlchemy and the models (~0.2 s) load while a Gen 2 sync's early
    # read of the directory is already on its way (see syncengine.service.early_read).
    with loading():
        from syncengine.staging import db as staging_db
        from syncengine.staging.repository import Repository

    engine = staging_db.make_engine(config.database_url)
    try:
        staging_db.check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return Repository(engine)


def build_provider(
    config: Config,
    *,
    transport: httpx.BaseTransport | None = None,
    calls: CallPolicy | None = None,
) -> MailboxProvider:
    """The provider of the configured API generation, owning its own httpx client.

    Without ``calls`` it gets a policy of its own built from ``[apply]`` (used by tools that
    need a provider alone); an :class:`Engine` passes its shared one. The caller closes it.
    """
    # Imported here: httpx and the two clients are for the commands that talk to Exmail
    # (``audit``, ``db``, ``events`` never build a provider).
    with loading():
        from syncengine.providers.http import new_http_client
        from syncengine.providers.tokens import PROCESS_TOKENS

    ex = config.exmail
    client = new_http_client(
        timeout=ex.timeout,
        max_connections=max(ex.read_concurrency, config.apply.concurrency) + 2,
        transport=transport,
    )
    policy = calls or call_policy(config.apply.settings(), config.apply.retry_budget_seconds)
    # Tokens are shared by every provider of the process (per credential and application):
    # an Engine owns one provider, but tools and `check` build their own, and gettoken is
    # rate-limited.
    # Each generation's client is imported only when configured (~0.3 s of a Gen 2 night
    # went to importing the Gen 1 client and its directory reader).
    if ex.api == "v1":
        with loading():
            from syncengine.providers.exmail_v1 import ExmailV1Provider

        return ExmailV1Provider(ex, client, calls=policy, shared_tokens=PROCESS_TOKENS)
    with loading():
        from syncengine.providers.exmail_v2 import ExmailV2Provider

    return ExmailV2Provider(ex, client, calls=policy, shared_tokens=PROCESS_TOKENS)


def call_policy(
    settings: ExecutorSettings,
    budget_seconds: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> CallPolicy:
    """The process's call policy from the ``[apply]`` settings: ``rate_per_second`` caps every
    request (burst 1, so no second at the server ever sees more; the calls whose turn falls in
    the first second go at once, see :class:`~syncengine.callpolicy.Pacer`), ``max_attempts`` /
    backoff retry each read call and each action."""
    return CallPolicy(
        settings.retry_policy(),
        rate_per_second=settings.rate_per_second * PACE_MARGIN,
        burst=1,
        budget_seconds=budget_seconds,
        sleep=sleep,
        clock=clock,
        free_first_second=True,
    )


class StagingDirectoryStore:
    """The Gen 1 provider's ``user/list`` cursor and last read directory, kept in the staging
    database (``watch_state`` row ``exmail.v1.directory``; the department tree in the row
    ``exmail.v1.parties``); the repository is opened on first use, so a provider that never
    reads the directory never opens the database."""

    NAME = "exmail.v1.directory"
    PARTIES = "exmail.v1.parties"

    def __init__(self, repo: Callable[[], Repository], name: str = NAME) -> None:
        self._repo = repo
        self.name = name

    def load(self) -> str | None:
        return self._repo().get_cursor(self.name)

    def save(self, text: str) -> None:
        self._repo().set_cursor(self.name, text)


class Engine:
    """Everything a use case needs, built once per process (see the module docstring).

    The repository and the provider are made on first use, so a command that only reads the
    database never builds an HTTP client. ``close()`` (or ``with``) releases both.
    """

    def __init__(
        self,
        config: Config,
        *,
        transport: httpx.BaseTransport | None = None,
        notify_transport: httpx.BaseTransport | None = None,
        forward_transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        settings: ExecutorSettings | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.notify_transport = notify_transport
        self.forward_transport = forward_transport
        self.sleep = sleep
        self.clock = clock
        self.now = now
        self.settings = settings or config.apply.settings()
        self.calls = call_policy(
            self.settings, config.apply.retry_budget_seconds, sleep=sleep, clock=clock
        )
        self._repo: Repository | None = None
        self._provider: MailboxProvider | None = None
        # One lock each: building the provider (its client's imports, ~50 ms) must not hold
        # up a thread that only wants the repository (the ingest beside the Gen 2 early read).
        self._repo_lock = threading.Lock()
        self._provider_lock = threading.Lock()
        self._seen: tuple[str, float] | None = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def repo(self) -> Repository:
        """The staging repository (opened, and its schema checked, on first use)."""
        with self._repo_lock:
            if self._repo is None:
                self._repo = open_staging(self.config)
            return self._repo

    @property
    def provider(self) -> MailboxProvider:
        """The Exmail provider, paced and retried by :attr:`calls` (built on first use)."""
        with self._provider_lock:
            if self._provider is None:
                provider = build_provider(self.config, transport=self.transport, calls=self.calls)
                if self.config.exmail.api == "v1":
                    from syncengine.providers.exmail_v1 import ExmailV1Provider

                    assert isinstance(provider, ExmailV1Provider)
                    provider.directory_store = StagingDirectoryStore(lambda: self.repo)
                    provider.party_store = StagingDirectoryStore(
                        lambda: self.repo, StagingDirectoryStore.PARTIES
                    )
                    provider.wall_clock = lambda: self.now().timestamp()
                self._provider = provider
            return self._provider

    @functools.cached_property
    def policy(self) -> Policy:
        """The ``[policy]`` rules, built once (every SSO link and hook batch asks for them)."""
        return policy_from_config(self.config)

    def local_now(self) -> datetime:
        """Now on the company's clock (``[general] timezone``), for times shown to people."""
        return clock.local(self.now(), self.config.timezone)

    def today(self) -> date:
        """The company's calendar day: the day every date decision uses."""
        return clock.company_today(self.now(), self.config.timezone)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The config's fingerprint (see :func:`config_fingerprint`), computed once."""
        return config_fingerprint(self.config)

    def remember_state(self, fingerprint: str) -> None:
        """The directory state this engine has just read (a plan was made from it)."""
        self._seen = (fingerprint, self.clock())

    def forget_state(self) -> None:
        """Something is about to write to Exmail: what was read is no longer the live state."""
        self._seen = None

    @property
    def seen_state(self) -> str | None:
        """The fingerprint of the state read moments ago with no write since, else None: an
        apply of a plan made from it need not read the whole directory again."""
        seen = self._seen
        if seen is None or self.clock() - seen[1] > SEEN_STATE_SECONDS:
            return None
        return seen[0]

    def read_in_full(self) -> None:
        """The next directory read is a full one (``--full-read``): on Gen 1 every member and
        the whole department tree, whatever the stored cursor; Gen 2 always reads in full."""
        if self.config.exmail.api == "v1":
            from syncengine.providers.exmail_v1 import ExmailV1Provider

            provider = self.provider
            assert isinstance(provider, ExmailV1Provider)
            provider.full_read_next = True

    def department_exists(self, path: str) -> bool:
        """The executor's cheap look-before-redo probe, answered by the provider."""
        return self.provider.department_exists(path)

    def close(self) -> None:
        with self._provider_lock:
            provider, self._provider = self._provider, None
        with self._repo_lock:
            repo, self._repo = self._repo, None
        if provider is not None:
            provider.close()
        if repo is not None:
            repo.close()

    @contextmanager
    def run(
        self, kind: RunKind, actor: str, *, with_fingerprint: bool = True
    ) -> Iterator[RunHandle]:
        """``with engine.run("plan", actor) as run:`` records a run: started now, finished
        ``succeeded`` (or what ``run.finish(status, summary)`` set) when the block ends, and
        ``failed`` with the reason when it raises. The call policy's retry budget restarts."""
        self.calls.new_run()
        run_id = self.repo.start_run(
            kind, actor, config_fingerprint=self.fingerprint if with_fingerprint else None
        )
        handle = RunHandle(run_id)
        try:
            yield handle
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, SyncEngineError) else type(exc).__name__
            self.repo.finish_run(run_id, RunStatus.FAILED, {**handle.failure, "error": reason})
            raise
        self.repo.finish_run(run_id, handle.status, handle.summary)


class RunHandle:
    """The run a ``with engine.run(...)`` block records; the block sets how it ended."""

    def __init__(self, run_id: int) -> None:
        self.id = run_id
        self.status = RunStatus.SUCCEEDED
        self.summary: dict[str, Any] = {}
        self.failure: dict[str, Any] = {}

    def finish(self, status: RunStatus, summary: dict[str, Any]) -> None:
        self.status = status
        self.summary = summary


# --- the config's fingerprint and its secrets ---------------------------------------------

_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@/\s]*@")


def _without_secrets(value: Any) -> Any:
    """A config dump with every secret replaced by a marker (its presence, not its value):
    ``Secret`` fields, and the password of a URL (``postgresql://user:pw@host/db``)."""
    if isinstance(value, SecretStr):
        return "<secret>"
    if isinstance(value, str):
        return _URL_PASSWORD.sub(r"\1<secret>@", value)
    if isinstance(value, dict):
        return {str(k): _without_secrets(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_without_secrets(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, set | frozenset) else items
    return value


def config_fingerprint(config: Config) -> str:
    """sha256 of the config's content without its secrets.

    A plan records it; ``apply`` compares it so a plan made under other rules (another policy,
    mapping or Exmail target, another tenant) is refused. Secrets are left out, so rotating a
    secret does not make reviewed plans stale, and the fingerprint reveals nothing about them.
    """
    # Left out: the review pages and housekeeping (no plan depends on them).
    data = _without_secrets(
        config.model_dump(mode="python", exclude={"review": True, "database": {"keep_snapshots"}})
    )
    if config.tenant is not None:  # a plan of one tenant is refused by every other
        data["tenant"] = config.tenant
    blob = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _secret_values(value: Any) -> list[str]:
    """Every secret in a config dump (to scrub them from anything sent out)."""
    if isinstance(value, SecretStr):
        known = known_value(value)  # a secret nobody can read (unset variable) cannot leak
        return [known] if known is not None else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in _secret_values(v)]
    if isinstance(value, list | tuple | set | frozenset):
        return [s for v in value for s in _secret_values(v)]
    return []


def config_secrets(config: Config) -> list[str]:
    """The secret values of this config (never shown; used to redact outgoing text)."""
    return _secret_values(config.model_dump(mode="python"))
