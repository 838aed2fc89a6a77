"""Reading a user's data file: every problem one :class:`DataError` naming the file and the row or line.

Shared by the classification files (CSV/TSV/JSONL) and the instruction files (JSONL), so both say the
same about a file that is not UTF-8 text or a CSV cell too large to be one.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.core.errors import DataError

CSV_FIELD_LIMIT = 131072  # csv's own default: a bigger cell is most often an unbalanced quote eating the file


def read_text(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark allowed), or a one-line DataError naming the file, the
    offset and the line of the first byte that is not UTF-8."""
    raw = _read_bytes(path)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, raw, exc.start) from None


def csv_records(path: Path, delimiter: str = ",") -> Iterator[tuple[str, dict[str, Any]]]:
    """``("row N", record)`` for each data row of a CSV/TSV file with a header row (N counts the header as
    row 1, as a spreadsheet does). A cell over :data:`CSV_FIELD_LIMIT` characters, a row that does not
    parse, or bytes that are not UTF-8 stop with a DataError naming the file and the row."""
    import io

    text = read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    row = 1
    try:
        for row, record in enumerate(reader, start=2):  # noqa: B007 - the row number is also read after the loop
            yield f"row {row}", record
    except csv.Error as exc:
        what = str(exc)
        if "field larger than field limit" in what:
            raise DataError(f"{path}: row {row + 1} has a cell over {CSV_FIELD_LIMIT:,} "
                            "characters; is a quote left open? (texts that long are cut to max_length tokens "
                            "anyway: shorten them)") from None
        raise DataError(f"{path}: row {row + 1} is not valid CSV ({what})") from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _not_utf8(path: Path, raw: bytes, offset: int) -> DataError:
    line = raw.count(b"\n", 0, offset) + 1
    return DataError(f"{path}: not UTF-8 text: byte 0x{raw[offset]:02x} at offset {offset} (line {line}); save the "
                     "file as UTF-8")
