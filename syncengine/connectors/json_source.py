"""JSON and JSON Lines HR exports.

JSON: one document; ``records_path`` (``data.employees``; a number picks a list item) leads
to the list of records, which must be objects. The document is parsed whole (the standard
library has no streaming parser); for very large exports prefer JSON Lines, which is read one
line at a time. A record's row number is its position in the list (from 1) for JSON and its
line number for JSON Lines. A record that is not an object, or a line that is not JSON, is
passed on marked as bad so mapping quarantines it with the reason; it does not stop the run.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import field_validator

from syncengine.connectors.base import ERROR_KEY, MAX_RAW_CHARS, RAW_KEY, ROW_KEY, RawRecord
from syncengine.connectors.file_common import (
    FileOptions,
    check_readable,
    file_fingerprint,
    resolve_file,
)
from syncengine.errors import ConfigError, SourceError


class JsonOptions(FileOptions):
    """``[source]`` options of ``type = "json"`` / ``"jsonl"``.

    ``records_path``: dotted path to the list of records (JSON only; empty = the document
    itself is the list). ``encoding``: UTF-8 (a byte-order mark is accepted) unless given.
    """

    records_path: str = ""
    encoding: str = "utf-8-sig"

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. 'utf-8', 'gb18030')")
        return value


def _too_deep(where: str) -> SourceError:
    return SourceError(
        "is nested deeper than a JSON reader can follow (hundreds of levels of lists or "
        "objects): not an HR export, or a damaged one",
        where=where,
        hint="check the export; records are objects of fields, a few levels deep at most",
    )


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def find_records(document: Any, records_path: str, where: str) -> list[Any]:
    """Follow ``records_path`` through the document to the list of records."""
    current = document
    walked: list[str] = []
    for part in [p for p in records_path.split(".") if p]:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif (
            isinstance(current, list)
            and part.isascii()
            and part.isdigit()
            and int(part) < len(current)
        ):
            current = current[int(part)]
        else:
            at = ".".join(walked) or "the top level"
            if isinstance(current, dict):
                keys = ", ".join(list(current)[:20]) or "none"
                found = f"the object at {at} has keys: {keys}"
            else:
                found = f"{at} is {_type_name(current)}"
            raise SourceError(
                f"records_path {records_path!r}: no {part!r} ({found})",
                where=where,
                hint="check source.records_path",
            )
        walked.append(part)
    if not isinstance(current, list):
        at = records_path or "the top level"
        hint = "set source.records_path to the list of records"
        if isinstance(current, dict):
            lists = [k for k, v in current.items() if isinstance(v, list)]
            if lists:
                hint += f" (lists here: {', '.join(lists[:10])})"
        raise SourceError(f"{at} is {_type_name(current)}, not a list", where=where, hint=hint)
    return current


def _record(value: Any, row: int, what: str) -> RawRecord:
    if isinstance(value, dict):
        record: RawRecord = dict(value)
    else:
        record = {ERROR_KEY: f"{what} {row} is {_type_name(value)}, not an object"}
    record[ROW_KEY] = row
    return record


class JsonConnector:
    """A JSON document's list of records."""

    def __init__(self, options: JsonOptions, base_dir: Path):
        self.options = options
        self.path = resolve_file(options.path, base_dir)

    def describe(self) -> str:
        at = f" at {self.options.records_path}" if self.options.records_path else ""
        return f"JSON file {self.path}{at}"

    def fingerprint(self) -> str:
        """See :func:`~syncengine.connectors.file_common.file_fingerprint`."""
        return file_fingerprint(self.path, "json", self.options)

    def records(self) -> Iterator[RawRecord]:
        where = str(self.path)
        check_readable(self.path)
        try:
            with self.path.open("r", encoding=self.options.encoding) as handle:
                document = json.load(handle)
        except UnicodeDecodeError:
            raise SourceError(
                f"is not {self.options.encoding} text",
                where=where,
                hint="set source.encoding",
            ) from None
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                where=where,
            ) from None
        except RecursionError:
            raise _too_deep(where) from None
        except OSError as exc:
            raise SourceError(f"cannot read the file: {exc.strerror}", where=where) from None
        items = find_records(document, self.options.records_path, where)
        if not items:
            raise SourceError(
                "the list of records is empty",
                where=where,
                hint="an empty export would remove everyone; check the export",
            )
        for index, item in enumerate(items, 1):
            yield _record(item, index, "record")
            items[index - 1] = None  # let the parsed record go once it is yielded


class JsonLinesConnector:
    """A JSON Lines file: one record per line, streamed."""

    def __init__(self, options: JsonOptions, base_dir: Path):
        if options.records_path:
            raise ConfigError(
                "source.records_path does not apply to JSON Lines (each line is one record)"
            )
        self.options = options
        self.path = resolve_file(options.path, base_dir)

    def describe(self) -> str:
        return f"JSON Lines file {self.path}"

    def fingerprint(self) -> str:
        """See :func:`~syncengine.connectors.file_common.file_fingerprint`."""
        return file_fingerprint(self.path, "jsonl", self.options)

    def records(self) -> Iterator[RawRecord]:
        where = str(self.path)
        check_readable(self.path)
        line_no = 0
        count = 0
        try:
            with self.path.open("r", encoding=self.options.encoding) as handle:
                for line_no, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    count += 1
                    try:
                        value = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield {
                            ERROR_KEY: f"line {line_no} is not valid JSON ({exc.msg} at column "
                            f"{exc.colno})",
                            ROW_KEY: line_no,
                            RAW_KEY: line[:MAX_RAW_CHARS],
                        }
                        continue
                    except RecursionError:
                        raise _too_deep(f"{where}, line {line_no}") from None
                    yield _record(value, line_no, "line")
        except UnicodeDecodeError:
            raise SourceError(
                f"cannot decode line {line_no + 1} as {self.options.encoding}",
                where=where,
                hint="set source.encoding",
            ) from None
        except OSError as exc:
            raise SourceError(f"cannot read the file: {exc.strerror}", where=where) from None
        if count == 0:
            raise SourceError(
                "has no records",
                where=where,
                hint="an empty export would remove everyone; check the export",
            )


def make_json_connector(options: Mapping[str, Any], base_dir: Path) -> JsonConnector:
    """Entry point ``json``."""
    return JsonConnector(JsonOptions.model_validate(dict(options)), base_dir)


def make_jsonl_connector(options: Mapping[str, Any], base_dir: Path) -> JsonLinesConnector:
    """Entry point ``jsonl``."""
    return JsonLinesConnector(JsonOptions.model_validate(dict(options)), base_dir)
