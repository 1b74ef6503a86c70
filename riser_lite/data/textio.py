"""Reading text, JSON-lines and CSV files so that every error names the file and the line.

All readers take UTF-8 (a leading byte-order mark is tolerated). Bytes that are not UTF-8 are an error on the
line they occur in, never replaced or skipped.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from riser_lite.data.types import DataError


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number from 1, text without the line ending)`` for every line of a UTF-8 file."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path=path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not valid UTF-8; "
                                "expected UTF-8 text (re-save the file as UTF-8)", path=path,
                                line=number) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]  # byte-order mark written by some editors
            yield number, text.rstrip("\r\n")


def parse_json(text: str, path: Path, first_line: int = 1) -> Any:
    """`json.loads`, with any failure a `DataError` naming the file and the line where parsing stopped."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON ({err.msg} at column {err.colno})", path=path,
                        line=first_line + err.lineno - 1) from None
    except (ValueError, RecursionError) as err:  # nesting too deep, an integer of thousands of digits
        raise DataError(f"unreadable JSON ({type(err).__name__}: {str(err)[:80]})", path=path,
                        line=first_line) from None


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A whole UTF-8 file holding one JSON object."""
    path = Path(path)
    value = parse_json("\n".join(text for _, text in iter_lines(path)), path)
    if not isinstance(value, dict):
        raise DataError(f"expected a JSON object, got {type(value).__name__}", path=path, line=1)
    return value


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for every non-blank line of a JSON-lines file (one object a line)."""
    path = Path(path)
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        record = parse_json(text, path, number)
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object per line, got {type(record).__name__}",
                            path=path, line=number)
        yield number, record


def iter_csv_records(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number where the record starts, {column: cell})`` for a CSV file with a header row.

    The first record is the header. A record whose number of cells differs from the header's is an error,
    so a stray comma or quote never shifts values into the wrong column unnoticed.
    """
    path = Path(path)
    lines = (text + "\n" for _, text in iter_lines(path))
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError("empty file; expected a header row", path=path, line=1)
        header = [name.strip() for name in header]
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise DataError(f"header repeats column(s) {duplicated}", path=path, line=1)
        while True:
            start = reader.line_num + 1
            cells = next(reader, None)
            if cells is None:
                return
            if not cells:  # a blank line carries no record
                continue
            if len(cells) != len(header):
                raise DataError(f"record has {len(cells)} cells but the header has {len(header)} columns "
                                f"{header}", path=path, line=start)
            yield start, dict(zip(header, cells, strict=True))
    except csv.Error as err:
        raise DataError(f"malformed CSV ({err}); expected RFC-4180 quoting", path=path,
                        line=reader.line_num) from None
