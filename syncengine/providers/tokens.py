"""Access-token cache: one token per credential, reused until shortly before it expires.

Exmail returns the same token while it is valid and warns against fetching it often, so a
token is fetched once and shared by every thread of a client. A refused token is dropped with
:meth:`TokenCache.invalidate` (only if it is still the current one, so that eight threads seeing
the same refusal cause one fetch, not eight). The clock is an argument for the tests.

:class:`SharedTokens` goes one step further: the tokens of one process, keyed by credential
(endpoint, account, application, a hash of the secret), so the short-lived providers that
``serve`` builds per SSO link or per hook batch reuse one token per application instead of
fetching two per link (the token endpoints are rate-limited). ``service.build_provider`` hands
the process's :data:`PROCESS_TOKENS` to every provider it builds.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_MARGIN_SECONDS = 300.0


@dataclass(frozen=True)
class IssuedToken:
    """A token as the token endpoint issued it. Its repr never shows the value."""

    value: str
    expires_in: float

    def __repr__(self) -> str:
        return f"IssuedToken(value=***, expires_in={self.expires_in})"


class SharedTokens:
    """Tokens shared by every provider of a process: key -> (value, expires at, monotonic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}

    @staticmethod
    def key(*parts: str, secret: str) -> str:
        """A key naming the credential; the secret only as a hash, never as itself."""
        digest = hashlib.sha256(secret.encode("utf-8")).hexdigest()
        return "|".join((*parts, digest))

    def get(self, key: str, now: float) -> tuple[str, float] | None:
        """(token, expires at) while it is valid, else None."""
        with self._lock:
            found = self._tokens.get(key)
            return found if found and now < found[1] else None

    def put(self, key: str, value: str, expires_at: float) -> None:
        with self._lock:
            self._tokens[key] = (value, expires_at)

    def drop(self, key: str, value: str) -> None:
        with self._lock:
            if self._tokens.get(key, ("", 0.0))[0] == value:
                del self._tokens[key]

    def clear(self) -> None:
        """Forget every token (a test's fresh start: a new server on a reused loopback port
        refuses the tokens its predecessor issued, which costs one refused call each)."""
        with self._lock:
            self._tokens.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)

    def __repr__(self) -> str:
        return f"SharedTokens({len(self._tokens)} credential(s))"


PROCESS_TOKENS = SharedTokens()
"""The tokens of this process (see :class:`SharedTokens`)."""


class TokenCache:
    """Thread-safe holder of one access token.

    ``fetch`` asks the token endpoint (and raises a ProviderError when it cannot); ``name``
    says which credential this is (``"v2 contacts"``) in logs and reprs.
    """

    def __init__(
        self,
        fetch: Callable[[], IssuedToken],
        *,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedTokens | None = None,
        shared_key: str = "",
    ):
        self._fetch = fetch
        self._shared = shared if shared_key else None
        self._shared_key = shared_key
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._expires_at = 0.0
        self.fetches = 0

    def __repr__(self) -> str:
        state = "cached" if self._value else "empty"
        return f"TokenCache({self.name}, {state})"

    def get(self) -> str:
        """The current token, fetching a new one when none is cached or it is about to expire."""
        with self._lock:
            if self._value is not None and self._clock() < self._expires_at:
                return self._value
            if self._shared is not None:
                found = self._shared.get(self._shared_key, self._clock())
                if found is not None:
                    self._value, self._expires_at = found
                    return found[0]
            issued = self._fetch()
            self.fetches += 1
            # Refresh a little early so a call does not leave with a token that dies in flight.
            margin = min(MAX_MARGIN_SECONDS, issued.expires_in / 10)
            self._value = issued.value
            self._expires_at = self._clock() + max(0.0, issued.expires_in - margin)
            if self._shared is not None:
                self._shared.put(self._shared_key, issued.value, self._expires_at)
            return issued.value

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the cached one (Exmail refused it)."""
        with self._lock:
            if self._value == token:
                self._value = None
                self._expires_at = 0.0
            if self._shared is not None:
                self._shared.drop(self._shared_key, token)
