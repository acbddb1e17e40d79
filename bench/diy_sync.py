"""The reference for bench/sync_noop.py: a nightly sync the way public DIY scripts do it.

Sequential, standard library only (``urllib``; a new HTTP connection for every request):
``gettoken``, one ``department/list`` to turn HR department paths into ids, then for every
row of the HR CSV a ``user/get`` and a blind ``user/update`` with the row's values (name,
department, position, gender, ext id), whether anything changed or not. It knows nothing
of snapshots, plans, brakes or audit: it is the floor a careful engine has to beat.

    python bench/diy_sync.py --base-url http://127.0.0.1:8080 --corp-id ID --secret S hr.csv

Prints one line: rows, requests, writes and seconds. Exits 1 on the first error answer.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import urllib.parse
import urllib.request
from typing import Any


class Client:
    """One request, one connection (``urllib`` sends ``Connection: close``)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = ""
        self.requests = 0
        self.writes = 0

    def call(self, name: str, query: dict[str, str], body: dict[str, Any] | None = None) -> Any:
        params = dict(query)
        if self.token:
            params["access_token"] = self.token
        url = f"{self.base_url}/cgi-bin/{name}?{urllib.parse.urlencode(params)}"
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        self.requests += 1
        self.writes += body is not None
        if answer.get("errcode", 0) != 0:
            raise SystemExit(f"{name} {query}: errcode {answer.get('errcode')} "
                             f"{answer.get('errmsg')}")  # fmt: skip
        return answer


def department_ids(client: Client) -> dict[str, int]:
    """HR path (``a/b``) to Exmail department id, from one ``department/list``."""
    listed = client.call("department/list", {"id": "1"})["department"]
    by_id = {int(d["id"]): d for d in listed}

    def path(dept: dict[str, Any]) -> str:
        parent = by_id.get(int(dept.get("parentid", 0)))
        if parent is None or int(parent["id"]) == 1:
            return str(dept["name"])
        return f"{path(parent)}/{dept['name']}"

    return {path(d): int(d["id"]) for d in listed if int(d["id"]) != 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hr_csv")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--corp-id", required=True)
    parser.add_argument("--secret", required=True, help="the contacts application's secret")
    parser.add_argument("--domain", default="example.com")
    args = parser.parse_args()
    started = time.perf_counter()
    client = Client(args.base_url)
    client.token = client.call("gettoken", {"corpid": args.corp_id,
                                            "corpsecret": args.secret})["access_token"]  # fmt: skip
    depts = department_ids(client)
    rows = 0
    with open(args.hr_csv, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            rows += 1
            email = row["email"] if "@" in row["email"] else f"{row['email']}@{args.domain}"
            client.call("user/get", {"userid": email})
            client.call("user/update", {}, {
                "userid": email,
                "name": row["name"],
                "department": [depts[row["departments"]]],
                "position": row["position"],
                "gender": "1" if row["gender"] == "男" else "2",
                "extid": row["employee_id"],
            })  # fmt: skip
    seconds = time.perf_counter() - started
    print(f"diy: {rows} rows, {client.requests} requests, {client.writes} writes, "
          f"{seconds:.2f} s")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
