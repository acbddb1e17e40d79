"""Characters `str.isdigit` calls digits but `int` refuses (²) or reads as numbers (٣).

They are text, not numbers, wherever a string is read as a number.
Found by the mapping property test: a cell '²' made ``excel_serial_date`` raise ValueError.
"""

from __future__ import annotations

import pytest

from syncengine.connectors.http_source import _MISSING, dig
from syncengine.connectors.json_source import find_records
from syncengine.connectors.values import excel_serial_date
from syncengine.errors import SourceError


@pytest.mark.parametrize("text", ["²", "①", "12²", "٣"])
def test_excel_serial_date_is_none_for_non_ascii_digits(text: str) -> None:
    assert excel_serial_date(text) is None


def test_json_records_path_with_a_superscript_is_a_clear_error() -> None:
    with pytest.raises(SourceError) as caught:
        find_records({"data": [[{"a": 1}]]}, "data.²", where="staff.json")
    assert "staff.json" in str(caught.value)


def test_http_dig_with_a_superscript_finds_nothing() -> None:
    assert dig({"data": [[1]]}, "data.²") is _MISSING
