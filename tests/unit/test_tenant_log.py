"""Log lines written for a tenant name it; lines outside any tenant are left as they are."""

from __future__ import annotations

import logging
import threading

import pytest

from syncengine.tenant_log import install_log_tenant, tenant_context


def test_a_line_written_for_a_tenant_starts_with_its_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_log_tenant()
    log = logging.getLogger("syncengine.test")
    with caplog.at_level(logging.WARNING, logger="syncengine.test"):
        log.warning("plain %s", "line")
        with tenant_context("acme"):
            log.warning("sync failed: %s", "source missing")

            def elsewhere() -> None:  # another thread is not in acme's context
                with tenant_context("globex"):
                    log.warning("hook batch")
                log.warning("no tenant here")

            t = threading.Thread(target=elsewhere)
            t.start()
            t.join()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["plain line", "[tenant acme] sync failed: source missing",
                        "[tenant globex] hook batch", "no tenant here"]  # fmt: skip
    assert [getattr(r, "tenant", None) for r in caplog.records] == ["", "acme", "globex", ""]
