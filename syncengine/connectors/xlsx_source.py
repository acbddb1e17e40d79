"""Excel workbooks (.xlsx, .xls): one sheet, chosen by name or index.

python-calamine (Rust's calamine) reads both formats, many times faster than openpyxl,
and gives the values Excel last computed rather than formulas. Cells keep their types
(numbers, dates) and mapping turns them into text, so an employee id typed as a number
(``1001``) and one typed as text (``"1001"``) are the same person.

A merged cell gives every cell of its range the value of the range's top-left cell: in an HR
sheet a department merged over several rows means "these people are all in it" (the visual
"same as above"), and leaving the lower rows blank would move those people to the root. A
merge over employee ids makes duplicate ids, which mapping quarantines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import python_calamine
from pydantic import Field

from syncengine.connectors.base import ERROR_KEY, ROW_KEY, RawRecord
from syncengine.connectors.file_common import (
    FileOptions,
    check_readable,
    file_fingerprint,
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
    """One sheet of a workbook as a stream of records keyed by the header row."""

    def __init__(self, options: XlsxOptions, base_dir: Path, kind: Literal["xlsx", "xls"]):
        self.options = options
        self.kind = kind
        self.path = resolve_file(options.path, base_dir)

    def describe(self) -> str:
        sheet = self.options.sheet
        which = f"sheet {sheet!r}" if isinstance(sheet, str) else f"sheet #{sheet}"
        return f"Excel file {self.path} ({which})"

    def fingerprint(self) -> str:
        """See :func:`~syncengine.connectors.file_common.file_fingerprint`."""
        return file_fingerprint(self.path, self.kind, self.options)

    def records(self) -> Iterator[RawRecord]:
        where = str(self.path)
        check_readable(self.path)
        try:
            workbook = python_calamine.CalamineWorkbook.from_path(str(self.path))
        except Exception as exc:  # calamine raises its own types (and ValueError) for bad files
            raise SourceError(
                f"not a readable .{self.kind} workbook ({type(exc).__name__}: {exc})",
                where=where,
                hint="save it from Excel as 'Excel Workbook (.xlsx)'; for .csv use the csv "
                "connector",
            ) from None
        try:
            yield from self._rows(workbook, where)
        finally:
            workbook.close()

    def _sheet(self, workbook: Any, where: str) -> Any:
        sheet = self.options.sheet
        names: list[str] = list(workbook.sheet_names)
        if isinstance(sheet, str):
            if sheet not in names:
                raise SourceError(
                    f"no sheet named {sheet!r} (sheets: {', '.join(names)})",
                    where=where,
                    hint="check source.sheet",
                )
            return workbook.get_sheet_by_name(sheet)
        if not 0 <= sheet < len(names):
            raise SourceError(
                f"no sheet #{sheet}: the workbook has {len(names)} sheet(s), numbered from 0",
                where=where,
                hint="check source.sheet",
            )
        return workbook.get_sheet_by_index(sheet)

    def _rows(self, workbook: Any, where: str) -> Iterator[RawRecord]:
        try:
            worksheet = self._sheet(workbook, where)
            where = f"{where}, sheet {worksheet.name!r}"
            grid: list[list[Any]] = worksheet.to_python(skip_empty_area=False)
            merged = worksheet.merged_cell_ranges or []
        except SourceError:
            raise
        except Exception as exc:
            raise SourceError(
                f"cannot read the sheet ({type(exc).__name__}: {exc})", where=where
            ) from None
        _fill_merged(grid, merged)
        header: list[str] | None = None
        data_rows = 0
        for row, cells in enumerate(grid, 1):
            if row < self.options.header_row:
                continue
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


def _fill_merged(grid: list[list[Any]], merged: list[Any]) -> None:
    """Give each cell of a merged range the value of the range's top-left cell."""
    for (top, left), (bottom, right) in merged:
        if top >= len(grid) or left >= len(grid[top]):
            continue
        value = grid[top][left]
        for r in range(top, min(bottom, len(grid) - 1) + 1):
            cells = grid[r]
            for c in range(left, min(right, len(cells) - 1) + 1):
                cells[c] = value


def make_xlsx_connector(options: Mapping[str, Any], base_dir: Path) -> XlsxConnector:
    """Entry point ``xlsx``."""
    return XlsxConnector(XlsxOptions.model_validate(dict(options)), base_dir, "xlsx")


def make_xls_connector(options: Mapping[str, Any], base_dir: Path) -> XlsxConnector:
    """Entry point ``xls``: Excel 97-2003 workbooks."""
    return XlsxConnector(XlsxOptions.model_validate(dict(options)), base_dir, "xls")
