"""Initial passwords to someone who can use them: the new hire, not only a 0600 file.

The password file (``[passwords] delivery = "file"``) stays the durable record, written before
every create call. ``[passwords.handover]`` adds a channel through which, once the apply is
over, each password of a mailbox this run created (and did not void) is also sent on:

* ``wecom_app``: a WeCom (企业微信) application message to the new hire, who has WeCom on the
  phone from the first day. ``GET /cgi-bin/gettoken?corpid&corpsecret`` gives the app's token
  (cached while valid); ``POST /cgi-bin/message/send?access_token=...`` with ``{"touser":
  <WeCom userid>, "msgtype": "text", "agentid": N, "text": {"content": ...}, "safe": 1}``
  (``safe``: a confidential message, not forwardable, watermarked). The WeCom userid is the
  ``touser`` template filled from the employee id or the address (``"{employee_id}"`` by
  default). An answer with ``errcode`` 0 but the user in ``invaliduser`` is a failure.
* ``webhook``: a signed JSON POST (``X-Syncengine-Signature``, the scheme of our notifications)
  to a company relay, e.g. the SMS gateway or the OA system that shows it to the manager:
  ``{"event": "initial_password", "employee_id", "email", "password", "change_at_login"}``.

A handover that fails is logged and counted, never fails the apply, and leaves the password
in the file for the admin; one that succeeds gets a ``handed_over`` line in the file. Passwords
are held in memory only for the length of the apply.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from syncengine.errors import ConfigError
from syncengine.executor import PasswordDelivery, PasswordSink
from syncengine.notify_config import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    display_url,
    redact,
    sign,
)
from syncengine.secrets import Secret, known_value

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


class HandoverConfig(BaseModel):
    """``[passwords.handover]``: see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: Literal["wecom_app", "webhook"]
    secret: Secret  # wecom_app: the app's Secret; webhook: the HMAC signing key
    corp_id: str | None = None  # wecom_app
    agent_id: int | None = None  # wecom_app
    base_url: str = "https://qyapi.weixin.qq.com"  # wecom_app
    touser: str = "{employee_id}"  # wecom_app: the WeCom userid ({employee_id}, {email})
    url: str | None = None  # webhook
    message: str = (
        "您的企业邮箱已开通：{email}\n初始密码：{password}\n首次登录请修改密码。"
        "\nYour mailbox {email} is ready; initial password {password} (change it at first login)."
    )
    timeout: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> HandoverConfig:
        if self.channel == "wecom_app" and (not self.corp_id or self.agent_id is None):
            raise ValueError("channel 'wecom_app' needs corp_id and agent_id")
        if self.channel == "webhook" and not self.url:
            raise ValueError("channel 'webhook' needs url")
        for key in ("{password}", "{email}"):
            if self.channel == "wecom_app" and key not in self.message:
                raise ValueError(f"message must contain {key}")
        return self


class HandoverError(Exception):
    """One password could not be handed over (the text names the channel and the reason)."""


@dataclass
class HandoverSink:
    """A :class:`~syncengine.executor.PasswordSink` in front of the durable one: it passes
    every call on, remembers the passwords in use, and :meth:`flush` sends them."""

    inner: PasswordSink
    config: HandoverConfig
    transport: httpx.BaseTransport | None = None
    clock: Callable[[], float] = time.time
    on_handed_over: Callable[[str, str, str], None] | None = None
    pending: dict[str, PasswordDelivery] = field(default_factory=dict)
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    _token: tuple[str, float] | None = None

    def deliver(self, delivery: PasswordDelivery) -> None:
        self.inner.deliver(delivery)
        self.pending[delivery.email.lower()] = delivery

    def deliver_many(self, deliveries: Sequence[PasswordDelivery]) -> None:
        """:meth:`deliver` for each, through the durable sink's own batch when it has one."""
        from syncengine.executor.lane import deliver_all

        deliver_all(self.inner, deliveries)
        for delivery in deliveries:
            self.pending[delivery.email.lower()] = delivery

    def void(self, employee_id: str, email: str, reason: str) -> None:
        self.inner.void(employee_id, email, reason)
        self.pending.pop(email.lower(), None)

    def flush(self, created: set[str]) -> None:
        """Send the passwords of the mailboxes in ``created`` (addresses whose create action
        is done); the rest stay in the file only."""
        todo = [d for e, d in sorted(self.pending.items()) if e in created]
        self.pending.clear()
        if not todo:
            return
        import httpx  # here: the config imports this module, and most commands send nothing

        with httpx.Client(timeout=self.config.timeout, transport=self.transport) as client:
            for d in todo:
                try:
                    self._send(client, d)
                except (HandoverError, httpx.HTTPError, ConfigError) as exc:
                    known = known_value(self.config.secret)
                    text = redact(str(exc), [d.password, *([known] if known else [])])
                    where = f"{self.config.channel} for {d.email} ({d.employee_id})"
                    self.errors.append(f"{where}: {text}")
                    log.warning("initial password not handed over: %s: %s", where, text)
                    continue
                self.sent += 1
                if self.on_handed_over is not None:
                    self.on_handed_over(d.employee_id, d.email, self.config.channel)

    # --- channels -------------------------------------------------------------------------

    def _send(self, client: httpx.Client, d: PasswordDelivery) -> None:
        if self.config.channel == "wecom_app":
            self._wecom(client, d)
        else:
            self._webhook(client, d)

    def _wecom_token(self, client: httpx.Client) -> str:
        if self._token is not None and self._token[1] > self.clock():
            return self._token[0]
        c = self.config
        query = {"corpid": c.corp_id, "corpsecret": c.secret.get_secret_value()}
        r = client.get(f"{c.base_url}/cgi-bin/gettoken", params=query)
        data = _json(r, "gettoken")
        if data.get("errcode") != 0 or not data.get("access_token"):
            raise HandoverError(f"gettoken: errcode {data.get('errcode')} {data.get('errmsg')}")
        expires = data.get("expires_in")
        lifetime = float(expires) if isinstance(expires, int | float) and expires > 0 else 7200.0
        self._token = (str(data["access_token"]), self.clock() + lifetime - 60)
        return self._token[0]

    def _wecom(self, client: httpx.Client, d: PasswordDelivery) -> None:
        c = self.config
        touser = c.touser.format(employee_id=d.employee_id, email=d.email)
        body = {
            "touser": touser,
            "msgtype": "text",
            "agentid": c.agent_id,
            "text": {"content": c.message.format(email=d.email, password=d.password)},
            "safe": 1,
        }
        for again in (True, False):
            token = self._wecom_token(client)
            r = client.post(f"{c.base_url}/cgi-bin/message/send",
                            params={"access_token": token}, json=body)  # fmt: skip
            data = _json(r, "message/send")
            code = data.get("errcode")
            if code in (40014, 42001) and again:  # token expired or revoked: refresh once
                self._token = None
                continue
            if code != 0:
                raise HandoverError(f"message/send: errcode {code} {data.get('errmsg')}")
            if touser in str(data.get("invaliduser", "")).split("|"):
                raise HandoverError(f"message/send: WeCom has no user {touser!r}")
            return

    def _webhook(self, client: httpx.Client, d: PasswordDelivery) -> None:
        c = self.config
        assert c.url is not None  # checked by the config
        body = json.dumps(
            {"event": "initial_password", "employee_id": d.employee_id, "email": d.email,
             "password": d.password, "change_at_login": d.change_at_login},
            ensure_ascii=False, sort_keys=True,
        ).encode("utf-8")  # fmt: skip
        stamp = str(int(self.clock()))
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign(c.secret.get_secret_value(), stamp, body),
            EVENT_HEADER: "initial_password",
            DELIVERY_HEADER: f"pw-{d.employee_id}-{stamp}",
        }
        r = client.post(c.url, content=body, headers=headers)
        if not 200 <= r.status_code < 300:
            raise HandoverError(f"{display_url(c.url)} answered HTTP {r.status_code}")


def _json(response: httpx.Response, call: str) -> dict[str, object]:
    if response.status_code != 200:
        raise HandoverError(f"{call}: HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        raise HandoverError(f"{call}: not a JSON answer") from None
    if not isinstance(data, dict):
        raise HandoverError(f"{call}: unexpected answer")
    return data
