"""The Exmail client for the current API (Gen 2, ``{base_url}/cgi-bin/...``).

It speaks Gen 2's terms at the wire (department ids, JSON bodies, ``access_token`` in the query,
one token per application secret) and the engine's terms to its callers (departments as paths,
root excluded; membership in the root alone is an empty tuple). The path <-> id map is read
from ``department/list`` and read again whenever a path or id is unknown, so a department made
by someone else between two calls is still found.

No retries here apart from the single token refresh of :class:`~.http.TokenAuth`: the error's
class says whether the executor may retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from typing import Any

import httpx

from syncengine.callpolicy import CallPolicy, RetryPolicy
from syncengine.domain import (
    AddressKind,
    Mailbox,
    MailboxState,
    MailEvent,
    Party,
    UserUpdate,
    normalise_email,
    normalise_path,
    parent_path,
    path_name,
)
from syncengine.errors import (
    ConfigError,
    FatalProviderError,
    NotFoundError,
)
from syncengine.plan import Action, ActionKind, adoption_writes
from syncengine.providers.base import ApiCall, Progress
from syncengine.providers.config import ExmailConfig, Gen2App
from syncengine.providers.direct import CurlJsonPost, JsonRequests, QueryToken
from syncengine.providers.http import (
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
    str_field,
    v2_token_rejected,
)
from syncengine.providers.tokens import IssuedToken, SharedTokens, TokenCache
from syncengine.providers.v2_codec import (
    APP_TITLE,
    BATCHCHECK_LIMIT,
    NEWCOUNT_WINDOW_DAYS,
    ROOT_ID,
    WRITE_CALLS,
    Gen2Department,
    app_for,
    department_row,
    enabled_of,
    exmail_today,
    gender_of,
)
from syncengine.providers.v2_groups import V2Groups
from syncengine.providers.v2_writes import V2DirectWrites, create_user_body, update_user_body

log = logging.getLogger("syncengine.providers.exmail_v2")


class ExmailV2Provider(V2Groups, V2DirectWrites):
    """:class:`~syncengine.providers.base.MailboxProvider` over Exmail's current API."""

    api = "v2"

    def __init__(
        self,
        config: ExmailConfig,
        client: httpx.Client,
        *,
        clock: Callable[[], float] = time.monotonic,
        today: Callable[[], date] = exmail_today,
        shared_tokens: SharedTokens | None = None,
        calls: CallPolicy | None = None,
    ):
        """``shared_tokens``: the process's token store (see tokens.py), None: this one only."""
        if config.api != "v2" or not config.corp_id:
            raise ConfigError("exmail.api must be 'v2' with a corp_id for the Gen 2 client")
        self._config = config
        self._client = client
        self._base = config.host_base + "/cgi-bin/"
        # Without a policy (a bare client in a low-level test) reads are tried once, unpaced.
        self.calls = calls or CallPolicy(RetryPolicy(max_attempts=1))
        install_pacing(client, self.calls)
        # API calls go straight to the client's transport (http.send_direct), the requests
        # built once per call's shape; the token fetch still goes through the client.
        self._transport: httpx.BaseTransport = client._transport
        self._requests = JsonRequests(client)
        self._posts = CurlJsonPost.over(client, self.calls.pace)  # the writes, on libcurl
        self._urls: dict[str, httpx.URL] = {}
        self._auth_by_call: dict[str, TokenAuth] = {}
        self._clock = clock
        self._today = today
        self._shared_tokens = shared_tokens
        self._auth: dict[Gen2App, TokenAuth] = {}
        self._tokens: dict[Gen2App, TokenCache] = {}
        self._auth_lock = threading.Lock()
        self._dept_lock = threading.Lock()
        self._by_path: dict[str, int] = {"": ROOT_ID}
        self._by_id: dict[int, str] = {ROOT_ID: ""}

    def __repr__(self) -> str:
        return f"ExmailV2Provider(base_url={self._config.host_base!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ExmailV2Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------------------

    def token_cache(self, app: Gen2App) -> TokenCache:
        """The token cache of one application (created on first use)."""
        self._auth_for(app)
        return self._tokens[app]

    def _auth_for(self, app: Gen2App) -> TokenAuth:
        with self._auth_lock:
            auth = self._auth.get(app)
            if auth is None:
                if app not in self._config.secrets:
                    raise ConfigError(
                        f"no secret for the {APP_TITLE[app]} application",
                        where=f"exmail.secrets.{app}",
                        hint="copy it from the Exmail admin console (应用 -> secret)",
                    )
                key = ""
                if self._shared_tokens is not None:
                    secret = self._config.secrets[app].get_secret_value()
                    key = self._shared_tokens.key(
                        "v2", self._base, self._config.corp_id or "", app, secret=secret
                    )
                cache = TokenCache(
                    lambda: self._fetch_token(app),
                    name=f"v2 {app}",
                    clock=self._clock,
                    shared=self._shared_tokens,
                    shared_key=key,
                )
                auth = TokenAuth(cache, QueryToken(), v2_token_rejected)
                self._tokens[app] = cache
                self._auth[app] = auth
            return auth

    def _fetch_token(self, app: Gen2App) -> IssuedToken:
        call = "gettoken"
        secret = self._config.secrets[app].get_secret_value()
        request = self._client.build_request(
            "GET",
            self._base + call,
            params={"corpid": self._config.corp_id or "", "corpsecret": secret},
        )
        response = send(self._client, request, call, subject=f"application {app}")
        data = decode_json(call, response, subject=f"application {app}")
        code = parse_errcode(data.get("errcode"))
        if code not in (None, 0):
            err = api_error(
                call,
                errcode=code,
                errmsg=str_field(data, "errmsg"),
                subject=f"application {app} (exmail.corp_id / exmail.secrets.{app})",
            )
            raise err
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise FatalProviderError(
                "gettoken answered without an access_token",
                call=call,
                hint=f"check exmail.base_url and exmail.secrets.{app}",
            )
        expires = data.get("expires_in", 7200)
        expires_in = float(expires) if isinstance(expires, int | float | str) else 7200.0
        log.debug("fetched a token for application %s (expires in %ss)", app, expires_in)
        return IssuedToken(token, expires_in)

    def call(
        self,
        call: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        subject: str | None = None,
        method: str | None = None,
    ) -> dict[str, Any]:
        """One API call: GET with ``params``, or POST with the JSON ``body``.

        Returns the decoded answer when errcode is 0; raises the typed error otherwise. A read
        is retried under the call policy; a write is sent once (the executor retries actions).
        """
        if is_read_call(call):
            return self.calls.retry_read(
                call, lambda: self._call_once(call, params, body, subject, method), is_retriable
            )
        return self._call_once(call, params, body, subject, method)

    def _prepared(self, call: str) -> tuple[httpx.URL, TokenAuth]:
        """The call's URL (parsed once per call name) and its application's token."""
        auth = self._auth_by_call.get(call)
        if auth is None:
            auth = self._auth_by_call[call] = self._auth_for(app_for(call))
        url = self._urls.get(call)
        if url is None:
            url = self._urls[call] = httpx.URL(self._base + call)
        return url, auth

    def _call_once(
        self,
        call: str,
        params: Mapping[str, Any] | None,
        body: Mapping[str, Any] | None,
        subject: str | None,
        method: str | None,
    ) -> dict[str, Any]:
        url, auth = self._prepared(call)
        verb = method or ("POST" if body is not None else "GET")
        status = 200
        if verb == "POST" and body is not None and not params and self._posts is not None:
            data = self._posts.post(call, url, body, auth, subject)
        else:
            request = self._requests.build(verb, url, params=params, body=body)
            response = send_direct(
                self._transport, request, call, auth=auth, pace=self.calls.pace, subject=subject
            )
            data = decode_json(call, response, subject=subject)
            status = response.status_code
            # The (read, closed) stream let go with the answer decoded: no stream<->response
            # reference cycle keeps an answer (21 MB of user/list for 100,000 members) alive
            # until a full collection.
            response.stream = httpx.ByteStream(b"")
        self._checked(call, data, subject, status)
        return data

    # --- departments ----------------------------------------------------------------------

    pushes_mail = False

    def listen(self, version: str, timeout: float) -> tuple[list[MailEvent], str]:
        raise FatalProviderError(
            "Gen 2 has no new-mail push; poll mail/newcount instead", call="listen"
        )

    def department_exists(self, path: str) -> bool:
        wanted = normalise_path(path)
        return any(d.path == wanted for d in self.list_departments())

    def planned_calls(self, action: Action) -> tuple[ApiCall, ...]:
        if action.kind not in WRITE_CALLS:
            return ()
        if action.kind is ActionKind.ADOPT_GROUP and not adoption_writes(action):
            return ()  # the group is already as HR wants it: only the ledger takes it over
        method, endpoint = WRITE_CALLS[action.kind]
        calls = [ApiCall(method, "/cgi-bin/" + endpoint)]
        if action.kind is ActionKind.CREATE_USER and action.mailbox and not action.mailbox.enabled:
            calls.append(ApiCall("POST", "/cgi-bin/user/update", "enable=0: user/create has none"))
        return tuple(calls)

    def list_departments(self) -> list[Gen2Department]:
        """The whole tree (root included, path ``""``), and the path <-> id map refreshed."""
        data = self.call("department/list", params={"id": ROOT_ID})
        rows: dict[int, tuple[str, int, int]] = {}
        for item in data.get("department") or []:
            row = department_row("department/list", item)
            rows[row.id] = (row.name, row.parent_id, row.order)
        paths: dict[int, str] = {ROOT_ID: ""}

        def path_of(did: int, seen: frozenset[int] = frozenset()) -> str | None:
            if did in paths:
                return paths[did]
            row = rows.get(did)
            if row is None or did in seen:
                return None  # dangling parent or a cycle: not reachable from the root
            parent = path_of(row[1], seen | {did})
            if parent is None:
                return None
            paths[did] = f"{parent}/{row[0]}" if parent else row[0]
            return paths[did]

        result: list[Gen2Department] = []
        for did, (name, parent, order) in rows.items():
            path = path_of(did)
            if path is None:
                log.warning("department %s (%s) is not under the root; ignored", did, name)
                continue
            result.append(Gen2Department(did, name, parent, order, path))
        if not any(d.id == ROOT_ID for d in result):
            result.insert(0, Gen2Department(ROOT_ID, "", 0, 0, ""))
        with self._dept_lock:
            self._by_id = dict(paths)
            self._by_path = {p: i for i, p in paths.items()}
        return result

    def department_id(self, path: str) -> int:
        """The Gen 2 id of a department path (``""`` is the root, id 1)."""
        path = normalise_path(path)
        with self._dept_lock:
            found = self._by_path.get(path)
        if found is not None:
            return found
        self.list_departments()
        with self._dept_lock:
            found = self._by_path.get(path)
        if found is None:
            raise NotFoundError(
                f"department {path!r} does not exist in Exmail",
                call="department/list",
                hint="create its parent departments first, or read the state again",
            )
        return found

    def department_path(self, department_id: int) -> str:
        """The path of a Gen 2 department id (re-reading the tree once if it is unknown)."""
        with self._dept_lock:
            found = self._by_id.get(department_id)
        if found is not None:
            return found
        self.list_departments()
        with self._dept_lock:
            found = self._by_id.get(department_id)
        if found is None:
            raise FatalProviderError(
                f"Exmail named department id {department_id}, which department/list lacks",
                call="department/list",
                hint="the directory changed during the read; read the state again",
            )
        return found

    def search_departments(self, name: str, *, fuzzy: bool = False) -> list[Gen2Department]:
        """``department/search``: departments by name, with Exmail's own path."""
        data = self.call(
            "department/search", body={"name": name, "fuzzy": 1 if fuzzy else 0}, subject=name
        )
        return [
            department_row("department/search", item, normalise_path(str_field(item, "path")))
            for item in data.get("department") or []
        ]

    def create_department(self, path: str) -> None:
        path = normalise_path(path)
        parent_id = self.department_id(parent_path(path))
        data = self.call(
            "department/create",
            body={"name": path_name(path), "parentid": parent_id},
            subject=f"department {path!r}",
        )
        new_id = parse_errcode(data.get("id"))
        if new_id is not None:
            with self._dept_lock:
                self._by_path[path] = new_id
                self._by_id[new_id] = path

    def move_department(self, old_path: str, new_path: str) -> None:
        old_path, new_path = normalise_path(old_path), normalise_path(new_path)
        did = self.department_id(old_path)
        body: dict[str, Any] = {"id": did, "name": path_name(new_path)}
        if parent_path(new_path) != parent_path(old_path):
            body["parentid"] = self.department_id(parent_path(new_path))
        self.call("department/update", body=body, subject=f"department {old_path!r}")
        with self._dept_lock:  # the subtree moved with it
            for p, i in list(self._by_path.items()):
                if p == old_path or p.startswith(old_path + "/"):
                    moved = new_path + p[len(old_path) :]
                    del self._by_path[p]
                    self._by_path[moved] = i
                    self._by_id[i] = moved

    def delete_department(self, path: str) -> None:
        path = normalise_path(path)
        did = self.department_id(path)
        self.call("department/delete", params={"id": did}, subject=f"department {path!r}")
        with self._dept_lock:
            self._by_path.pop(path, None)
            self._by_id.pop(did, None)

    def _department_ids(self, paths: Sequence[str]) -> list[int]:
        known = self._by_path  # one lookup each (atomic); the lock guards the updates
        ids: list[int] = []
        for p in paths:
            found = known.get(p) if p else None
            if found is None:  # unknown, the root, or not written as it is stored
                if not normalise_path(p):
                    continue
                found = self.department_id(p)
            ids.append(found)
        return ids or [ROOT_ID]  # Gen 2 needs a department; root membership is [1]

    # --- users ----------------------------------------------------------------------------

    def _departments(self, ids: Iterable[Any]) -> tuple[str, ...]:
        """The paths of a member's ``department`` ids (root and garbled ids left out)."""
        departments: list[str] = []
        for raw in ids:
            did = parse_errcode(raw)
            if did is None or did == ROOT_ID:
                continue
            path = self.department_path(did)
            if path and path not in departments:
                departments.append(path)
        return tuple(departments)

    def _mailbox(
        self,
        item: Mapping[str, Any],
        departments: tuple[str, ...] | None = None,
        shared: dict[str, str] | None = None,
    ) -> Mailbox:
        """One member record; ``departments`` when the caller already resolved its ids;
        ``shared`` keeps one copy of each position title across the members of a read."""
        if departments is None:
            departments = self._departments(item.get("department") or [])
        get = item.get
        userid, name, extid = get("userid"), get("name"), get("extid")
        position, tel, mobile = get("position"), get("tel"), get("mobile")
        slaves = get("slaves")
        position = "" if position is None else str(position)
        if shared is not None:
            position = shared.setdefault(position, position)
        return Mailbox(
            email=normalise_email("" if userid is None else str(userid)),
            name="" if name is None else str(name),
            ext_id="" if extid is None else str(extid),
            departments=departments,
            aliases=tuple(normalise_email(str(a)) for a in slaves if a) if slaves else (),
            position=position,
            tel="" if tel is None else str(tel),
            mobile="" if mobile is None else str(mobile),
            gender=gender_of(get("gender")),
            enabled=enabled_of(get("enable")),
        )

    def _mailboxes(self, items: list[Any]) -> list[Mailbox]:
        """The members of a ``user/list`` answer, in order. ``items`` is emptied as it is read,
        so each decoded record is let go once it is a Mailbox (the whole directory is never
        held twice), and members of the same departments share one tuple of paths (their
        ids resolved once), as do members with the same position title."""
        paths: dict[tuple[Any, ...], tuple[str, ...]] = {}
        titles: dict[str, str] = {}
        out: list[Mailbox] = []
        items.reverse()
        pop = items.pop
        while items:
            item = pop()
            ids = tuple(item.get("department") or ())
            try:
                departments = paths.get(ids)
                if departments is None:
                    departments = paths[ids] = self._departments(ids)
            except TypeError:  # an unhashable (garbled) id: resolved alone, not shared
                departments = self._departments(ids)
            out.append(self._mailbox(item, departments, titles))
        return out

    def read_state(self, *, progress: Progress | None = None) -> MailboxState:
        """Two calls at once: ``department/list``, and ``user/list`` of the root with
        ``fetch_child`` (its members' departments are resolved once both answers are in)."""
        members: list[Any] = []
        failed: list[BaseException] = []

        def read_members() -> None:
            try:
                data = self.call("user/list", params={"department_id": ROOT_ID, "fetch_child": 1},
                                 subject="department ''")  # fmt: skip
                got = data.pop("userlist", None)
                members.extend(got if isinstance(got, list) else list(got or ()))
            except BaseException as exc:  # raised below, in the caller's thread
                failed.append(exc)

        reader = threading.Thread(target=read_members, name="v2-user-list", daemon=True)
        reader.start()
        try:
            departments = self.list_departments()
        finally:
            reader.join()
        if failed:
            raise failed[0]
        if progress:
            progress(0, None)
        users = self._mailboxes(members)
        if progress:
            progress(len(users), len(users))
        parties = tuple(Party(d.path, d.id) for d in departments if d.id != ROOT_ID)
        return MailboxState(mailboxes=tuple(users), parties=parties, groups=())

    def list_users(self, path: str = "", *, recursive: bool = True) -> list[Mailbox]:
        """``user/list``: full member records of a department (and below, if recursive)."""
        did = self.department_id(path)
        data = self.call(
            "user/list",
            params={"department_id": did, "fetch_child": 1 if recursive else 0},
            subject=f"department {path!r}",
        )
        members = data.pop("userlist", None)
        del data  # the answer's other fields: only the members are kept, and let go one by one
        return self._mailboxes(members if isinstance(members, list) else list(members or ()))

    def simple_list(self, path: str = "", *, recursive: bool = True) -> list[tuple[str, str]]:
        """``user/simplelist``: (address, name) of the members of a department."""
        did = self.department_id(path)
        data = self.call(
            "user/simplelist",
            params={"department_id": did, "fetch_child": 1 if recursive else 0},
            subject=f"department {path!r}",
        )
        return [
            (normalise_email(str_field(u, "userid")), str_field(u, "name"))
            for u in data.get("userlist") or []
        ]

    def get_user(self, email: str) -> Mailbox | None:
        try:
            data = self.call("user/get", params={"userid": email}, subject=email)
        except NotFoundError:
            return None
        return self._mailbox(data)

    # --- the targeted read of a hook batch (see syncengine.service.targeted) --------------

    def get_users(self, emails: Sequence[str]) -> dict[str, Mailbox | None]:
        """``user/get`` of each address, ``read_concurrency`` at a time: O(addresses) calls,
        never the whole directory. Keys are the lower-cased addresses; None: no member has
        that primary address (an alias is not resolved: Gen 2 ``user/get`` refuses it)."""
        wanted = list(dict.fromkeys(normalise_email(e) for e in emails))
        workers = min(self._config.read_concurrency, len(wanted))
        if workers <= 1:
            return {e: self.get_user(e) for e in wanted}
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="exmail-v2") as pool:
            found = list(pool.map(self.get_user, wanted))
        return dict(zip(wanted, found, strict=True))

    def existing_departments(self, paths: Collection[str]) -> tuple[Party, ...]:
        """The departments a targeted plan must know of. Gen 2 lists the whole tree in one
        ``department/list`` call, so every department (root excluded) is returned, whatever
        ``paths`` asks for."""
        del paths  # one call answers for all of them
        return tuple(Party(d.path, d.id) for d in self.list_departments() if d.id != ROOT_ID)

    def create_user(
        self, mailbox: Mailbox, *, password: str, change_password_at_login: bool = True
    ) -> None:
        body = create_user_body(mailbox, password, change_password_at_login, self._department_ids)
        self.call("user/create", body=body, subject=mailbox.email)
        if not mailbox.enabled:  # user/create has no enable field
            self.call(
                "user/update", body={"userid": mailbox.email, "enable": 0}, subject=mailbox.email
            )

    def update_user(self, email: str, update: UserUpdate) -> None:
        if update.is_empty():
            return
        body = update_user_body(email, update, self._department_ids)
        self.call("user/update", body=body, subject=email)

    @staticmethod
    def _checked(
        call: str, data: Mapping[str, Any], subject: str | None, status: int = 200
    ) -> Mapping[str, Any]:
        """A decoded answer when its errcode says success, else the typed error."""
        code = parse_errcode(data.get("errcode"))
        if code not in (None, 0):
            raise api_error(
                call,
                errcode=code,
                errmsg=str_field(data, "errmsg"),
                http_status=status,
                subject=subject,
            )
        return data

    def delete_user(self, email: str) -> None:
        self.call("user/delete", params={"userid": email}, subject=email)

    def swap_alias(self, email: str, alias: str) -> None:
        """``user/swapalias`` (undocumented): parameters in the query, as the one known client
        (WYFUPD) sends them."""
        self.call(
            "user/swapalias",
            params={"alias": email, "slavealias": alias},
            subject=f"{email} <-> {alias}",
        )

    def check_addresses(self, addresses: Sequence[str]) -> dict[str, AddressKind]:
        """``user/batchcheck`` in batches of 20; keys are the lower-cased addresses."""
        wanted = list(dict.fromkeys(normalise_email(a) for a in addresses))
        result: dict[str, AddressKind] = {}
        for start in range(0, len(wanted), BATCHCHECK_LIMIT):
            chunk = wanted[start : start + BATCHCHECK_LIMIT]
            data = self.call("user/batchcheck", body={"userlist": chunk})
            for item in data.get("list") or []:
                kind = parse_errcode(item.get("type"))
                addr = normalise_email(str_field(item, "user"))
                result[addr] = address_kind(kind)
        return result

    # --- single sign-on and mail ----------------------------------------------------------

    def login_url(self, email: str) -> str:
        """``service/get_login_url``: single-use, valid 300 s (needs ``secrets.sso``)."""
        data = self.call("service/get_login_url", params={"userid": email}, subject=email)
        url = data.get("login_url")
        if not isinstance(url, str) or not url:
            raise FatalProviderError("answered without a login_url", call="service/get_login_url")
        return url

    def new_mail_count(self, email: str) -> int:
        """``mail/newcount`` (needs ``secrets.mail``) over the last ``NEWCOUNT_WINDOW_DAYS``.

        Whether ``begin_date``/``end_date`` are required is unconfirmed, so they are always
        sent: the days are Exmail's own (Beijing time), whatever the company's time zone.
        """
        end = self._today()
        begin = end - timedelta(days=NEWCOUNT_WINDOW_DAYS - 1)
        params = {"userid": email, "begin_date": begin.isoformat(), "end_date": end.isoformat()}
        data = self.call("mail/newcount", params=params, subject=email)
        count = parse_errcode(data.get("count"))
        if count is None:
            raise FatalProviderError(f"answered without a count for {email}", call="mail/newcount")
        return count
