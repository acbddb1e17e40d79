"""Access-token cache: one token per credential, reused until shortly before it expires.

Exmail returns the same token while it is valid and warns against fetching it often, so a
token is fetched once and shared by every thread of a client. A refused token is dropped with
:meth:`TokenCache.invalidate` (only if it is still the current one, so that eight threads seeing
the same refusal cause one fetch, not eight). The clock is an argument for the tests.
"""

from __future__ import annotations

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
    ):
        self._fetch = fetch
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
            issued = self._fetch()
            self.fetches += 1
            # Refresh a little early so a call does not leave with a token that dies in flight.
            margin = min(MAX_MARGIN_SECONDS, issued.expires_in / 10)
            self._value = issued.value
            self._expires_at = self._clock() + max(0.0, issued.expires_in - margin)
            return issued.value

    def invalidate(self, token: str) -> None:
        """Forget ``token`` if it is still the cached one (Exmail refused it)."""
        with self._lock:
            if self._value == token:
                self._value = None
                self._expires_at = 0.0
