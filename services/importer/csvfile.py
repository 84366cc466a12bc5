"""Reading an uploaded CSV: encoding, delimiter, header, the column mapping and row validation.

Rows are parsed as a stream from the spooled upload (never the whole file as one string).  Each
row becomes either a :class:`ContactRow` or a rejection with its line number and reason; what
makes the whole file unusable (not UTF-8, a mapped column missing, empty) raises ``Unprocessable``.
The header and the delimiter are read by ``csv_header``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from core.app import parse_json
from core.errors import BadRequest, PayloadTooLarge, Unprocessable
from services.importer.csv_header import MAX_COLUMNS, Lookahead, choose_delimiter, line_of_bad_byte, text_stream

FIELDS = ("email", "first_name", "last_name")
DATA_PREFIX = "data."
MAX_EMAIL = 254
MAX_NAME = 255
MAX_DATA_VALUE = 1000
EMAIL_RE = re.compile(  # no control characters either: PostgreSQL refuses NUL in text
    r"^[^@\s\"(),:;<>\[\]\\\x00-\x1f\x7f]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
)


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


def read_rows(upload: IO[bytes], mapping: Mapping, max_rows: int) -> Iterator[ContactRow | tuple[int, str]]:
    """Yield a contact or ``(line, reason)`` per data row, in file order."""
    try:
        yield from _read_rows(upload, mapping, max_rows)
    except UnicodeDecodeError:
        raise Unprocessable(f"file is not UTF-8 text (line {line_of_bad_byte(upload)})", code="not_utf8") from None


def _read_rows(upload: IO[bytes], mapping: Mapping, max_rows: int) -> Iterator[ContactRow | tuple[int, str]]:
    ahead = Lookahead(text_stream(upload))
    ahead.read_line()  # the first line, or the start of one too long to be read whole
    if not ahead.cut and not (ahead.lines and ahead.lines[0].strip()):
        raise Unprocessable("file is empty: a header row is required", code="empty_file")
    delimiter = choose_delimiter(ahead)
    # the rows' reader parses the kept lines again, so its line_num counts every physical line
    reader = csv.reader(ahead.every_line(), delimiter=delimiter)
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
