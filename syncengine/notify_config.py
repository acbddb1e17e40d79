"""The ``[notifications]`` config table and the signing scheme, apart from the sending.

Loading a config (every command) needs the table's models, and the password handover and the
hook receiver need the headers and :func:`sign`; neither needs :mod:`syncengine.notify`'s
senders (smtplib, the e-mail package, the retry loop), which a night with no notification
target never imports. :mod:`syncengine.notify` re-exports everything here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncengine.chatbots import BotConfig, http_url
from syncengine.secrets import Secret

Event = Literal["finished", "failed", "blocked"]
EVENTS: tuple[Event, ...] = ("finished", "failed", "blocked")

TIMESTAMP_HEADER = "X-Syncengine-Timestamp"
SIGNATURE_HEADER = "X-Syncengine-Signature"
EVENT_HEADER = "X-Syncengine-Event"
DELIVERY_HEADER = "X-Syncengine-Delivery"
SIGNATURE_PREFIX = "sha256="
DEFAULT_TOLERANCE = 300.0
"""Seconds a receiver should accept between our timestamp and its clock."""


# --- configuration ------------------------------------------------------------------------


class WebhookConfig(BaseModel):
    """One ``[[notifications.webhooks]]`` entry: where to POST and the signing secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    secret: Secret
    name: str | None = None  # how reports and logs call it (default: the URL's host)
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @property
    def label(self) -> str:
        return self.name or display_url(self.url)


class SmtpConfig(BaseModel):
    """``[notifications.smtp]``: mail the summary through this server."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True  # upgrade a plain connection with STARTTLS (port 587)
    ssl: bool = False  # TLS from the first byte (port 465); then starttls is not used
    user: str | None = None
    password: Secret | None = None
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    timeout: float = Field(default=30.0, gt=0)
    subject_prefix: str = "[syncengine]"
    ca_file: str | None = None  # a private CA for the server's certificate

    @property
    def label(self) -> str:
        return f"smtp://{self.host}:{self.port}"


class NotificationsConfig(BaseModel):
    """The ``[notifications]`` table. Example::

    [notifications]
    on = ["finished", "failed", "blocked"]
    attempts = 5
    backoff = 1.0

    [[notifications.webhooks]]
    url = "https://ops.example.com/hooks/syncengine"
    secret = "env:SYNCENGINE_NOTIFY_SECRET"

    [notifications.smtp]
    host = "smtp.example.com"
    from = "syncengine@example.com"
    to = ["it-ops@example.com"]
    user = "syncengine@example.com"
    password = "env:SMTP_PASSWORD"
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    on: list[Event] = Field(default_factory=lambda: list(EVENTS))
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    bots: list[BotConfig] = Field(default_factory=list)  # WeCom / DingTalk / Feishu group bots
    smtp: SmtpConfig | None = None
    attempts: int = Field(default=5, ge=1, le=20)
    backoff: float = Field(default=1.0, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    max_seconds: float = Field(default=120.0, gt=0)

    @property
    def enabled(self) -> bool:
        return bool(self.webhooks or self.bots or self.smtp)


# --- signing ------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``signature`` is ours for this body and the timestamp is recent (receivers)."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def display_url(url: str) -> str:
    """A URL as logs and reports show it: scheme, host and port only (paths can hold tokens)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every (non-trivial) secret value replaced by ``***``."""
    for value in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, "***")
    return text
