"""The use cases of the engine, one module per job, around one :class:`Engine`.

``engine``    the one wiring point: Config -> repository, provider, call policy, seams
``ingest``    HR source -> staging snapshot
``planning``  snapshot + live directory -> saved Plan (the desired state loaded in one place)
``applying``  reviewed plan -> Exmail: apply, resume
``audit``     the audit log read back
``nightly``   the nightly ``sync`` and its report
``hooks``     the HR hook backend (receiver and worker) and ``serve``
``mail``      single sign-on, unread count, new-mail watch and forwarding
``demo``      the README's first command
``admin``     database status, migrations, run locks
``emulator``  the ``syncengine emulator`` command

The CLI, the hook receiver and the benchmarks call these; nothing else builds a provider, a
connector or a database session from the configuration.

Importing this package is cheap: each name is imported from its module on first use (module
``__getattr__``), so ``syncengine --help`` and ``audit`` do not pay for the hook server,
the demo or the emulator.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncengine.service.admin import db_current, db_unlock, db_upgrade, lock_holder
    from syncengine.service.applying import (
        APPLY_LOCK,
        ApplyFailure,
        ApplyOutcome,
        ApplyReport,
        apply_plan,
        password_file_path,
        plan_and_apply,
        resume_apply,
    )
    from syncengine.service.applying_file import apply_plan_file
    from syncengine.service.audit import query_audit
    from syncengine.service.check import ExmailCheck, check_exmail
    from syncengine.service.demo import DEMO_MARKER, DemoResult, demo, samples_dir
    from syncengine.service.emulator import EmulatorStart, run_emulator
    from syncengine.service.engine import (
        Engine,
        build_provider,
        config_fingerprint,
        config_secrets,
        open_staging,
    )
    from syncengine.service.hooks import (
        HOOK_ACTOR_MAX,
        HookBackend,
        HookBatch,
        HookEventView,
        ServeStart,
        hook_actor,
        list_hook_events,
        serve,
    )
    from syncengine.service.ingest import IngestReport, ingest
    from syncengine.service.mail import (
        ForwardedMail,
        forward_mail,
        mail_count,
        sso_login_url,
        sso_url,
        watch_mail,
    )
    from syncengine.service.nightly import (
        SYNC_LOCK,
        PlannedAction,
        SyncProgress,
        SyncReport,
        sync,
        write_report,
    )
    from syncengine.service.plan_file import read_plan_file
    from syncengine.service.planning import (
        PlanResult,
        SnapshotView,
        checkpoint_rows,
        diff_knowing_groups,
        load_snapshot_view,
        make_plan,
        save_plan,
    )
    from syncengine.service.review_pages import check_only, render_plan, show_plan
    from syncengine.service.staging_sink import StagingSink
    from syncengine.service.sync_checks import report_path

_WHERE: dict[str, str] = {
    "db_current": "admin",
    "db_unlock": "admin",
    "db_upgrade": "admin",
    "lock_holder": "admin",
    "APPLY_LOCK": "applying",
    "ApplyFailure": "applying",
    "ApplyOutcome": "applying",
    "ApplyReport": "applying",
    "StagingSink": "staging_sink",
    "apply_plan": "applying",
    "apply_plan_file": "applying_file",
    "password_file_path": "applying",
    "plan_and_apply": "applying",
    "query_audit": "audit",
    "read_plan_file": "plan_file",
    "resume_apply": "applying",
    "ExmailCheck": "check",
    "check_exmail": "check",
    "DEMO_MARKER": "demo",
    "DemoResult": "demo",
    "demo": "demo",
    "samples_dir": "demo",
    "EarlyRead": "early_read",
    "early_read_for_sync": "early_read",
    "EmulatorStart": "emulator",
    "run_emulator": "emulator",
    "Engine": "engine",
    "build_provider": "engine",
    "config_fingerprint": "engine",
    "config_secrets": "engine",
    "open_staging": "engine",
    "HOOK_ACTOR_MAX": "hooks",
    "HookBackend": "hooks",
    "HookBatch": "hooks",
    "HookEventView": "hooks",
    "ServeStart": "hooks",
    "hook_actor": "hooks",
    "list_hook_events": "hooks",
    "serve": "hooks",
    "IngestReport": "ingest",
    "ingest": "ingest",
    "ForwardedMail": "mail",
    "forward_mail": "mail",
    "mail_count": "mail",
    "sso_login_url": "mail",
    "sso_url": "mail",
    "watch_mail": "mail",
    "PlannedAction": "nightly",
    "SYNC_LOCK": "nightly",
    "SyncProgress": "nightly",
    "SyncReport": "nightly",
    "report_path": "sync_checks",
    "sync": "nightly",
    "write_report": "nightly",
    "PlanResult": "planning",
    "SnapshotView": "planning",
    "checkpoint_rows": "planning",
    "diff_knowing_groups": "planning",
    "load_snapshot_view": "planning",
    "make_plan": "planning",
    "save_plan": "planning",
    "check_only": "review_pages",
    "render_plan": "review_pages",
    "show_plan": "review_pages",
}
"""Each public name and the module of this package that defines it."""

__all__ = [
    "APPLY_LOCK",
    "DEMO_MARKER",
    "HOOK_ACTOR_MAX",
    "SYNC_LOCK",
    "ApplyFailure",
    "ApplyOutcome",
    "ApplyReport",
    "DemoResult",
    "EarlyRead",
    "EmulatorStart",
    "Engine",
    "ExmailCheck",
    "ForwardedMail",
    "HookBackend",
    "HookBatch",
    "HookEventView",
    "IngestReport",
    "PlanResult",
    "PlannedAction",
    "ServeStart",
    "SnapshotView",
    "StagingSink",
    "SyncProgress",
    "SyncReport",
    "apply_plan",
    "apply_plan_file",
    "build_provider",
    "check_exmail",
    "check_only",
    "checkpoint_rows",
    "config_fingerprint",
    "config_secrets",
    "db_current",
    "db_unlock",
    "db_upgrade",
    "demo",
    "diff_knowing_groups",
    "early_read_for_sync",
    "forward_mail",
    "hook_actor",
    "ingest",
    "list_hook_events",
    "load_snapshot_view",
    "lock_holder",
    "mail_count",
    "make_plan",
    "open_staging",
    "password_file_path",
    "plan_and_apply",
    "query_audit",
    "read_plan_file",
    "render_plan",
    "report_path",
    "resume_apply",
    "run_emulator",
    "samples_dir",
    "save_plan",
    "serve",
    "show_plan",
    "sso_login_url",
    "sso_url",
    "sync",
    "watch_mail",
    "write_report",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from syncengine.importing import loading

    with loading():  # a use case's first use imports its module (and what it needs)
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


class _Package(types.ModuleType):
    """This package, keeping ``service.ingest`` and ``service.demo`` the use cases.

    Importing a submodule makes the import system set it as an attribute of its package;
    for ``ingest`` and ``demo``, the module and the use case share a name, and the module
    would hide the function (``service.ingest(engine)``: "'module' object is not
    callable"). The eager imports this package had rebound the function afterwards; here
    the attribute keeps the use case, and the module stays in ``sys.modules``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        module = _WHERE.get(name)
        if isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{module}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
