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

import json
import os
import random
import secrets as _secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from syncengine.emulator import persistence, validation
from syncengine.emulator.records import (
    GEN1_ERRORS,
    MAX_CHECK,
    MAX_DEPARTMENTS,
    MAX_DEPTH,
    MAX_MAIL_EVENTS,
    ROOT_ID,
    SSO_LIFETIME,
    ApiError,
    Dept,
    Group,
    SeedError,
    SsoKey,
    Token,
    User,
    dept_name_problem,
    is_email,
    norm_email,
    password_matches,
    split_path,
    without_plain_passwords,
)

__all__ = [  # the names the HTTP layers and tests import from here
    "GEN1_ERRORS",
    "MAX_CHECK",
    "MAX_DEPARTMENTS",
    "MAX_DEPTH",
    "ROOT_ID",
    "SSO_LIFETIME",
    "ApiError",
    "Dept",
    "Directory",
    "SeedError",
    "Token",
    "User",
    "dept_name_problem",
    "norm_email",
    "password_matches",
    "split_path",
]


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
            persistence.load_state(self, self.state_file)
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
                persistence.apply_seed(self, seed)
                self.seed = without_plain_passwords(seed)
            except (ApiError, SeedError) as exc:
                self._clear()
                if backup is not None:
                    persistence.restore(self, backup)
                if isinstance(exc, ApiError):
                    raise SeedError(f"seed: {exc.message}") from None
                raise
            finally:
                self._batch = False
            self._persist()

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
        return persistence.dump_full(self)

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
            if (new_name, new_parent) != (dept.name, dept.parentid):  # each member's PartyList
                scope = set(self.subtree(dept_id))  # changes: a journaled MOD each (README)
                for user in [u for u in self.users.values() if scope & set(u.department)]:
                    self._log(user.userid, 3)
            dept.name, dept.parentid = new_name, new_parent
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

    def create_user(self, body: dict[str, Any]) -> User:
        with self.write():
            userid = self._check_corp_address(str(body.get("userid", "")), 40003, "userid")
            validation.check_new_address(self, userid, for_user=True)
            fields = validation.user_fields(self, {**body, "userid": userid}, None)
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
            fields = validation.user_fields(self, body, user)
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

    def create_group(self, body: dict[str, Any], *, empty_allow_list_ok: bool = False) -> Group:
        with self.write():
            raw = norm_email(str(body.get("groupid", "")))
            if not is_email(raw) or raw.rpartition("@")[2] not in self.domains:
                raise ApiError(
                    600007, 1100, f"invalid groupid {raw!r} (an address in {self.domains})"
                )
            if raw in self.groups:
                raise ApiError(600015, 1303, f"group {raw} already exists")
            validation.check_new_address(self, raw, for_user=False)
            group = Group(groupid=raw, **validation.group_fields(self, body, None))
            validation.check_group_shape(self, group, empty_allow_list_ok=empty_allow_list_ok)
            self.groups[raw] = group
            return group

    def update_group(
        self, groupid: str, body: dict[str, Any], *, empty_allow_list_ok: bool = False
    ) -> Group:
        with self.write():
            group = self.get_group(groupid)
            fields = validation.group_fields(self, body, group)
            candidate = Group(**{**asdict(group), **fields})
            validation.check_group_shape(self, candidate, empty_allow_list_ok=empty_allow_list_ok)
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
