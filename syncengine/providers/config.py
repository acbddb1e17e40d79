"""Configuration of the Exmail connection (the ``[exmail]`` table of the TOML config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from syncengine.secrets import Secret

GEN2_BASE_URL = "https://api.exmail.qq.com"
GEN1_TOKEN_BASE_URL = "https://exmail.qq.com"
GEN1_OPENAPI_BASE_URL = "http://openapi.exmail.qq.com:12211"

Gen2App = Literal["contacts", "sso", "mail", "log", "settings"]


class ExmailConfig(BaseModel):
    """How to reach Exmail and with which credentials.

    ``base_url`` is the host root: Gen 2 calls go to ``{base_url}/cgi-bin/...`` (default: the
    real ``https://api.exmail.qq.com``); Gen 1 fetches its token at ``{base_url}/cgi-bin/token``
    (default: the real ``https://exmail.qq.com``) and calls ``{openapi_url}/openapi/...``
    (default: the real ``http://openapi.exmail.qq.com:12211``, or ``base_url`` when only that
    is given, as on the emulator, which serves both on one host). The defaults differ per
    generation, so a config with no URLs reaches the real service of its ``api``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api: Literal["v1", "v2"] = "v2"
    base_url: str | None = None
    openapi_url: str | None = None
    sso_url: str = "https://exmail.qq.com/cgi-bin/login"
    domains: list[str] = Field(default_factory=list)
    timeout: float = Field(default=15.0, gt=0)
    read_concurrency: int = Field(default=8, ge=1, le=64)
    # Gen 1: days between full directory reads; in between, only the accounts user/list names
    # as changed since the stored cursor are read (0: every read is a full one).
    full_read_days: float = Field(default=7.0, ge=0)
    # Gen 2 has no push: ``mail watch`` polls mail/newcount of the given mailboxes this often.
    poll_interval: float = Field(default=30.0, gt=0)
    # ``mail watch``: least seconds between two Gen 1 listen calls that brought no news (a
    # server may answer at once instead of holding), and the backoff after a transient failure.
    listen_min_interval: float = Field(default=1.0, ge=0)
    watch_backoff: float = Field(default=1.0, gt=0)
    watch_backoff_max: float = Field(default=60.0, gt=0)

    # Gen 2: one corp id, one secret per application.
    corp_id: str | None = None
    secrets: dict[Gen2App, Secret] = Field(default_factory=dict)

    # Gen 1: the administrator account and its 接口key.
    client_id: str | None = None
    client_secret: Secret | None = None
    token_auth: Literal["form", "basic"] = "form"

    @model_validator(mode="after")
    def _credentials_for_api(self) -> ExmailConfig:
        if self.api == "v2":
            if not self.corp_id:
                raise ValueError("api = 'v2' needs corp_id")
            if "contacts" not in self.secrets:
                raise ValueError("api = 'v2' needs secrets.contacts (the 通讯录管理 secret)")
        else:
            if not self.client_id or self.client_secret is None:
                raise ValueError("api = 'v1' needs client_id and client_secret")
        return self

    @property
    def host_base(self) -> str:
        """Gen 2: the root of ``/cgi-bin/...``; Gen 1: the root of ``/cgi-bin/token``."""
        default = GEN2_BASE_URL if self.api == "v2" else GEN1_TOKEN_BASE_URL
        return (self.base_url or default).rstrip("/")

    @property
    def token_url(self) -> str:
        """Gen 1's token endpoint (Gen 2 fetches its tokens at ``{host_base}/cgi-bin/gettoken``)."""
        return self.host_base + "/cgi-bin/token"

    @property
    def openapi_base(self) -> str:
        """Gen 1: the root of ``/openapi/...``."""
        return (self.openapi_url or self.base_url or GEN1_OPENAPI_BASE_URL).rstrip("/")
