"""The Exmail client for the open protocol (Gen 1, 开放协议 / BizMail OpenApi).

Gen 1 addresses departments by path already, so the engine's paths go to the wire unchanged.
Its habits, handled here: form-encoded POSTs with repeated keys for lists, an empty body as
the success answer of every write, ``errcode`` as a string, a client-credentials token (form
fields or HTTP Basic) valid 86400 s and refreshed once on errcode 1200, ``NewCount`` as a
string, ``auth_key`` (or ``authkey``) for SSO, and ``listen`` as a long poll.

Gen 1 has no call that lists every member with its fields, so :meth:`ExmailV1Provider.
read_state` walks ``party/list`` level by level and asks ``user/get`` for each member,
``read_concurrency`` calls at a time: every member on a full read, only those ``user/list``
names as changed since the stored cursor on an incremental one (:mod:`.v1_directory`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx

from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.domain import (
    MAX_DEPARTMENT_DEPTH,
    AddressKind,
    Gender,
    Mailbox,
    MailboxState,
    MailEvent,
    Party,
    UserUpdate,
    ancestors,
    normalise_email,
    normalise_path,
    parent_path,
    path_name,
)
from syncengine.errors import (
    AlreadyExistsError,
    AuthenticationError,
    ConfigError,
    FatalProviderError,
    NotFoundError,
)
from syncengine.plan import Action
from syncengine.providers.base import ApiCall, Progress
from syncengine.providers.config import ExmailConfig
from syncengine.providers.http import (
    FormRequests,
    TokenAuth,
    address_kind,
    api_error,
    decode_json,
    install_pacing,
    is_read_call,
    is_retriable,
    parse_errcode,
    send,
    send_direct,
    set_bearer_token,
    status_error,
    str_field,
    transport_error,
    v1_token_rejected,
)
from syncengine.providers.pool import pool_map
from syncengine.providers.tokens import IssuedToken, SharedTokens, TokenCache
from syncengine.providers.v1_codec import (
    list_values,
    listen_events,
    mailbox_from,
    planned_calls,
    user_form,
)
from syncengine.providers.v1_directory import DirectoryReader, DirectoryStore, ReadReport
from syncengine.providers.v1_groups import V1Groups
from syncengine.providers.v1_tree import TreeKeeper

log = logging.getLogger("syncengine.providers.exmail_v1")

ACTION_DEL, ACTION_ADD, ACTION_MOD = "1", "2", "3"
CHECK_LIMIT = 20
TOKEN_LIFETIME = 86400.0
# Safety bound of the party walk: Exmail allows 5 levels; a server answering deeper is wrong.
_MAX_WALK_DEPTH = MAX_DEPARTMENT_DEPTH + 1

Form = Mapping[str, str | Sequence[str]]
T = TypeVar("T")
R = TypeVar("R")


class ExmailV1Provider(V1Groups):
    """:class:`~syncengine.providers.base.MailboxProvider` over the Gen 1 open protocol."""

    api = "v1"

    def __init__(
        self,
        config: ExmailConfig,
        client: httpx.Client,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared_tokens: SharedTokens | None = None,
        calls: CallPolicy | None = None,
    ):
        """``shared_tokens``: the process's token store (see tokens.py), None: this one only."""
        if config.api != "v1" or not config.client_id or config.client_secret is None:
            raise ConfigError("exmail.api must be 'v1' with client_id and client_secret")
        self._config = config
        self._client = client
        # Without a policy (a bare client in a low-level test) reads are tried once, unpaced.
        self.calls = calls or CallPolicy(RetryPolicy(max_attempts=1))
        install_pacing(client, self.calls)
        self._transport: httpx.BaseTransport = client._transport  # for send_direct
        self._forms = FormRequests(client)
        self._client_id = config.client_id
        self._token_url = config.token_url
        self._api = config.openapi_base + "/openapi/"
        self._urls: dict[str, httpx.URL] = {}
        key = ""
        if shared_tokens is not None:
            secret = config.client_secret.get_secret_value()
            key = shared_tokens.key("v1", self._token_url, self._client_id, secret=secret)
        self.tokens = TokenCache(self._fetch_token, name="v1", clock=clock,
                                 shared=shared_tokens, shared_key=key)  # fmt: skip
        self._auth = TokenAuth(self.tokens, set_bearer_token, v1_token_rejected)
        # Set by the service layer: where the user/list cursor and the last read directory
        # are kept (None: every read is a full one), and the wall clock of "full read age".
        self.directory_store: DirectoryStore | None = None
        # ... and where the department tree is kept (None: every read walks the tree).
        self.party_store: DirectoryStore | None = None
        self.wall_clock: Callable[[], float] = time.time
        self.last_read: ReadReport | None = None
        self.full_read_next = False  # set by --full-read: the next read is a full one
        self._tree: TreeKeeper | None = None

    @functools.cached_property
    def _store_key(self) -> str:
        """Whose directory a stored cursor and tree are: this server and admin account."""
        return f"{self._config.openapi_base} {self._client_id}"

    @property
    def tree(self) -> TreeKeeper | None:
        """The stored department tree (see :mod:`.v1_tree`), None without a party store."""
        store = self.party_store
        if store is None:
            return None
        keeper = self._tree
        if keeper is None or keeper.store is not store:
            keeper = self._tree = TreeKeeper(store, self._store_key)
        return keeper

    def __repr__(self) -> str:
        return (
            f"ExmailV1Provider(token_url={self._token_url!r}, "
            f"openapi_url={self._config.openapi_base!r}, client_id={self._client_id!r})"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ExmailV1Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def _fetch_token(self) -> IssuedToken:
        call = "token"
        assert self._config.client_secret is not None  # checked in __init__
        secret = self._config.client_secret.get_secret_value()
        form = {"grant_type": "client_credentials"}
        auth: httpx.BasicAuth | None = None
        if self._config.token_auth == "basic":
            auth = httpx.BasicAuth(self._client_id, secret)
        else:
            form.update(client_id=self._client_id, client_secret=secret)
        request = self._client.build_request("POST", self._token_url, data=form)
        where = f"client_id {self._client_id} (exmail.client_id / exmail.client_secret)"
        response = send(self._client, request, call, auth=auth, subject=where)
        if response.status_code in (400, 401, 403):
            err = status_error(call, response, subject=where)
            raise AuthenticationError(
                err.message,
                call=call,
                errmsg=err.errmsg,
                http_status=response.status_code,
                hint="check exmail.client_id (the admin account) and exmail.client_secret "
                "(the 接口key)",
            )
        data = decode_json(call, response, subject=where)
        if "errcode" in data or "error" in data:
            raise api_error(
                call,
                errcode=data.get("errcode"),
                errmsg=str_field(data, "error") or str_field(data, "errmsg"),
                subject=where,
            )
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise FatalProviderError("token answer has no access_token", call=call)
        expires = data.get("expires_in", TOKEN_LIFETIME)
        try:
            expires_in = float(expires)
        except (TypeError, ValueError):
            expires_in = TOKEN_LIFETIME
        return IssuedToken(token, expires_in)

    def call(
        self,
        call: str,
        form: Form,
        *,
        subject: str | None = None,
    ) -> dict[str, Any] | None:
        """One form-encoded POST to ``openapi/<call>``.

        Returns the decoded object, or None for the empty body that means "write done". A
        read is retried under the call policy; a write is sent once (the executor retries
        actions, looking before it redoes one).
        """
        if is_read_call(call):
            return self.calls.retry_read(
                call, lambda: self._call_once(call, form, subject), is_retriable
            )
        return self._call_once(call, form, subject)

    pushes_mail = True

    def department_exists(self, path: str) -> bool:
        wanted = normalise_path(path)
        try:
            return path_name(wanted) in self.party_list(parent_path(wanted))
        except NotFoundError:
            return False

    def planned_calls(self, action: Action) -> tuple[ApiCall, ...]:
        return planned_calls(action)

    def _call_once(self, call: str, form: Form, subject: str | None) -> dict[str, Any] | None:
        url = self._urls.get(call)
        if url is None:  # parsed once per call name: a URL parse is a fifth of a read's cost
            url = self._urls[call] = httpx.URL(self._api + call)
        # Straight to the client's transport through the token's auth flow and the pace
        # (http.send_direct): a full read is one call per member.
        response = send_direct(
            self._transport,
            self._forms.post(url, form),
            call,
            auth=self._auth,
            pace=self.calls.pace,
            subject=subject,
        )
        return self._decode(call, response, subject)

    def _decode(
        self, call: str, response: httpx.Response, subject: str | None
    ) -> dict[str, Any] | None:
        if response.status_code == 200 and not response.content.strip():
            return None
        data = decode_json(call, response, subject=subject)
        if "errcode" in data or "error" in data:
            code = parse_errcode(data.get("errcode"))
            if code != 0 or "error" in data:
                raise api_error(
                    call,
                    errcode=data.get("errcode"),
                    errmsg=str_field(data, "error") or str_field(data, "errmsg"),
                    http_status=response.status_code,
                    subject=subject,
                )
        return data

    def pool_map(
        self,
        func: Callable[[T], R],
        items: Sequence[T],
        *,
        on_done: Callable[[int], None] | None = None,
    ) -> list[R]:
        """``func`` over ``items``, ``read_concurrency`` at a time (see :func:`.pool.pool_map`)."""
        return pool_map(func, items, workers=self._config.read_concurrency, on_done=on_done)

    # --- departments (parties) ------------------------------------------------------------

    def party_list(self, path: str = "") -> list[str]:
        """``party/list``: the NAMES of the direct children of a party (``""`` = root)."""
        path = normalise_path(path)
        data = self.call("party/list", {"PartyPath": path}, subject=f"party {path!r}")
        return [v for v in list_values(data) if v]

    def party_members(self, path: str = "") -> list[str]:
        """``partyuser/list``: the accounts directly in a party (``""`` = root)."""
        path = normalise_path(path)
        data = self.call("partyuser/list", {"PartyPath": path}, subject=f"party {path!r}")
        return [normalise_email(v) for v in list_values(data) if v]

    def walk_parties(self, root: str = "") -> list[str]:
        """Every party path below ``root`` (``""``: the whole tree), parents before children
        (one call per party)."""
        found: list[str] = []
        frontier = [normalise_path(root)]
        for _ in range(_MAX_WALK_DEPTH + 1):
            if not frontier:
                break
            children = self.pool_map(self.party_list, frontier)
            frontier = [
                f"{parent}/{name}" if parent else name
                for parent, names in zip(frontier, children, strict=True)
                for name in names
            ]
            found.extend(frontier)
        else:
            raise FatalProviderError(
                f"party tree deeper than {_MAX_WALK_DEPTH} levels", call="party/list"
            )
        return found

    def create_department(self, path: str) -> None:
        """``party/sync`` ADD, after checking that the parent exists and the name is free.

        Gen 1 would create missing ancestors and accept a duplicate silently; the check makes
        both generations answer alike (NotFoundError / AlreadyExistsError). Its answer, and
        the write, keep the stored tree current (:attr:`tree`).
        """
        path = normalise_path(path)
        parent = parent_path(path)
        try:
            siblings = self.party_list(parent)
        except NotFoundError:
            if self.tree is not None and parent:
                self.tree.deleted(parent)
            raise
        if path_name(path) in siblings:
            if self.tree is not None:
                self.tree.created(path)
            raise AlreadyExistsError(
                f"department {path!r} exists already",
                call="party/sync",
                hint="the object exists already; compare it with what was asked",
            )
        self.call("party/sync", {"Action": ACTION_ADD, "DstPath": path}, subject=f"party {path!r}")
        if self.tree is not None:
            self.tree.created(path)

    def move_department(self, old_path: str, new_path: str) -> None:
        old_path, new_path = normalise_path(old_path), normalise_path(new_path)
        self.call(
            "party/sync",
            {"Action": ACTION_MOD, "SrcPath": old_path, "DstPath": new_path},
            subject=f"party {old_path!r}",
        )
        if self.tree is not None:
            self.tree.moved(old_path, new_path)

    def delete_department(self, path: str) -> None:
        path = normalise_path(path)
        try:
            self.call(
                "party/sync", {"Action": ACTION_DEL, "DstPath": path}, subject=f"party {path!r}"
            )
        except NotFoundError:
            if self.tree is not None:
                self.tree.deleted(path)
            raise
        if self.tree is not None:
            self.tree.deleted(path)

    # --- users ----------------------------------------------------------------------------

    def get_user(self, email: str) -> Mailbox | None:
        """``user/get``; None when unknown, and when ``email`` is only an alias (Gen 1 would
        answer the primary account's record)."""
        try:
            data = self.call("user/get", {"Alias": email}, subject=email)
        except NotFoundError:
            return None
        if data is None:
            raise FatalProviderError(
                f"user/get answered an empty body for {email}", call="user/get"
            )
        mailbox = mailbox_from(data)
        if mailbox.email != normalise_email(email):
            return None
        return mailbox

    # --- the targeted read of a hook batch (see syncengine.service.targeted) --------------

    def get_users(self, emails: Sequence[str]) -> dict[str, Mailbox | None]:
        """``user/get`` of each address, ``read_concurrency`` at a time: O(addresses) calls,
        never the whole directory. Keys are the lower-cased addresses; None: no member has
        that primary address (an alias's owner is not returned, as in :meth:`get_user`)."""
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        return dict(zip(wanted, self.pool_map(self.get_user, wanted), strict=True))

    def existing_departments(self, paths: Collection[str]) -> tuple[Party, ...]:
        """Which of ``paths`` and their ancestors exist: one ``party/list`` per distinct
        parent (Gen 1 has no call that lists the tree at once), not a walk of every party."""
        wanted: set[str] = set()
        for path in paths:
            p = normalise_path(path)
            if p:
                wanted.add(p)
                wanted.update(ancestors(p))
        parents = sorted({parent_path(p) for p in wanted})

        def children(parent: str) -> frozenset[str]:
            try:
                return frozenset(self.party_list(parent))
            except NotFoundError:  # the parent itself is missing: so are its children
                return frozenset()

        kids = dict(zip(parents, self.pool_map(children, parents), strict=True))
        found = sorted(p for p in wanted if path_name(p) in kids[parent_path(p)])
        return tuple(Party(p) for p in found)

    def read_state(self, *, progress: Progress | None = None) -> MailboxState:
        """The directory: in full, or since the stored ``user/list`` cursor when the provider
        has a :attr:`directory_store` (see :mod:`syncengine.providers.v1_directory`)."""
        reader = DirectoryReader(
            self,
            self.directory_store,
            self._store_key,
            self.wall_clock(),
            self._config.full_read_days,
            self.tree,
            full=self.full_read_next,
        )
        state, self.last_read = reader.read(progress)
        self.full_read_next = False
        return state

    def create_user(
        self, mailbox: Mailbox, *, password: str, change_password_at_login: bool = True
    ) -> None:
        """``user/sync`` ADD. The password goes as its MD5 (``Md5=1``): Gen 1 is plain HTTP.

        Gen 1 has no "change password at next login" flag; ``change_password_at_login`` is
        accepted for the common interface and has no effect here (the policy built for a Gen 1
        config never asks for it, so no Gen 1 plan promises it).
        """
        form = user_form(
            name=mailbox.name,
            gender=mailbox.gender if mailbox.gender != Gender.UNSET else None,
            position=mailbox.position or None,
            tel=mailbox.tel or None,
            mobile=mailbox.mobile or None,
            ext_id=mailbox.ext_id or None,
            departments=mailbox.departments or None,
            aliases=mailbox.aliases or None,
            enabled=mailbox.enabled,
        )
        form.update(
            Action=ACTION_ADD,
            Alias=mailbox.email,
            Password=hashlib.md5(password.encode("utf-8")).hexdigest(),
            Md5="1",
        )
        self.call("user/sync", form, subject=mailbox.email)

    def update_user(self, email: str, update: UserUpdate) -> None:
        """``user/sync`` MOD carrying the WHOLE record: the current one with ``update`` laid
        over it.

        Whether a MOD keeps the fields it omits is undocumented (working clients resend the
        whole record), so the member is read first and every field is sent: under either
        reading the result is the same.
        """
        if update.is_empty():
            return
        current = self.get_user(email)
        if current is None:
            raise NotFoundError(
                f"user/sync MOD of {email}: there is no such member",
                call="user/sync",
                hint="the object does not exist in Exmail; read the state again",
            )

        def pick(new: T | None, old: T) -> T:
            return old if new is None else new

        gender = pick(update.gender, current.gender)
        form = user_form(
            name=pick(update.name, current.name),
            gender=gender,
            position=pick(update.position, current.position),
            tel=pick(update.tel, current.tel),
            mobile=pick(update.mobile, current.mobile),
            ext_id=pick(update.ext_id, current.ext_id),
            departments=pick(update.departments, current.departments),
            aliases=pick(update.aliases, current.aliases),
            enabled=pick(update.enabled, current.enabled),
        )
        form.update(Action=ACTION_MOD, Alias=email)
        self.call("user/sync", form, subject=email)

    def delete_user(self, email: str) -> None:
        self.call("user/sync", {"Action": ACTION_DEL, "Alias": email}, subject=email)

    def swap_alias(self, email: str, alias: str) -> None:
        self.call(
            "user/swapalias",
            {"alias": email, "slavealias": alias},
            subject=f"{email} <-> {alias}",
        )

    def check_addresses(self, addresses: Sequence[str]) -> dict[str, AddressKind]:
        """``user/check`` in batches of 20; keys are the lower-cased addresses."""
        wanted = list(dict.fromkeys(normalise_email(a) for a in addresses))
        result: dict[str, AddressKind] = {}
        for start in range(0, len(wanted), CHECK_LIMIT):
            chunk = wanted[start : start + CHECK_LIMIT]
            data = self.call("user/check", {"email": chunk}) or {}
            for item in data.get("List") or []:
                kind = parse_errcode(item.get("Type"))
                addr = normalise_email(str_field(item, "Email"))
                result[addr] = address_kind(kind)
        return result

    def user_changes(self, version: str = "0") -> tuple[str, list[tuple[str, int]]]:
        """``user/list``: (new version, [(address, action)]) since ``version`` (``"0"``: all).

        Action is 1 deleted, 2 added, 3 modified.
        """
        data = self.call("user/list", {"Ver": str(version)}) or {}
        changes = [
            (normalise_email(str_field(i, "Alias")), parse_errcode(i.get("Action")) or 0)
            for i in data.get("List") or []
            if isinstance(i, Mapping)
        ]
        return str_field(data, "Ver") or str(version), changes

    # --- single sign-on, mail, listen -----------------------------------------------------

    def auth_key(self, email: str) -> str:
        """``mail/authkey``: the ticket of a one-click login (``auth_key``; ``authkey`` too)."""
        data = self.call("mail/authkey", {"Alias": email}, subject=email) or {}
        key = data.get("auth_key") or data.get("authkey") or data.get("AuthKey")
        if not isinstance(key, str) or not key:
            raise FatalProviderError(
                f"mail/authkey answered no auth_key for {email}", call="mail/authkey"
            )
        return key

    def login_url(self, email: str) -> str:
        """``{sso_url}?fun=bizopenssologin&method=bizauth&agent=..&user=..&ticket=<auth_key>``."""
        query = urlencode(
            {
                "fun": "bizopenssologin",
                "method": "bizauth",
                "agent": self._client_id,
                "user": email,
                "ticket": self.auth_key(email),
            }
        )
        return f"{self._config.sso_url}?{query}"

    def new_mail_count(self, email: str) -> int:
        """``mail/newcount``; ``NewCount`` comes as a string (an int is tolerated)."""
        data = self.call("mail/newcount", {"Alias": email}, subject=email) or {}
        count = parse_errcode(data.get("NewCount"))
        if count is None:
            raise FatalProviderError(
                f"mail/newcount answered no NewCount for {email}", call="mail/newcount"
            )
        return count

    def listen(self, version: str, timeout: float) -> tuple[list[MailEvent], str]:
        """One long poll of ``listen``: (events, version to send next time).

        Waits at most ``timeout`` seconds for the answer; a poll that ends without news (the
        server's ``{"Ret":0}`` or our own read timeout) returns no event and the same version.
        """
        call = "listen"
        request = self._client.build_request(
            "POST",
            self._api + call,
            data={"Ver": str(version)},
            timeout=httpx.Timeout(self._config.timeout, read=timeout),
        )
        try:
            response = self._client.send(request, auth=self._auth)
        except httpx.ReadTimeout:
            return [], str(version)
        except httpx.HTTPError as exc:
            err = transport_error(call, exc)
        else:
            data = self._decode(call, response, None) or {}
            return listen_events(data, str(version))
        raise err
