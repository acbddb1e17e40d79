"""The emulator's one directory: the state both API generations read and change.

A corp with its domains, a department tree (Gen 2 addresses it by int64 id, Gen 1 by path),
members, mail groups, a change journal for Gen 1 ``user/list``, mailboxes with unread mail and
events for ``listen``/``newcount``, issued tokens and pending SSO keys.

Every operation validates the way Exmail does and raises :class:`ApiError`, which carries the
Gen 2 *and* the Gen 1 code for the same failure, so the two HTTP layers only translate shapes.
Everything is guarded by one re-entrant lock; after each write the whole state is written to
the state file (if any) atomically, so an emulator restarted on the same file carries on.

This is an independent reading of ``exmail-protocol.md`` / ``protocol-decisions.md``: it
imports nothing from the client (``syncengine.providers``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets as _secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
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

_LABEL = r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?"
_EMAIL_RE = re.compile(rf"^[a-z0-9][a-z0-9._+\-]*@{_LABEL}(?:\.{_LABEL})+$")
_MOBILE_RE = re.compile(r"^\+?[0-9][0-9\- ]{0,31}$")
_TEL_RE = re.compile(r"^[0-9+\-() ,#*]{0,32}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_HASH_RE = re.compile(r"^sha256\$[0-9a-f]{16}\$[0-9a-f]{64}$")

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
    return bool(_EMAIL_RE.match(value))


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


# --- the directory -----------------------------------------------------------------------


class Directory:
    """All emulator state, guarded by one lock. Methods raise :class:`ApiError`."""

    def __init__(
        self,
        seed: dict[str, Any],
        *,
        state_file: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.lock = threading.RLock()
        self.clock = clock
        self.state_file = Path(state_file) if state_file else None
        self.seed: dict[str, Any] = seed
        self._listeners: list[Callable[[], None]] = []
        self._batch = False
        self._clear()
        if self.state_file is not None and self.state_file.exists():
            self._load_state(self.state_file)
        else:
            self.load_seed(seed)

    # -- lifecycle ----------------------------------------------------------------------

    def _clear(self) -> None:
        self.corp_id = ""
        self.app_secrets: dict[str, str] = {}
        self.v1_clients: dict[str, str] = {}
        self.domains: list[str] = []
        self.depts: dict[int, Dept] = {}
        self.users: dict[str, User] = {}
        self.aliases: dict[str, str] = {}  # alias -> primary userid
        self.groups: dict[str, Group] = {}
        self.journal: list[tuple[int, str, int]] = []  # (ver, alias, action 1/2/3)
        self.version = 0
        # The oldest version the journal can answer changes since: a seed (or reset) starts a
        # new journal, and a cursor from before it (or from the future) is refused.
        self.journal_start = 0
        self.mail_events: list[dict[str, Any]] = []
        self.unread: dict[str, list[float]] = {}  # userid -> delivery times of unread mail
        self.tokens: dict[str, Token] = {}
        self.sso_keys: dict[str, SsoKey] = {}
        self._id_rng = random.Random(0)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (from whatever thread) after a mail is delivered; wakes ``listen``."""
        self._listeners.append(callback)

    def load_seed(self, seed: dict[str, Any]) -> None:
        """Replace the whole state with a seed; raise SeedError naming the bad entry."""
        with self.lock:
            backup = self.dump_full() if self.corp_id else None
            self._clear()
            self._batch = True  # one write of the state file at the end, not one per entry
            try:
                self._apply_seed(seed)
                self.seed = _without_plain_passwords(seed)
            except (ApiError, SeedError) as exc:
                self._clear()
                if backup is not None:
                    self._restore(backup)
                if isinstance(exc, ApiError):
                    raise SeedError(f"seed: {exc.message}") from None
                raise
            finally:
                self._batch = False
            self._persist()

    def _apply_seed(self, seed: dict[str, Any]) -> None:
        known = {
            "corp_id",
            "secrets",
            "v1_clients",
            "domains",
            "departments",
            "users",
            "groups",
            "corp_name",
        }
        extra = sorted(set(seed) - known)
        if extra:
            raise SeedError(f"seed: unknown keys {extra} (known: {sorted(known)})")
        self.corp_id = str(seed.get("corp_id", ""))
        if not self.corp_id:
            raise SeedError("seed: corp_id is missing")
        self._id_rng = random.Random(self.corp_id)
        self.app_secrets = {str(k): str(v) for k, v in dict(seed.get("secrets", {})).items()}
        bad_apps = sorted(set(self.app_secrets) - set(APPS))
        if bad_apps:
            raise SeedError(
                f"seed: secrets has unknown applications {bad_apps} (known: {list(APPS)})"
            )
        self.v1_clients = {
            norm_email(str(k)): str(v) for k, v in dict(seed.get("v1_clients", {})).items()
        }
        self.domains = [norm_email(str(d)) for d in seed.get("domains", [])]
        if not self.domains:
            raise SeedError("seed: domains is empty; list the corp's mail domains")
        self.depts = {ROOT_ID: Dept(ROOT_ID, str(seed.get("corp_name", self.corp_id)), 0, 0)}
        self.version = self._next_version()
        self.journal_start = self.version
        for i, path in enumerate(seed.get("departments", [])):
            try:
                self.ensure_path(str(path))
            except ApiError as exc:
                raise SeedError(f"seed: departments[{i}] {path!r}: {exc.message}") from None
        path_ids: dict[str, int] = {}
        for i, raw in enumerate(seed.get("users", [])):
            body = dict(raw)
            where = f"users[{i}] {body.get('userid', '?')!r}"
            _check_keys(body, SEED_USER_KEYS, where)
            try:
                body["department"] = [
                    self._seed_path(str(p), path_ids) for p in body.get("department", [])
                ]
                self.create_user(body)
            except ApiError as exc:
                raise SeedError(f"seed: {where}: {exc.message}") from None
        for i, raw in enumerate(seed.get("groups", [])):
            body = dict(raw)
            _check_keys(body, SEED_GROUP_KEYS, f"groups[{i}]")
            body.setdefault("allow_type", 0)
            try:
                body["department"] = [
                    self._seed_path(str(p), path_ids) for p in body.get("department", [])
                ]
                self.create_group(body)
            except ApiError as exc:
                raise SeedError(f"seed: groups[{i}]: {exc.message}") from None

    def _seed_path(self, path: str, cache: dict[str, int]) -> int:
        """A seed names departments by path; created on first mention (cached for speed)."""
        if path not in cache:
            cache[path] = self.ensure_path(path)
        return cache[path]

    # -- persistence --------------------------------------------------------------------

    def _persist(self) -> None:
        if self.state_file is None or self._batch:
            return
        data = self.dump_full()
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def dump_full(self) -> dict[str, Any]:
        """Everything, including password hashes and tokens: the state file's content."""
        with self.lock:
            return {
                "format": 1,
                "seed": self.seed,
                "corp_id": self.corp_id,
                "secrets": self.app_secrets,
                "v1_clients": self.v1_clients,
                "domains": self.domains,
                "departments": [asdict(d) for d in self.depts.values()],
                "users": [asdict(u) for u in self.users.values()],
                "groups": [asdict(g) for g in self.groups.values()],
                "journal": self.journal,
                "version": self.version,
                "journal_start": self.journal_start,
                "mail_events": self.mail_events,
                "unread": self.unread,
                "tokens": [asdict(t) for t in self.tokens.values()],
                "sso_keys": [asdict(k) for k in self.sso_keys.values()],
            }

    def _load_state(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != 1:
                raise ValueError("unknown format")
            self._restore(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SeedError(
                f"state file {path}: cannot be read ({exc}); delete it to start from the seed"
            ) from None

    def _restore(self, data: dict[str, Any]) -> None:
        """Inverse of :meth:`dump_full`."""
        self.seed = data["seed"]
        self.corp_id = data["corp_id"]
        self._id_rng = random.Random(self.corp_id + str(data["version"]))
        self.app_secrets = data["secrets"]
        self.v1_clients = data["v1_clients"]
        self.domains = data["domains"]
        self.depts = {d["id"]: Dept(**d) for d in data["departments"]}
        self.users = {u["userid"]: User(**u) for u in data["users"]}
        self.aliases = {a: u.userid for u in self.users.values() for a in u.slaves}
        self.groups = {g["groupid"]: Group(**g) for g in data["groups"]}
        self.journal = [(int(v), str(a), int(act)) for v, a, act in data["journal"]]
        self.version = int(data["version"])
        self.journal_start = int(data.get("journal_start", 0))
        self.mail_events = list(data["mail_events"])
        self.unread = {k: list(v) for k, v in data["unread"].items()}
        self.tokens = {t["token"]: Token(**t) for t in data["tokens"]}
        self.sso_keys = {k["key"]: SsoKey(**k) for k in data["sso_keys"]}

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock for a change and persist it once the change succeeded."""
        with self.lock:
            yield
            self._persist()

    def _next_version(self) -> int:
        """Epoch milliseconds, strictly increasing even within one millisecond."""
        self.version = max(self.version + 1, int(self.clock() * 1000))
        return self.version

    def _log(self, alias: str, action: int) -> None:
        self.journal.append((self._next_version(), alias, action))

    # -- addresses ----------------------------------------------------------------------

    def address_kind(self, address: str) -> int:
        """user/check & user/batchcheck: -1 invalid, 0 free, 1 primary, 2 alias, 3 group."""
        addr = norm_email(address)
        if not is_email(addr) or addr.rpartition("@")[2] not in self.domains:
            return -1
        if addr in self.users:
            return 1
        if addr in self.aliases:
            return 2
        if addr in self.groups:
            return 3
        return 0

    def _check_corp_address(self, addr: str, v2: int, what: str) -> str:
        addr = norm_email(addr)
        if not is_email(addr):
            raise ApiError(v2, 1100, f"{what} {addr!r} is not a valid email address")
        if addr.rpartition("@")[2] not in self.domains:
            raise ApiError(v2, 1100, f"{what} {addr!r} is not in the corp's domains {self.domains}")
        return addr

    def resolve(self, address: str) -> str | None:
        """Primary userid for a primary address or an alias."""
        addr = norm_email(address)
        if addr in self.users:
            return addr
        return self.aliases.get(addr)

    # -- departments --------------------------------------------------------------------

    def children(self, parent: int) -> list[Dept]:
        kids = [d for d in self.depts.values() if d.parentid == parent and d.id != ROOT_ID]
        return sorted(kids, key=lambda d: d.order)  # stable: creation order on ties

    def depth(self, dept_id: int) -> int:
        n = 0
        while dept_id != ROOT_ID:
            dept_id = self.depts[dept_id].parentid
            n += 1
        return n

    def subtree(self, dept_id: int) -> list[int]:
        """The department and all below it, parents before children."""
        out = [dept_id]
        for kid in self.children(dept_id):
            out.extend(self.subtree(kid.id))
        return out

    def subtree_height(self, dept_id: int) -> int:
        kids = self.children(dept_id)
        return 0 if not kids else 1 + max(self.subtree_height(k.id) for k in kids)

    def path_of(self, dept_id: int) -> str:
        """Gen 1 path (root excluded) of a department id."""
        names: list[str] = []
        while dept_id != ROOT_ID:
            dept = self.depts[dept_id]
            names.append(dept.name)
            dept_id = dept.parentid
        return "/".join(reversed(names))

    def find_path(self, path: str) -> int | None:
        node = ROOT_ID
        for seg in split_path(path):
            match = [d for d in self.children(node) if d.name == seg]
            if not match:
                return None
            node = match[0].id
        return node

    def get_dept(self, dept_id: int) -> Dept:
        dept = self.depts.get(dept_id)
        if dept is None:
            raise ApiError(60003, 1310, f"department {dept_id} not found")
        return dept

    def _new_dept_id(self) -> int:
        while True:
            new = self._id_rng.randrange(2**60, 2**63 - 1)
            if new not in self.depts:
                return new

    def dept_members(self, dept_id: int) -> list[User]:
        return [u for u in self.users.values() if dept_id in u.department]

    def create_dept(self, name: str, parentid: int, order: int = 0) -> int:
        with self.write():
            problem = dept_name_problem(name)
            if problem:
                raise ApiError(problem[0], 1100, problem[1])
            if parentid not in self.depts:
                raise ApiError(60004, 1310, f"parent department {parentid} not found")
            if self.depth(parentid) + 1 > MAX_DEPTH:
                raise ApiError(60002, 1100, f"department depth would exceed {MAX_DEPTH} levels")
            if any(d.name == name for d in self.children(parentid)):
                raise ApiError(60008, 1100, f"department name {name!r} exists under {parentid}")
            new_id = self._new_dept_id()
            self.depts[new_id] = Dept(new_id, name, parentid, order)
            return new_id

    def update_dept(
        self,
        dept_id: int,
        name: str | None = None,
        parentid: int | None = None,
        order: int | None = None,
    ) -> None:
        with self.write():
            dept = self.get_dept(dept_id)
            if dept_id == ROOT_ID:
                raise ApiError(60007, 1100, "the root department cannot be changed")
            if name is not None:
                problem = dept_name_problem(name)
                if problem:
                    raise ApiError(problem[0], 1100, problem[1])
            new_parent = dept.parentid if parentid is None else parentid
            new_name = dept.name if name is None else name
            if new_parent not in self.depts:
                raise ApiError(60004, 1310, f"parent department {new_parent} not found")
            if new_parent in self.subtree(dept_id):
                raise ApiError(
                    60010, 1100, f"cannot move department {dept_id} under itself or a descendant"
                )
            if self.depth(new_parent) + 1 + self.subtree_height(dept_id) > MAX_DEPTH:
                raise ApiError(60002, 1100, f"department depth would exceed {MAX_DEPTH} levels")
            if any(d.name == new_name and d.id != dept_id for d in self.children(new_parent)):
                raise ApiError(
                    60008, 1100, f"department name {new_name!r} exists under {new_parent}"
                )
            moved = (new_name, new_parent) != (dept.name, dept.parentid)
            dept.name, dept.parentid = new_name, new_parent
            if moved:
                # Each member's party paths (user/get's PartyList) changed: a MOD in the
                # journal for each member of the subtree (protocol decision, README).
                scope = set(self.subtree(dept_id))
                for user in self.users.values():
                    if scope.intersection(user.department):
                        self._log(user.userid, 3)
            if order is not None:
                dept.order = order

    def delete_dept(self, dept_id: int) -> None:
        with self.write():
            self.get_dept(dept_id)
            if dept_id == ROOT_ID:
                raise ApiError(60007, 1100, "the root department cannot be deleted")
            if self.dept_members(dept_id):
                raise ApiError(60005, 1311, f"department {dept_id} has members")
            if self.children(dept_id):
                raise ApiError(60006, 1311, f"department {dept_id} has sub-departments")
            del self.depts[dept_id]
            for group in self.groups.values():
                if dept_id in group.department:
                    group.department.remove(dept_id)

    def ensure_path(self, path: str) -> int:
        """Gen 1 party ADD: create missing ancestors; idempotent. Returns the id."""
        with self.write():
            segs = split_path(path)
            if len(segs) > MAX_DEPTH:
                raise ApiError(60002, 1100, f"path {path!r} is deeper than {MAX_DEPTH} levels")
            for seg in segs:
                problem = dept_name_problem(seg)
                if problem:
                    raise ApiError(problem[0], 1100, f"path {path!r}: {problem[1]}")
            node = ROOT_ID
            for seg in segs:
                match = [d for d in self.children(node) if d.name == seg]
                node = match[0].id if match else self.create_dept(seg, node)
            return node

    # -- users --------------------------------------------------------------------------

    def get_user(self, userid: str) -> User:
        user = self.users.get(norm_email(userid))
        if user is None:
            raise ApiError(60111, 1301, f"userid not found: {norm_email(userid)}")
        return user

    def _check_new_address(self, addr: str, *, for_user: bool) -> None:
        """The address must be free: not a user, an alias or a group."""
        if addr in self.users:
            raise ApiError(
                60102 if for_user else 600024,
                1302 if for_user else 1303,
                f"{addr} is already a member's address",
            )
        if addr in self.aliases:
            raise ApiError(
                600001 if for_user else 600024,
                1302 if for_user else 1303,
                f"{addr} is already an alias of {self.aliases[addr]}",
            )
        if addr in self.groups:
            raise ApiError(
                600002 if for_user else 600024,
                1302 if for_user else 1303,
                f"{addr} is already a mail group",
            )

    def _user_fields(self, body: dict[str, Any], user: User | None) -> dict[str, Any]:
        """Validate the optional member fields of create/update; return the parsed ones."""
        out: dict[str, Any] = {}
        if "name" in body:
            name = str(body["name"])
            if (name or user is None) and not 1 <= byte_len(name) <= MAX_NAME_BYTES:
                raise ApiError(
                    60112, 1100, f"name must be 1-{MAX_NAME_BYTES} bytes (got {byte_len(name)})"
                )
            if name:
                out["name"] = name
        elif user is None:
            raise ApiError(60112, 1100, "name is required")
        if "position" in body:
            position = str(body["position"])
            if byte_len(position) > MAX_POSITION_BYTES:
                raise ApiError(
                    60104,
                    1100,
                    f"position must be at most {MAX_POSITION_BYTES} "
                    f"bytes (got {byte_len(position)})",
                )
            out["position"] = position
        if "mobile" in body:
            mobile = str(body["mobile"]).strip()
            if mobile and not _MOBILE_RE.match(mobile):
                raise ApiError(60103, 1100, f"invalid mobile {mobile!r}")
            out["mobile"] = mobile
        if "tel" in body:
            tel = str(body["tel"]).strip()
            if not _TEL_RE.match(tel):
                raise ApiError(600025, 1100, f"invalid tel {tel!r}")
            out["tel"] = tel
        if "extid" in body:
            extid = str(body["extid"])
            if byte_len(extid) > MAX_EXTID_BYTES or any(ord(c) < 32 for c in extid):
                raise ApiError(600026, 1100, f"invalid extid {extid!r}")
            out["extid"] = extid
        if "gender" in body:
            gender = str(body["gender"]).strip() or "0"
            if gender not in ("0", "1", "2"):
                raise ApiError(60114, 1100, f"invalid gender {body['gender']!r} (1 or 2)")
            out["gender"] = int(gender)
        if "enable" in body:
            enable = str(body["enable"]).strip()
            if enable not in ("0", "1"):
                raise ApiError(40092, 1100, f"invalid enable {body['enable']!r} (0 or 1)")
            out["enable"] = int(enable)
        if "cpwd_login" in body:
            cpwd = str(body["cpwd_login"]).strip()
            if cpwd not in ("0", "1"):
                raise ApiError(40092, 1100, f"invalid cpwd_login {body['cpwd_login']!r}")
            out["cpwd_login"] = int(cpwd)
        if "department" in body:
            raw = body["department"]
            if not isinstance(raw, list):
                raise ApiError(40092, 1100, "department must be a list of ids")
            ids: list[int] = []
            for item in raw:
                try:
                    dept_id = int(item)
                except (TypeError, ValueError):
                    raise ApiError(60003, 1310, f"invalid department id {item!r}") from None
                self.get_dept(dept_id)
                if dept_id not in ids:
                    ids.append(dept_id)
            if len(ids) > MAX_DEPARTMENTS:
                raise ApiError(
                    60105,
                    1100,
                    f"a member may be in at most {MAX_DEPARTMENTS} departments (got {len(ids)})",
                )
            out["department"] = ids or [ROOT_ID]
        elif user is None:
            out["department"] = [ROOT_ID]
        if "password_hash" in body and user is None:  # a seed kept in a state file
            if not _HASH_RE.match(str(body["password_hash"])):
                raise ApiError(600003, 1100, "password_hash is not a hash this emulator made")
            out["password_hash"] = str(body["password_hash"])
        elif "password_md5" in body:
            md5 = str(body["password_md5"]).lower()
            if not _MD5_RE.match(md5):
                raise ApiError(600003, 1100, "an MD5 password must be 32 hex digits")
            out["password_hash"] = hash_password(md5)
        elif "password" in body and (body["password"] or user is None):
            plain = str(body["password"])
            problem = password_problem(plain)
            if problem:
                raise ApiError(600003, 1100, f"invalid password: {problem}")
            out["password_hash"] = hash_password(md5_hex(plain))
        elif user is None:
            raise ApiError(600003, 1100, "password is required")
        if "slaves" in body:
            raw_slaves = body["slaves"]
            if not isinstance(raw_slaves, list):
                raise ApiError(600004, 1100, "slaves must be a list of addresses")
            slaves: list[str] = []
            for item in raw_slaves:
                addr = norm_email(str(item))
                if not addr:
                    continue
                addr = self._check_corp_address(addr, 600004, "alias")
                if addr not in slaves:
                    slaves.append(addr)
            if len(slaves) > MAX_SLAVES:
                raise ApiError(600006, 1100, f"at most {MAX_SLAVES} aliases (got {len(slaves)})")
            owner = user.userid if user else norm_email(str(body.get("userid", "")))
            for addr in slaves:
                if addr == owner:
                    raise ApiError(600004, 1100, f"alias {addr} is the member's own address")
                if (
                    addr in self.users
                    or addr in self.groups
                    or self.aliases.get(addr, owner) != owner
                ):
                    raise ApiError(
                        600005, 1303, f"alias {addr} is already used by another member or group"
                    )
            out["slaves"] = slaves
        return out

    def create_user(self, body: dict[str, Any]) -> User:
        with self.write():
            userid = self._check_corp_address(str(body.get("userid", "")), 40003, "userid")
            self._check_new_address(userid, for_user=True)
            fields = self._user_fields({**body, "userid": userid}, None)
            user = User(userid=userid, **fields)
            self.users[userid] = user
            for alias in user.slaves:
                self.aliases[alias] = userid
            self.unread.setdefault(userid, [])
            self._log(userid, 2)
            return user

    def update_user(self, userid: str, body: dict[str, Any]) -> User:
        with self.write():
            user = self.get_user(userid)
            fields = self._user_fields(body, user)
            for alias in user.slaves:
                self.aliases.pop(alias, None)
            for key, value in fields.items():
                setattr(user, key, value)
            for alias in user.slaves:
                self.aliases[alias] = user.userid
            self._log(user.userid, 3)
            return user

    def delete_user(self, userid: str) -> None:
        with self.write():
            user = self.get_user(userid)
            for alias in user.slaves:
                self.aliases.pop(alias, None)
            del self.users[user.userid]
            self.unread.pop(user.userid, None)
            for group in self.groups.values():
                group.userlist = [u for u in group.userlist if u != user.userid]
                group.allow_userlist = [u for u in group.allow_userlist if u != user.userid]
            self._log(user.userid, 1)

    def swap_alias(self, alias: str, slavealias: str) -> None:
        """user/swapalias: the alias becomes the primary address, the old primary an alias."""
        with self.write():
            user = self.get_user(alias)
            new = norm_email(slavealias)
            if new not in user.slaves:
                raise ApiError(600004, 1100, f"{new} is not an alias of {user.userid}")
            old = user.userid
            user.slaves[user.slaves.index(new)] = old
            user.userid = new
            del self.users[old]
            self.users[new] = user
            del self.aliases[new]
            self.aliases[old] = new
            self.unread[new] = self.unread.pop(old, [])
            for group in self.groups.values():
                group.userlist = [new if u == old else u for u in group.userlist]
                group.allow_userlist = [new if u == old else u for u in group.allow_userlist]
            self._log(old, 1)
            self._log(new, 2)

    def users_in(self, dept_id: int, fetch_child: bool) -> list[User]:
        self.get_dept(dept_id)
        scope = set(self.subtree(dept_id)) if fetch_child else {dept_id}
        return [u for u in self.users.values() if scope.intersection(u.department)]

    # -- groups -------------------------------------------------------------------------

    def get_group(self, groupid: str) -> Group:
        group = self.groups.get(norm_email(groupid))
        if group is None:
            raise ApiError(600008, 1301, f"group not found: {norm_email(groupid)}")
        return group

    def _group_fields(self, body: dict[str, Any], group: Group | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "groupname" in body or group is None:
            name = str(body.get("groupname", ""))
            if not 1 <= byte_len(name) <= MAX_NAME_BYTES:
                raise ApiError(600019, 1100, f"groupname must be 1-{MAX_NAME_BYTES} bytes")
            if set(name) & FORBIDDEN_DEPT_CHARS:
                raise ApiError(600019, 1100, "groupname contains illegal characters")
            out["groupname"] = name
        if "userlist" in body:
            users: list[str] = []
            for item in _as_list(body["userlist"], 600010):
                addr = norm_email(str(item))
                if not is_email(addr):
                    raise ApiError(600010, 1100, f"invalid userlist entry {item!r}")
                primary = self.resolve(addr)
                if primary is None:
                    raise ApiError(600016, 1301, f"member {addr} not found")
                if primary not in users:
                    users.append(primary)
            out["userlist"] = users
        if "grouplist" in body:
            subgroups: list[str] = []
            for item in _as_list(body["grouplist"], 600011):
                addr = norm_email(str(item))
                if not is_email(addr):
                    raise ApiError(600011, 1100, f"invalid grouplist entry {item!r}")
                if addr not in self.groups:
                    raise ApiError(600017, 1301, f"group {addr} not found")
                if addr not in subgroups:
                    subgroups.append(addr)
            out["grouplist"] = subgroups
        if "department" in body:
            depts: list[int] = []
            for item in _as_list(body["department"], 600012):
                try:
                    dept_id = int(item)
                except (TypeError, ValueError):
                    raise ApiError(600012, 1100, f"invalid department {item!r}") from None
                if dept_id not in self.depts:
                    raise ApiError(600018, 1310, f"department {dept_id} not found")
                if dept_id not in depts:
                    depts.append(dept_id)
            out["department"] = depts
        if "allow_type" in body or group is None:
            allow = str(body.get("allow_type", "")).strip()
            if allow not in ("0", "1", "2", "3"):
                raise ApiError(600013, 1100, f"invalid allow_type {body.get('allow_type')!r} (0-3)")
            out["allow_type"] = int(allow)
        if "allow_userlist" in body:
            allowed: list[str] = []
            for item in _as_list(body["allow_userlist"], 600014):
                primary = self.resolve(str(item))
                if primary is None:
                    raise ApiError(600014, 1301, f"allow_userlist member {item!r} not found")
                if primary not in allowed:
                    allowed.append(primary)
            out["allow_userlist"] = allowed
        return out

    def _check_group_shape(self, group: Group, *, empty_allow_list_ok: bool = False) -> None:
        """``empty_allow_list_ok``: Gen 1 creates an allow-list group first and fills the list
        with ``group/addallowlist`` afterwards; Gen 2 needs the list up front (600023)."""
        if not (group.userlist or group.grouplist or group.department):
            raise ApiError(
                600009, 1100, "a group needs members (userlist, grouplist or department)"
            )
        if group.allow_type == 3 and not group.allow_userlist and not empty_allow_list_ok:
            raise ApiError(600023, 1100, "allow_type 3 needs allow_userlist")

        def depth(gid: str, seen: tuple[str, ...]) -> int:
            if gid in seen:
                raise ApiError(600020, 1100, f"group loop through {gid}")
            sub = group.grouplist if gid == group.groupid else self.groups[gid].grouplist
            return 1 + max((depth(s, (*seen, gid)) for s in sub), default=0)

        if depth(group.groupid, ()) > MAX_GROUP_NESTING:
            raise ApiError(600021, 1100, f"groups nest deeper than {MAX_GROUP_NESTING}")

    def create_group(self, body: dict[str, Any], *, empty_allow_list_ok: bool = False) -> Group:
        with self.write():
            raw = norm_email(str(body.get("groupid", "")))
            if not is_email(raw) or raw.rpartition("@")[2] not in self.domains:
                raise ApiError(
                    600007, 1100, f"invalid groupid {raw!r} (an address in {self.domains})"
                )
            if raw in self.groups:
                raise ApiError(600015, 1303, f"group {raw} already exists")
            self._check_new_address(raw, for_user=False)
            group = Group(groupid=raw, **self._group_fields(body, None))
            self._check_group_shape(group, empty_allow_list_ok=empty_allow_list_ok)
            self.groups[raw] = group
            return group

    def update_group(
        self, groupid: str, body: dict[str, Any], *, empty_allow_list_ok: bool = False
    ) -> Group:
        with self.write():
            group = self.get_group(groupid)
            fields = self._group_fields(body, group)
            candidate = Group(**{**asdict(group), **fields})
            self._check_group_shape(candidate, empty_allow_list_ok=empty_allow_list_ok)
            for key, value in fields.items():
                setattr(group, key, value)
            return group

    def delete_group(self, groupid: str) -> None:
        with self.write():
            group = self.get_group(groupid)
            del self.groups[group.groupid]
            for other in self.groups.values():
                other.grouplist = [g for g in other.grouplist if g != group.groupid]

    # -- Gen 1 journal ------------------------------------------------------------------

    def changes_since(self, ver: int) -> tuple[int, list[tuple[str, int]]]:
        """Gen 1 ``user/list``: ``ver`` 0 lists every account as ADD (2); a later version
        lists the journal's (alias, action) entries after it, in order. A version the journal
        cannot answer for (older than its start, or newer than the current version: another
        directory's cursor) is refused with 1100, so a client falls back to a full read."""
        with self.lock:
            if ver == 0:
                return self.version, [(u, 2) for u in self.users]
            if ver < self.journal_start or ver > self.version:
                raise ApiError(
                    40092,
                    1100,
                    f"Ver {ver} is outside the change journal "
                    f"({self.journal_start}..{self.version}); list again from Ver=0",
                )
            return self.version, [(a, act) for v, a, act in self.journal if v > ver]

    # -- tokens -------------------------------------------------------------------------

    def issue_token(self, api: str, app: str, lifetime: float) -> tuple[str, int]:
        """The same token while valid (remaining lifetime reported), else a new one."""
        with self.write():
            now = self.clock()
            for tok in self.tokens.values():
                if tok.api == api and tok.app == app and tok.expires_at > now:
                    return tok.token, max(1, int(tok.expires_at - now))
            self.tokens = {k: t for k, t in self.tokens.items() if t.expires_at > now - 86400}
            value = _secrets.token_urlsafe(48)
            self.tokens[value] = Token(value, api, app, now + lifetime)
            return value, int(lifetime)

    def check_token(self, value: str, api: str) -> Token | None:
        with self.lock:
            tok = self.tokens.get(value)
            if tok is None or tok.api != api or tok.expires_at <= self.clock():
                return None
            return tok

    def expire_tokens(self) -> int:
        with self.write():
            now = self.clock()
            live = [t for t in self.tokens.values() if t.expires_at > now]
            for tok in live:
                tok.expires_at = now - 1
            return len(live)

    # -- SSO ----------------------------------------------------------------------------

    def issue_sso_key(self, userid: str, api: str, agent: str = "") -> str:
        with self.write():
            user = self.get_user(userid)
            now = self.clock()
            self.sso_keys = {k: v for k, v in self.sso_keys.items() if v.expires_at > now}
            key = _secrets.token_hex(48).upper()
            self.sso_keys[key] = SsoKey(key, user.userid, api, now + SSO_LIFETIME, agent)
            return key

    def redeem_sso_key(self, key: str, userid: str, agent: str | None) -> User | None:
        """Single use: the key is gone after the first attempt that names it."""
        with self.write():
            entry = self.sso_keys.pop(key, None)
            if entry is None or entry.expires_at <= self.clock():
                return None
            if entry.userid != norm_email(userid):
                return None
            if agent is not None and norm_email(agent) != norm_email(entry.agent):
                return None
            return self.users.get(entry.userid)

    # -- mail ---------------------------------------------------------------------------

    def deliver_mail(self, to: str, sender: str, subject: str, summary: str = "") -> dict[str, Any]:
        with self.write():
            userid = self.resolve(to)
            if userid is None:
                raise ApiError(60111, 1400, f"no mailbox {norm_email(to)}")
            now = self.clock()
            box = self.unread.setdefault(userid, [])
            box.append(now)
            ver = self._next_version()
            event = {
                "Ver": str(ver),
                "UserName": userid,
                "MailId": "ZC" + _secrets.token_hex(12).upper(),
                "Sender": sender,
                "Receiver": userid,
                "Subject": subject,
                "Summary": summary,
                "NewCount": len(box),
            }
            self.mail_events.append(event)
            del self.mail_events[:-MAX_MAIL_EVENTS]
        for callback in list(self._listeners):
            callback()
        return event

    def first_event_after(self, ver: int) -> dict[str, Any] | None:
        with self.lock:
            for event in self.mail_events:
                if int(event["Ver"]) > ver:
                    return dict(event)
            return None

    def new_count(self, userid: str, begin: date | None = None, end: date | None = None) -> int:
        with self.lock:
            user = self.users.get(norm_email(userid))
            if user is None:
                raise ApiError(60111, 1400, f"userid not found: {norm_email(userid)}")
            times = self.unread.get(user.userid, [])
            if begin is None and end is None:
                return len(times)
            days = [datetime.fromtimestamp(t, UTC).date() for t in times]
            return sum(
                1 for d in days if (begin is None or d >= begin) and (end is None or d <= end)
            )

    # -- views --------------------------------------------------------------------------

    def public_state(self) -> dict[str, Any]:
        """The directory as tests assert on it (no password hashes, no tokens)."""
        with self.lock:
            return {
                "corp_id": self.corp_id,
                "domains": list(self.domains),
                "version": self.version,
                "departments": [
                    {**asdict(d), "path": self.path_of(d.id)}
                    for d in (self.depts[i] for i in self.subtree(ROOT_ID))
                ],
                "users": [
                    {
                        **{k: v for k, v in asdict(u).items() if k != "password_hash"},
                        "paths": [self.path_of(d) for d in u.department],
                    }
                    for u in self.users.values()
                ],
                "groups": [asdict(g) for g in self.groups.values()],
                "mail": {u: {"unread": len(t)} for u, t in self.unread.items() if t},
                "mail_events": len(self.mail_events),
                "journal_length": len(self.journal),
            }


def _as_list(value: Any, code: int) -> Iterable[Any]:
    if not isinstance(value, list):
        raise ApiError(code, 1100, "expected a list")
    return value


def _check_keys(entry: dict[str, Any], known: frozenset[str], where: str) -> None:
    extra = sorted(set(entry) - known)
    if extra:
        raise SeedError(f"seed: {where}: unknown keys {extra} (known: {sorted(known)})")


def _without_plain_passwords(seed: dict[str, Any]) -> dict[str, Any]:
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
