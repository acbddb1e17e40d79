"""Configuration of the Exmail connection (the ``[exmail]`` table of the TOML config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from syncengine.secrets import Secret

Gen2App = Literal["contacts", "sso", "mail", "log", "settings"]


class ExmailConfig(BaseModel):
    """How to reach Exmail and with which credentials.

    ``base_url`` is the host root: Gen 2 calls go to ``{base_url}/cgi-bin/...`` (real:
    ``https://api.exmail.qq.com``); Gen 1 fetches its token at ``{base_url}/cgi-bin/token``
    (real: ``https://exmail.qq.com``) and calls ``{openapi_url}/openapi/...`` (real:
    ``http://openapi.exmail.qq.com:12211``; defaults to ``base_url``, as on the emulator).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    api: Literal["v1", "v2"] = "v2"
    base_url: str = "https://api.exmail.qq.com"
    openapi_url: str | None = None
    sso_url: str = "https://exmail.qq.com/cgi-bin/login"
    domains: list[str] = Field(default_factory=list)
    timeout: float = Field(default=15.0, gt=0)
    read_concurrency: int = Field(default=8, ge=1, le=64)
    # Gen 2 has no push: ``mail watch`` polls mail/newcount of the given mailboxes this often.
    poll_interval: float = Field(default=30.0, gt=0)

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
    def openapi_base(self) -> str:
        return (self.openapi_url or self.base_url).rstrip("/")
