"""Start-up: heavy libraries are imported only by the commands that use them.

Each check runs in a fresh interpreter (``sys.modules`` of the test process already holds
everything), the way a user's shell starts ``syncengine``. Timings are ``bench/startup.py``'s
job; these tests pin what makes them: which modules a command loads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from syncengine.emulator.harness import RunningEmulator
from tests.e2e.test_apply_support import ApplyEnv, base_rows, people

REPO = Path(__file__).resolve().parents[2]

HEAVY = ("alembic", "pypinyin", "openpyxl", "ldap3", "starlette", "uvicorn", "python_calamine")
"""Libraries only some commands need: migrations, address generation, spreadsheet and LDAP
sources, the hook server and the emulator."""

PROBE = """
import atexit, json, sys
def _report():
    tops = sorted({name.split(".")[0] for name in sys.modules})
    sys.stderr.write("\\nMODULES " + json.dumps(tops) + "\\n")
atexit.register(_report)
sys.argv = ["syncengine", *json.loads(sys.argv[1])]
from syncengine.cli import main
main()
"""


def loaded_by(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run the CLI with ``args`` in a new interpreter; its result and the top-level packages
    it had imported when it exited."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "SYNCENGINE_CONFIG": "", "HOME": str(cwd)},
    )
    marker = done.stderr.rfind("\nMODULES ")
    assert marker >= 0, done.stderr
    return done, set(json.loads(done.stderr[marker + len("\nMODULES ") :].splitlines()[0]))


def test_importing_the_cli_imports_no_heavy_library(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, syncengine.cli; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    loaded = set(json.loads(done.stdout))
    assert "syncengine" in loaded  # the probe did import it
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    # --help needs click alone: not the database layer, not the HTTP client, not pydantic.
    assert loaded.isdisjoint({"sqlalchemy", "httpx", "pydantic", "jinja2"}), sorted(
        loaded & {"sqlalchemy", "httpx", "pydantic", "jinja2"}
    )


def test_help_loads_no_config_model_and_no_database_layer(tmp_path: Path) -> None:
    done, loaded = loaded_by(["--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout
    assert loaded.isdisjoint({*HEAVY, "sqlalchemy", "httpx", "pydantic"}), sorted(
        loaded & {*HEAVY, "sqlalchemy", "httpx", "pydantic"}
    )


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    """A config folder whose SQLite database is at the code's head (``db upgrade`` ran)."""
    shutil.copy(REPO / "samples" / "syncengine.toml", tmp_path / "syncengine.toml")
    shutil.copy(REPO / "samples" / "hr-export.csv", tmp_path / "hr-export.csv")
    shutil.copy(REPO / "samples" / "departments.csv", tmp_path / "departments.csv")
    done, loaded = loaded_by(["--config", "syncengine.toml", "db", "upgrade"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "alembic" in loaded  # migrating is what Alembic is imported for
    return tmp_path


def test_audit_on_a_migrated_database_loads_neither_alembic_nor_the_apply_path(
    migrated: Path,
) -> None:
    done, loaded = loaded_by(["--config", "syncengine.toml", "audit", "--limit", "1"], migrated)
    assert done.returncode == 0, done.stderr
    assert "no audit rows match" in done.stdout
    assert "sqlalchemy" in loaded  # it did open the database
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_a_new_sqlite_database_is_still_created_on_first_use(tmp_path: Path) -> None:
    """The lazy Alembic import must not lose the "new SQLite file is migrated on the spot"
    rule: ``audit`` on a brand-new database creates the schema and answers."""
    shutil.copy(REPO / "samples" / "syncengine.toml", tmp_path / "syncengine.toml")
    done, loaded = loaded_by(["--config", "syncengine.toml", "audit"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no audit rows match" in done.stdout
    assert "alembic" in loaded
    done, _ = loaded_by(["--config", "syncengine.toml", "db", "current", "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["up_to_date"] is True


def test_a_csv_ingest_loads_only_the_csv_connector(migrated: Path) -> None:
    """Entry points are looked up by name and only the configured one is loaded: a CSV
    source does not import the LDAP, Excel or SQL connectors' libraries."""
    done, loaded = loaded_by(["--config", "syncengine.toml", "ingest"], migrated)
    assert done.returncode == 0, done.stderr
    assert "Read " in done.stdout
    assert loaded.isdisjoint({"ldap3", "python_calamine", "openpyxl", "starlette", "uvicorn"}), (
        sorted(loaded & {"ldap3", "python_calamine", "openpyxl", "starlette", "uvicorn"})
    )


def test_a_use_case_named_like_its_module_stays_the_use_case() -> None:
    """``service.ingest`` and ``service.demo`` are functions even after their modules were
    imported by name (the import system sets a submodule on its package)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import syncengine.service.ingest, syncengine.service.demo\n"
            "from syncengine import service\n"
            "print(callable(service.ingest), callable(service.demo), "
            "service.ingest.__module__, service.demo.__module__)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "True",
        "True",
        "syncengine.service.ingest",
        "syncengine.service.demo",
    ]


@pytest.mark.parametrize(("api", "other"), [("v2", "exmail_v1"), ("v1", "exmail_v2")])
def test_a_provider_loads_only_its_own_generation(api: str, other: str, tmp_path: Path) -> None:
    """The Gen 1 client (and its directory reader) cost a Gen 2 night ~0.3 s when the engine
    imported it just to ask ``isinstance``; each night loads the client it talks to."""
    probe = (
        "import json, sys\n"
        "from syncengine.config import parse_config\n"
        "from syncengine.service.engine import Engine\n"
        "provider = Engine(parse_config(json.loads(sys.argv[1]))).provider\n"
        "print(type(provider).__module__)\n"
        "print(sorted(m for m in sys.modules if m.startswith('syncengine.providers.')))\n"
    )
    config = {
        "exmail": {
            "api": api,
            "corp_id": "c",
            "client_id": "c",
            "client_secret": "s",
            "secrets": {"contacts": "s"},
            "domains": ["example.com"],
        },
        "database": {"url": f"sqlite:///{tmp_path / 'staging.db'}"},
    }
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    built, loaded = done.stdout.splitlines()
    assert built == f"syncengine.providers.exmail_{api}"
    assert f"syncengine.providers.{other}" not in loaded, loaded


def test_a_text_report_does_not_load_the_page_templates() -> None:
    """Every sync ends with a text report (its headline is ``render.summary_line``); the
    catalogues it needs live apart from the plan page, so jinja2 (~30 ms) stays unloaded."""
    probe = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from syncengine import plan, render\n"
        "p = plan.make_plan(created_at=datetime.now(UTC), config_fingerprint='',\n"
        "                   state_fingerprint='', actions=[])\n"
        "print(render.summary_line(p, None))\n"
        "print('jinja2' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    line, jinja = done.stdout.splitlines()
    assert line and jinja == "False"


NOT_ON_A_QUIET_NIGHT = ("smtplib", "charset_normalizer", "jinja2")
"""Loaded by a night only when it needs them: the mail sender (a notification target is
configured), the encoding guesser (a file that is neither UTF-8 nor GB18030), the plan page."""


def test_a_quiet_gen2_night_without_notification_targets_loads_no_sender(
    tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    """A Gen 2 ``sync`` whose export did not change, through the real CLI in a fresh
    interpreter: the senders of :mod:`syncengine.notify` (smtplib, the e-mail message) and
    charset-normalizer stay unloaded; the night still reads, ingests and proves its plan."""
    env = ApplyEnv(tmp_path, emulator_factory("v2"))
    env.write(base_rows() + people(5))
    for night in ("adopts", "plans in full", "is proved unchanged"):
        done, loaded = loaded_by(["--config", str(env.config_path), "sync", "--json"], tmp_path)
        assert done.returncode == 0, (night, done.stderr)
    report = json.loads(done.stdout[: done.stdout.rfind("}") + 1])
    assert report["plan"]["proved_unchanged"] is True
    assert report["snapshot"]["source_unchanged"] is True
    assert "sqlalchemy" in loaded and "pycurl" in loaded
    assert loaded.isdisjoint({*HEAVY, *NOT_ON_A_QUIET_NIGHT}), sorted(
        loaded & {*HEAVY, *NOT_ON_A_QUIET_NIGHT}
    )
