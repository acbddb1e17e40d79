"""The client against the emulator's alternative readings, call by call (over real HTTP).

Each reading the sources leave open is an emulator option; the full-sync and mail-watch runs
under each live in ``tests/e2e/test_sync_readings.py`` and ``test_mail_watch_readings.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from syncengine import service
from syncengine.config import parse_config
from syncengine.emulator.harness import RunningEmulator
from syncengine.providers.tokens import PROCESS_TOKENS

TOKEN_ENDPOINT = {"v1": "/cgi-bin/token", "v2": "/cgi-bin/gettoken"}


def _config(emu: RunningEmulator, tmp_path: Path, **hooks: Any) -> Any:
    return parse_config({"exmail": emu.exmail_config(),
                         "database": {"url": f"sqlite:///{tmp_path / 'staging.db'}"},
                         "hooks": hooks})  # fmt: skip


@pytest.mark.parametrize(
    ("api", "answer"),
    [("v1", "errcode"), ("v1", "error"), ("v1", "http401"), ("v2", "errcode"), ("v2", "http401")],
)
def test_a_refused_token_is_refreshed_and_the_call_sent_once_more(
    api: str, answer: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory(api, invalid_token_answer=answer)
    with closing(service.build_provider(_config(emu, tmp_path))) as provider:
        assert provider.get_user("lisi@example.com") is not None
        emu.expire_tokens()
        assert provider.get_user("lisi@example.com") is not None
    assert emu.call_counts()[TOKEN_ENDPOINT[api]] == 2
    gets = [c for c in emu.calls() if c["endpoint"].endswith("user/get")]
    assert len(gets) == 3  # the refused one and its single retry


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_sso_links_reuse_the_process_tokens(
    api: str, tmp_path: Path, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    """Five links, one token per application (Gen 2: contacts + sso; Gen 1: one)."""
    emu = emulator_factory(api)
    config = _config(emu, tmp_path, sso={"allow_unmanaged": True})
    urls = set()
    for _ in range(5):  # serve makes an engine per portal link; so does this
        with closing(service.Engine(config)) as engine:
            urls.add(service.sso_url(engine, "lisi@example.com"))
    assert len(urls) == 5  # each link is fresh
    assert emu.call_counts()[TOKEN_ENDPOINT[api]] == (2 if api == "v2" else 1)
    # A refused shared token is dropped for every provider of the process.
    emu.expire_tokens()
    with closing(service.Engine(config)) as engine:
        assert service.sso_url(engine, "lisi@example.com")
    assert emu.call_counts()[TOKEN_ENDPOINT[api]] == (4 if api == "v2" else 2)
    assert "S3cr3t" not in repr(PROCESS_TOKENS)


@pytest.mark.parametrize(
    ("name", "value", "bad"),
    [("listen_ver", "separate", "sometimes"), ("user_mod", "reset", "wipe"),
     ("dept_visible_after", 1.5, -1), ("invalid_token_answer", "error", "teapot"),
     ("newcount_dates", "required", "maybe")],
)  # fmt: skip
def test_each_reading_is_a_control_api_option(
    name: str, value: object, bad: object, emulator_factory: Callable[..., RunningEmulator]
) -> None:
    emu = emulator_factory("v1")
    emu.set_faults(**{name: value})
    assert emu.control("GET", "faults")[name] == value
    with pytest.raises(RuntimeError, match="HTTP 400"):
        emu.set_faults(**{name: bad})
    emu.reset()  # back to the starting option
    assert emu.control("GET", "faults")[name] != value
