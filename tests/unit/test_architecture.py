"""The import rules of design.md, checked on the source so a violation fails the build."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "syncengine"
PURE = [
    "domain.py",
    "planner.py",
    "policy.py",
    "plan.py",
    "holds.py",
    "connectors/mapping.py",
    "connectors/values.py",
]
FORBIDDEN_IN_PURE = {"sqlalchemy", "httpx", "click", "starlette", "uvicorn", "alembic", "psycopg"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files_under(sub: str) -> list[Path]:
    root = PKG / sub
    return sorted(root.rglob("*.py")) if root.is_dir() else [root] if root.exists() else []


@pytest.mark.parametrize("rel", PURE)
def test_pure_core_imports_no_io_library(rel: str) -> None:
    path = PKG / rel
    if not path.exists():
        pytest.skip(f"{rel} not written yet")
    bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN_IN_PURE}
    assert not bad, f"{rel} is pure but imports {sorted(bad)}"


@pytest.mark.parametrize(
    ("package", "others"),
    [
        ("connectors", ["staging", "providers"]),
        ("staging", ["connectors", "providers"]),
        ("providers", ["connectors", "staging"]),
        ("emulator", ["providers", "connectors", "staging", "service"]),
    ],
)
def test_adapters_do_not_import_each_other(package: str, others: list[str]) -> None:
    for path in files_under(package):
        mods = imported_modules(path)
        bad = {m for m in mods for o in others if m.startswith(f"syncengine.{o}")}
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_only_service_wires_adapters() -> None:
    """Adapters meet only in service.py (and config.py, which composes their config models)."""
    adapters = ("syncengine.connectors", "syncengine.staging", "syncengine.providers")
    allowed = {"service.py", "config.py"}
    for path in sorted(PKG.glob("*.py")):
        if path.name in allowed:
            continue
        kinds = {a for a in adapters for m in imported_modules(path) if m.startswith(a)}
        assert len(kinds) <= 1, f"{path.name} wires {sorted(kinds)}: that belongs in service.py"


def test_cli_builds_no_query_or_request() -> None:
    mods = imported_modules(PKG / "cli.py")
    bad = {m for m in mods if m.split(".")[0] in {"sqlalchemy", "httpx"}}
    bad |= {m for m in mods if m.startswith(("syncengine.staging", "syncengine.providers"))}
    assert not bad, f"cli.py imports {sorted(bad)}"
