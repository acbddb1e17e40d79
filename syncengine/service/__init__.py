"""The use cases of the engine, one module per job, around one :class:`Engine`.

``engine``    the one wiring point: Config -> repository, provider, call policy, seams
``ingest``    HR source -> staging snapshot
``planning``  snapshot + live directory -> saved Plan (the desired state loaded in one place)
``applying``  reviewed plan -> Exmail: apply, resume, audit
``nightly``   the nightly ``sync`` and its report
``hooks``     the HR hook backend (receiver and worker) and ``serve``
``mail``      single sign-on, unread count, new-mail watch and forwarding
``demo``      the README's first command
``admin``     database status, migrations, run locks
``emulator``  the ``syncengine emulator`` command

The CLI, the hook receiver and the benchmarks call these; nothing else builds a provider, a
connector or a database session from the configuration.
"""

from __future__ import annotations

from syncengine.service.admin import db_current, db_unlock, db_upgrade, lock_holder
from syncengine.service.applying import (
    APPLY_LOCK,
    ApplyFailure,
    ApplyOutcome,
    ApplyReport,
    StagingSink,
    apply_plan,
    password_file_path,
    plan_and_apply,
    query_audit,
    read_plan_file,
    resume_apply,
)
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
    report_path,
    sync,
    write_report,
)
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

__all__ = [
    "APPLY_LOCK",
    "DEMO_MARKER",
    "HOOK_ACTOR_MAX",
    "SYNC_LOCK",
    "ApplyFailure",
    "ApplyOutcome",
    "ApplyReport",
    "DemoResult",
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
