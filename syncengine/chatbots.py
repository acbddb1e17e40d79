"""Group-chat bots Chinese teams read: WeCom (企业微信), DingTalk (钉钉) and Feishu (飞书).

Each service has its own custom-bot webhook, message format, signing and answer; this module
builds the request and reads the answer, and :class:`syncengine.notify.Notifier` sends it with
its retries. What each service documents:

* **WeCom group bot** (群机器人): ``POST https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY``
  with ``{"msgtype": "markdown", "markdown": {"content": ...}}`` (content at most 4096 bytes).
  No signature: the ``key`` in the URL is the credential. Answer ``{"errcode": 0, "errmsg":
  "ok"}``; 45009 means too many messages (20 a minute per bot), worth another try later.
* **DingTalk custom robot** (自定义机器人, "加签" security setting): ``POST
  https://oapi.dingtalk.com/robot/send?access_token=TOKEN&timestamp=MS&sign=SIGN`` where
  ``MS`` is the time in milliseconds and ``SIGN`` = urlencode(base64(HMAC-SHA256(key=secret,
  msg=MS + "\\n" + secret))); the server refuses a timestamp more than an hour off. Body
  ``{"msgtype": "markdown", "markdown": {"title": ..., "text": ...}}`` (20,000 bytes).
  Answer ``{"errcode": 0, "errmsg": "ok"}``; 130101 is "sending too fast".
* **Feishu custom bot** (自定义机器人, "签名校验"): ``POST
  https://open.feishu.cn/open-apis/bot/v2/hook/TOKEN`` with ``{"timestamp": "S", "sign":
  SIGN, "msg_type": "text", "content": {"text": ...}}`` where ``S`` is the time in seconds and
  ``SIGN`` = base64(HMAC-SHA256(key=S + "\\n" + secret, msg=empty)) (the secret is in the *key*,
  the message is empty: Feishu's own sample code). Answer ``{"code": 0, "msg": "success"}``
  (older deployments: ``{"StatusCode": 0}``); 11232 is the frequency limit.

All three answer HTTP 200 with an error code in the body, so a 200 alone is not success.
The URLs carry the bot's token: they are shown by host only and scrubbed from error texts.

The time comes in as an argument; nothing here opens a connection (the signing secret is
read from the environment or file the config names, on first use).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncengine.secrets import Secret

BotKind = Literal["wecom", "dingtalk", "feishu"]

LIMITS: dict[str, int] = {"wecom": 4096, "dingtalk": 20000, "feishu": 20000}
"""The largest message text each service takes, in UTF-8 bytes."""

RATE_LIMITED: dict[str, frozenset[int]] = {
    "wecom": frozenset({45009, -1}),  # too many messages; system busy
    "dingtalk": frozenset({130101, -1}),  # sending too fast; system busy
    "feishu": frozenset({11232, 9499}),  # frequency limited; too many requests
}


def http_url(value: str) -> str:
    """``value`` when it is an http(s) URL with a host and a valid port (a config validator's
    check, shared by chat bots and notification webhooks); ValueError otherwise."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    _ = parts.port  # raises ValueError for a port out of range
    return value


class BotConfig(BaseModel):
    """One ``[[notifications.bots]]`` entry: a WeCom, DingTalk or Feishu group bot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: BotKind
    url: str  # the webhook URL the chat app shows (with its key / access_token)
    secret: Secret | None = None  # DingTalk 加签 / Feishu 签名校验 secret (WeCom has none)
    name: str | None = None
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @property
    def label(self) -> str:
        parts = urlsplit(self.url)
        return self.name or f"{self.kind} {parts.scheme}://{parts.netloc.rpartition('@')[2]}"

    def tokens(self) -> list[str]:
        """The credential parts of the URL (query values, the last path segment), to scrub."""
        parts = urlsplit(self.url)
        found = [v for _, v in parse_qsl(parts.query) if v]
        last = parts.path.rstrip("/").rpartition("/")[2]
        if self.kind == "feishu" and last:
            found.append(last)
        return found


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """base64(HMAC-SHA256(key=secret, msg=timestamp + "\\n" + secret)), before urlencoding."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()).decode()


def feishu_sign(secret: str, timestamp_s: str) -> str:
    """base64(HMAC-SHA256(key=timestamp + "\\n" + secret, msg=empty))."""
    key = f"{timestamp_s}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def _clip(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    cut = data[: limit - len("\n…".encode())].decode("utf-8", errors="ignore")
    return cut + "\n…"


@dataclass(frozen=True)
class BotRequest:
    url: str
    body: bytes


def bot_request(bot: BotConfig, title: str, text: str, *, now: float) -> BotRequest:
    """The request for one message at the instant ``now`` (unix seconds)."""
    secret = bot.secret.get_secret_value() if bot.secret is not None else None
    url = bot.url
    document: dict[str, Any]
    if bot.kind == "wecom":
        content = _clip(f"**{title}**\n{text}", LIMITS["wecom"])
        document = {"msgtype": "markdown", "markdown": {"content": content}}
    elif bot.kind == "dingtalk":
        content = _clip(f"### {title}\n\n{text}", LIMITS["dingtalk"])
        document = {"msgtype": "markdown", "markdown": {"title": title, "text": content}}
        if secret is not None:
            ms = str(int(now * 1000))
            parts = urlsplit(url)
            query = [*parse_qsl(parts.query), ("timestamp", ms),
                     ("sign", dingtalk_sign(secret, ms))]  # fmt: skip
            url = urlunsplit(parts._replace(query=urlencode(query)))
    else:
        content = _clip(f"{title}\n{text}", LIMITS["feishu"])
        document = {"msg_type": "text", "content": {"text": content}}
        if secret is not None:
            seconds = str(int(now))
            document = {"timestamp": seconds, "sign": feishu_sign(secret, seconds), **document}
    body = json.dumps(document, ensure_ascii=False).encode("utf-8")
    return BotRequest(url, body)


@dataclass(frozen=True)
class BotAnswer:
    ok: bool
    retriable: bool
    message: str


def read_answer(kind: str, status: int, text: str) -> BotAnswer:
    """Success or the reason, from an HTTP 200 answer's body (the code is in the body)."""
    try:
        data = json.loads(text)
    except ValueError:
        return BotAnswer(False, False, f"HTTP {status}: not a JSON answer")
    if not isinstance(data, dict):
        return BotAnswer(False, False, f"HTTP {status}: unexpected answer")
    if kind == "feishu":
        code = data.get("code", data.get("StatusCode"))
        msg = data.get("msg", data.get("StatusMessage", ""))
    else:
        code, msg = data.get("errcode"), data.get("errmsg", "")
    if code == 0:
        return BotAnswer(True, False, "ok")
    retriable = isinstance(code, int) and code in RATE_LIMITED.get(kind, frozenset())
    return BotAnswer(False, retriable, f"{kind} error {code}: {msg}")
