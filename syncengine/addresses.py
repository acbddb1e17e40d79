"""Generating an email address for a person HR gives none: a template over the pinyin name.

PURE: no I/O (pypinyin is a pure library with its dictionaries in the package).

Chinese names are split into family and given name first, because surnames follow their own
rules: compound surnames (复姓: 欧阳, 司马, 诸葛...) are two characters, and several common
surnames are read differently from the same character elsewhere (单 shàn, not dān; 曾 zēng,
not céng; 区 ōu, not qū; 仇 qiú; 解 xiè...). pypinyin alone reads the character in isolation,
so the surname table here overrides it. The given name goes through pypinyin's phrase
dictionary (Style.NORMAL: no tones, ü written ``v``). Names without Chinese characters are
taken as "Given [Middle] Family".

Template placeholders (all lower-case ASCII after rendering):
``{pinyin_family}``/``{family}`` (ouyang), ``{pinyin_given}``/``{given}`` (xiaoming),
``{initials}`` (oyxm), ``{family_initial}`` (o), ``{family_initials}`` (oy),
``{given_initial}`` (x), ``{given_initials}`` (xm), ``{employee_id}``.

Clashes are resolved deterministically: people are served in employee id order, and a taken
local part gets ``2``, ``3``, ... appended (``zhangwei``, ``zhangwei2``). Everything already
in Exmail (users, aliases, groups) and every address HR states counts as taken.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from syncengine.errors import ConfigError

PLACEHOLDERS = frozenset(
    {
        "pinyin_family",
        "family",
        "pinyin_given",
        "given",
        "initials",
        "family_initial",
        "family_initials",
        "given_initial",
        "given_initials",
        "employee_id",
    }
)

COMPOUND_SURNAMES: Mapping[str, tuple[str, ...]] = {
    "欧阳": ("ou", "yang"),
    "司马": ("si", "ma"),
    "诸葛": ("zhu", "ge"),
    "上官": ("shang", "guan"),
    "东方": ("dong", "fang"),
    "皇甫": ("huang", "fu"),
    "尉迟": ("yu", "chi"),
    "公孙": ("gong", "sun"),
    "慕容": ("mu", "rong"),
    "长孙": ("zhang", "sun"),
    "宇文": ("yu", "wen"),
    "司徒": ("si", "tu"),
    "司空": ("si", "kong"),
    "夏侯": ("xia", "hou"),
    "令狐": ("ling", "hu"),
    "轩辕": ("xuan", "yuan"),
    "端木": ("duan", "mu"),
    "澹台": ("tan", "tai"),
    "万俟": ("mo", "qi"),
    "单于": ("chan", "yu"),
    "呼延": ("hu", "yan"),
    "南宫": ("nan", "gong"),
    "独孤": ("du", "gu"),
    "百里": ("bai", "li"),
    "钟离": ("zhong", "li"),
    "闻人": ("wen", "ren"),
    "赫连": ("he", "lian"),
    "申屠": ("shen", "tu"),
    "公冶": ("gong", "ye"),
    "太史": ("tai", "shi"),
    "濮阳": ("pu", "yang"),
    "淳于": ("chun", "yu"),
    "拓跋": ("tuo", "ba"),
    "第五": ("di", "wu"),
}
"""复姓 and their readings (万俟 is mòqí, 单于 chányú, 长孙 zhǎngsūn, 尉迟 yùchí)."""

SURNAME_READINGS: Mapping[str, str] = {
    "单": "shan",
    "曾": "zeng",
    "区": "ou",
    "仇": "qiu",
    "解": "xie",
    "查": "zha",
    "朴": "piao",
    "乐": "yue",
    "盖": "ge",
    "缪": "miao",
    "秘": "bi",
    "种": "chong",
    "覃": "qin",
    "翟": "zhai",
    "员": "yun",
    "繁": "po",
    "句": "gou",
    "召": "shao",
    "宓": "mi",
    "那": "na",
    "隗": "wei",
    "沈": "shen",
    "褚": "chu",
    "任": "ren",
    "纪": "ji",
    "华": "hua",
    "过": "guo",
    "折": "she",
    "尉": "wei",
    "便": "pian",
    "柏": "bai",
    "藏": "zang",
    "应": "ying",
    "重": "chong",
    "祭": "zhai",
    "车": "che",
    "贾": "jia",
    "晟": "cheng",
    "能": "nai",
    "阚": "kan",
    "莘": "shen",
    "洗": "xian",
    "冼": "xian",
    "万": "wan",
    "长": "chang",
    "朝": "chao",
    "都": "du",
    "薄": "bo",
    "石": "shi",
    "蔚": "yu",
}
"""Single-character surnames whose surname reading differs from pypinyin's default."""

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LOCAL_OK = re.compile(r"[^a-z0-9._-]+")
_SEP_RUNS = re.compile(r"([._-])[._-]+")
MAX_SUFFIX = 100_000


@dataclass(frozen=True)
class NameParts:
    """A name as pinyin syllables, family and given apart."""

    family: tuple[str, ...]
    given: tuple[str, ...]


def _ascii_word(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c in string.ascii_letters + string.digits).lower()


def _syllables(text: str) -> tuple[str, ...]:
    # Imported here, not at the top: pypinyin's phrase dictionary takes a quarter of a second
    # to load, and only the commands that generate addresses need it (not --help, not audit).
    from pypinyin import Style, lazy_pinyin

    out: list[str] = []
    for chunk in lazy_pinyin(text, style=Style.NORMAL, errors="default"):
        if _CJK.search(chunk):  # a character pypinyin does not know
            continue
        for word in chunk.split():
            w = _ascii_word(word)
            if w:
                out.append(w)
    return tuple(out)


def name_parts(name: str) -> NameParts:
    """Split a name into pinyin family and given syllables (see module doc)."""
    name = unicodedata.normalize("NFKC", name).strip()
    name = re.sub(r"[·•．.\s]+", " ", name).strip()
    if _CJK.search(name):
        compact = name.replace(" ", "")
        if compact[:2] in COMPOUND_SURNAMES and len(compact) > 2:
            return NameParts(COMPOUND_SURNAMES[compact[:2]], _syllables(compact[2:]))
        first, rest = compact[:1], compact[1:]
        if not _CJK.match(first):  # a Latin-first mixed name: treat as western
            return _western(name)
        if first in SURNAME_READINGS and rest:
            fam: tuple[str, ...] = (SURNAME_READINGS[first],)
        else:
            fam = _syllables(first)
        return NameParts(fam, _syllables(rest))
    return _western(name)


def _western(name: str) -> NameParts:
    words = [w for w in (_ascii_word(x) for x in name.split()) if w]
    if not words:
        return NameParts((), ())
    if len(words) == 1:
        return NameParts((words[0],), ())
    return NameParts((words[-1],), tuple(words[:-1]))


def check_template(template: str) -> None:
    """Refuse a template with an unknown placeholder, naming it and the known ones."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(
            f"address template {template!r} is malformed: {exc}", where="addresses.template"
        ) from None
    unknown = fields - PLACEHOLDERS
    if unknown:
        raise ConfigError(
            f"address template {template!r} uses unknown placeholder(s) {sorted(unknown)}",
            where="addresses.template",
            hint="known: " + ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS)),
        )


def sanitise_local(text: str) -> str:
    """Lower-case ASCII letters, digits and single ``. _ -``, not at either end."""
    text = _LOCAL_OK.sub("", _ascii_word_keep_seps(text))
    text = _SEP_RUNS.sub(r"\1", text)
    return text.strip("._-")


def _ascii_word_keep_seps(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii()).lower()


def render_local(template: str, name: str, employee_id: str) -> str:
    """The local part a template gives for one person ("" when it renders to nothing)."""
    parts = name_parts(name)
    fam, giv = parts.family, parts.given
    values = {
        "pinyin_family": "".join(fam),
        "family": "".join(fam),
        "pinyin_given": "".join(giv),
        "given": "".join(giv),
        "initials": "".join(s[0] for s in fam + giv),
        "family_initial": fam[0][0] if fam else "",
        "family_initials": "".join(s[0] for s in fam),
        "given_initial": giv[0][0] if giv else "",
        "given_initials": "".join(s[0] for s in giv),
        "employee_id": employee_id,
    }
    return sanitise_local(template.format(**values))


class AddressAllocator:
    """Hands out free addresses: ``base``, ``base2``, ``base3``... never one already taken.

    A counter per base keeps a run with a thousand 张伟 linear rather than quadratic.
    """

    def __init__(
        self,
        domain: str,
        taken: Iterable[str],
        taken_in: Sequence[Container[str]] = (),
    ) -> None:
        """``taken``: addresses in any case; ``taken_in``: collections the caller already
        holds of lower-case addresses, looked up where they are (a planner's are every
        address of a 100,000-mailbox directory: no copy of them is made)."""
        self.domain = domain.lower()
        # The same string when it is already lower-case: str.lower() makes a copy.
        self._taken = {t if t.islower() else t.lower() for t in taken}
        self._taken_in = tuple(taken_in)
        self._next: dict[str, int] = {}

    def take(self, address: str) -> None:
        self._taken.add(address.lower())

    def is_taken(self, address: str) -> bool:
        address = address.lower()
        return address in self._taken or any(address in c for c in self._taken_in)

    def allocate(self, local: str) -> str:
        n = self._next.get(local, 1)
        while n <= MAX_SUFFIX:
            candidate = f"{local}{'' if n == 1 else n}@{self.domain}"
            n += 1
            if not self.is_taken(candidate):
                self._next[local] = n
                self._taken.add(candidate)
                return candidate
        raise ConfigError(
            f"no free address for {local!r}@{self.domain} after {MAX_SUFFIX} tries",
            where="addresses.template",
            hint="use a template with more of the name, e.g. {pinyin_given}.{pinyin_family}",
        )


def generate_addresses(
    people: Iterable[tuple[str, str]],
    *,
    template: str,
    fallback_template: str,
    domain: str,
    taken: Iterable[str],
    taken_in: Sequence[Container[str]] = (),
) -> dict[str, str]:
    """Addresses for ``(employee_id, name)`` pairs, served in employee id order.

    The fallback template is used when the main one renders to nothing (a name without any
    letter pypinyin or ASCII can give). ``taken`` and ``taken_in``: see
    :class:`AddressAllocator`.
    """
    ordered = sorted(people)
    if not ordered:
        return {}
    alloc = AddressAllocator(domain, taken, taken_in)
    out: dict[str, str] = {}
    for employee_id, name in ordered:
        local = render_local(template, name, employee_id) or render_local(
            fallback_template, name, employee_id
        )
        if not local:
            local = "user"
        out[employee_id] = alloc.allocate(local)
    return out
