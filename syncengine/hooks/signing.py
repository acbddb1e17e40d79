"""Checking who sent a request: HR hooks (signed body) and OA portal SSO links (signed query).

Pure: the clock is an argument, nothing is read or stored here. Both schemes are HMAC-SHA256
under a shared secret, compared in constant time (:func:`hmac.compare_digest`), and sign a
timestamp with the content so a captured request stops working after the tolerance:

* **Hooks** use the scheme of the engine's own outgoing webhooks (:mod:`syncengine.notify`):
  ``X-Syncengine-Timestamp: <unix seconds>`` and ``X-Syncengine-Signature: sha256=<hex>``,
  the HMAC of ``timestamp + "." + body``. Replays inside the tolerance are refused by
  :func:`replay_key`, a digest of the signature: it covers the timestamp and the body, so a
  captured request resent with another (unsigned) ``X-Syncengine-Delivery`` header has the
  same key. The receiver records the keys (it needs the database).
* **SSO links** carry ``user``, ``ts`` and ``sig`` in the query: ``sig`` is the hex HMAC of
  ``ts + "." + user`` (the address lower-cased). A link is good from ``ts`` for the configured
  lifetime (and at most 30 s early, for clock skew). A link is single use: its
  :func:`replay_key` is recorded when it is honoured.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode

from syncengine.domain import normalise_email
from syncengine.notify import SIGNATURE_PREFIX, sign

EARLY_SKEW = 30.0
"""Seconds an SSO link's timestamp may lie in the future (the portal's clock runs ahead)."""


def check_hook_signature(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> str | None:
    """Why this request is not authentic, or None when it is.

    The reasons are safe to show the sender: they never contain the secret or the expected
    signature.
    """
    if not timestamp or not signature:
        return "missing X-Syncengine-Timestamp or X-Syncengine-Signature header"
    try:
        sent = int(timestamp.strip())
    except ValueError:
        return "X-Syncengine-Timestamp is not unix seconds"
    if abs(now - sent) > tolerance:
        return (f"X-Syncengine-Timestamp is {int(now - sent)} s away from the receiver's clock "
                f"(at most {int(tolerance)} s accepted; check the sender's clock)")  # fmt: skip
    if not signature.startswith(SIGNATURE_PREFIX):
        return f"X-Syncengine-Signature must start with {SIGNATURE_PREFIX}"
    if not hmac.compare_digest(sign(secret, timestamp.strip(), body), signature.strip()):
        return "signature mismatch (wrong secret, or the body was changed on the way)"
    return None


def replay_key(purpose: str, signature: str) -> str:
    """The key under which a signed request is remembered as honoured: ``purpose`` ("hook",
    "sso") and a SHA-256 of the signature as sent (after the check passed, it is the only
    signature that matches this timestamp and content)."""
    digest = hashlib.sha256(signature.strip().lower().encode("utf-8")).hexdigest()
    return f"{purpose}:{digest}"


def sso_signature(secret: str, user: str, timestamp: int | str) -> str:
    """Hex HMAC-SHA256 of ``ts + "." + user`` (what the OA portal computes for a link)."""
    message = f"{timestamp}.{normalise_email(user)}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sso_link(base_url: str, secret: str, user: str, timestamp: int) -> str:
    """A signed portal link ``<base_url>/sso/login?user=..&ts=..&sig=..`` (for tests, samples
    and portals written in Python)."""
    query = urlencode(
        {"user": user, "ts": str(timestamp), "sig": sso_signature(secret, user, timestamp)}
    )
    return f"{base_url.rstrip('/')}/sso/login?{query}"


def check_sso_link(
    secret: str,
    user: str | None,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float,
    lifetime: float,
) -> str | None:
    """Why this portal link must not be honoured, or None when it is genuine and fresh."""
    if not user or not timestamp or not signature:
        return "the link needs user, ts and sig parameters"
    try:
        ts = int(timestamp)
    except ValueError:
        return "ts is not unix seconds"
    if now - ts > lifetime:
        return f"the link expired ({int(now - ts)} s old, valid for {int(lifetime)} s)"
    if ts - now > EARLY_SKEW:
        return "the link's ts lies in the future (check the portal's clock)"
    if not hmac.compare_digest(sso_signature(secret, user, timestamp), signature.strip().lower()):
        return "signature mismatch"
    return None
