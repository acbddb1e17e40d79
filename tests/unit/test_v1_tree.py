"""The stored Gen 1 department tree: where an incremental read lists again, and how the
engine's own party writes keep it current (syncengine.providers.v1_tree)."""

from __future__ import annotations

from syncengine.domain import parent_path
from syncengine.providers.v1_tree import TreeKeeper, decode, encode, relist


class Server:
    """A department tree answering ``party/list`` one level at a time, counting the calls."""

    def __init__(self, paths: set[str]) -> None:
        self.paths = paths
        self.listed: list[str] = []

    def children(self, parent: str) -> list[str] | None:
        self.listed.append(parent)
        if parent and parent not in self.paths:
            return None
        return sorted(p.rsplit("/", 1)[-1] for p in self.paths if parent_path(p) == parent)

    def walk(self, root: str) -> list[str]:
        self.listed.append(root)
        return sorted(p for p in self.paths if p.startswith(root + "/"))


STORED = {"A", "A/x", "A/y", "B", "B/z", "C"}


def test_a_rename_at_the_top_lists_the_root_and_walks_only_the_new_subtree() -> None:
    server = Server({"A", "A/x", "A/y", "B2", "B2/z", "C"})  # B renamed B2
    tree = relist(STORED, {"B2/z"}, server.children, server.walk)
    assert tree == server.paths
    assert server.listed == ["", "B2"]


def test_a_new_department_deep_down_lists_only_its_level() -> None:
    server = Server({*STORED, "A/x/new"})
    tree = relist(STORED, {"A/x/new"}, server.children, server.walk)
    assert tree == server.paths and server.listed == ["A/x", "A/x/new"]


def test_a_parent_that_is_gone_lists_its_own_parent() -> None:
    """A member read names A/x/q, and A/x is deleted before its level is listed (a race):
    A/x answers "not found", so A is listed, and A/x leaves the tree."""
    server = Server({"A", "A/y", "B", "B/z", "C"})
    tree = relist(STORED, {"A/x/q"}, server.children, server.walk)
    assert tree == server.paths
    assert server.listed == ["A/x", "A"]


def test_a_path_the_server_does_not_list_is_left_out() -> None:
    server = Server(set(STORED))
    tree = relist(STORED, {"A/ghost"}, server.children, server.walk)
    assert tree == STORED and server.listed == ["A"]


class Row:
    def __init__(self) -> None:
        self.text: str | None = None

    def load(self) -> str | None:
        return self.text

    def save(self, text: str) -> None:
        self.text = text


def test_the_engines_own_writes_keep_the_tree_current() -> None:
    row = Row()
    keeper = TreeKeeper(row, "server admin")
    keeper.created("A/new")
    assert row.text is None  # no stored tree yet: nothing to keep current
    keeper.save(STORED)
    keeper.created("D/e/f")
    keeper.moved("B", "A/B")
    keeper.deleted("C")
    assert keeper.load() == {"A", "A/x", "A/y", "A/B", "A/B/z", "D", "D/e", "D/e/f"}
    assert decode(row.text, "another server") is None
    assert decode(encode("k", ["b", "a"]), "k") == {"a", "b"}
