"""The control API, the state file, seeds and the server helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from syncengine.emulator import EmulatorOptions, create_app, default_seed, start_in_thread
from syncengine.emulator.harness import RunningEmulator
from syncengine.emulator.seed import load_seed_file
from tests.fixtures.emulator import RawV1, RawV2

pytestmark = pytest.mark.timeout(60)

Factory = Callable[..., RunningEmulator]
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "emulator-seed.json"


def test_control_api_off_is_404_and_api_still_works() -> None:
    server = start_in_thread(create_app("v2", None, EmulatorOptions(control=False)))
    try:
        with httpx.Client(base_url=server.base_url) as http:
            for path in ("/_emulator/state", "/_emulator/calls"):
                assert http.get(path).status_code == 404
            assert http.post("/_emulator/seed", json=default_seed()).status_code == 404
            token = http.get(
                "/cgi-bin/gettoken",
                params={
                    "corpid": "wwdemo0001",
                    "corpsecret": default_seed()["secrets"]["contacts"],
                },
            )
            assert token.json()["errcode"] == 0
    finally:
        server.stop()


def test_state_file_survives_restart(emulator_factory: Factory, tmp_path: Path) -> None:
    state_file = tmp_path / "exmail-state.json"
    emu = emulator_factory("v2", state_file=str(state_file))
    raw = RawV2(emu)
    dept = raw.post("department/create", {"name": "持久部", "parentid": 1})["id"]
    raw.post(
        "user/create",
        {
            "userid": "kept@example.com",
            "name": "留",
            "department": [dept],
            "password": "Init#2026pass",
        },
    )
    emu.deliver_mail("kept@example.com")
    port = emu.port
    emu.restart()
    assert emu.port == port
    assert raw.get("user/get", userid="kept@example.com")["department"] == [dept]  # old token
    assert raw.get("mail/newcount", app="mail", userid="kept@example.com")["count"] == 1
    assert "password" not in state_file.read_text(encoding="utf-8").replace("password_hash", "")
    assert "Init#2026pass" not in state_file.read_text(encoding="utf-8")
    raw.close()


def test_restart_without_state_file_starts_from_the_seed(emulator_factory: Factory) -> None:
    emu = emulator_factory("v1")
    raw = RawV1(emu)
    raw.write("user/sync", {"action": "1", "alias": "lisi@example.com"})
    emu.restart()
    raw._token = None
    assert raw.json("user/get", {"alias": "lisi@example.com"})["Name"] == "李四"
    raw.close()


def test_reseed_replace_and_reset(raw_v2: RawV2) -> None:
    seed = default_seed()
    seed["users"] = seed["users"][:1]
    seed["groups"] = []
    raw_v2.emu.reseed(seed)
    raw_v2.tokens.clear()
    assert [u["userid"] for u in raw_v2.emu.state()["users"]] == ["admin@example.com"]
    raw_v2.emu.control("POST", "reset")
    assert len(raw_v2.emu.state()["users"]) == 1  # reset goes back to the last seed
    raw_v2.emu.reseed(default_seed())


def test_a_bad_seed_is_refused_and_the_state_kept(raw_v2: RawV2) -> None:
    seed = default_seed()
    seed["users"][2]["slaves"] = [f"a{i}@example.com" for i in range(6)]
    response = raw_v2.emu._http.post("/_emulator/seed", json=seed)
    assert response.status_code == 400
    assert "users[2]" in response.json()["error"]
    assert len(raw_v2.emu.state()["users"]) == 6
    typo = raw_v2.emu._http.post("/_emulator/seed", json={**default_seed(), "userz": []})
    assert typo.status_code == 400 and "userz" in typo.json()["error"]


def test_faults_endpoint_validates(raw_v2: RawV2) -> None:
    bad = raw_v2.emu._http.post("/_emulator/faults", json={"fail_rat": 1})
    assert bad.status_code == 400 and "fail_rat" in bad.json()["error"]
    out_of_range = raw_v2.emu._http.post("/_emulator/faults", json={"drop_rate": 2})
    assert out_of_range.status_code == 400
    current = raw_v2.emu.control("POST", "faults", {"latency_ms": 5, "seed": 3})
    assert current["latency_ms"] == 5


def test_call_log_counts_since_and_clear(raw_v2: RawV2) -> None:
    raw_v2.get("user/get", userid="lisi@example.com")
    raw_v2.get("user/get", userid="ghost@example.com")
    raw_v2.emu.state()  # control calls are not logged
    calls = raw_v2.emu.calls()
    assert [(c["endpoint"], c["method"], c["status"], c["errcode"]) for c in calls] == [
        ("/cgi-bin/gettoken", "GET", 200, 0),
        ("/cgi-bin/user/get", "GET", 200, 0),
        ("/cgi-bin/user/get", "GET", 200, 60111),
    ]
    assert raw_v2.emu.call_counts() == {"/cgi-bin/gettoken": 1, "/cgi-bin/user/get": 2}
    assert len(raw_v2.emu.calls(since=calls[1]["seq"])) == 1
    raw_v2.emu.clear_calls()
    assert raw_v2.emu.calls() == [] and raw_v2.emu.call_counts() == {}


def test_mail_to_an_unknown_mailbox_is_404(raw_v2: RawV2) -> None:
    response = raw_v2.emu._http.post("/_emulator/mail", json={"to": "ghost@example.com"})
    assert response.status_code == 404


def test_state_hides_secrets(raw_v2: RawV2) -> None:
    text = json.dumps(raw_v2.emu.state(), ensure_ascii=False)
    assert "password" not in text and "Init#2026pass" not in text
    assert raw_v2.emu.seed["secrets"]["contacts"] not in text


def test_exmail_config_tables(emulator: RunningEmulator) -> None:
    table = emulator.exmail_config()
    assert table["api"] == emulator.api and table["base_url"] == emulator.base_url
    assert table["domains"] == ["example.com"]
    if emulator.api == "v2":
        assert table["corp_id"] == "wwdemo0001" and set(table["secrets"]) >= {"contacts"}
    else:
        assert table["client_id"] == "admin@example.com" and len(table["client_secret"]) == 32


def test_sample_seed_file_is_the_default_seed_and_loads(emulator_factory: Factory) -> None:
    assert load_seed_file(SAMPLE) == default_seed()
    emu = emulator_factory("v2", load_seed_file(SAMPLE))
    assert len(emu.state()["users"]) == 6


def test_toml_seed(tmp_path: Path) -> None:
    path = tmp_path / "seed.toml"
    path.write_text(
        'corp_id = "wwtoml"\ndomains = ["t.example"]\n'
        'departments = ["甲", "甲/乙"]\n[secrets]\ncontacts = "s"\n',
        encoding="utf-8",
    )
    seed = load_seed_file(path)
    server = start_in_thread(create_app("v2", seed, EmulatorOptions(control=True)))
    try:
        state = httpx.get(server.base_url + "/_emulator/state").json()
        assert [d["path"] for d in state["departments"]] == ["", "甲", "甲/乙"]
    finally:
        server.stop()
