"""Several tenants (Exmail corps) in one config, end to end: the real CLI (``--tenant``,
``sync --all``), ``serve`` as a subprocess receiving hooks for every tenant on one port, a
real SQLite file per tenant (and a real PostgreSQL schema per tenant), one emulator per corp
over real HTTP, each with its own credentials."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner, Result

from syncengine.cli import main
from syncengine.emulator.harness import RunningEmulator
from syncengine.emulator.seed import default_seed
from syncengine.errors import ConfigError
from syncengine.tenants import load_tenants
from tests.e2e.test_apply_support import COLUMNS, PYTHON, REPO, _toml, people, person
from tests.e2e.test_serve_support import body_of, hook_headers, wait_until
from tests.fixtures.databases import PostgresServer
from tests.fixtures.notify_receiver import notification_receiver

pytestmark = pytest.mark.timeout(180)

NAMES = ("acme", "globex")
REVIEW_PASSWORD = "review-password-0001"


def hook_secret(name: str) -> str:
    return f"hook-secret-of-{name}-0001"


def corp_seed(name: str) -> dict[str, Any]:
    """The default seed as another corp: its own corp id and application secrets."""
    seed = default_seed()
    seed["corp_id"] = f"ww{name}0001"
    seed["secrets"] = {app: f"{name}-{app}-secret" for app in seed["secrets"]}
    return seed


def rows_for(name: str, n: int) -> list[dict[str, str]]:
    return [
        person("E0001", "张三", "zhangsan@example.com", "研发中心/平台部", position="架构师"),
        *people(n, start=100 if name == "acme" else 500),
    ]


class TenantsEnv:
    """One folder: a config with ``[tenants.NAME]`` tables, an HR CSV per tenant, one
    emulator per tenant (its own corp)."""

    def __init__(self, root: Path, emulators: dict[str, RunningEmulator]):
        self.root = root
        self.emulators = emulators
        self.rows = {name: rows_for(name, 6) for name in emulators}
        self.tenant_extra: dict[str, dict[str, Any]] = {}
        self.shared_database = "sqlite:///{tenant}.db"
        self.shared_extra: dict[str, Any] = {}

    @property
    def config_path(self) -> Path:
        return self.root / "syncengine.toml"

    def write(self) -> None:
        shared: dict[str, Any] = {
            "database": {"url": self.shared_database},
            "mapping": {"email": "email", "departments": {"field": "departments", "split": ";"},
                        "position": "position", "status": "status"},
            "apply": {"concurrency": 4, "rate_per_second": 0, "backoff_initial": 0.01,
                      "backoff_max": 0.05, "max_attempts": 6},
            "hooks": {"coalesce_window": 0.1, "poll_interval": 0.2, "max_attempts": 2,
                      "backoff_initial": 0.1, "backoff_max": 0.2},
        }  # fmt: skip
        tenants: dict[str, Any] = {}
        for name, emu in sorted(self.emulators.items()):
            with (self.root / f"{name}.csv").open("w", encoding="utf-8", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=COLUMNS)
                w.writeheader()
                w.writerows(self.rows[name])
            own: dict[str, Any] = {
                "exmail": {**emu.exmail_config(), "timeout": 10},
                "source": {"type": "csv", "path": f"{name}.csv"},
                "hooks": {"secret": hook_secret(name)},
            }
            for table, values in self.tenant_extra.get(name, {}).items():
                own[table] = {**own.get(table, {}), **values}
            tenants[name] = own
        text = _toml({**shared, **self.shared_extra, "tenants": tenants})
        self.config_path.write_text(text, encoding="utf-8")

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config_path), *args],
                                  catch_exceptions=False)  # fmt: skip

    def mailboxes(self, name: str) -> set[str]:
        return {u["userid"].lower() for u in self.emulators[name].state()["users"]}


@pytest.fixture
def env(tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]) -> TenantsEnv:
    e = TenantsEnv(tmp_path, {n: emulator_factory("v2", corp_seed(n)) for n in NAMES})
    e.write()
    return e


def test_the_config_names_each_tenant_and_its_own_database(env: TenantsEnv) -> None:
    tenants = load_tenants(env.config_path)
    assert tenants.names == ["acme", "globex"]
    acme, globex = tenants.get("acme").config, tenants.get("globex").config
    assert acme.database_url.endswith("/acme.db") and globex.database_url.endswith("/globex.db")
    assert acme.exmail.corp_id == "wwacme0001" and globex.exmail.corp_id == "wwglobex0001"
    assert acme.apply.max_attempts == 6  # the shared [apply] table
    assert acme.tenant == "acme"


def test_a_bad_key_is_named_with_its_tenant(env: TenantsEnv) -> None:
    env.tenant_extra["globex"] = {"apply": {"concurency": 3}}
    env.write()
    with pytest.raises(ConfigError) as err:
        load_tenants(env.config_path)
    assert "[tenants.globex]" in str(err.value) and "apply.concurency" in str(err.value)


def test_two_tenants_on_one_sqlite_file_are_refused(env: TenantsEnv) -> None:
    env.tenant_extra["globex"] = {"database": {"url": "sqlite:///acme.db"}}
    env.write()
    with pytest.raises(ConfigError, match="acme and globex would share the SQLite database"):
        load_tenants(env.config_path)
    one_schema = "postgresql://sync@db.example/staging?options=-csearch_path%3Dshared"
    env.tenant_extra = {n: {"database": {"url": one_schema}} for n in NAMES}
    env.write()
    with pytest.raises(ConfigError, match="acme and globex would share the database and schema"):
        load_tenants(env.config_path)


def test_a_command_without_tenant_lists_them_and_an_unknown_one_is_refused(
    env: TenantsEnv,
) -> None:
    r = env.cli("plan")
    assert r.exit_code == 1 and "2 tenants (acme, globex)" in r.output and "--tenant" in r.output
    r = env.cli("plan", "--tenant", "initech")
    assert r.exit_code == 1 and "no such tenant" in r.output and "acme, globex" in r.output


def test_a_folder_of_configs_is_one_tenant_per_file(env: TenantsEnv, tmp_path: Path) -> None:
    folder = tmp_path / "tenants.d"
    folder.mkdir()
    for name, emu in env.emulators.items():
        data = {"exmail": emu.exmail_config(), "source": {"type": "csv", "path": f"{name}.csv"}}
        (folder / f"{name}.toml").write_text(_toml(data), encoding="utf-8")
    tenants = load_tenants(folder)
    assert tenants.names == ["acme", "globex"]
    assert tenants.get("globex").config.database_url == f"sqlite:///{folder}/globex.db"
    (folder / "Bad-Name.toml").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="tenant name 'Bad-Name' is not allowed"):
        load_tenants(folder)


def test_sync_all_converges_every_tenant_in_its_own_corp_and_database(env: TenantsEnv) -> None:
    r = env.cli("sync", "--all", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [t["tenant"] for t in out["tenants"]] == ["acme", "globex"]
    assert all(t["status"] == "succeeded" for t in out["tenants"]), out
    assert "t100@example.com" in env.mailboxes("acme")
    assert "t100@example.com" not in env.mailboxes("globex")
    assert "t500@example.com" in env.mailboxes("globex")
    assert (env.root / "acme.db").is_file() and (env.root / "globex.db").is_file()
    # each tenant's audit is in its own database
    acme_audit = env.cli("audit", "--tenant", "acme", "--json")
    assert acme_audit.exit_code == 0, acme_audit.output
    targets = {row["target"] for row in json.loads(acme_audit.stdout)}
    assert "t100@example.com" in targets and "t500@example.com" not in targets


def test_each_tenants_report_and_notification_name_it(env: TenantsEnv) -> None:
    with notification_receiver() as rx:
        env.shared_extra["notifications"] = {
            "backoff": 0.01, "backoff_max": 0.05, "attempts": 2,
            "webhooks": [{"url": rx.url, "secret": rx.secret, "name": "ops"}],
        }  # fmt: skip
        env.write()
        reports = env.root / "reports"
        reports.mkdir()
        r = env.cli("sync", "--all", "--report", str(reports / "sync-{tenant}.json"))
        assert r.exit_code == 0, r.output
        got = rx.wait_for(2)
    tenants = sorted(g.document["summary"]["tenant"] for g in got)
    assert tenants == ["acme", "globex"]
    for name in NAMES:
        assert json.loads((reports / f"sync-{name}.json").read_text())["tenant"] == name
    r = env.cli("sync", "--all", "--report", str(reports / "sync.json"))
    assert r.exit_code == 64 and "{tenant}" in r.output


def test_a_failing_tenant_does_not_stop_the_others(env: TenantsEnv) -> None:
    (env.root / "acme.csv").unlink()  # acme's HR export is missing tonight
    r = env.cli("sync", "--all")
    assert r.exit_code == 1, r.output
    lines = dict(line.split(": ", 1) for line in r.output.strip().splitlines())
    assert lines["acme"].startswith("sync FAILED") and "acme.csv" in lines["acme"]
    assert lines["globex"].startswith("sync succeeded"), r.output
    assert "t500@example.com" in env.mailboxes("globex")


def test_a_plan_of_one_tenant_is_refused_by_another(env: TenantsEnv) -> None:
    assert env.cli("ingest", "--tenant", "acme").exit_code == 0
    plan = env.root / "acme-plan.json"
    r = env.cli("--tenant", "acme", "plan", "--out", str(plan))
    assert r.exit_code in (0, 2, 3), r.output
    assert json.loads(plan.read_text(encoding="utf-8"))["tenant"] == "acme"
    before = env.mailboxes("globex")
    r = env.cli("apply", str(plan), "--yes", "--tenant", "globex")
    assert r.exit_code == 1, r.output
    assert "the plan was made for tenant 'acme', this is tenant 'globex'" in r.output
    assert env.mailboxes("globex") == before


def test_an_edited_tenant_in_a_plan_breaks_its_checksum(env: TenantsEnv) -> None:
    assert env.cli("ingest", "--tenant", "acme").exit_code == 0
    plan = env.root / "acme-plan.json"
    r = env.cli("--tenant", "acme", "plan", "--out", str(plan))
    assert r.exit_code in (0, 2, 3), r.output
    plan.write_text(plan.read_text(encoding="utf-8").replace('"acme"', '"globex"'), "utf-8")
    r = env.cli("apply", str(plan), "--yes", "--tenant", "globex")
    assert r.exit_code == 1, r.output
    assert "checksum" in r.output


# --- serve for every tenant on one port --------------------------------------------------------


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], base_url: str):
        self.proc = proc
        self.client = httpx.Client(base_url=base_url, timeout=10)

    def post(self, tenant: str, document: dict[str, Any], secret: str) -> httpx.Response:
        body = body_of(document)
        return self.client.post(f"/hooks/hr/{tenant}", content=body,
                                headers=hook_headers(body, secret=secret))  # fmt: skip

    def event(self, tenant: str, event_id: int) -> dict[str, Any]:
        path = f"/hooks/events/{event_id}"
        r = self.client.get(
            f"/tenants/{tenant}{path}",
            headers=hook_headers(path.encode(), secret=hook_secret(tenant)),
        )
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data


@pytest.fixture
def served(env: TenantsEnv) -> Iterator[Served]:
    env.tenant_extra["acme"] = {
        "review": {
            "lang": "en",
            "secure_cookies": False,
            "approvers": [
                {"name": "wang.hr", "password_hash": PasswordHasher().hash(REVIEW_PASSWORD)}
            ],
        }
    }
    env.write()
    assert env.cli("sync", "--all").exit_code == 0
    proc = subprocess.Popen(
        [str(Path(PYTHON).parent / "syncengine"), "--config", str(env.config_path),
         "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=env.root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    match = re.search(r"listening on (http://\S+) for 2 tenants", line)
    assert match, line + (proc.stderr.read().decode() if proc.poll() is not None else "")
    s = Served(proc, match.group(1))
    try:
        yield s
    finally:
        s.client.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def hire(delivery: str, eid: str, email: str) -> dict[str, Any]:
    return {"kind": "upsert", "delivery_id": delivery,
            "person": person(eid, "新员工", email, "研发中心")}  # fmt: skip


def test_serve_takes_each_tenants_hooks_with_its_own_secret_only(
    env: TenantsEnv, served: Served
) -> None:
    doc = hire("d-1", "N0001", "newhire@example.com")
    # acme's secret on globex's hook: refused, nothing stored or written anywhere
    r = served.post("globex", doc, hook_secret("acme"))
    assert r.status_code == 401, r.text
    r = served.post("acme", doc, hook_secret("acme"))
    assert r.status_code == 202, r.text
    event_id = r.json()["id"]
    wait_until("acme's event applied",
               lambda: served.event("acme", event_id)["status"] != "received")  # fmt: skip
    assert served.event("acme", event_id)["status"] == "applied"
    assert "newhire@example.com" in env.mailboxes("acme")
    assert "newhire@example.com" not in env.mailboxes("globex")
    # the id belongs to acme's queue, not globex's (signed with globex's secret: 404)
    path = f"/hooks/events/{event_id}"
    r = served.client.get(
        f"/tenants/globex{path}", headers=hook_headers(path.encode(), secret=hook_secret("globex"))
    )
    assert r.status_code == 404, r.text
    assert served.client.post("/hooks/hr/initech", content=b"{}").status_code == 404
    assert served.client.post("/hooks/hr", content=b"{}").status_code == 404
    metrics = served.client.get("/metrics").text
    assert 'syncengine_hook_requests_total{code="401",tenant="globex"} 1' in metrics
    assert 'syncengine_hook_requests_total{code="202",tenant="acme"} 1' in metrics
    assert metrics.count("# TYPE syncengine_hook_requests_total counter") == 1
    # acme's review pages live under its prefix: links, redirects and cookies carry it
    page = served.client.get("/tenants/acme/review/login")
    assert page.status_code == 200 and 'action="/tenants/acme/review/login"' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None, page.text
    login = served.client.post(
        "/tenants/acme/review/login",
        data={"name": "wang.hr", "password": REVIEW_PASSWORD, "csrf": csrf.group(1)},
    )
    assert login.status_code == 303, login.text
    assert login.headers["location"] == "/tenants/acme/review/"
    assert "Path=/tenants/acme/review" in login.headers["set-cookie"]
    home = served.client.get("/tenants/acme/review/")
    assert home.status_code == 200 and "/tenants/acme/review/logout" in home.text
    assert served.client.get("/tenants/globex/review/login").status_code == 404  # none there
    health = served.client.get("/healthz").json()
    assert set(health["tenants"]) == {"acme", "globex"} and health["status"] == "ok"


def test_one_tenants_failing_exmail_does_not_hold_up_anothers_hooks(
    env: TenantsEnv, served: Served
) -> None:
    env.emulators["acme"].close()  # acme's Exmail is gone
    started = time.monotonic()
    r = served.post("acme", hire("a-1", "N0002", "a1@example.com"), hook_secret("acme"))
    assert r.status_code == 202, r.text
    r = served.post("globex", hire("g-1", "N0003", "g1@example.com"), hook_secret("globex"))
    assert r.status_code == 202, r.text
    gid = r.json()["id"]
    wait_until("globex's event applied",
               lambda: served.event("globex", gid)["status"] == "applied", 30)  # fmt: skip
    assert time.monotonic() - started < 30
    assert "g1@example.com" in env.mailboxes("globex")


# --- PostgreSQL: one schema per tenant in one database ------------------------------------------


@pytest.mark.postgres
def test_postgresql_keeps_each_tenant_in_its_own_schema(
    env: TenantsEnv, postgres_server: PostgresServer
) -> None:
    name = f"tenants_{uuid.uuid4().hex[:10]}"
    url = postgres_server.create_database(name)
    try:
        env.shared_database = url
        env.write()
        r = env.cli("plan", "--tenant", "acme")
        assert r.exit_code == 1 and "db upgrade" in r.output, r.output  # not made on the fly
        r = env.cli("db", "upgrade", "--all")
        assert r.exit_code == 0, r.output
        assert "acme: database upgraded from empty" in r.output
        assert "globex: database upgraded from empty" in r.output
        r = env.cli("sync", "--all")
        assert r.exit_code == 0, r.output
        assert "t100@example.com" in env.mailboxes("acme")
        assert "t500@example.com" in env.mailboxes("globex")
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
            schemas = {
                row[0]
                for row in conn.execute(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = 'runs'"
                )
            }
            assert schemas == {"tenant_acme", "tenant_globex"}
            kinds = {
                schema: [row[0] for row in conn.execute(
                    f'SELECT kind FROM "{schema}".runs ORDER BY id')]  # type: ignore[arg-type]
                for schema in schemas
            }  # fmt: skip
            assert kinds["tenant_acme"] and kinds["tenant_globex"]
            for schema in schemas:
                links = conn.execute(f"SELECT count(*) FROM {schema}.identity_links").fetchone()
                assert links is not None and links[0] > 0, schema
        r = env.cli("db", "current", "--tenant", "globex", "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["up_to_date"], r.output
    finally:
        postgres_server.drop_database(name)
