"""The one exception tree of the engine.

Every error the engine raises on purpose derives from :class:`SyncEngineError` and carries
what was wrong, where (file, row, field, employee, API call) and what to do about it, so that
the CLI can print it without a traceback and map it to a documented exit code.

Exit codes (documented in the README):
    0 success / no changes, 1 error, 2 changes present (``plan --detailed-exitcode``),
    3 plan blocked by a brake, 4 apply finished with failed actions.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2
EXIT_BLOCKED = 3
EXIT_FAILED_ACTIONS = 4
EXIT_USAGE = 64  # EX_USAGE (sysexits.h): a wrong option or argument; never 2, which means "changes"


class SyncEngineError(Exception):
    """Root of every error the engine raises deliberately.

    ``where`` names the place (a config key, a file and row, an API call, an employee id);
    ``hint`` says what the user can do. Both are optional but should be given whenever known.
    """

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(SyncEngineError):
    """The configuration file or a secret it names is missing or wrong."""


class SourceError(SyncEngineError):
    """The HR source failed as a whole (missing file, refused connection, zero rows...).

    An ingest that raises this leaves the last good snapshot as the current one.
    """


class StagingError(SyncEngineError):
    """The staging database is unreachable, behind the code, or inconsistent."""


class DatabaseBehindError(StagingError):
    """The database schema is older than the code; ``syncengine db upgrade`` fixes it."""


class LockHeldError(SyncEngineError):
    """Another run holds the run lock for this configuration."""


class PlanError(SyncEngineError):
    """A plan file is unreadable, tampered with, or does not fit this configuration."""


class StalePlanError(PlanError):
    """The mailbox state moved since the plan was made; plan again."""


class PlanBlockedError(SyncEngineError):
    """A brake blocked the plan; it can be released after review."""

    exit_code = EXIT_BLOCKED


class ApplyFailedError(SyncEngineError):
    """An apply finished, but some actions failed."""

    exit_code = EXIT_FAILED_ACTIONS


class ProviderError(SyncEngineError):
    """An Exmail API call failed.

    ``retriable`` tells the executor whether trying again may succeed (rate limit, system busy,
    5xx, timeouts, dropped connections). ``errcode``/``errmsg`` are Exmail's own words, ``call``
    the endpoint. The request's secrets and tokens are never part of the message.
    """

    retriable: bool = False
    retry_after: float | None = None
    """Seconds the service asked us to wait (``Retry-After``), when it said."""

    def __init__(
        self,
        message: str,
        *,
        call: str | None = None,
        errcode: int | str | None = None,
        errmsg: str | None = None,
        http_status: int | None = None,
        hint: str | None = None,
    ):
        self.call = call
        self.errcode = errcode
        self.errmsg = errmsg
        self.http_status = http_status
        super().__init__(message, where=call, hint=hint)


class RetriableProviderError(ProviderError):
    """A transient failure: rate limit (45009 / 1002), busy (-1), HTTP 5xx, timeout, dropped
    connection. Whether the write took effect is unknown; the caller must look before redoing."""

    retriable = True


class FatalProviderError(ProviderError):
    """A failure that repeating the same call will not fix."""


class AuthenticationError(FatalProviderError):
    """Wrong credentials (Gen 2 40001 at gettoken, Gen 1 HTTP 401 invalid_client) or a token
    that stays invalid after one refresh."""


class NotFoundError(FatalProviderError):
    """The user, alias, department or group does not exist (60111, 60003, 1301, 1310...)."""


class AlreadyExistsError(FatalProviderError):
    """The object already exists (60102, 60008, 1302, 600001...)."""


class ConflictError(FatalProviderError):
    """An address or name clash, a non-empty department, a limit (600005, 600006, 60005...)."""
