"""CSV and TSV HR exports: encoding detected or configured, delimiter sniffed, streamed.

Chinese HR systems and Excel save "CSV" in GBK more often than not; UTF-8 with a byte-order
mark is the other common case, and Excel's "Unicode text" is UTF-16 with tabs. All are read
without configuration; ``source.encoding`` and ``source.delimiter`` override detection.

Each record carries its row number as a person counts it in a spreadsheet (the header is row
1 unless ``header_row`` says otherwise), so a problem names the row HR has to fix. Rows are
read one at a time: a 100,000-row file is never held in memory.

A damaged file is never read as data (README, "What counts as a bad row"): a short or long row,
a quote that opens a value and is not closed on its line (its row is quarantined and the lines
it would have swallowed are read again as the rows they are), a stray quote and a NUL byte
quarantine their row, named by line and column; bytes that do not decode and a file that does
not end with a line break (it may have been cut inside a row) refuse the whole source.
"""

from __future__ import annotations

import codecs
import csv
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from syncengine.connectors.base import ERROR_KEY, ROW_KEY, RawRecord, TextRecord
from syncengine.connectors.file_common import (
    FileOptions,
    check_readable,
    detect_encoding,
    file_fingerprint,
    header_names,
    locate_decode_error,
    resolve_file,
)
from syncengine.errors import ConfigError, SourceError

log = logging.getLogger(__name__)

_SNIFF_CHARS = 64 * 1024
_CANDIDATES = ",\t;|"


class CsvOptions(FileOptions):
    """``[source]`` options of ``type = "csv"`` / ``"tsv"``.

    ``encoding``: a Python codec name, or ``"auto"``. ``delimiter``: one character, ``"\\t"``,
    or ``"auto"`` (sniffed; the default for csv; tsv defaults to a tab). ``header_row``: the
    row holding the column names (rows above it, such as a report title, are skipped).
    """

    encoding: str = "auto"
    delimiter: str = "auto"
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    header_row: int = Field(default=1, ge=1)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r} (e.g. 'utf-8', 'gb18030')")
        return value

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if value in ("\\t", "tab"):
            return "\t"
        if value != "auto" and len(value) != 1:
            raise ValueError("must be one character, '\\t', or 'auto'")
        return value


def sniff_delimiter(sample: str) -> str:
    """The delimiter of a text sample: csv.Sniffer, then a count on the first line, then ','."""
    lines = sample.splitlines()
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line of a sample may be cut short
    text = "\n".join(lines[:50])
    if not text:
        return ","
    try:
        return csv.Sniffer().sniff(text, delimiters=_CANDIDATES).delimiter
    except csv.Error:
        pass
    first = lines[0]
    counts = {c: first.count(c) for c in _CANDIDATES}
    best = max(counts, key=lambda c: counts[c])
    return best if counts[best] else ","


class CsvConnector:
    """A CSV or TSV file as a stream of records keyed by the header's column names."""

    def __init__(self, options: CsvOptions, base_dir: Path, *, kind: Literal["csv", "tsv"]):
        self.options = options
        self.kind = kind
        self.path = resolve_file(options.path, base_dir)
        self.encoding: str | None = None if options.encoding == "auto" else options.encoding
        if options.delimiter != "auto":
            self.delimiter: str | None = options.delimiter
        else:
            self.delimiter = "\t" if kind == "tsv" else None

    def describe(self) -> str:
        details = []
        if self.encoding:
            details.append(f"encoding {self.encoding}")
        if self.delimiter:
            details.append(f"delimiter {self.delimiter!r}")
        extra = f" ({', '.join(details)})" if details else ""
        return f"{self.kind.upper()} file {self.path}{extra}"

    def fingerprint(self) -> str:
        """See :func:`~syncengine.connectors.file_common.file_fingerprint`."""
        return file_fingerprint(self.path, self.kind, self.options)

    def records(self) -> Iterator[RawRecord]:
        where = str(self.path)
        check_readable(self.path)
        encoding = self.encoding or detect_encoding(self.path)
        self.encoding = encoding
        lines: _Lines | None = None
        try:
            with self.path.open("r", encoding=encoding, newline="") as handle:
                if self.delimiter is None:
                    sample = handle.read(_SNIFF_CHARS)
                    handle.seek(0)
                    skip = self.options.header_row - 1
                    self.delimiter = sniff_delimiter("\n".join(sample.splitlines()[skip:]))
                    log.info("%s: delimiter %r", where, self.delimiter)
                lines = _Lines(handle)
                yield from self._read(lines, where)
        except UnicodeDecodeError:
            line, column, found = locate_decode_error(self.path, encoding)
            raise SourceError(
                f"line {line}, column {column}: bytes {found} are not valid {encoding} text "
                "(the file is damaged or in another encoding)",
                where=where,
                hint="fix the export, or set source.encoding to the file's encoding "
                "(e.g. 'gb18030', 'utf-8')",
            ) from None
        except csv.Error as exc:
            at = lines.first if lines is not None else 1
            raise SourceError(f"unreadable CSV at line {at}: {exc}", where=where) from None
        except OSError as exc:
            raise SourceError(f"cannot read the file: {exc.strerror}", where=where) from None

    def _read(self, lines: _Lines, where: str) -> Iterator[RawRecord]:
        """Records, each checked for the damage a reader can see (see :func:`_damage`)."""
        delimiter = self.delimiter or ","
        quotechar = self.options.quotechar
        reader = csv.reader(lines, delimiter=delimiter, quotechar=quotechar)
        header: list[str] | None = None
        width = 0
        named = False
        data_rows = 0
        row = 0
        taken = lines.taken
        for cells in reader:
            row += 1
            if row < self.options.header_row:
                lines.next_record()
                continue
            if header is None:
                header = header_names(cells, self.options.rename, where)
                width = len(header)
                named = all(header)
                lines.next_record()
                continue
            if (
                len(taken) == 1
                and len(cells) == width
                and lines.nul is None
                and quotechar not in taken[0]
            ):
                lines.next_record()  # the common case: one line, one value per column
                if any(cells) and any(c.strip() for c in cells):
                    data_rows += 1
                    if named:
                        record: RawRecord = TextRecord(zip(header, cells, strict=True))
                        record[ROW_KEY] = row
                        yield record
                    else:
                        yield _record(header, cells, row)
                continue
            first = lines.first
            if len(taken) > 1 and _runs_over_rows(cells, taken, width, delimiter):
                # A quote opened and never closed swallowed the lines after it: quarantine
                # this line alone and read the others again as the rows they are.
                # Read alone with quotes taken literally: its values stay in their columns.
                alone = next(csv.reader([taken[0]], delimiter=delimiter, quoting=csv.QUOTE_NONE))
                column = _open_quote_column(taken[0], delimiter, quotechar)
                swallowed = len(taken) - 1
                lines.push_back()
                data_rows += 1
                record = _record(header, alone, row, check_width=False)
                record[ERROR_KEY] = (
                    f"line {first}, column {column}: a quote opens a value that is not closed "
                    f"on this line (it would swallow the {swallowed} line(s) after it); "
                    "the rows after it are read on their own"
                )
                yield record
                continue
            nul = lines.nul
            last, spanned = taken[-1], len(taken)
            stray = _stray_quote(taken, delimiter, quotechar)
            lines.next_record()
            if not any(c.strip() for c in cells) and nul is None:
                continue
            if len(cells) < width and not last.endswith(("\n", "\r")):
                raise SourceError(
                    f"the file ends in the middle of a row (line {first + spanned - 1}: "
                    f"{len(cells)} of {width} values, no final line break); the rows after "
                    "the cut are lost",
                    where=where,
                    hint="the export was cut short: export the file again",
                )
            data_rows += 1
            record = _record(header, [c.replace("\x00", "") for c in cells], row)
            if stray is not None:
                record[ERROR_KEY] = (
                    f"line {first + stray[0]}, column {stray[1]}: a stray quote (a quote inside "
                    "a value that is not quoted, or text after a closing quote)"
                )
            elif nul is not None:
                record[ERROR_KEY] = (
                    f"line {nul[0]}, column {nul[1]}: a NUL byte (the file is damaged there)"
                )
            elif len(cells) < width:
                record[ERROR_KEY] = (
                    f"line {first}: the row has {len(cells)} values but the header has "
                    f"{width} columns (cut short, or a delimiter is missing?)"
                )
            elif ERROR_KEY in record:
                record[ERROR_KEY] = f"line {first}: {record[ERROR_KEY]}"
            yield record
        if lines.last and not lines.last.endswith(("\n", "\r")) and header is not None:
            raise SourceError(
                f"the file does not end with a line break (line {lines.first - 1}): it may have "
                "been cut short in the middle of a value, and the rows after the cut are lost",
                where=where,
                hint="export the file again; if it is complete, end it with a line break",
            )
        if header is None:
            raise SourceError(
                "no header row (the file is empty)"
                if self.options.header_row == 1
                else f"no header row: the file has fewer than {self.options.header_row} rows",
                where=where,
                hint="check the file and source.header_row",
            )
        if data_rows == 0:
            raise SourceError(
                "has a header but no data rows",
                where=where,
                hint="an empty export would remove everyone; check the export",
            )


class _Lines:
    """The file's physical lines for :mod:`csv`, remembering those of the record being read.

    ``taken`` holds the lines of the current record and ``first`` the number of its first
    line, so a problem names the line and a record that swallowed the lines after it (an
    unclosed quote) can hand them back to be read again as their own rows. A NUL byte is
    removed and remembered (``nul``: line, column) so its row is quarantined.
    """

    __slots__ = ("_it", "first", "last", "nul", "pending", "taken")

    def __init__(self, handle: Iterable[str]):
        self._it = iter(handle)
        self.pending: deque[str] = deque()
        self.taken: list[str] = []
        self.first = 1
        self.nul: tuple[int, int] | None = None
        self.last = ""

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.pending.popleft() if self.pending else next(self._it)
        self.taken.append(line)  # as read: a line handed back is checked again
        self.last = line
        if "\x00" in line:
            if self.nul is None:
                self.nul = (self.first + len(self.taken) - 1, line.index("\x00") + 1)
            return line.replace("\x00", "")
        return line

    def next_record(self) -> None:
        self.first += len(self.taken)
        self.taken.clear()
        self.nul = None

    def push_back(self) -> None:
        """Drop the current record but its first line; its other lines are read again."""
        self.pending.extendleft(reversed(self.taken[1:]))
        self.first += 1
        self.taken.clear()
        self.nul = None


def _runs_over_rows(cells: list[str], taken: list[str], width: int, delimiter: str) -> bool:
    """Whether a record spanning several lines is a quote that swallowed other rows.

    A value with line breaks is legitimate (an address on two lines) when the record still
    has one value per column and none of its continued lines looks like a row of its own.
    """
    if len(cells) != width:
        return True
    least = max(1, width - 1)
    return any(line.count(delimiter) >= least for line in taken[1:])


def _stray_quote(taken: list[str], delimiter: str, quotechar: str) -> tuple[int, int] | None:
    """Where a record's lines hold a quote that is not part of a well-formed quoted value:
    (line offset from the record's first line, column from 1), or None."""
    if not any(quotechar in line for line in taken):
        return None
    state = "start"  # start | plain | quoted | closed
    for offset, line in enumerate(taken):
        for index, char in enumerate(line):
            if state == "quoted":
                if char == quotechar:
                    state = "closed"
            elif char == quotechar:
                if state == "start":
                    state = "quoted"
                elif state == "closed":
                    state = "quoted"  # a doubled quote inside a quoted value
                else:
                    return offset, index + 1
            elif char == delimiter or char in "\r\n":
                state = "start"
            elif state == "closed":
                return offset, index + 1
            else:
                state = "plain"
    return None


def _open_quote_column(line: str, delimiter: str, quotechar: str) -> int:
    """The column (from 1, in characters) of the quote that opens a value never closed."""
    inside = False
    opened = 0
    at_start = True
    for index, char in enumerate(line):
        if inside:
            if char == quotechar:
                inside = False
        elif char == quotechar and at_start:
            inside, opened = True, index + 1
        at_start = not inside and char == delimiter
    return opened or 1


def _record(
    header: list[str], cells: list[str], row: int, *, check_width: bool = True
) -> RawRecord:
    record: RawRecord = TextRecord((name, "") for name in header if name)
    stray = 0
    for index, cell in enumerate(cells):
        name = header[index] if index < len(header) else ""
        if name:
            record[name] = cell
        elif cell.strip():
            stray = stray or index + 1
    if check_width and len(cells) > len(header) and stray > len(header):
        record[ERROR_KEY] = (
            f"the row has {len(cells)} values but the header has {len(header)} columns "
            "(an unquoted delimiter inside a value?)"
        )
    elif check_width and stray:
        record[ERROR_KEY] = f"a value in column {stray}, which has no header"
    record[ROW_KEY] = row
    return record


def _make(options: Mapping[str, Any], base_dir: Path, kind: Literal["csv", "tsv"]) -> CsvConnector:
    opts = CsvOptions.model_validate(dict(options))
    if opts.delimiter != "auto" and opts.delimiter == opts.quotechar:
        raise ConfigError("source.delimiter and source.quotechar must differ")
    return CsvConnector(opts, base_dir, kind=kind)


def make_csv_connector(options: Mapping[str, Any], base_dir: Path) -> CsvConnector:
    """Entry point ``csv``: delimiter sniffed unless configured."""
    return _make(options, base_dir, "csv")


def make_tsv_connector(options: Mapping[str, Any], base_dir: Path) -> CsvConnector:
    """Entry point ``tsv``: tab-separated unless ``delimiter`` says otherwise."""
    return _make(options, base_dir, "tsv")
