"""Excel workbooks (.xlsx): one sheet, chosen by name or index, streamed read-only.

openpyxl's read-only mode reads rows as it goes, so a large export is not loaded whole;
``data_only`` gives the values Excel last computed rather than formulas. Cells keep their
types (numbers, dates) and mapping turns them into text, so an employee id typed as a number
(``1001``) and one typed as text (``"1001"``) are the same person.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import openpyxl
from pydantic import Field

from syncengine.connectors.base import ERROR_KEY, ROW_KEY, RawRecord
from syncengine.connectors.file_common import (
    FileOptions,
    check_readable,
    header_names,
    resolve_file,
)
from syncengine.errors import SourceError

log = logging.getLogger(__name__)


class XlsxOptions(FileOptions):
    """``[source]`` options of ``type = "xlsx"``.

    ``sheet``: a sheet name, or an index (0 is the first sheet). ``header_row``: the row
    (as Excel numbers it) holding the column names.
    """

    sheet: str | int = 0
    header_row: int = Field(default=1, ge=1)


class XlsxConnector:
    """One sheet of an .xlsx workbook as a stream of records keyed by the header row."""

    def __init__(self, options: XlsxOptions, base_dir: Path):
        self.options = options
        self.path = resolve_file(options.path, base_dir)

    def describe(self) -> str:
        sheet = self.options.sheet
        which = f"sheet {sheet!r}" if isinstance(sheet, str) else f"sheet #{sheet}"
        return f"Excel file {self.path} ({which})"

    def records(self) -> Iterator[RawRecord]:
        where = str(self.path)
        check_readable(self.path)
        try:
            workbook = openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise SourceError(
                f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})",
                where=where,
                hint="save it from Excel as 'Excel Workbook (.xlsx)'; for .xls or .csv use "
                "the csv connector",
            ) from None
        except Exception as exc:  # openpyxl raises its own types for broken files
            raise SourceError(
                f"not a readable .xlsx workbook ({type(exc).__name__})", where=where
            ) from None
        try:
            yield from self._rows(workbook, where)
        finally:
            workbook.close()

    def _rows(self, workbook: Any, where: str) -> Iterator[RawRecord]:
        sheet = self.options.sheet
        names: list[str] = list(workbook.sheetnames)
        if isinstance(sheet, str):
            if sheet not in names:
                raise SourceError(
                    f"no sheet named {sheet!r} (sheets: {', '.join(names)})",
                    where=where,
                    hint="check source.sheet",
                )
            worksheet = workbook[sheet]
        else:
            if not 0 <= sheet < len(names):
                raise SourceError(
                    f"no sheet #{sheet}: the workbook has {len(names)} sheet(s), numbered from 0",
                    where=where,
                    hint="check source.sheet",
                )
            worksheet = workbook[names[sheet]]
        where = f"{where}, sheet {worksheet.title!r}"
        header: list[str] | None = None
        data_rows = 0
        row = 0
        for row, values in enumerate(
            worksheet.iter_rows(min_row=1, min_col=1, values_only=True), 1
        ):
            if row < self.options.header_row:
                continue
            cells = list(values)
            if header is None:
                if not any(v not in (None, "") for v in cells):
                    continue  # blank rows above the header
                header = header_names(cells, self.options.rename, where)
                continue
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in cells):
                continue
            data_rows += 1
            record: RawRecord = {name: "" for name in header if name}
            stray = 0
            for index, value in enumerate(cells):
                name = header[index] if index < len(header) else ""
                if name:
                    record[name] = "" if value is None else value
                elif value is not None and str(value).strip():
                    stray = stray or index + 1
            if stray:
                record[ERROR_KEY] = f"a value in column {stray}, which has no header"
            record[ROW_KEY] = row
            yield record
        if header is None:
            raise SourceError(
                "no header row (the sheet is empty)",
                where=where,
                hint="check source.sheet and source.header_row",
            )
        if data_rows == 0:
            raise SourceError(
                "has a header but no data rows",
                where=where,
                hint="an empty export would remove everyone; check the export",
            )


def make_xlsx_connector(options: Mapping[str, Any], base_dir: Path) -> XlsxConnector:
    """Entry point ``xlsx``."""
    return XlsxConnector(XlsxOptions.model_validate(dict(options)), base_dir)
