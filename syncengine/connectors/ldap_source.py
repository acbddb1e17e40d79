"""The LDAP / Active Directory connector: people read from a directory with a paged search.

Many companies keep the staff list in Active Directory (or OpenLDAP) and let HR maintain it
there. This connector binds (a service account, or anonymously), runs one search under a base
DN with the *simple paged results* control (RFC 2696), so a directory whose server caps a
single answer at 1,000 entries (AD's MaxPageSize) still yields everyone, and turns each entry
into a flat dict:

* each requested attribute under its own name (or under the key ``attribute_map`` gives it);
  no value → ``None``, one value → the value, several → a list (attributes named in
  ``list_attributes`` are always lists, e.g. ``memberOf``);
* ``dn``: the entry's DN; ``ou_path``: the OUs between the base DN and the entry, top down,
  joined with ``/`` (``研发中心/平台部``), ready for mapping to use as the department path;
* ``disabled``: from AD's ``userAccountControl`` (bit 0x2, ACCOUNTDISABLE), ``None`` when the
  entry has no such attribute (plain OpenLDAP);
* binary and odd values made plain: ``objectGUID`` as the GUID text AD shows,
  ``objectSid`` as ``S-1-5-...``, AD FILETIME integers (``accountExpires``, ``pwdLastSet``...)
  as ISO datetimes (``None`` for "never"), GeneralizedTime as ISO, other non-UTF-8 values
  (photos, certificates) as base64.

A refused connection, a refused bind, a missing base DN, a server that stops the search (size
or time limit) or an empty result is a :class:`SourceError`: a partial directory would make
everyone missing look like a leaver.

Config (``[source]``)::

    type = "ldap"
    url = "ldaps://dc1.corp.example.com"
    bind_dn = "CN=svc-mailsync,OU=Service,DC=corp,DC=example,DC=com"
    password = "env:LDAP_PASSWORD"
    base_dn = "OU=Staff,DC=corp,DC=example,DC=com"
    filter = "(&(objectCategory=person)(objectClass=user))"
    attributes = ["employeeID", "displayName", "mail", "mobile", "title", "department"]
    page_size = 500
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re
import ssl
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPInvalidFilterError
from ldap3.operation.search import parse_filter
from ldap3.utils.dn import parse_dn
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from syncengine.connectors.base import RawRecord
from syncengine.errors import SourceError
from syncengine.secrets import Secret

log = logging.getLogger(__name__)

PAGED_RESULTS_OID = "1.2.840.113556.1.4.319"
UF_ACCOUNTDISABLE = 0x2

_GUID_ATTRS = frozenset({"objectguid", "msexchmailboxguid", "ms-ds-consistencyguid"})
_SID_ATTRS = frozenset({"objectsid", "sidhistory"})
_FILETIME_ATTRS = frozenset(
    {
        "accountexpires",
        "pwdlastset",
        "lastlogon",
        "lastlogontimestamp",
        "lastlogoff",
        "badpasswordtime",
        "lockouttime",
    }
)
_GENERALIZED_TIME_ATTRS = frozenset(
    {"whencreated", "whenchanged", "createtimestamp", "modifytimestamp"}
)
_INT_ATTRS = frozenset({"useraccountcontrol", "primarygroupid", "logoncount", "badpwdcount"})
_FILETIME_NEVER = {0, 0x7FFFFFFFFFFFFFFF}
_SCOPES: dict[str, Literal["BASE", "LEVEL", "SUBTREE"]] = {
    "subtree": "SUBTREE",
    "level": "LEVEL",
    "base": "BASE",
}
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)


class LdapOptions(BaseModel):
    """The ``[source]`` table of a ``type = "ldap"`` source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    bind_dn: str | None = None
    password: Secret | None = None
    base_dn: str = Field(min_length=1)
    filter: str = "(objectClass=person)"
    scope: Literal["subtree", "level", "base"] = "subtree"
    attributes: list[str] = Field(default_factory=list)
    attribute_map: dict[str, str] = Field(default_factory=dict)
    list_attributes: list[str] = Field(default_factory=list)
    binary_attributes: list[str] = Field(default_factory=list)
    page_size: int = Field(default=500, ge=1, le=100_000)
    max_pages: int = Field(default=10_000, ge=1, le=1_000_000)
    # Names of the computed keys; "" leaves that key out.
    dn_field: str = "dn"
    ou_path_field: str = "ou_path"
    disabled_field: str = "disabled"
    start_tls: bool = False
    verify_tls: bool = True
    ca_file: str | None = None
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    timeout: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, value: str) -> str:
        if not re.match(r"^ldaps?://[^/?#]+/?$", value, re.IGNORECASE):
            raise ValueError("must look like ldap://host[:port] or ldaps://host[:port]")
        return value

    @field_validator("filter")
    @classmethod
    def _filter_parses(cls, value: str) -> str:
        try:
            parse_filter(value, None, True, True, None, False)  # type: ignore[no-untyped-call]
        except LDAPInvalidFilterError as err:
            raise ValueError(f"is not a valid LDAP filter ({err})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LdapOptions:
        if not self.attributes and not self.attribute_map:
            raise ValueError("give attributes (a list) and/or attribute_map (key = attribute)")
        if self.bind_dn and self.password is None:
            raise ValueError("bind_dn is set but password is missing (use 'env:NAME')")
        if self.password is not None and not self.bind_dn:
            raise ValueError("password is set but bind_dn is missing")
        keys = [*self.attributes, *self.attribute_map]
        computed = [k for k in (self.dn_field, self.ou_path_field, self.disabled_field) if k]
        clash = sorted({k for k in keys if keys.count(k) > 1} | (set(keys) & set(computed)))
        if clash:
            raise ValueError(f"record key(s) given twice: {', '.join(clash)}")
        return self

    def wanted(self) -> dict[str, str]:
        """Record key → LDAP attribute name."""
        out = {a: a for a in self.attributes}
        out.update(self.attribute_map)
        return out


# --- value decoding -----------------------------------------------------------------------


def guid_text(raw: bytes) -> str:
    """AD's objectGUID: 16 bytes, the first three fields little-endian (as AD tools print)."""
    return str(uuid.UUID(bytes_le=raw)) if len(raw) == 16 else base64.b64encode(raw).decode()


def sid_text(raw: bytes) -> str:
    """A binary SID as ``S-1-5-21-...``."""
    if len(raw) < 8 or len(raw) != 8 + 4 * raw[1]:
        return base64.b64encode(raw).decode()
    authority = int.from_bytes(raw[2:8], "big")
    subs = [int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "little") for i in range(raw[1])]
    return "-".join(["S", str(raw[0]), str(authority), *map(str, subs)])


def filetime_text(value: int) -> str | None:
    """AD's 100-ns-since-1601 integers; 0 and 2**63-1 mean "never"."""
    if value in _FILETIME_NEVER or value < 0:
        return None
    try:
        return (_FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)).isoformat()
    except OverflowError:
        return None


def generalized_time_text(text: str) -> str:
    """``20240131120000.0Z`` / ``20240131120000Z`` → ISO 8601; anything else unchanged."""
    m = re.fullmatch(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)?(\d\d)?(?:[.,]\d+)?(Z|[+-]\d{4})?", text)
    if not m:
        return text
    year, month, day, hour, minute, second, zone = m.groups()
    tz = dt.UTC
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        tz = dt.timezone(sign * dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5])))
    try:
        when = dt.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute or 0),
            int(second or 0),
            tzinfo=tz,
        )
    except ValueError:
        return text
    return when.isoformat()


def decode_value(attr: str, raw: bytes, binary: frozenset[str]) -> Any:
    """One raw attribute value as a plain Python value (see the module docstring)."""
    name = attr.lower()
    if name in _GUID_ATTRS:
        return guid_text(raw)
    if name in _SID_ATTRS:
        return sid_text(raw)
    if name in binary:
        return base64.b64encode(raw).decode("ascii")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")
    if name in _FILETIME_ATTRS:
        try:
            return filetime_text(int(text))
        except ValueError:
            return text
    if name in _INT_ATTRS:
        try:
            return int(text)
        except ValueError:
            return text
    if name in _GENERALIZED_TIME_ATTRS:
        return generalized_time_text(text)
    return text


_DN_ESCAPE = re.compile(rb"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)


def unescape_dn_value(value: str) -> str:
    """An RDN value without its RFC 4514 escapes (``\\,`` and ``\\E7\\A0...`` UTF-8 hex)."""
    if "\\" not in value:
        return value

    def one(m: re.Match[bytes]) -> bytes:
        tok = m.group(1)
        return bytes.fromhex(tok.decode()) if len(tok) == 2 else tok

    return _DN_ESCAPE.sub(one, value.encode("utf-8")).decode("utf-8", errors="replace")


def ou_path(dn: str, base_dn: str) -> str:
    """The OUs between ``base_dn`` and the entry, top down, joined with ``/``."""
    try:
        rdns = parse_dn(dn, escape=False, strip=True)
        base = parse_dn(base_dn, escape=False, strip=True)
    except LDAPException:
        return ""
    below = rdns[: max(0, len(rdns) - len(base))]
    ous = [unescape_dn_value(v) for (a, v, _sep) in below if a.lower() == "ou"]
    return "/".join(reversed(ous))


# --- the connector ------------------------------------------------------------------------


class LdapConnector:
    """Reads the people from an LDAP directory or Active Directory."""

    def __init__(self, options: LdapOptions, base_dir: Path):
        self.options = options
        self.base_dir = base_dir
        self.pages_read = 0
        self._wanted = options.wanted()
        self._binary = frozenset(a.lower() for a in options.binary_attributes)
        self._lists = frozenset(a.lower() for a in options.list_attributes)
        request = list(dict.fromkeys(self._wanted.values()))
        if options.disabled_field and "useraccountcontrol" not in {a.lower() for a in request}:
            request.append("userAccountControl")
        self._request = request
        self._ca_file: str | None = None
        if options.ca_file:
            path = Path(options.ca_file).expanduser()
            self._ca_file = str(path if path.is_absolute() else base_dir / path)

    def describe(self) -> str:
        who = self.options.bind_dn or "anonymous"
        return (
            f"ldap {self.options.url} base {self.options.base_dn} "
            f"filter {self.options.filter} (as {who})"
        )

    def _scrub(self, text: str) -> str:
        if self.options.password is not None:
            secret = self.options.password.get_secret_value()
            if secret:
                text = text.replace(secret, "***")
        return text

    def _connection(self) -> ldap3.Connection:
        o = self.options
        tls = None
        if o.url.lower().startswith("ldaps://") or o.start_tls:
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if o.verify_tls else ssl.CERT_NONE,
                ca_certs_file=self._ca_file,
            )
        server = ldap3.Server(
            o.url, get_info=ldap3.NONE, tls=tls, connect_timeout=o.connect_timeout
        )
        return ldap3.Connection(
            server,
            user=o.bind_dn,
            password=o.password.get_secret_value() if o.password is not None else None,
            authentication=ldap3.SIMPLE if o.bind_dn else ldap3.ANONYMOUS,
            auto_bind=ldap3.AUTO_BIND_NONE,
            read_only=True,
            auto_referrals=False,
            receive_timeout=int(max(1, o.timeout)),
            raise_exceptions=False,
            check_names=False,
        )

    def _open(self) -> ldap3.Connection:
        conn = self._connection()
        where = self.describe()
        try:
            conn.open()
            if self.options.start_tls and not conn.start_tls():
                raise SourceError(
                    f"StartTLS was refused: {conn.result.get('description')}",
                    where=where,
                    hint="check source.start_tls, source.ca_file and the server's certificate",
                )
            bound = conn.bind()
        except LDAPException as err:
            conn.unbind()
            raise SourceError(
                f"cannot reach the directory: {self._scrub(str(err))}",
                where=where,
                hint="check source.url, the network and the server's TLS settings",
            ) from None
        if not bound:
            result = conn.result or {}
            desc = result.get("description", "bind failed")
            conn.unbind()
            hint = (
                "check source.bind_dn and the password secret"
                if desc == "invalidCredentials"
                else "check the account is allowed to bind (not locked or expired)"
            )
            raise SourceError(f"the bind was refused ({desc})", where=where, hint=hint)
        return conn

    def _record(self, entry: Mapping[str, Any]) -> RawRecord:
        raw: Mapping[str, list[bytes]] = entry.get("raw_attributes") or {}
        by_name = {k.lower(): (k, v) for k, v in raw.items()}
        record: RawRecord = {}
        o = self.options
        if o.dn_field:
            record[o.dn_field] = entry.get("dn", "")
        if o.ou_path_field:
            record[o.ou_path_field] = ou_path(str(entry.get("dn", "")), o.base_dn)
        for key, attr in self._wanted.items():
            name, values = by_name.get(attr.lower(), (attr, []))
            decoded = [decode_value(name, v, self._binary) for v in values]
            if attr.lower() in self._lists:
                record[key] = decoded
            elif not decoded:
                record[key] = None
            else:
                record[key] = decoded[0] if len(decoded) == 1 else decoded
        if o.disabled_field:
            _, uac_values = by_name.get("useraccountcontrol", ("", []))
            disabled: bool | None = None
            if uac_values:
                try:
                    disabled = bool(int(uac_values[0]) & UF_ACCOUNTDISABLE)
                except ValueError:
                    disabled = None
            record[o.disabled_field] = disabled
        return record

    def records(self) -> Iterator[RawRecord]:
        o = self.options
        where = self.describe()
        conn = self._open()
        count = 0
        scope = _SCOPES[o.scope]
        try:
            cookie: bytes | None = None
            for page in range(o.max_pages):
                try:
                    conn.search(
                        o.base_dn,
                        o.filter,
                        search_scope=scope,
                        attributes=self._request,
                        paged_size=o.page_size,
                        paged_cookie=cookie,
                    )
                except LDAPException as err:
                    raise SourceError(
                        f"the search failed after {count} entries: {self._scrub(str(err))}",
                        where=where,
                        hint="check the connection to the directory and try again",
                    ) from None
                result = conn.result or {}
                code = result.get("result", 0)
                if code != 0:
                    desc = result.get("description", "error")
                    message = result.get("message") or ""
                    hint = {
                        "noSuchObject": "source.base_dn does not exist: check its spelling",
                        "sizeLimitExceeded": "the server capped the answer: lower "
                        "source.page_size below the server's limit, or ask for paging rights",
                        "timeLimitExceeded": "narrow source.filter or source.base_dn",
                        "insufficientAccessRights": "the bind account may not read here",
                    }.get(desc, "check source.base_dn and source.filter")
                    raise SourceError(
                        f"the search failed after {count} entries: {desc}"
                        + (f" ({message})" if message else ""),
                        where=where,
                        hint=hint,
                    )
                self.pages_read = page + 1
                for entry in conn.response or []:
                    if entry.get("type") != "searchResEntry":
                        continue  # referrals to other partitions are not followed
                    count += 1
                    yield self._record(entry)
                control = (result.get("controls") or {}).get(PAGED_RESULTS_OID) or {}
                cookie = (control.get("value") or {}).get("cookie") or None
                if not cookie:
                    break
            else:
                raise SourceError(
                    f"stopped after source.max_pages = {o.max_pages} pages with more to come",
                    where=where,
                    hint="raise source.max_pages or source.page_size",
                )
        finally:
            conn.unbind()
        if count == 0:
            raise SourceError(
                "the search found zero entries",
                where=where,
                hint="an empty HR source is refused so that nobody is treated as a leaver; "
                "check source.base_dn, source.filter and the bind account's read rights",
            )
        log.info("read %d entries in %d pages from %s", count, self.pages_read, where)


def make_connector(options: Mapping[str, Any], base_dir: Path) -> LdapConnector:
    """Entry point ``ldap``: validate the options and build the connector.

    A bad option raises pydantic's ValidationError, which :func:`~syncengine.connectors.base.
    make_connector` reports as ``source.<option>`` (or ``departments.source.<option>``).
    """
    parsed = LdapOptions.model_validate(dict(options), context={"base_dir": base_dir})
    return LdapConnector(parsed, base_dir)
