"""What the file connectors (CSV/TSV, XLSX, JSON, JSON Lines) share: options, paths, headers.

Every failure of the file as a whole becomes a :class:`~syncengine.errors.SourceError` that
names the file and says what to do; bad single rows are not this module's business.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterable
from pathlib import Path

import charset_normalizer
from pydantic import BaseModel, ConfigDict, Field

from syncengine.errors import SourceError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_SAMPLE = 1 << 16


class FileOptions(BaseModel):
    """Options every file connector takes.

    ``path`` is relative to the config file's folder. ``rename`` maps a column name as the file
    has it to the name ``[mapping]`` uses, so an export whose headers changed needs one line of
    config rather than a new mapping.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    rename: dict[str, str] = Field(default_factory=dict)


def resolve_file(path: str, base_dir: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


def check_readable(path: Path) -> None:
    """Raise SourceError unless ``path`` is an existing, readable regular file."""
    if not path.exists():
        raise SourceError(
            "file not found",
            where=str(path),
            hint="check source.path (relative paths are taken from the config file's folder)",
        )
    if not path.is_file():
        raise SourceError("is not a regular file", where=str(path), hint="check source.path")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise SourceError(
            f"cannot read the file: {exc.strerror}",
            where=str(path),
            hint="check the file's permissions",
        ) from None


def header_names(cells: Iterable[object], rename: dict[str, str], where: str) -> list[str]:
    """Header cells as column names: stripped, renamed; duplicates are a source error.

    An empty header cell gives ``""``: that column is ignored (spreadsheets often carry empty
    trailing columns).
    """
    names: list[str] = []
    seen: set[str] = set()
    for index, cell in enumerate(cells):
        text = "" if cell is None else str(cell).replace("\ufeff", "").strip()
        text = rename.get(text, text)
        if text and text in seen:
            raise SourceError(
                f"column {text!r} appears twice in the header (column {index + 1})",
                where=where,
                hint="rename one of them in the file or with source.rename",
            )
        seen.add(text)
        names.append(text)
    if not any(names):
        raise SourceError(
            "the header row is empty",
            where=where,
            hint="set source.header_row to the row that holds the column names",
        )
    return names


def _decodes_fully(path: Path, encoding: str) -> bool:
    """Whether the whole file decodes, read in chunks so a big file never sits in memory."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                decoder.decode(chunk, final=False)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def detect_encoding(path: Path) -> str:
    """The text encoding of an HR export.

    A byte-order mark decides first; then UTF-8 and GB18030 (a superset of GBK, what Chinese
    Excel saves as "CSV") are tried over the whole file, because a sample can hide the one
    bad byte; only then general detection on a sample.
    """
    with path.open("rb") as handle:
        head = handle.read(_SAMPLE)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    for candidate, name in (("utf-8", "utf-8-sig"), ("gb18030", "gb18030")):
        if _decodes_fully(path, candidate):
            return name
    best = charset_normalizer.from_bytes(head).best()
    if best is None:
        raise SourceError(
            "cannot tell the file's text encoding",
            where=str(path),
            hint="set source.encoding (e.g. 'gb18030' or 'utf-8')",
        )
    log.info("%s: detected encoding %s", path, best.encoding)
    return str(best.encoding)
