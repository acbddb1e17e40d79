"""Seeding the emulator's directory and its state file (dump and restore).

Functions of a :class:`~syncengine.emulator.model.Directory`, called by it under its lock.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncengine.emulator.records import (
    APPS,
    ROOT_ID,
    SEED_GROUP_KEYS,
    SEED_USER_KEYS,
    ApiError,
    Dept,
    Group,
    SeedError,
    SsoKey,
    Token,
    User,
    check_keys,
    norm_email,
)

if TYPE_CHECKING:
    from syncengine.emulator.model import Directory


def apply_seed(d: Directory, seed: dict[str, Any]) -> None:
    known = {
        "corp_id",
        "secrets",
        "v1_clients",
        "domains",
        "departments",
        "users",
        "groups",
        "corp_name",
    }
    extra = sorted(set(seed) - known)
    if extra:
        raise SeedError(f"seed: unknown keys {extra} (known: {sorted(known)})")
    d.corp_id = str(seed.get("corp_id", ""))
    if not d.corp_id:
        raise SeedError("seed: corp_id is missing")
    d._id_rng = random.Random(d.corp_id)
    d.app_secrets = {str(k): str(v) for k, v in dict(seed.get("secrets", {})).items()}
    bad_apps = sorted(set(d.app_secrets) - set(APPS))
    if bad_apps:
        raise SeedError(f"seed: secrets has unknown applications {bad_apps} (known: {list(APPS)})")
    d.v1_clients = {norm_email(str(k)): str(v) for k, v in dict(seed.get("v1_clients", {})).items()}
    d.domains = [norm_email(str(d)) for d in seed.get("domains", [])]
    if not d.domains:
        raise SeedError("seed: domains is empty; list the corp's mail domains")
    d.depts = {ROOT_ID: Dept(ROOT_ID, str(seed.get("corp_name", d.corp_id)), 0, 0)}
    d.version = d._next_version()
    d.journal_start = d.version
    for i, path in enumerate(seed.get("departments", [])):
        try:
            d.ensure_path(str(path))
        except ApiError as exc:
            raise SeedError(f"seed: departments[{i}] {path!r}: {exc.message}") from None
    path_ids: dict[str, int] = {}
    for i, raw in enumerate(seed.get("users", [])):
        body = dict(raw)
        where = f"users[{i}] {body.get('userid', '?')!r}"
        check_keys(body, SEED_USER_KEYS, where)
        try:
            body["department"] = [
                seed_path(d, str(p), path_ids) for p in body.get("department", [])
            ]
            d.create_user(body)
        except ApiError as exc:
            raise SeedError(f"seed: {where}: {exc.message}") from None
    for i, raw in enumerate(seed.get("groups", [])):
        body = dict(raw)
        check_keys(body, SEED_GROUP_KEYS, f"groups[{i}]")
        body.setdefault("allow_type", 0)
        try:
            body["department"] = [
                seed_path(d, str(p), path_ids) for p in body.get("department", [])
            ]
            d.create_group(body)
        except ApiError as exc:
            raise SeedError(f"seed: groups[{i}]: {exc.message}") from None


def seed_path(d: Directory, path: str, cache: dict[str, int]) -> int:
    """A seed names departments by path; created on first mention (cached for speed)."""
    if path not in cache:
        cache[path] = d.ensure_path(path)
    return cache[path]


def dump_full(d: Directory) -> dict[str, Any]:
    """Everything, including password hashes and tokens: the state file's content."""
    with d.lock:
        return {
            "format": 1,
            "seed": d.seed,
            "corp_id": d.corp_id,
            "secrets": d.app_secrets,
            "v1_clients": d.v1_clients,
            "domains": d.domains,
            "departments": [asdict(d) for d in d.depts.values()],
            "users": [asdict(u) for u in d.users.values()],
            "groups": [asdict(g) for g in d.groups.values()],
            "journal": d.journal,
            "version": d.version,
            "journal_start": d.journal_start,
            "mail_events": d.mail_events,
            "unread": d.unread,
            "tokens": [asdict(t) for t in d.tokens.values()],
            "sso_keys": [asdict(k) for k in d.sso_keys.values()],
        }


def load_state(d: Directory, path: Path) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != 1:
            raise ValueError("unknown format")
        restore(d, data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SeedError(
            f"state file {path}: cannot be read ({exc}); delete it to start from the seed"
        ) from None


def restore(d: Directory, data: dict[str, Any]) -> None:
    """Inverse of :meth:`dump_full`."""
    d.seed = data["seed"]
    d.corp_id = data["corp_id"]
    d._id_rng = random.Random(d.corp_id + str(data["version"]))
    d.app_secrets = data["secrets"]
    d.v1_clients = data["v1_clients"]
    d.domains = data["domains"]
    d.depts = {d["id"]: Dept(**d) for d in data["departments"]}
    d.users = {u["userid"]: User(**u) for u in data["users"]}
    d.aliases = {a: u.userid for u in d.users.values() for a in u.slaves}
    d.groups = {g["groupid"]: Group(**g) for g in data["groups"]}
    d.journal = [(int(v), str(a), int(act)) for v, a, act in data["journal"]]
    d.version = int(data["version"])
    d.journal_start = int(data.get("journal_start", 0))
    d.mail_events = list(data["mail_events"])
    d.unread = {k: list(v) for k, v in data["unread"].items()}
    d.tokens = {t["token"]: Token(**t) for t in data["tokens"]}
    d.sso_keys = {k["key"]: SsoKey(**k) for k in data["sso_keys"]}
