"""The Gen 1 department tree as the engine knows it, so a quiet night need not list it.

Gen 1's ``party/list`` answers one level (protocol reference A.4.9) and the ``user/list``
journal names accounts only (A.4.6): seeing the tree is one ``party/list`` per department
(201 calls for 200). So the tree walked at the last full read is stored (the staging database's
``watch_state`` row ``exmail.v1.parties``, next to the ``user/list`` cursor) and kept current:

* by the engine's own party writes (:class:`TreeKeeper`: a department created, moved or
  deleted, or found to exist or to be missing by the ``party/list`` a create sends first);
* by an incremental read, when an account the journal names is in a department the stored
  tree does not know: a sign that the tree changed behind the engine's back, so the level
  where the unknown path starts is listed again (:func:`relist`), and the subtree of each
  department new there is walked.

A change to the tree that moves no member (an empty department created, renamed or deleted
behind the engine's back) reaches no account's record, so it is seen at the next full read
(``[exmail] full_read_days``) or when the engine's own create lists that parent.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING

from syncengine.domain import ancestors, is_under, normalise_path, parent_path

if TYPE_CHECKING:
    from syncengine.providers.v1_directory import DirectoryStore

log = logging.getLogger("syncengine.providers.exmail_v1")

FORMAT = 1


def encode(key: str, paths: Iterable[str]) -> str:
    return json.dumps(
        {"format": FORMAT, "key": key, "parties": sorted(set(paths))},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode(text: str | None, key: str) -> set[str] | None:
    """The stored party paths, or None when there is none usable (another format or key)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT or data.get("key") != key:
            return None
        return {normalise_path(str(p)) for p in data["parties"]}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def with_ancestors(paths: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for path in paths:
        p = normalise_path(path)
        if p:
            out.add(p)
            out.update(ancestors(p))
    return out


def without_subtree(tree: set[str], path: str) -> set[str]:
    return {p for p in tree if not is_under(p, path)}


def relist(
    tree: Collection[str],
    unknown: Collection[str],
    children: Callable[[str], list[str] | None],
    walk: Callable[[str], list[str]],
) -> set[str]:
    """``tree`` corrected where ``unknown`` paths (and their ancestors) are missing from it.

    For each unknown path, the parent of its shallowest unknown ancestor is listed again
    (``children(parent)``: the child names, None when the parent itself is gone, then its own
    parent is listed instead); departments gone from that level are dropped with their
    subtrees, and the subtree of each one new there is walked (``walk(path)``: every path
    below it). Deeper levels that are already known are kept as stored.
    """
    result = set(tree)
    listed: set[str] = set()
    for path in sorted(with_ancestors(unknown), key=lambda p: (p.count("/"), p)):
        if path in result:
            continue  # found by an earlier listing
        first = next(p for p in (*ancestors(path), path) if p not in result)
        parent = parent_path(first)
        while parent not in listed:
            listed.add(parent)
            names = children(parent)
            if names is None:  # the parent itself is gone: list its parent instead
                result = without_subtree(result, parent)
                parent = parent_path(parent)
                continue
            now = {f"{parent}/{n}" if parent else n for n in names}
            before = {p for p in result if parent_path(p) == parent}
            for gone in before - now:
                result = without_subtree(result, gone)
            for new in sorted(now - before):
                result.add(new)
                result.update(walk(new))
        if path not in result:
            log.info("department %r is named by a member but not listed by the server", path)
    return result


class TreeKeeper:
    """The stored tree, updated by the engine's own party writes (load, change, save under
    one lock: the executor writes from several threads). Without a stored tree (none yet, or
    another server's) a change is not recorded: the next read walks the tree anyway."""

    def __init__(self, store: DirectoryStore, key: str) -> None:
        self.store = store
        self.key = key
        self._lock = threading.Lock()

    def load(self) -> set[str] | None:
        return decode(self.store.load(), self.key)

    def save(self, paths: Iterable[str]) -> None:
        self.store.save(encode(self.key, paths))

    def _change(self, change: Callable[[set[str]], set[str]]) -> None:
        with self._lock:
            tree = self.load()
            if tree is None:
                return
            new = change(tree)
            if new != tree:
                self.save(new)

    def created(self, path: str) -> None:
        """``path`` exists (made by the engine, or found by its ``party/list``)."""
        self._change(lambda tree: tree | with_ancestors([path]))

    def deleted(self, path: str) -> None:
        """``path`` and its subtree are gone."""
        self._change(lambda tree: without_subtree(tree, normalise_path(path)))

    def moved(self, old: str, new: str) -> None:
        """``old`` and its subtree now live at ``new``."""
        old, new = normalise_path(old), normalise_path(new)

        def move(tree: set[str]) -> set[str]:
            kept = without_subtree(tree, old)
            moved = {new + p[len(old) :] for p in tree if is_under(p, old)}
            return kept | moved | with_ancestors([new])

        self._change(move)
