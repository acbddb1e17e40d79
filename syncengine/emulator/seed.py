"""Seeds: the built-in demo directory, and reading a seed file (JSON or TOML).

The demo credentials are fixed and public on purpose (they only open the local emulator), so
the README, samples and tests can name them.
"""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

DEMO_CORP_ID = "wwdemo0001"
DEMO_SECRETS = {
    "contacts": "demo-contacts-secret-0001",
    "sso": "demo-sso-secret-0001",
    "mail": "demo-mail-secret-0001",
    "log": "demo-log-secret-0001",
    "settings": "demo-settings-secret-0001",
}
DEMO_V1_CLIENT = "admin@example.com"
DEMO_V1_SECRET = "0123456789abcdef0123456789abcdef"
DEMO_PASSWORD = "Init#2026pass"

_DEFAULT: dict[str, Any] = {
    "corp_id": DEMO_CORP_ID,
    "corp_name": "示例科技",
    "secrets": DEMO_SECRETS,
    "v1_clients": {DEMO_V1_CLIENT: DEMO_V1_SECRET},
    "domains": ["example.com"],
    "departments": [
        "研发中心",
        "研发中心/平台部",
        "研发中心/移动部",
        "市场部",
        "人力资源部",
    ],
    "users": [
        {
            "userid": "admin@example.com",
            "name": "系统管理员",
            "department": [],
            "extid": "",
            "slaves": [],
            "enable": 1,
            "position": "管理员",
            "mobile": "",
            "tel": "",
            "gender": "0",
            "password": DEMO_PASSWORD,
        },
        {
            "userid": "hr-shared@example.com",
            "name": "人力资源共享邮箱",
            "department": ["人力资源部"],
            "extid": "",
            "slaves": ["hr@example.com"],
            "enable": 1,
            "position": "",
            "mobile": "",
            "tel": "",
            "gender": "0",
            "password": DEMO_PASSWORD,
        },
        {
            "userid": "zhangsan@example.com",
            "name": "张三",
            "department": ["研发中心/平台部"],
            "extid": "E0001",
            "slaves": ["san.zhang@example.com"],
            "enable": 1,
            "position": "高级工程师",
            "mobile": "13800000001",
            "tel": "010-62000001",
            "gender": "1",
            "password": DEMO_PASSWORD,
        },
        {
            "userid": "lisi@example.com",
            "name": "李四",
            "department": ["研发中心/移动部"],
            "extid": "E0002",
            "slaves": [],
            "enable": 1,
            "position": "工程师",
            "mobile": "13800000002",
            "tel": "",
            "gender": "2",
            "password": DEMO_PASSWORD,
        },
        {
            "userid": "wangwu@example.com",
            "name": "王五",
            "department": ["市场部"],
            "extid": "E0003",
            "slaves": [],
            "enable": 1,
            "position": "市场经理",
            "mobile": "",
            "tel": "",
            "gender": "1",
            "password": DEMO_PASSWORD,
        },
        {
            "userid": "zhaoliu@example.com",
            "name": "赵六",
            "department": ["人力资源部"],
            "extid": "E0004",
            "slaves": [],
            "enable": 0,
            "position": "",
            "mobile": "",
            "tel": "",
            "gender": "2",
            "password": DEMO_PASSWORD,
        },
    ],
    "groups": [
        {
            "groupid": "all@example.com",
            "groupname": "全员",
            "userlist": ["zhangsan@example.com", "lisi@example.com", "wangwu@example.com"],
        },
    ],
}


def default_seed() -> dict[str, Any]:
    """The built-in demo directory (a fresh copy each call)."""
    return copy.deepcopy(_DEFAULT)


def load_seed_file(path: str | Path) -> dict[str, Any]:
    """Read a seed from JSON (``.json``) or TOML (anything else parsed as TOML first)."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() == ".json":
        data: Any = json.loads(text)
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"seed file {p}: expected an object at the top level")
    return data


def big_seed(users: int, departments: int, *, domain: str = "example.com") -> dict[str, Any]:
    """A demo corp with many members spread over a two-level tree (for benchmarks)."""
    seed = default_seed()
    tops = max(1, departments // 10)
    paths = [f"事业部{t:03d}" for t in range(tops)]
    while len(paths) < departments:
        i = len(paths)
        paths.append(f"事业部{i % tops:03d}/小组{i:04d}")
    seed["domains"] = [domain]
    seed["v1_clients"] = {f"admin@{domain}": DEMO_V1_SECRET}
    seed["departments"] = paths
    seed["users"] = [
        {
            "userid": f"user{n:05d}@{domain}",
            "name": f"员工{n:05d}",
            "department": [paths[n % len(paths)]],
            "extid": f"E{n:05d}",
            "position": "工程师",
            "gender": str(1 + n % 2),
            "password": DEMO_PASSWORD,
        }
        for n in range(users)
    ]
    seed["groups"] = []
    return seed


def config_snippet(seed: dict[str, Any], base_url: str, api: str) -> str:
    """The ``[exmail]`` TOML table that points syncengine at an emulator with this seed.

    Only meant for the built-in demo seed, whose credentials are public anyway.
    """
    domains = ", ".join(json.dumps(d) for d in seed.get("domains", []))
    lines = [
        "[exmail]",
        f'api = "{api}"',
        f"base_url = {json.dumps(base_url)}",
        f"sso_url = {json.dumps(base_url + '/cgi-bin/login')}",
        f"domains = [{domains}]",
    ]
    if api == "v2":
        lines.append(f"corp_id = {json.dumps(seed['corp_id'])}")
        lines.append("[exmail.secrets]")
        lines += [f"{app} = {json.dumps(secret)}" for app, secret in seed["secrets"].items()]
    else:
        client_id, secret = next(iter(seed["v1_clients"].items()))
        lines += [f"client_id = {json.dumps(client_id)}", f"client_secret = {json.dumps(secret)}"]
    return "\n".join(lines)
