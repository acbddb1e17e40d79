"""Reading the Gen 1 directory: in full, or incrementally from ``user/list``'s version cursor.

Gen 1 has no call that lists members with their fields, so a full read is one ``user/get`` per
member (10,000 calls for 10,000 people) plus one ``party/list`` per department. But
``user/list`` answers the accounts changed since a version (Action 1 DEL, 2 ADD, 3 MOD) and the
current version, so a night where little changed needs only ``user/list`` with the stored
cursor and ``user/get`` for each account the journal names: the department tree is the one
stored at the last full read, kept current by the engine's own party writes and listed again
only where a changed account names a department it does not know (:mod:`.v1_tree`).

The cursor and the directory as last read live outside the provider, in a
:class:`DirectoryStore` (the staging database, wired by the service layer; a provider without
one always reads in full; one without a tree store walks the tree on every read). A full read
is made instead when there is no stored directory, when it belongs to another server or
account, when the last full read is older than ``[exmail] full_read_days``, and when the server
refuses the cursor (an error answer to ``user/list``, or a version older than the stored one:
another directory's journal).

A member of a department that the listing found gone (renamed or moved behind the engine's
back; the emulator journals each member of a moved party, a server may not) is read again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Protocol

from syncengine.domain import Gender, Mailbox, MailboxState, Party
from syncengine.errors import (
    AuthenticationError,
    NotFoundError,
    ProviderError,
    RetriableProviderError,
)
from syncengine.providers.v1_tree import TreeKeeper, relist, with_ancestors

if TYPE_CHECKING:
    from syncengine.providers.base import Progress
    from syncengine.providers.exmail_v1 import ExmailV1Provider

log = logging.getLogger("syncengine.providers.exmail_v1")

FORMAT = 2  # 2: the tree moved to its own row (v1_tree)
DAY = 86400.0


class DirectoryStore(Protocol):
    """Where the Gen 1 provider keeps its cursor and the directory it last read (one text)."""

    def load(self) -> str | None: ...

    def save(self, text: str) -> None: ...


@dataclass(frozen=True)
class StoredDirectory:
    """The directory as of ``version`` (every change after it is still to be read)."""

    key: str
    version: str
    full_read_at: float
    mailboxes: dict[str, Mailbox]


@dataclass(frozen=True)
class ReadReport:
    """How the last read went: ``mode`` "full" or "incremental", and why a full one."""

    mode: str
    reason: str
    changes: int = 0


_FIELDS = tuple(f.name for f in fields(Mailbox))


def encode(stored: StoredDirectory) -> str:
    """The stored directory as one text (the mailboxes as plain dicts: ``dataclasses.asdict``
    copies every field recursively, three times slower on 10,000 members)."""
    return json.dumps(
        {
            "format": FORMAT,
            "key": stored.key,
            "version": stored.version,
            "full_read_at": stored.full_read_at,
            "mailboxes": [
                {**{f: getattr(m, f) for f in _FIELDS}, "gender": int(m.gender)}
                for m in stored.mailboxes.values()
            ],
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode(text: str | None, key: str) -> tuple[StoredDirectory | None, str]:
    """The stored directory, or None and why it cannot be used."""
    if not text:
        return None, "no stored cursor (first read)"
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            return None, "the stored directory has another format"
        if data.get("key") != key:
            return None, "the stored cursor belongs to another server or account"
        mailboxes = {}
        for item in data["mailboxes"]:
            m = Mailbox(
                **{
                    **item,
                    "departments": tuple(item["departments"]),
                    "aliases": tuple(item["aliases"]),
                    "gender": Gender(int(item["gender"])),
                }
            )
            mailboxes[m.email] = m
        return StoredDirectory(
            key=key,
            version=str(data["version"]),
            full_read_at=float(data["full_read_at"]),
            mailboxes=mailboxes,
        ), ""
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"the stored directory cannot be read ({type(exc).__name__})"


class CursorRejected(Exception):
    """The server cannot answer changes since the stored version: read in full."""


def _older(new: str, old: str) -> bool:
    try:
        return int(new) < int(old)
    except ValueError:
        return False


def _state(mailboxes: Mapping[str, Mailbox], parties: Collection[str]) -> MailboxState:
    """Parties parents first (depth, then path), as a walk lists them."""
    return MailboxState(
        mailboxes=tuple(mailboxes[e] for e in sorted(mailboxes)),
        parties=tuple(Party(p) for p in sorted(parties, key=lambda p: (p.count("/"), p))),
        groups=(),
    )


class DirectoryReader:
    """One read of the Gen 1 directory through ``provider`` (see the module docstring)."""

    def __init__(
        self, provider: ExmailV1Provider, store: DirectoryStore | None, key: str, now: float,
        full_read_days: float, tree: TreeKeeper | None = None, *, full: bool = False,
    ) -> None:  # fmt: skip
        self.tree = tree
        self.full = full
        self.provider = provider
        self.store = store
        self.key = key
        self.now = now
        self.full_read_days = full_read_days

    def read(self, progress: Progress | None) -> tuple[MailboxState, ReadReport]:
        stored, reason = (None, "no directory store (a provider used alone)")
        if self.store is not None:
            stored, reason = decode(self.store.load(), self.key)
        if stored is not None:
            age = self.now - stored.full_read_at
            if self.full_read_days <= 0 or age >= self.full_read_days * DAY:
                reason = f"the last full read is {age / DAY:.1f} day(s) old (full_read_days)"
                stored = None
            elif self.full:
                reason, stored = "asked for (--full-read)", None
        if stored is not None:
            try:
                return self._incremental(stored, progress)
            except CursorRejected as exc:
                reason = f"the server refused the stored cursor ({exc})"
        log.info("Gen 1 full read: %s", reason)
        return self._full(progress), ReadReport("full", reason)

    def _save(self, stored: StoredDirectory) -> None:
        if self.store is not None:
            self.store.save(encode(stored))

    def _changes(self, version: str) -> tuple[str, list[tuple[str, int]]]:
        try:
            return self.provider.user_changes(version)
        except (AuthenticationError, RetriableProviderError):
            raise
        except ProviderError as exc:
            raise CursorRejected(str(exc)) from None

    def _fetch(
        self, emails: list[str], progress: Progress | None
    ) -> list[tuple[str, Mailbox | None]]:
        total = len(emails)
        if progress:
            progress(0, total)

        def done(n: int) -> None:
            if progress:
                progress(n, total)

        fetched = self.provider.pool_map(self.provider.get_user, emails, on_done=done)
        return list(zip(emails, fetched, strict=True))

    def _full(self, progress: Progress | None) -> MailboxState:
        """``user/list`` Ver=0 (every account, and the cursor), the tree, one ``user/get``
        per account. A server that will not list falls back to ``partyuser/list`` per party
        and keeps no cursor."""
        version: str | None
        try:
            version, listed = self._changes("0")
            emails = list(dict.fromkeys(a for a, action in listed if a and action != 1))
            parties = self.provider.walk_parties()
        except CursorRejected as exc:
            log.warning("user/list refused Ver=0 (%s); listing members party by party", exc)
            version = None
            parties = self.provider.walk_parties()
            member_lists = self.provider.pool_map(self.provider.party_members, ["", *parties])
            emails = list(dict.fromkeys(e for members in member_lists for e in members))
        mailboxes = {e: m for e, m in self._fetch(emails, progress) if m is not None}
        if len(mailboxes) != len(emails):
            log.info("%d member(s) vanished during the read", len(emails) - len(mailboxes))
        if version is not None:
            self._save(StoredDirectory(self.key, version, self.now, mailboxes))
            if self.tree is not None:
                self.tree.save(parties)
        return _state(mailboxes, parties)

    def _incremental(
        self, stored: StoredDirectory, progress: Progress | None
    ) -> tuple[MailboxState, ReadReport]:
        # The version comes first: whatever changes after it is named again next time.
        version, changes = self._changes(stored.version)
        if _older(version, stored.version):
            raise CursorRejected(f"it answered version {version}, older than {stored.version}")
        known = self.tree.load() if self.tree is not None else None
        walked = known is None
        tree = set(self.provider.walk_parties()) if known is None else known
        emails = list(dict.fromkeys(a for a, _ in changes if a))
        fetched = self._fetch(emails, progress)
        tree, relisted = self._correct(tree, fetched)
        again: list[str] = []
        if walked or relisted:
            # Stored members of a department that is gone (renamed or moved behind the
            # engine's back, which a server may not journal) are read again.
            if known is None:
                known = with_ancestors(
                    p for m in stored.mailboxes.values() for p in m.departments
                )  # fmt: skip
            gone = known - tree
            got = set(emails)
            again = [
                m.email for m in stored.mailboxes.values()
                if m.email not in got and gone.intersection(with_ancestors(m.departments))
            ]  # fmt: skip
            more = self._fetch(again, None)
            tree, _ = self._correct(tree, more)
            fetched += more
        mailboxes = dict(stored.mailboxes)
        for email, mailbox in fetched:
            if mailbox is None:
                mailboxes.pop(email, None)
            else:
                mailboxes[email] = mailbox
        if fetched or version != stored.version:  # a quiet night rewrites nothing
            self._save(StoredDirectory(self.key, version, stored.full_read_at, mailboxes))
        if self.tree is not None and (walked or relisted):
            self.tree.save(tree)
        note = (
            f"{len(changes)} journal change(s), {len(again)} member(s) of vanished parties, "
            f"tree {'walked' if walked else 'listed again in part' if relisted else 'as stored'}"
        )
        log.info("Gen 1 incremental read since version %s: %s", stored.version, note)
        return _state(mailboxes, tree), ReadReport("incremental", note, len(emails) + len(again))

    def _correct(
        self, tree: set[str], fetched: list[tuple[str, Mailbox | None]]
    ) -> tuple[set[str], bool]:
        """``tree``, listed again where a fetched member names a department it does not know
        (the tree changed behind the engine's back), and whether it was."""
        named = with_ancestors(p for _, m in fetched if m is not None for p in m.departments)
        unknown = named - tree
        if not unknown:
            return tree, False
        log.info("Gen 1 read: %d department(s) not in the stored tree", len(unknown))
        return relist(tree, unknown, self._children, self.provider.walk_parties), True

    def _children(self, parent: str) -> list[str] | None:
        """``party/list`` of ``parent``; None when the parent is gone."""
        try:
            return self.provider.party_list(parent)
        except NotFoundError:
            return None
