"""CSV and TSV HR exports: encoding detected or configured, delimiter sniffed, streamed.

Chinese HR systems and Excel save "CSV" in GBK more often than not; UTF-8 with a byte-order
mark is the other common case, and Excel's "Unicode text" is UTF-16 with tabs. All are read
without configuration; ``source.encoding`` and ``source.delimiter`` override detection.

Each record carries its row number as a person counts it in a spreadsheet (the header is row
1 unless ``header_row`` says otherwise), so a problem names the row HR has to fix. Rows are
read one at a time: a 100,000-row file is never held in memory.
"""

from __future__ import annotations

import codecs
import csv
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from syncengine.connectors.base import ERROR_KEY, ROW_KEY, RawRecord
from syncengine.connectors.file_common import (
    FileOptions,
    check_readable,
    detect_encoding,
    header_names,
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

    def records(self) -> Iterator[RawRecord]:
        where = str(self.path)
        check_readable(self.path)
        encoding = self.encoding or detect_encoding(self.path)
        self.encoding = encoding
        row = 0
        try:
            with self.path.open("r", encoding=encoding, newline="") as handle:
                if self.delimiter is None:
                    sample = handle.read(_SNIFF_CHARS)
                    handle.seek(0)
                    skip = self.options.header_row - 1
                    self.delimiter = sniff_delimiter("\n".join(sample.splitlines()[skip:]))
                    log.info("%s: delimiter %r", where, self.delimiter)
                reader = csv.reader(
                    handle, delimiter=self.delimiter, quotechar=self.options.quotechar
                )
                header: list[str] | None = None
                data_rows = 0
                for cells in reader:
                    row += 1
                    if row < self.options.header_row:
                        continue
                    if header is None:
                        header = header_names(cells, self.options.rename, where)
                        continue
                    if not any(c.strip() for c in cells):
                        continue
                    data_rows += 1
                    yield _record(header, cells, row)
        except UnicodeDecodeError:
            raise SourceError(
                f"cannot decode row {row + 1} as {encoding}",
                where=where,
                hint="set source.encoding to the file's encoding (e.g. 'gb18030', 'utf-8')",
            ) from None
        except csv.Error as exc:
            raise SourceError(f"unreadable CSV at row {row + 1}: {exc}", where=where) from None
        except OSError as exc:
            raise SourceError(f"cannot read the file: {exc.strerror}", where=where) from None
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


def _record(header: list[str], cells: list[str], row: int) -> RawRecord:
    record: RawRecord = {name: "" for name in header if name}
    stray = 0
    for index, cell in enumerate(cells):
        name = header[index] if index < len(header) else ""
        if name:
            record[name] = cell
        elif cell.strip():
            stray = stray or index + 1
    if len(cells) > len(header) and stray > len(header):
        record[ERROR_KEY] = (
            f"row has {len(cells)} values but the header has {len(header)} columns "
            "(an unquoted delimiter inside a value?)"
        )
    elif stray:
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
