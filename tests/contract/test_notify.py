"""Notifications against real receivers on loopback: a Starlette webhook receiver that checks
the signature itself, and an aiosmtpd SMTP server (plain, AUTH, STARTTLS)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from syncengine.notify import (
    NotificationsConfig,
    Notifier,
    display_url,
    sign,
    verify,
)
from tests.fixtures.notify_receiver import notification_receiver

pytestmark = pytest.mark.timeout(60)

SUMMARY = {"status": "succeeded", "counts": {"create_user": 3}, "run_id": 7}


def make_config(**table: Any) -> NotificationsConfig:
    return NotificationsConfig.model_validate(table)


class Sleeps:
    def __init__(self) -> None:
        self.pauses: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def send(notifier: Notifier, event: str = "finished", summary: Any = None) -> list[Any]:
    return notifier.send(
        event,  # type: ignore[arg-type]
        summary if summary is not None else SUMMARY,
        subject="sync finished",
        text="3 mailboxes created",
    )


# --- signing ------------------------------------------------------------------------------


def test_sign_and_verify_round_trip_and_refusals() -> None:
    body = b'{"a": 1}'
    sig = sign("s3cret-value", "1700000000", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify("s3cret-value", "1700000000", body, sig, now=1700000100)
    assert not verify("other-secret", "1700000000", body, sig, now=1700000100)
    assert not verify("s3cret-value", "1700000000", body + b" ", sig, now=1700000100)
    assert not verify("s3cret-value", "1700000001", body, sig, now=1700000100)
    assert not verify("s3cret-value", "1700000000", body, sig, now=1700000000 + 301)
    assert not verify("s3cret-value", "not-a-number", body, sig, now=1700000100)


def test_display_url_hides_path_and_query() -> None:
    shown = display_url("https://hooks.example.com:8443/services/T0/B0/XXXXtoken?key=abc")
    assert shown == "https://hooks.example.com:8443"


def test_config_refuses_bad_values() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="http"):
        make_config(webhooks=[{"url": "ftp://x.example.com", "secret": "abcd"}])
    with pytest.raises(ValidationError, match="Port out of range"):
        make_config(webhooks=[{"url": "http://x.example.com:99999/", "secret": "abcd"}])
    with pytest.raises(ValidationError, match="on"):
        make_config(on=["sometimes"])
    with pytest.raises(ValidationError, match="to"):
        make_config(smtp={"host": "h", "from": "a@example.com", "to": []})
    with pytest.raises(ValidationError, match="extra"):
        make_config(smtp={"host": "h", "from": "a@example.com", "to": ["b@x"], "tls": 1})


# --- webhooks -----------------------------------------------------------------------------


def test_webhook_signed_and_received() -> None:
    with notification_receiver() as rx:
        cfg = make_config(webhooks=[{"url": rx.url, "secret": rx.secret, "name": "ops"}])
        results = send(Notifier(cfg))
        got = rx.wait_for(1)
    assert [r.to_dict() for r in results] == [
        {
            "channel": "webhook",
            "target": "ops",
            "ok": True,
            "attempts": 1,
            "status": 200,
            "error": None,
        }
    ]
    assert got[0].signature_ok
    doc = got[0].document
    assert doc["event"] == "finished"
    assert doc["summary"] == SUMMARY
    assert got[0].headers["x-syncengine-event"] == "finished"
    assert got[0].headers["x-syncengine-delivery"] == doc["delivery_id"]


def test_webhook_retries_after_503_with_the_same_delivery_id() -> None:
    sleeps = Sleeps()
    with notification_receiver() as rx:
        rx.answer_with(503, 503)
        cfg = make_config(webhooks=[{"url": rx.url, "secret": rx.secret}], backoff=0.5)
        results = send(Notifier(cfg, sleep=sleeps))
        got = rx.wait_for(3)
    assert results[0].ok and results[0].attempts == 3 and results[0].status == 200
    assert [r.answered for r in got] == [503, 503, 200]
    assert all(r.signature_ok for r in got)
    assert len({r.headers["x-syncengine-delivery"] for r in got}) == 1
    assert len(sleeps.pauses) == 2 and all(p > 0 for p in sleeps.pauses)


def test_webhook_gives_up_after_the_attempt_limit_without_raising() -> None:
    sleeps = Sleeps()
    with notification_receiver() as rx:
        rx.answer_with(*[503] * 10)
        cfg = make_config(webhooks=[{"url": rx.url, "secret": rx.secret}], attempts=3)
        results = send(Notifier(cfg, sleep=sleeps))
        rx.wait_for(3)
        time.sleep(0.1)
        assert len(rx.received) == 3
    assert not results[0].ok
    assert results[0].attempts == 3 and results[0].status == 503
    assert "503" in (results[0].error or "")


def test_webhook_4xx_is_not_retried() -> None:
    with notification_receiver() as rx:
        cfg = make_config(webhooks=[{"url": rx.url, "secret": "not-the-receivers-secret"}])
        results = send(Notifier(cfg, sleep=Sleeps()))
        got = rx.wait_for(1)
        time.sleep(0.1)
        assert len(rx.received) == 1
    assert not got[0].signature_ok
    assert not results[0].ok and results[0].attempts == 1 and results[0].status == 401
    assert "not retried" in (results[0].error or "")


def test_webhook_retry_after_is_honoured_up_to_backoff_max() -> None:
    sleeps = Sleeps()

    def handler(request: httpx.Request) -> httpx.Response:
        if len(sleeps.pauses) == 0:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return httpx.Response(204)

    cfg = make_config(
        webhooks=[{"url": "https://ops.example.com/x", "secret": "abcd1234"}],
        backoff=0.1,
        backoff_max=5,
    )
    results = send(Notifier(cfg, transport=httpx.MockTransport(handler), sleep=sleeps))
    assert results[0].ok and results[0].attempts == 2
    assert sleeps.pauses == [5]


def test_webhook_refused_connection_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    cfg = make_config(
        webhooks=[{"url": f"http://127.0.0.1:{port}/hook", "secret": "abcd1234"}], attempts=4
    )
    results = send(Notifier(cfg, sleep=sleeps))
    assert not results[0].ok and results[0].attempts == 4 and results[0].status is None
    assert "ConnectError" in (results[0].error or "")
    assert results[0].target == f"http://127.0.0.1:{port}"
    assert len(sleeps.pauses) == 3


def test_secrets_are_redacted_from_the_body() -> None:
    with notification_receiver() as rx:
        cfg = make_config(webhooks=[{"url": rx.url, "secret": rx.secret}])
        leaky = {"error": f"token {rx.secret} and app secret demo-contacts-secret-0001"}
        send(Notifier(cfg, secrets=["demo-contacts-secret-0001"]), "failed", leaky)
        got = rx.wait_for(1)
    body = got[0].body.decode()
    assert rx.secret not in body and "demo-contacts-secret-0001" not in body
    assert got[0].document["summary"]["error"] == "token *** and app secret ***"


def test_only_the_configured_events_are_sent() -> None:
    with notification_receiver() as rx:
        cfg = make_config(webhooks=[{"url": rx.url, "secret": rx.secret}], on=["failed"])
        notifier = Notifier(cfg)
        assert send(notifier, "finished") == []
        assert send(notifier, "blocked") == []
        assert len(send(notifier, "failed")) == 1
        got = rx.wait_for(1)
        assert [r.document["event"] for r in got] == ["failed"]


def test_an_unforeseen_error_is_a_failed_delivery_not_an_exception() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise ValueError("transport bug while sending with abcd1234")

    cfg = make_config(webhooks=[{"url": "https://ops.example.com/x", "secret": "abcd1234"}])
    results = send(Notifier(cfg, transport=httpx.MockTransport(handler), sleep=Sleeps()))
    assert not results[0].ok and results[0].target == "https://ops.example.com"
    assert results[0].error == "unexpected ValueError: transport bug while sending with ***"


def test_nothing_configured_sends_nothing() -> None:
    assert send(Notifier(NotificationsConfig()), "failed") == []


# --- SMTP -----------------------------------------------------------------------------------


@dataclass
class Inbox:
    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    answer: str = "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.answer.startswith("250"):
            answer, self.answer = self.answer, "250 OK"
            return answer
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(msg)  # type: ignore[arg-type]
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def smtp_server(
    *,
    user: str | None = None,
    password: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    kwargs: dict[str, Any] = {}
    if user is not None:

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            if isinstance(data, LoginPassword):
                login, pw = data.login.decode(), data.password.decode()
                inbox.logins.append((login, pw))
                return AuthResult(success=(login, pw) == (user, password), handled=False)
            return AuthResult(success=False, handled=False)

        kwargs.update(authenticator=authenticator, auth_require_tls=tls is not None)
    if tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def smtp_config(port: int, **extra: Any) -> NotificationsConfig:
    table = {
        "host": "127.0.0.1",
        "port": port,
        "starttls": False,
        "from": "sync@example.com",
        "to": ["ops@example.com", "it@example.com"],
        "timeout": 5,
        **extra,
    }
    return make_config(smtp=table, attempts=3)


def test_smtp_mail_with_login_text_and_json_attachment() -> None:
    with smtp_server(user="sync@example.com", password="mail-pass-0001") as (inbox, port):
        cfg = smtp_config(port, user="sync@example.com", password="mail-pass-0001")
        results = send(
            Notifier(cfg, secrets=["demo-contacts-secret-0001"]),
            "blocked",
            {"reason": "shrink brake", "oops": "demo-contacts-secret-0001"},
        )
    assert [r.to_dict() for r in results] == [
        {
            "channel": "smtp",
            "target": f"smtp://127.0.0.1:{port}",
            "ok": True,
            "attempts": 1,
            "status": None,
            "error": None,
        }
    ]
    assert inbox.logins == [("sync@example.com", "mail-pass-0001")]
    assert inbox.envelopes == [("sync@example.com", ["ops@example.com", "it@example.com"])]
    msg = inbox.messages[0]
    assert msg["Subject"] == "[syncengine] sync finished"
    parts = list(msg.iter_parts())
    assert parts[0].get_content().strip() == "3 mailboxes created"
    attached = json.loads(parts[1].get_content())
    assert parts[1].get_filename() == "report.json"
    assert attached["event"] == "blocked"
    assert attached["summary"] == {"reason": "shrink brake", "oops": "***"}
    assert "mail-pass-0001" not in msg.as_string()


def test_smtp_wrong_password_is_not_retried() -> None:
    sleeps = Sleeps()
    with smtp_server(user="sync@example.com", password="right-pass") as (inbox, port):
        cfg = smtp_config(port, user="sync@example.com", password="wrong-pass")
        results = send(Notifier(cfg, sleep=sleeps))
    assert not results[0].ok and results[0].attempts == 1 and not sleeps.pauses
    assert "login refused" in (results[0].error or "")
    assert "wrong-pass" not in (results[0].error or "")
    assert inbox.messages == []


def test_smtp_temporary_refusal_is_retried() -> None:
    sleeps = Sleeps()
    with smtp_server() as (inbox, port):
        inbox.answer = "451 try again later"
        results = send(Notifier(smtp_config(port), sleep=sleeps))
    assert results[0].ok and results[0].attempts == 2 and len(sleeps.pauses) == 1
    assert len(inbox.messages) == 1


def test_smtp_server_down_is_reported_not_raised() -> None:
    sleeps = Sleeps()
    results = send(Notifier(smtp_config(_free_port()), sleep=sleeps))
    assert not results[0].ok and results[0].attempts == 3
    assert "cannot connect" in (results[0].error or "")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_smtp_starttls_with_a_private_ca(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with smtp_server(user="u@example.com", password="tls-pass-01", tls=context) as (inbox, port):
        trusted = smtp_config(
            port, starttls=True, ca_file=str(cert), user="u@example.com", password="tls-pass-01"
        )
        assert send(Notifier(trusted))[0].ok
        untrusted = smtp_config(port, starttls=True)
        refused = send(Notifier(untrusted, sleep=Sleeps()))[0]
        plain = send(Notifier(smtp_config(port), sleep=Sleeps()))[0]
    assert len(inbox.messages) == 1
    assert not refused.ok and refused.attempts == 1
    assert "certificate" in (refused.error or "")
    assert not plain.ok  # the server insists on STARTTLS
