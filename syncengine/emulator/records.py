"""The emulator's records, limits, error type and value rules (:mod:`.model` uses them).

Independent of the client: imports nothing from ``syncengine.providers``.
"""

from __future__ import annotations

import hashlib
import re
import secrets as _secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_NAME_BYTES = 64
MAX_POSITION_BYTES = 64
MAX_EXTID_BYTES = 64
MAX_SLAVES = 5
MAX_DEPARTMENTS = 20
MAX_DEPTH = 5  # levels below the root
MAX_CHECK = 20  # names per user/check, user/batchcheck
MAX_GROUP_NESTING = 5
ROOT_ID = 1
FORBIDDEN_DEPT_CHARS = frozenset('\\:*?"<>｜|/')
SSO_LIFETIME = 300.0
MAX_MAIL_EVENTS = 10_000

LABEL = r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?"
EMAIL_RE = re.compile(rf"^[a-z0-9][a-z0-9._+\-]*@{LABEL}(?:\.{LABEL})+$")
MOBILE_RE = re.compile(r"^\+?[0-9][0-9\- ]{0,31}$")
TEL_RE = re.compile(r"^[0-9+\-() ,#*]{0,32}$")
MD5_RE = re.compile(r"^[0-9a-f]{32}$")
HASH_RE = re.compile(r"^sha256\$[0-9a-f]{16}\$[0-9a-f]{64}$")

GEN1_ERRORS = {
    1002: "temporarily_unavailable",
    1100: "invalid_param",
    1200: "invalid_token",
    1301: "user_not_found",
    1302: "user_exists",
    1303: "alias_conflict",
    1310: "party_not_found",
    1311: "party_not_empty",
    1400: "user_not_found",
}

APPS = ("contacts", "sso", "mail", "log", "settings")
SEED_USER_KEYS = frozenset(
    {
        "userid",
        "name",
        "department",
        "position",
        "mobile",
        "tel",
        "extid",
        "gender",
        "enable",
        "slaves",
        "password",
        "password_hash",
        "cpwd_login",
    }
)
SEED_GROUP_KEYS = frozenset(
    {
        "groupid",
        "groupname",
        "userlist",
        "grouplist",
        "department",
        "allow_type",
        "allow_userlist",
    }
)


class ApiError(Exception):
    """A refusal, in both generations' words: Gen 2 ``errcode``/``errmsg``, Gen 1 ``errcode``.

    ``v1`` must be one of :data:`GEN1_ERRORS` (the codes protocol-decisions.md fixes).
    """

    def __init__(self, v2: int, v1: int, message: str):
        super().__init__(message)
        self.v2 = v2
        self.v1 = v1
        self.message = message

    @property
    def v1_error(self) -> str:
        return GEN1_ERRORS[self.v1]


class SeedError(ValueError):
    """A seed (or state file) does not describe a valid directory; the message says where."""


# --- records -----------------------------------------------------------------------------


@dataclass
class Dept:
    id: int
    name: str
    parentid: int
    order: int = 0


@dataclass
class User:
    userid: str
    name: str
    department: list[int]
    password_hash: str
    position: str = ""
    mobile: str = ""
    tel: str = ""
    extid: str = ""
    gender: int = 0
    enable: int = 1
    slaves: list[str] = field(default_factory=list)
    cpwd_login: int = 0


@dataclass
class Group:
    groupid: str
    groupname: str
    userlist: list[str] = field(default_factory=list)
    grouplist: list[str] = field(default_factory=list)
    department: list[int] = field(default_factory=list)
    allow_type: int = 0
    allow_userlist: list[str] = field(default_factory=list)


@dataclass
class Token:
    token: str
    api: str  # "v1" | "v2"
    app: str  # Gen 2 application, or the Gen 1 client id
    expires_at: float  # wall clock (survives a restart through the state file)


@dataclass
class SsoKey:
    key: str
    userid: str
    api: str
    expires_at: float
    agent: str = ""


# --- helpers -----------------------------------------------------------------------------


def byte_len(value: str) -> int:
    return len(value.encode("utf-8"))


def norm_email(value: str) -> str:
    return value.strip().lower()


def is_email(value: str) -> bool:
    return bool(EMAIL_RE.match(value))


def md5_hex(plain: str) -> str:
    return hashlib.md5(plain.encode("utf-8")).hexdigest()


def hash_password(md5: str, salt: str | None = None) -> str:
    """Store only a salted hash of the password's MD5 (Gen 1 may send the MD5 alone)."""
    salt = salt or _secrets.token_hex(8)
    digest = hashlib.sha256((salt + md5).encode("ascii")).hexdigest()
    return f"sha256${salt}${digest}"


def password_matches(stored: str, plain: str) -> bool:
    _, salt, _ = stored.split("$")
    return hash_password(md5_hex(plain), salt) == stored


def password_problem(plain: str) -> str | None:
    """Exmail's policy as the sources hint at it: 6-32 printable ASCII with letters and digits."""
    if not 6 <= len(plain) <= 32:
        return "password must be 6-32 characters"
    if not all(33 <= ord(c) < 127 for c in plain):
        return "password may contain printable ASCII only"
    if not (any(c.isalpha() for c in plain) and any(c.isdigit() for c in plain)):
        return "password must contain letters and digits"
    return None


def dept_name_problem(name: str) -> tuple[int, str] | None:
    """(Gen 2 code, text) for an illegal department name, None when legal."""
    if not name or byte_len(name) > MAX_NAME_BYTES:
        return 60001, f"department name must be 1-{MAX_NAME_BYTES} bytes"
    bad = sorted(set(name) & FORBIDDEN_DEPT_CHARS)
    if bad:
        return 60009, "department name contains illegal characters " + " ".join(bad)
    return None


def split_path(path: str) -> list[str]:
    """Gen 1 path -> segments; tolerates a leading/trailing ``/`` (RUBY sends one)."""
    return [seg.strip() for seg in path.strip().strip("/").split("/") if seg.strip()]


def as_list(value: Any, code: int) -> Iterable[Any]:
    if not isinstance(value, list):
        raise ApiError(code, 1100, "expected a list")
    return value


def check_keys(entry: dict[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(set(entry) - known)
    if extra:
        raise SeedError(f"seed: {where}: unknown keys {extra} (known: {sorted(known)})")


def without_plain_passwords(seed: dict[str, Any]) -> dict[str, Any]:
    """The seed as kept for ``reset`` and the state file: passwords only as salted hashes."""
    kept = dict(seed)
    users = []
    for raw in seed.get("users", []):
        user = dict(raw)
        if "password" in user:
            user["password_hash"] = hash_password(md5_hex(str(user.pop("password"))))
        users.append(user)
    kept["users"] = users
    return kept
