"""What the file connectors (CSV/TSV, XLSX, JSON, JSON Lines) share: options, paths, headers.

Every failure of the file as a whole becomes a :class:`~syncengine.errors.SourceError` that
names the file and says what to do; bad single rows are not this module's business.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

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


def file_fingerprint(path: Path, kind: str, options: BaseModel) -> str:
    """sha256 of a file's bytes, its connector kind and reading options: equal fingerprints
    read as the same records, so an unchanged export need not be parsed and mapped again.
    A file that cannot be read raises the SourceError reading it would."""
    check_readable(path)
    digest = hashlib.sha256(f"{kind}\0{options.model_dump_json()}\0".encode())
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise SourceError(
            f"cannot read the file: {exc.strerror or exc}",
            where=str(path),
            hint="check the file's permissions",
        ) from None
    return digest.hexdigest()


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


def _decode_error(path: Path, encoding: str) -> int | None:
    """The byte offset of the first byte that does not decode, or None when all of it does.

    Read in chunks so a big file never sits in memory.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            buffered = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk, final=False)
            except UnicodeDecodeError as exc:
                return max(offset - buffered + exc.start, 0)
            offset += len(chunk)
        buffered = len(decoder.getstate()[0])
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            return max(offset - buffered + exc.start, 0)
    return None


def locate_decode_error(path: Path, encoding: str) -> tuple[int, int, str]:
    """Where ``path`` stops decoding as ``encoding``: line and column (from 1, the column in
    characters of the decodable text before it) and the offending bytes in hex."""
    offset = _decode_error(path, encoding)
    if offset is None:
        offset = 0
    with path.open("rb") as handle:
        head = handle.read(offset)
        bad = handle.read(4)
    before = head.decode(encoding, errors="replace")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    shown = " ".join(f"0x{b:02x}" for b in bad[:2]) or "(end of file)"
    return line, column, shown


def detect_encoding(path: Path) -> str:
    """The text encoding of an HR export.

    A byte-order mark decides first; then UTF-8 and GB18030 (a superset of GBK, what Chinese
    Excel saves as "CSV") are tried over the whole file, because a sample can hide the one
    bad byte. A file that is neither is refused with the place of the first bad byte (under
    the encoding that read further): a guess would turn a damaged GBK file into mojibake
    names pushed to Exmail. charset-normalizer's guess is offered in the hint.
    """
    with path.open("rb") as handle:
        head = handle.read(_SAMPLE)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    failures: list[tuple[int, str]] = []
    for candidate, name in (("utf-8", "utf-8-sig"), ("gb18030", "gb18030")):
        offset = _decode_error(path, candidate)
        if offset is None:
            return name
        failures.append((offset, candidate))
    _, likely = max(failures)
    line, column, found = locate_decode_error(path, likely)
    import charset_normalizer  # ~10 ms, for a file whose encoding is not given or known

    best = charset_normalizer.from_bytes(head).best()
    guess = f" (charset-normalizer guesses {best.encoding})" if best is not None else ""
    log.info("%s: neither UTF-8 nor GB18030%s", path, guess)
    raise SourceError(
        f"line {line}, column {column}: bytes {found} are not valid {likely} text, nor "
        "UTF-8 / GB18030 (the file is damaged or in another encoding)",
        where=str(path),
        hint=f"fix the export, or set source.encoding to the file's encoding{guess}",
    )
