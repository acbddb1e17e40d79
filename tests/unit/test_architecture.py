"""The import rules of design.md, checked on the source so that a violation fails the build.

Imports are followed *transitively* through the package (a pure module that imports a helper
that imports httpx is as impure as one that imports httpx), imports inside functions count
(a lazy import is still a dependency), and the pure core is also searched for clock reads,
randomness and file opening, which no import list shows.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "syncengine"

PURE = [
    "syncengine.domain",
    "syncengine.planner",
    "syncengine.planner_base",
    "syncengine.planner_people",
    "syncengine.groups",
    "syncengine.policy",
    "syncengine.plan",
    "syncengine.plan_codec",
    "syncengine.addresses",
    "syncengine.render",
    "syncengine.connectors.mapping",
    "syncengine.connectors.person_builder",
    "syncengine.connectors.values",
    "syncengine.connectors.fields",
    "syncengine.connectors.department_table",
    "syncengine.holds",
    "syncengine.hooks.payloads",
    "syncengine.hooks.guard",
    "syncengine.guard",
    "syncengine.plan_page",
    "syncengine.translations",
    "syncengine.plan_horizon",
    "syncengine.clock",
    "syncengine.freshness",
]
IO_LIBRARIES = {
    "sqlalchemy", "httpx", "click", "starlette", "uvicorn", "alembic", "psycopg", "ldap3",
    "openpyxl", "python_calamine", "socket", "ssl", "subprocess", "smtplib", "sqlite3",
    "requests", "urllib3", "shutil", "tempfile", "tenacity", "threading", "asyncio",
    "concurrent", "multiprocessing", "http", "urllib.request", "aiosmtpd",
}  # fmt: skip
CLOCK_OR_CHANCE = {"time", "random", "secrets", "uuid"}
FORBIDDEN_CALLS = {
    ("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today"),
    ("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("os", "urandom"),
}  # fmt: skip
ADAPTERS = ("syncengine.connectors", "syncengine.staging", "syncengine.providers")


def module_path(module: str) -> Path | None:
    if module == "syncengine":
        return PKG / "__init__.py"
    if not module.startswith("syncengine."):
        return None
    rel = Path(*module.split(".")[1:])
    for candidate in (PKG / rel.with_suffix(".py"), PKG / rel / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def direct_imports(module: str) -> frozenset[str]:
    """Every module ``module`` imports anywhere in its source (absolute names)."""
    path = module_path(module)
    if path is None:
        return frozenset()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            for alias in node.names:  # ``from syncengine import service`` names a module
                if module_path(f"{base}.{alias.name}") is not None:
                    found.add(f"{base}.{alias.name}")
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py too.
    for name in list(found):
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return frozenset(found - {module})


@functools.cache
def closure(module: str) -> frozenset[str]:
    """``module`` and everything it imports, transitively inside the package."""
    seen = {module}
    todo = [module]
    while todo:
        for dep in direct_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                if dep.startswith("syncengine"):
                    todo.append(dep)
    return frozenset(seen)


def external(modules: frozenset[str]) -> set[str]:
    return {m for m in modules if not m.startswith("syncengine")}


def hits(modules: set[str], banned: set[str]) -> set[str]:
    return {m for m in modules for b in banned if m == b or m.startswith(b + ".")}


def forbidden_calls(module: str) -> set[str]:
    path = module_path(module)
    assert path is not None
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                if (f.value.id, f.attr) in FORBIDDEN_CALLS:
                    found.add(f"{f.value.id}.{f.attr}()")
            elif isinstance(f, ast.Name) and f.id == "open":
                found.add("open()")
    return found


def pure_closure(module: str) -> frozenset[str]:
    """The package modules a pure module reaches (errors and config models are data)."""
    return frozenset(m for m in closure(module) if m.startswith("syncengine"))


@pytest.mark.parametrize("module", PURE)
def test_pure_core_reaches_no_io_library_clock_or_randomness(module: str) -> None:
    reached = closure(module)
    bad = hits(external(reached), IO_LIBRARIES | CLOCK_OR_CHANCE)
    assert not bad, f"{module} is pure but reaches {sorted(bad)}"
    adapters = {m for m in reached if m.startswith(ADAPTERS) and m != module}
    adapters -= {
        "syncengine.connectors",
        "syncengine.connectors.base",
        "syncengine.connectors.config",
    }  # the mapping's own record keys and models
    adapters -= set(PURE)  # another pure module (connectors.values) is pure too
    assert not adapters, f"{module} is pure but reaches {sorted(adapters)}"
    assert "syncengine.service" not in reached, f"{module} reaches the service layer"


@pytest.mark.parametrize("module", PURE)
def test_pure_core_never_reads_a_clock_or_opens_a_file(module: str) -> None:
    for dep in sorted(pure_closure(module)):
        bad = forbidden_calls(dep)
        assert not bad, f"{dep} (reached from pure {module}) calls {sorted(bad)}"


@pytest.mark.parametrize(
    ("package", "others"),
    [
        ("syncengine.connectors", ["syncengine.staging", "syncengine.providers"]),
        ("syncengine.staging", ["syncengine.connectors", "syncengine.providers"]),
        ("syncengine.providers", ["syncengine.connectors", "syncengine.staging"]),
        ("syncengine.emulator", ["syncengine.providers", "syncengine.connectors",
                                 "syncengine.staging", "syncengine.service"]),
        ("syncengine.hooks", ["syncengine.providers", "syncengine.connectors",
                              "syncengine.staging", "syncengine.service"]),
    ],
)  # fmt: skip
def test_adapters_do_not_reach_each_other(package: str, others: list[str]) -> None:
    root = module_path(package)
    assert root is not None
    for path in sorted(root.parent.rglob("*.py")):
        mod = module_name(path)
        bad = {m for m in closure(mod) for o in others if m == o or m.startswith(o + ".")}
        assert not bad, f"{mod} reaches {sorted(bad)}"


def test_only_the_service_layer_wires_adapters() -> None:
    """A module outside ``syncengine.service`` imports from one adapter package at most
    (``config.py`` composes their config models and is allowed)."""
    for path in sorted(PKG.rglob("*.py")):
        mod = module_name(path)
        if mod.startswith("syncengine.service") or mod == "syncengine.config":
            continue
        kinds = {a for a in ADAPTERS for m in direct_imports(mod) if m.startswith(a)}
        own = {a for a in ADAPTERS if mod.startswith(a)}
        assert len(kinds - own) + len(own) <= 1, f"{mod} wires {sorted(kinds | own)}"


def test_cli_builds_no_query_or_request() -> None:
    root = module_path("syncengine.cli")
    assert root is not None
    for path in sorted(root.parent.rglob("*.py")):
        mod = module_name(path)
        mods = direct_imports(mod)
        bad = hits(set(mods), {"sqlalchemy", "httpx"})
        bad |= {m for m in mods if m.startswith(("syncengine.staging", "syncengine.providers"))}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_the_rules_see_a_planted_violation(tmp_path: Path) -> None:
    """The checker itself: transitive and lazy imports are found."""
    assert "httpx" in closure("syncengine.providers.http")
    assert "syncengine.staging.repository" in closure("syncengine.service.engine")
    assert "sqlalchemy" in external(closure("syncengine.service"))
