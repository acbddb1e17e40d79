"""Notifications at the end of a run: a signed JSON POST to webhooks and/or a mail over SMTP.

The nightly job runs unattended, so somebody must hear when it finished, failed or was
blocked by a brake. This module owns the ``[notifications]`` config table and the sending;
the service decides when to call it and what summary to send.

Why it looks like this:

* **Signed.** A receiver must be able to tell our POST from anyone else's. Each attempt
  carries ``X-Syncengine-Timestamp`` (unix seconds) and ``X-Syncengine-Signature:
  sha256=<hex>``, the HMAC-SHA256 of ``timestamp + "." + body`` under the webhook's secret
  (the same scheme as the HR hooks the engine receives). The timestamp is signed too, so a
  captured request cannot be replayed later; ``X-Syncengine-Delivery`` stays the same across
  the retries of one notification, so a receiver can drop a duplicate.
* **Bounded retries.** A dropped connection, a timeout, HTTP 408/429/5xx are retried with
  exponential backoff and jitter (the shared ``RetryPolicy``), at most ``attempts`` calls
  and ``max_seconds`` per target; other 4xx answers are not (repeating will not fix them).
  SMTP the same way: connection trouble and 4xx replies are retried, refused recipients or
  credentials are not.
* **Never fatal.** :meth:`Notifier.send` never raises for a delivery problem: it logs it and
  returns a :class:`Delivery` per target saying what happened, which the run report shows.
  A notification failure must not turn a good sync into a failed one.
* **No secrets.** The payload is the run summary the caller builds (no credentials in it);
  as a second line of defence every secret value the caller names is replaced by ``***`` in
  the body, the mail and every error text. Webhook URLs are shown by host only, since URLs
  of chat webhooks carry their own token in the path.
"""

from __future__ import annotations

import functools
import json
import logging
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Literal

from tenacity import Retrying

from syncengine.callpolicy import RetryPolicy, retry_after
from syncengine.chatbots import BotConfig, bot_request, read_answer
from syncengine.notify_config import (
    DEFAULT_TOLERANCE,
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENTS,
    SIGNATURE_HEADER,
    SIGNATURE_PREFIX,
    TIMESTAMP_HEADER,
    Event,
    NotificationsConfig,
    SmtpConfig,
    WebhookConfig,
    display_url,
    redact,
    sign,
    verify,
)
from syncengine.secrets import known_value

if TYPE_CHECKING:
    import httpx

__all__ = [  # the config table and the signing are re-exported from notify_config
    "DEFAULT_TOLERANCE",
    "DELIVERY_HEADER",
    "EVENTS",
    "EVENT_HEADER",
    "RETRIABLE_STATUS",
    "SIGNATURE_HEADER",
    "SIGNATURE_PREFIX",
    "TIMESTAMP_HEADER",
    "Delivery",
    "Event",
    "NotificationsConfig",
    "Notifier",
    "SmtpConfig",
    "WebhookConfig",
    "display_url",
    "hostname",
    "redact",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

RETRIABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What happened to one notification target."""

    channel: Literal["webhook", "smtp", "bot"]
    target: str
    ok: bool
    attempts: int
    status: int | None = None  # last HTTP status (webhooks)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "target": self.target,
            "ok": self.ok,
            "attempts": self.attempts,
            "status": self.status,
            "error": self.error,
        }


class _Retry(Exception):
    """An attempt that may succeed when repeated; ``retry_after`` from the server if given."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class _GiveUp(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# --- the notifier -------------------------------------------------------------------------


class Notifier:
    """Sends one run's summary to every configured target; see the module docstring."""

    def __init__(
        self,
        config: NotificationsConfig,
        *,
        secrets: Iterable[str] = (),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        named = [w.secret for w in config.webhooks]
        if config.smtp is not None and config.smtp.password is not None:
            named.append(config.smtp.password)
        named.extend(bot.secret for bot in config.bots if bot.secret is not None)
        # a secret that cannot be read (unset variable) fails its target, not the notifier
        own = [v for v in (known_value(x) for x in named) if v is not None]
        for bot in config.bots:  # a bot's URL holds its token
            own.extend([bot.url, *bot.tokens()])
        self._secrets = tuple({*own, *secrets})
        self._transport = transport
        self._sleep = sleep
        self._clock = clock

    def wants(self, event: Event) -> bool:
        return self.config.enabled and event in self.config.on

    def send(
        self, event: Event, summary: Mapping[str, Any], *, subject: str, text: str
    ) -> list[Delivery]:
        """Notify every target of ``event``; never raises for a delivery problem.

        ``summary`` is the JSON-able run summary (the webhook body's ``summary``); ``subject``
        and ``text`` are the mail's subject line and human-readable body.
        """
        if not self.wants(event):
            return []
        delivery_id = str(uuid.uuid4())
        document = {
            "event": event,
            "delivery_id": delivery_id,
            "sent_at": int(self._clock()),
            "summary": summary,
        }
        body = redact(
            json.dumps(document, ensure_ascii=False, sort_keys=True, default=str), self._secrets
        ).encode("utf-8")
        results = [
            self._guarded("webhook", hook.label,
                          functools.partial(self._post, hook, event, delivery_id, body))
            for hook in self.config.webhooks
        ]  # fmt: skip
        results.extend(
            self._guarded("bot", bot.label, functools.partial(self._bot, bot, subject, text))
            for bot in self.config.bots
        )
        smtp = self.config.smtp
        if smtp is not None:
            results.append(
                self._guarded("smtp", smtp.label, lambda: self._mail(smtp, subject, text, body))
            )
        for r in results:
            if r.ok:
                log.info("notified %s %s (%s attempt(s))", r.channel, r.target, r.attempts)
            else:
                log.warning(
                    "notification to %s %s failed after %s attempt(s): %s",
                    r.channel,
                    r.target,
                    r.attempts,
                    r.error,
                )
        return results

    def _guarded(
        self,
        channel: Literal["webhook", "smtp", "bot"],
        target: str,
        send: Callable[[], Delivery],
    ) -> Delivery:
        """``send()``, with anything unforeseen (a URL httpx refuses, a header it cannot
        encode...) turned into a failed delivery: a notification never fails the run."""
        try:
            return send()
        except Exception as exc:
            log.exception("notification to %s %s failed unexpectedly", channel, target)
            error = redact(f"unexpected {type(exc).__name__}: {exc}", self._secrets)
            return Delivery(channel, target, False, 0, None, error)

    # --- retries ------------------------------------------------------------------------

    def _retrying(self) -> Retrying:
        """The shared :class:`~syncengine.callpolicy.RetryPolicy` with ``[notifications]``'s
        settings: ``attempts`` tries, backoff with jitter (``Retry-After`` honoured up to
        ``backoff_max``), at most ``max_seconds`` of waiting."""
        c = self.config
        policy = RetryPolicy(
            max_attempts=c.attempts,
            backoff_initial=c.backoff,
            backoff_max=c.backoff_max,
            jitter=c.backoff / 2,
            max_retry_seconds=c.max_seconds,
        )
        return policy.retrying(lambda exc: isinstance(exc, _Retry), sleep=self._sleep)

    # --- webhooks -----------------------------------------------------------------------

    def _post(self, hook: WebhookConfig, event: Event, delivery_id: str, body: bytes) -> Delivery:
        secret = hook.secret.get_secret_value()
        attempts = 0
        status: int | None = None
        import httpx  # here: the config imports this module, and most commands notify nobody

        client = httpx.Client(timeout=hook.timeout, transport=self._transport)

        def attempt() -> int:
            nonlocal attempts, status
            attempts += 1
            timestamp = str(int(self._clock()))
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "syncengine-notify",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
                EVENT_HEADER: event,
                DELIVERY_HEADER: delivery_id,
            }
            try:
                response = client.post(hook.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                status = None
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            status = response.status_code
            if 200 <= status < 300:
                return status
            reason = f"HTTP {status} {response.reason_phrase}".strip()
            if status in RETRIABLE_STATUS:
                raise _Retry(reason, status, retry_after(response.headers.get("Retry-After")))
            raise _GiveUp(f"{reason} (not retried: fix the receiver or the config)", status)

        try:
            for try_ in self._retrying():
                with try_:
                    attempt()
        except (_Retry, _GiveUp) as exc:
            error = redact(str(exc), self._secrets)
            return Delivery("webhook", hook.label, False, attempts, status, error)
        finally:
            client.close()
        return Delivery("webhook", hook.label, True, attempts, status)

    # --- group-chat bots (syncengine.chatbots) ------------------------------------------

    def _bot(self, bot: BotConfig, subject: str, text: str) -> Delivery:
        """One message to a WeCom / DingTalk / Feishu bot: signed anew on every attempt (the
        services refuse an old timestamp); an error code in a 200 answer is a failure."""
        title, content = redact(subject, self._secrets), redact(text, self._secrets)
        attempts = 0
        status: int | None = None
        import httpx

        client = httpx.Client(timeout=bot.timeout, transport=self._transport)

        def attempt() -> None:
            nonlocal attempts, status
            attempts += 1
            request = bot_request(bot, title, content, now=self._clock())
            headers = {"Content-Type": "application/json; charset=utf-8",
                       "User-Agent": "syncengine-notify"}  # fmt: skip
            try:
                response = client.post(request.url, content=request.body, headers=headers)
            except httpx.TransportError as exc:
                status = None
                raise _Retry(type(exc).__name__) from None  # the text may carry the URL
            status = response.status_code
            reason = f"HTTP {status} {response.reason_phrase}".strip()
            if status in RETRIABLE_STATUS:
                raise _Retry(reason, status, retry_after(response.headers.get("Retry-After")))
            if not 200 <= status < 300:
                raise _GiveUp(f"{reason} (not retried: check the bot's URL)", status)
            answer = read_answer(bot.kind, status, response.text)
            if answer.ok:
                return
            if answer.retriable:
                raise _Retry(answer.message, status)
            raise _GiveUp(f"{answer.message} (not retried: check the bot's URL and secret)",
                          status)  # fmt: skip

        try:
            for try_ in self._retrying():
                with try_:
                    attempt()
        except (_Retry, _GiveUp) as exc:
            error = redact(str(exc), self._secrets)
            return Delivery("bot", bot.label, False, attempts, status, error)
        finally:
            client.close()
        return Delivery("bot", bot.label, True, attempts, status)

    # --- mail ---------------------------------------------------------------------------

    def _message(self, smtp: SmtpConfig, subject: str, text: str, body: bytes) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = redact(f"{smtp.subject_prefix} {subject}".strip(), self._secrets)
        msg["From"] = smtp.sender
        msg["To"] = ", ".join(smtp.to)
        msg["Date"] = formatdate(self._clock(), localtime=False)
        msg["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2] or None)
        msg.set_content(redact(text, self._secrets))
        msg.add_attachment(body, maintype="application", subtype="json", filename="report.json")
        return msg

    def _connect(self, smtp: SmtpConfig) -> smtplib.SMTP:
        context = ssl.create_default_context(cafile=smtp.ca_file)
        if smtp.ssl:
            return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        conn = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        if smtp.starttls:
            try:
                conn.starttls(context=context)
            except BaseException:
                conn.close()
                raise
        return conn

    def _mail(self, smtp: SmtpConfig, subject: str, text: str, body: bytes) -> Delivery:
        msg = self._message(smtp, subject, text, body)
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            try:
                conn = self._connect(smtp)
            except (OSError, smtplib.SMTPException) as exc:
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise _GiveUp(f"the server's certificate is not trusted: {exc}") from None
                if isinstance(exc, smtplib.SMTPNotSupportedError):
                    raise _GiveUp(
                        "the server does not offer STARTTLS (set starttls = false only on a "
                        "trusted network)"
                    ) from None
                raise _Retry(f"cannot connect: {type(exc).__name__}: {exc}") from None
            try:
                if smtp.user is not None:
                    password = smtp.password.get_secret_value() if smtp.password else ""
                    conn.login(smtp.user, password)
                conn.send_message(msg)
            except smtplib.SMTPAuthenticationError as exc:
                raise _GiveUp(f"login refused: {exc.smtp_code}") from None
            except smtplib.SMTPRecipientsRefused as exc:
                raise _GiveUp(f"recipients refused: {', '.join(sorted(exc.recipients))}") from None
            except smtplib.SMTPResponseException as exc:
                raw = exc.smtp_error
                text_ = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                message = f"SMTP {exc.smtp_code} {text_}"
                if 400 <= exc.smtp_code < 500:
                    raise _Retry(message) from None
                raise _GiveUp(message) from None
            except (OSError, smtplib.SMTPException) as exc:
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            finally:
                try:
                    conn.quit()
                except (OSError, smtplib.SMTPException):
                    conn.close()

        try:
            for try_ in self._retrying():
                with try_:
                    attempt()
        except (_Retry, _GiveUp) as exc:
            return Delivery(
                "smtp", smtp.label, False, attempts, None, redact(str(exc), self._secrets)
            )
        return Delivery("smtp", smtp.label, True, attempts)


def hostname() -> str:
    """This machine's name, for the summary (which host's nightly run is talking)."""
    return socket.gethostname()
