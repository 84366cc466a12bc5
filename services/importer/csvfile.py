"""Reading an uploaded CSV: encoding, delimiter, header, the column mapping and row validation.

Rows are parsed as a stream from the spooled upload (never the whole file as one string).  Each
row becomes either a :class:`ContactRow` or a rejection with its line number and reason; what
makes the whole file unusable (not UTF-8, a mapped column missing, empty) raises ``Unprocessable``.

The delimiter is chosen by parsing, never by counting characters: each of ``DELIMITERS`` reads the
header (quotes respected, so a quoted name may hold other delimiters or a newline) and the first
rows, from lines read once and kept (the header and at most ``SNIFF_CHARS`` more), which the rows'
reader then parses again.  A header quote that never closes is a 422 ``bad_csv``.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from core.app import parse_json
from core.errors import BadRequest, PayloadTooLarge, Unprocessable

FIELDS = ("email", "first_name", "last_name")
DATA_PREFIX = "data."
MAX_EMAIL = 254
MAX_NAME = 255
MAX_DATA_VALUE = 1000
MAX_COLUMNS = 200
DELIMITERS = (",", ";", "\t", "|")
FIELD_LIMIT = 64 * 1024  # characters in one field (csv's own limit, set below)
# past this, a header has a field over the limit or more than MAX_COLUMNS fields: refused either way
MAX_HEADER_CHARS = MAX_COLUMNS * (FIELD_LIMIT + 3)
SNIFF_ROWS = 10  # data rows a delimiter is tried on, after the header ...
SNIFF_CHARS = 64 * 1024  # ... within this many characters
EMAIL_RE = re.compile(  # no control characters either: PostgreSQL refuses NUL in text
    r"^[^@\s\"(),:;<>\[\]\\\x00-\x1f\x7f]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
)

csv.field_size_limit(FIELD_LIMIT)


@dataclass(slots=True)
class ContactRow:
    line: int
    email: str
    first_name: str
    last_name: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Mapping:
    """CSV column -> contact field (``email``, ``first_name``, ``last_name`` or ``data.NAME``).

    A file has at most ``MAX_COLUMNS`` columns, so a mapping has no more entries either; it is checked
    in one pass (a parse of the largest form field, 1 MB, takes milliseconds: run it off the event loop).
    """

    columns: dict[str, str]

    @classmethod
    def parse(cls, raw: str | None) -> Mapping:
        if not raw:
            raise Unprocessable("a 'mapping' field is required: a JSON object of CSV column -> contact field")
        try:
            value = parse_json(raw, "a JSON object of CSV column -> contact field")
        except BadRequest as exc:  # the field of a form, not the request's body
            raise Unprocessable("mapping " + exc.message.removeprefix("body "), code="bad_mapping") from None
        if not isinstance(value, dict) or not value:
            raise Unprocessable("mapping must be a non-empty JSON object", code="bad_mapping")
        if len(value) > MAX_COLUMNS:
            raise Unprocessable(
                f"mapping has {len(value)} columns: at most {MAX_COLUMNS}, as many as a file may have",
                code="bad_mapping",
            )
        mapped: dict[str, str] = {}  # field -> the first column mapped to it
        for column, target in value.items():
            if not isinstance(target, str) or not (
                target in FIELDS or (target.startswith(DATA_PREFIX) and 0 < len(target) - len(DATA_PREFIX) <= 64)
            ):
                raise Unprocessable(
                    f"mapping for column {_shown(column)}: {_shown(target)} is not a contact field "
                    "(email, first_name, last_name or data.NAME)",
                    code="bad_mapping",
                )
            if target in mapped:
                raise Unprocessable(f"mapping: field {target!r} is mapped twice", code="bad_mapping")
            mapped[target] = column
        if "email" not in mapped:
            raise Unprocessable("mapping: one column must map to 'email'", code="bad_mapping")
        return cls(columns=dict(value))


def _shown(value: object, limit: int = 80) -> str:
    """A value's repr for a message, cut to ``limit`` characters (a column name may be 1 MB long)."""
    if isinstance(value, (list, dict)):  # a repr of nested lists would go as deep as they do
        return "a JSON array" if isinstance(value, list) else "a JSON object"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _text_stream(upload: IO[bytes]) -> io.TextIOWrapper:
    head = upload.read(4)
    upload.seek(0)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise Unprocessable("file is UTF-16; save it as UTF-8", code="not_utf8")
    return io.TextIOWrapper(upload, encoding="utf-8-sig", newline="", errors="strict")


class _Lookahead:
    """The first physical lines of the file, read once and kept: each delimiter is tried on them, and
    the rows' reader parses them again before it goes on with the rest of the file.

    Each iteration starts at the first line; it reads a new line only while fewer than ``limit``
    characters are kept, and sets ``cut`` when it stops for that reason rather than at the file's end.
    """

    def __init__(self, text: io.TextIOWrapper) -> None:
        self.text = text
        self.lines: list[str] = []
        self.chars = 0
        self.limit = MAX_HEADER_CHARS
        self.cut = False

    def __iter__(self) -> Iterator[str]:
        i = 0
        while i < len(self.lines) or self.read_line():
            yield self.lines[i]
            i += 1

    def read_line(self) -> bool:
        if self.chars >= self.limit:
            self.cut = True
            return False
        line = self.text.readline()
        if not line:
            return False
        self.lines.append(line)
        self.chars += len(line)
        return True


@dataclass(frozen=True)
class _Fit:
    """What one delimiter makes of the file's start: an error in the header, or its names and how
    many of the first rows have as many fields."""

    delimiter: str
    error: str = ""
    # no name holds an odd number of quotes: a delimiter that splits a quoted name leaves its opening
    # quote (and any doubled ones) in one piece, which a name quoted whole (``"Say ""hi"""``) never has
    clean: bool = False
    agreeing: int = 0
    width: int = 0


def _fit(ahead: _Lookahead, delimiter: str) -> _Fit:
    # The header is parsed strictly: a quote that opens a field and never closes would otherwise take
    # the rest of the file as one column name.
    ahead.limit, ahead.cut = MAX_HEADER_CHARS, False
    too_long = f"the header row is longer than {MAX_HEADER_CHARS} characters"
    reader = csv.reader(ahead, delimiter=delimiter, strict=True)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        return _Fit(
            delimiter, too_long if ahead.cut else f"CSV error in the header row (line {reader.line_num}): {exc}"
        )
    if ahead.cut:
        return _Fit(delimiter, too_long)
    ahead.limit = sum(len(line) for line in ahead.lines[: reader.line_num]) + SNIFF_CHARS
    agreeing = 0
    try:
        for _, raw in zip(range(SNIFF_ROWS), reader, strict=False):
            if ahead.cut:  # the record may be cut short where the look-ahead stopped
                break
            agreeing += len(header) > 1 and len(raw) == len(header)
    except csv.Error:
        pass  # the rows are not read this strictly; an odd row only ends the sample
    clean = not any(name.count('"') % 2 for name in header)
    return _Fit(delimiter, clean=clean, agreeing=agreeing, width=len(header))


def _choose_delimiter(ahead: _Lookahead) -> str:
    """The delimiter under which the header, quotes respected, parses cleanly into as many fields as
    most of the first rows have; then the one giving the most columns; ties go to ``DELIMITERS``' order.

    With no clean reading, the first header error is the answer (a quote left open, a name over the
    field limit), else the best of the readings that leave a lone quote in a name (``5" long``).
    """
    fits = [_fit(ahead, d) for d in DELIMITERS]
    clean = [f for f in fits if f.clean]
    errors = [f.error for f in fits if f.error]
    if not clean and errors:
        raise Unprocessable(errors[0], code="bad_csv")
    # max() keeps the first of equals
    best = max(clean or [f for f in fits if not f.error], key=lambda f: (f.agreeing, f.width))
    return best.delimiter


def _line_of_bad_byte(upload: IO[bytes]) -> int:
    """The physical line (as csv counts them: LF, CRLF or CR) of the file's first byte that is not UTF-8.

    The text stream decodes a chunk ahead of what it hands out, so its position says nothing of where
    the byte is; this reads the upload again, a chunk at a time, on the error's path only.
    """
    upload.seek(0)
    line, pending = 1, b""
    while True:
        chunk = upload.read(64 * 1024)
        data = pending + chunk
        try:
            _, used = codecs.utf_8_decode(data, "strict", not chunk)
        except UnicodeDecodeError as exc:
            return line + _line_breaks(data[: exc.start])
        if chunk and data[:used].endswith(b"\r"):  # a CR whose LF may start the next chunk
            used -= 1
        line += _line_breaks(data[:used])
        pending = data[used:]
        if not chunk:
            return line


def _line_breaks(data: bytes) -> int:
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def read_rows(upload: IO[bytes], mapping: Mapping, max_rows: int) -> Iterator[ContactRow | tuple[int, str]]:
    """Yield a contact or ``(line, reason)`` per data row, in file order."""
    try:
        yield from _read_rows(upload, mapping, max_rows)
    except UnicodeDecodeError:
        raise Unprocessable(f"file is not UTF-8 text (line {_line_of_bad_byte(upload)})", code="not_utf8") from None


def _read_rows(upload: IO[bytes], mapping: Mapping, max_rows: int) -> Iterator[ContactRow | tuple[int, str]]:
    ahead = _Lookahead(_text_stream(upload))
    if not ahead.read_line() or not ahead.lines[0].strip():
        raise Unprocessable("file is empty: a header row is required", code="empty_file")
    delimiter = _choose_delimiter(ahead)
    # the rows' reader parses the kept lines again, so its line_num counts every physical line
    reader = csv.reader(itertools.chain(ahead.lines, ahead.text), delimiter=delimiter)
    header = [h.strip() for h in next(reader)]
    if len(header) > MAX_COLUMNS:
        raise Unprocessable(f"too many columns ({len(header)} > {MAX_COLUMNS})", code="too_many_columns")
    missing = [c for c in mapping.columns if c not in header]
    if missing:
        raise Unprocessable(
            f"mapped column {_shown(missing[0])} is not in the file's header",
            code="mapped_column_missing",
            detail={"missing": missing, "header": header[:50]},
        )
    index = {target: header.index(column) for column, target in mapping.columns.items()}
    email_at = index.pop("email")
    first_at = index.pop("first_name", None)
    last_at = index.pop("last_name", None)
    data_at = [(target[len(DATA_PREFIX) :], at) for target, at in index.items()]
    width = len(header)
    rows = 0
    seen: dict[str, int] = {}
    try:
        for raw in reader:
            line = reader.line_num
            if not raw or (len(raw) == 1 and not raw[0].strip()):
                continue
            rows += 1
            if rows > max_rows:
                raise PayloadTooLarge(f"too many rows: at most {max_rows} per import", code="too_many_rows")
            if len(raw) < width:
                raw += [""] * (width - len(raw))
            email = raw[email_at].strip().lower()
            if not email:
                yield line, "email is empty"
                continue
            if len(email) > MAX_EMAIL or not EMAIL_RE.match(email):
                yield line, f"email {email[:80]!r} is not a valid address"
                continue
            first_line = seen.get(email)
            if first_line is not None:
                yield line, f"duplicate of line {first_line}"
                continue
            seen[email] = line
            first = raw[first_at].strip() if first_at is not None else ""
            last = raw[last_at].strip() if last_at is not None else ""
            if len(first) > MAX_NAME or len(last) > MAX_NAME:
                yield line, f"name longer than {MAX_NAME} characters"
                continue
            if "\x00" in first or "\x00" in last:  # data values are stored as JSON, which escapes it
                yield line, "name contains a NUL character"
                continue
            data: dict[str, str] = {}
            too_long = ""
            for name, at in data_at:
                value = raw[at].strip()
                if len(value) > MAX_DATA_VALUE:
                    too_long = name
                    break
                data[name] = value
            if too_long:
                yield line, f"value of {too_long!r} longer than {MAX_DATA_VALUE} characters"
                continue
            yield ContactRow(line, email, first, last, data)
    except csv.Error as exc:
        raise Unprocessable(f"CSV error near line {reader.line_num}: {exc}", code="bad_csv") from None


def jsonable(value: Any) -> str:
    # Plain dumps() reuses json's cached C encoder; any keyword argument builds a new one per call.
    return json.dumps(value) if value else "{}"
