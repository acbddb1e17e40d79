"""The ``[review]`` config table: how plans are shown to approvers, signed and signed off.

Example::

    [review]
    lang = "zh"                    # "zh" or "en": the plan page, text and summaries
    timezone = "Asia/Shanghai"     # times on the plan page and in the text
    key_file = "plan-signing.key"  # default: next to the SQLite database file, else the config
    require_approval = "removals"  # "never" (default), "removals" or "always"
    approval_min_actions = 500     # also require one for plans with this many actions or more
    secure_cookies = true          # the review pages' session cookie is Secure (HTTPS, localhost)
    session_minutes = 480

    [[review.approvers]]           # who may sign plans off in 'syncengine serve' (/review/)
    name = "wang.hr"
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."   # from 'syncengine hash-password'

The table is left out of the config fingerprint: changing the language or the approvers does
not make the plans already under review stale.
"""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_KEY_FILE = "plan-signing.key"


class Approver(BaseModel):
    """One account of the approval pages: a name and an argon2 password hash (never the
    password: make the hash with ``syncengine hash-password``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[\w.@-]+$")
    password_hash: str = Field(pattern=r"^\$argon2(id|i|d)\$")


class ReviewConfig(BaseModel):
    """``[review]``: language, time zone, the plan-signing key and the approval policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lang: Literal["zh", "en"] = "zh"
    timezone: str = "Asia/Shanghai"
    key_file: str | None = None
    require_approval: Literal["never", "removals", "always"] = "never"
    approval_min_actions: int | None = Field(default=None, ge=1)
    secure_cookies: bool = True
    session_minutes: int = Field(default=480, ge=1, le=7 * 24 * 60)
    approvers: list[Approver] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name: Asia/Shanghai)")
        return value

    @model_validator(mode="after")
    def _someone_can_approve(self) -> ReviewConfig:
        if self.require_approval != "never" and not self.approvers:
            raise ValueError(
                f"require_approval = {self.require_approval!r} needs at least one "
                "[[review.approvers]] account, or no plan could ever be approved"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
