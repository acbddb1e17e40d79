"""Write the sample HR export: about 300 people of a Chinese company, and its department table.

Deterministic (a fixed random seed), so running it again gives the same data. Outputs, next to
this script:

- ``hr-export.csv``   the people, GBK-encoded as Chinese Excel saves "CSV"
- ``hr-export.xlsx``  the same people (sheet 员工) and the department table (sheet 部门)
- ``departments.csv`` the department table (部门编号, 部门名称, 上级部门编号), UTF-8 with BOM

What the data shows: several levels of departments under the company root (总部), people in
one or two departments, a few aliases, people without an email (the engine generates one from
the pinyin of the name), leavers (离职 with end dates in the past), people on leave, future
hires (start dates in 2027), and deliberately bad rows so ``syncengine ingest`` has something
to quarantine: a mobile number one digit short and an employee id used twice with different
data. The first four employees (E0001-E0004) are the ones in the emulator's demo directory
(``samples/emulator-seed.json``), so a demo run shows updates, a leaver and a re-enable rather
than only creations.

Run: ``.venv/bin/python samples/make_samples.py [--out DIR]``
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from datetime import date, datetime
from pathlib import Path

import openpyxl
from pypinyin import lazy_pinyin

HERE = Path(__file__).resolve().parent
DOMAIN = "example.com"
SEED = 20261129

HEADER = [
    "工号",
    "姓名",
    "邮箱",
    "别名",
    "部门编号",
    "部门",
    "职位",
    "手机",
    "座机",
    "性别",
    "状态",
    "入职日期",
    "离职日期",
]
DEPT_HEADER = ["部门编号", "部门名称", "上级部门编号"]

# id, name, parent id. "1" is the company itself: the root of the Exmail tree (root_ids).
DEPARTMENTS = [
    ("1", "总部", ""),
    ("10", "研发中心", "1"),
    ("101", "平台部", "10"),
    ("1011", "基础架构组", "101"),
    ("1012", "数据平台组", "101"),
    ("102", "移动部", "10"),
    ("1021", "iOS组", "102"),
    ("1022", "Android组", "102"),
    ("103", "测试部", "10"),
    ("20", "市场部", "1"),
    ("201", "品牌组", "20"),
    ("202", "渠道组", "20"),
    ("30", "人力资源部", "1"),
    ("301", "招聘组", "30"),
    ("40", "财务部", "1"),
    ("50", "销售中心", "1"),
    ("501", "华北销售部", "50"),
    ("5011", "北京一组", "501"),
    ("502", "华东销售部", "50"),
    ("5021", "上海一组", "502"),
    ("60", "行政部", "1"),
]
# Where people work (leaf-ish departments) and what they do there.
WORKPLACES = {
    "1011": ["后端工程师", "高级工程师", "架构师", "运维工程师"],
    "1012": ["数据工程师", "数据分析师", "高级工程师"],
    "1021": ["iOS工程师", "高级工程师"],
    "1022": ["Android工程师", "工程师"],
    "103": ["测试工程师", "测试经理"],
    "101": ["技术经理"],
    "201": ["品牌经理", "设计师", "文案"],
    "202": ["渠道经理", "渠道专员"],
    "301": ["招聘专员", "HRBP"],
    "30": ["人事专员", "薪酬专员"],
    "40": ["会计", "出纳", "财务经理"],
    "5011": ["销售代表", "客户经理"],
    "5021": ["销售代表", "客户经理"],
    "501": ["区域经理"],
    "60": ["行政专员", "前台"],
}
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程"
    "苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝"
)
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚华建国志文博浩然子涵欣怡雨轩梓萱宇航思远嘉琪"
    "晨曦佳慧俊凯一鸣雪梅海燕晓东立新春生秋月冬青天宇若曦婉清梦瑶"
)


def _dept_paths() -> dict[str, str]:
    names = {i: n for i, n, _ in DEPARTMENTS}
    parents = {i: p for i, _, p in DEPARTMENTS}
    paths: dict[str, str] = {}
    for dept_id in names:
        segs = []
        cur = dept_id
        while cur and cur != "1":
            segs.append(names[cur])
            cur = parents[cur]
        paths[dept_id] = "/".join(reversed(segs))
    return paths


def _pinyin(name: str) -> str:
    return "".join(lazy_pinyin(name)).lower()


def _mobile(rng: random.Random) -> str:
    number = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
    style = rng.randrange(4)
    if style == 0:
        return f"{number[:3]} {number[3:7]} {number[7:]}"
    if style == 1:
        return f"+86-{number}"
    return number


def _date(d: date, rng: random.Random) -> str:
    return d.isoformat() if rng.random() < 0.8 else f"{d.year}/{d.month}/{d.day}"


def make_people() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    paths = _dept_paths()
    rows: list[dict[str, str]] = []
    used_names: set[str] = set()
    used_mail: set[str] = set()

    def row(**kw: str) -> dict[str, str]:
        base = dict.fromkeys(HEADER, "")
        base.update(kw)
        return base

    # The emulator's demo employees: same ids and addresses as samples/emulator-seed.json.
    rows.append(
        row(
            工号="E0001",
            姓名="张三",
            邮箱="zhangsan@example.com",
            别名="san.zhang@example.com",
            部门编号="101",
            部门=paths["101"],
            职位="高级工程师",
            手机="13800000001",
            座机="010-62000001",
            性别="男",
            状态="在职",
            入职日期="2018-04-02",
        )
    )
    rows.append(
        row(
            工号="E0002",
            姓名="李四",
            邮箱="lisi@example.com",
            部门编号="103",
            部门=paths["103"],
            职位="测试经理",
            手机="138 0000 0002",
            性别="女",
            状态="在职",
            入职日期="2019-07-15",
        )
    )
    rows.append(
        row(
            工号="E0003",
            姓名="王五",
            邮箱="wangwu@example.com",
            部门编号="20",
            部门=paths["20"],
            职位="市场经理",
            性别="男",
            状态="离职",
            入职日期="2017-03-01",
            离职日期="2026-06-30",
        )
    )
    rows.append(
        row(
            工号="E0004",
            姓名="赵六",
            邮箱="zhaoliu@example.com",
            部门编号="30",
            部门=paths["30"],
            职位="人事专员",
            性别="女",
            状态="在职",
            入职日期="2026-09-01",
        )
    )
    used_names.update({"张三", "李四", "王五", "赵六"})
    used_mail.update({"zhangsan", "lisi", "wangwu", "zhaoliu"})

    workplaces = sorted(WORKPLACES)
    for n in range(5, 301):
        while True:
            name = rng.choice(SURNAMES) + "".join(
                rng.choice(GIVEN) for _ in range(rng.choice((1, 2)))
            )
            if name not in used_names:
                used_names.add(name)
                break
        local = _pinyin(name)
        suffix = 2
        while local in used_mail:
            local = f"{_pinyin(name)}{suffix}"
            suffix += 1
        used_mail.add(local)
        dept = rng.choice(workplaces)
        dept_ids = [dept]
        if rng.random() < 0.06:  # a few people work for two departments
            other = rng.choice([d for d in workplaces if d != dept])
            dept_ids.append(other)
        start = date(2012 + rng.randrange(14), 1 + rng.randrange(12), 1 + rng.randrange(28))
        r = row(
            工号=f"E{n:04d}",
            姓名=name,
            邮箱=f"{local}@{DOMAIN}",
            部门编号=";".join(dept_ids),
            部门=";".join(paths[d] for d in dept_ids),
            职位=rng.choice(WORKPLACES[dept]),
            手机=_mobile(rng) if rng.random() < 0.85 else "",
            座机=f"010-6{rng.randrange(10**7):07d}" if rng.random() < 0.3 else "",
            性别=rng.choice("男女"),
            状态="在职",
            入职日期=_date(start, rng),
        )
        if n % 37 == 0:
            r["别名"] = f"{local}.{n}@{DOMAIN}"
        if n % 29 == 0:
            r["别名"] = ";".join(
                filter(None, [r["别名"], f"{rng.choice(['sales', 'info', 'hr'])}{n}@{DOMAIN}"])
            )
        if n % 12 == 0:
            r["邮箱"] = ""  # no address yet: the engine generates one from the pinyin
        if n % 23 == 0:  # leavers, end date in the past
            r["状态"] = "离职"
            end = date(2025 + rng.randrange(2), 1 + rng.randrange(12), 1 + rng.randrange(28))
            r["离职日期"] = _date(end, rng)
        elif n % 71 == 0:
            r["状态"] = "休假"
        elif n % 47 == 0:  # future hires
            r["入职日期"] = _date(date(2027, 1 + rng.randrange(6), 1 + rng.randrange(28)), rng)
        rows.append(r)

    # Deliberately bad rows, so the demo shows quarantine:
    rows[41]["手机"] = "1380013800"  # one digit short
    twin = dict(rows[120])  # the same employee id again, with different data
    twin["姓名"] = twin["姓名"] + "明"
    twin["部门编号"], twin["部门"] = "60", paths["60"]
    rows.insert(200, twin)
    return rows


def write_csv(rows: list[dict[str, str]], out: Path = HERE) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=HEADER, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "hr-export.csv").write_bytes(buffer.getvalue().encode("gbk"))

    buffer = io.StringIO(newline="")
    dept_writer = csv.writer(buffer, lineterminator="\r\n")
    dept_writer.writerow(DEPT_HEADER)
    dept_writer.writerows(DEPARTMENTS)
    (out / "departments.csv").write_bytes(buffer.getvalue().encode("utf-8-sig"))


def write_xlsx(rows: list[dict[str, str]], out: Path = HERE) -> None:
    wb = openpyxl.Workbook()
    people = wb.active
    people.title = "员工"
    people.append(HEADER)
    for r in rows:
        values: list[object] = [r[h] for h in HEADER]
        for col in ("入职日期", "离职日期"):  # real date cells, as HR keeps them in Excel
            i = HEADER.index(col)
            if r[col]:
                y, m, d = (int(x) for x in r[col].replace("/", "-").split("-"))
                values[i] = datetime(y, m, d)
        people.append(values)
    depts = wb.create_sheet("部门")
    depts.append(DEPT_HEADER)
    for dept in DEPARTMENTS:
        depts.append(list(dept))
    wb.properties.creator = "syncengine samples"
    wb.properties.created = wb.properties.modified = datetime(2026, 11, 29)
    wb.save(out / "hr-export.xlsx")


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the sample HR export.")
    parser.add_argument("--out", type=Path, default=HERE, help="folder (default: samples/)")
    out = parser.parse_args().out
    rows = make_people()
    write_csv(rows, out)
    write_xlsx(rows, out)


if __name__ == "__main__":
    main()
