"""``syncengine check``: does this ``[exmail]`` table work against the live service? Read-only.

Three kinds of probe, each reported on its own so that one failure does not hide the others:

- **token**: one token fetch per credential (Gen 2: every configured application secret, since a
  token only works for its own application; Gen 1: ``client_id``/``client_secret``);
- **list**: one read of the directory (Gen 2 ``department/list``, Gen 1 ``party/list`` of the
  root), proving the token is accepted by the API and the base URL is the API's;
- **domains**: ``user/batchcheck`` (Gen 2) / ``user/check`` (Gen 1) of one made-up address per
  configured domain: Exmail answers "invalid" (-1) for a domain that is not the company's.

Nothing is written. Each failure says what is wrong and which key of the config to look at;
messages come from the providers' typed errors, which never carry a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncengine.domain import AddressKind
from syncengine.errors import ProviderError, SyncEngineError
from syncengine.providers.base import MailboxProvider
from syncengine.providers.config import ExmailConfig
from syncengine.providers.exmail_v1 import ExmailV1Provider
from syncengine.providers.exmail_v2 import ExmailV2Provider

PROBE_LOCAL_PART = "syncengine-check-probe"
"""The local part of the made-up address used to ask Exmail about each domain (never created)."""

_SECRET_PAGES = {
    "contacts": "通讯录管理 (contacts)",
    "sso": "单点登录 (single sign-on)",
    "mail": "新邮件提醒 (new-mail notice)",
    "log": "系统日志 (logs)",
    "settings": "功能设置 (settings)",
}


@dataclass(frozen=True)
class Probe:
    """One line of the check: what was tried, whether it worked, and what was found or wrong."""

    name: str
    ok: bool
    detail: str
    key: str = ""  # the config key to look at when it failed
    warning: bool = False  # worked, but something deserves attention

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "warning": self.warning,
                "detail": self.detail, "key": self.key}  # fmt: skip


def _probe(name: str, key: str, fn: Callable[[], str]) -> Probe:
    try:
        return Probe(name, True, fn(), key)
    except ProviderError as exc:
        return Probe(name, False, str(exc), key)
    except SyncEngineError as exc:
        return Probe(name, False, str(exc), key)


def _domain_probes(provider: MailboxProvider, config: ExmailConfig) -> list[Probe]:
    if not config.domains:
        return [Probe("domains", True, "none configured ([exmail] domains): generated addresses "
                      "need [addresses] domain", "exmail.domains", warning=True)]  # fmt: skip
    probes = {f"{PROBE_LOCAL_PART}@{d.strip().lower()}": d for d in config.domains}
    try:
        kinds = provider.check_addresses(list(probes))
    except ProviderError as exc:
        return [Probe("domains", False, str(exc), "exmail.domains")]
    out = []
    for address, domain in probes.items():
        kind = kinds.get(address)
        if kind is None or kind is AddressKind.INVALID:
            out.append(Probe(f"domain {domain}", False, "Exmail says this domain is not the "
                             "company's (the address check answered 'invalid')",
                             "exmail.domains"))  # fmt: skip
        else:
            out.append(Probe(f"domain {domain}", True, "a domain of the company"))
    return out


def check_v2(provider: ExmailV2Provider, config: ExmailConfig) -> list[Probe]:
    probes = []
    for app in sorted(config.secrets):

        def fetch(app: Any = app) -> str:
            provider.token_cache(app).get()
            return "token issued"

        title = _SECRET_PAGES.get(app, app)
        probes.append(_probe(f"token {title}", f"exmail.secrets.{app}", fetch))

    def departments() -> str:
        data = provider.call("department/list", params={"id": 1})
        rows = data.get("department") or []
        return f"department/list answered {len(rows)} department(s) including the root"

    probes.append(_probe("list", "exmail.base_url", departments))
    return probes + _domain_probes(provider, config)


def check_v1(provider: ExmailV1Provider, config: ExmailConfig) -> list[Probe]:
    def token() -> str:
        provider.tokens.get()
        return f"token issued for {config.client_id}"

    def parties() -> str:
        names = provider.party_list("")
        return f"party/list answered {len(names)} top-level department(s)"

    probes = [
        _probe("token", "exmail.client_id / exmail.client_secret", token),
        _probe("list", "exmail.openapi_url", parties),
    ]
    return probes + _domain_probes(provider, config)


def check_provider(provider: MailboxProvider, config: ExmailConfig) -> list[Probe]:
    """Every probe for this provider (see the module doc)."""
    if isinstance(provider, ExmailV1Provider):
        return check_v1(provider, config)
    if isinstance(provider, ExmailV2Provider):
        return check_v2(provider, config)
    raise TypeError(f"no check for {type(provider).__name__}")
