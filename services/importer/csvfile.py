"""Reading an uploaded CSV: encoding, delimiter, header, the column mapping and row validation.

Rows are parsed as a stream from the spooled upload (never the whole file as one string).  Each
row becomes either a :class:`ContactRow` or a rejection with its line number and reason; what
makes the whole file unusable (not UTF-8, a mapped column missing, empty) raises ``Unprocessable``.

The delimiter is chosen by parsing, never by counting characters: each of ``DELIMITERS`` reads the
header (quotes respected, so a quoted name may hold other delimiters or a newline; as leniently as
the rows are read, so ``"a" ,b`` and ``a,"b"c`` read as they always have) and the first rows, from
lines read once and kept, which the rows' reader then parses again.  The look-ahead keeps the lines
the header's readings take (at most ``MAX_HEADER_CHARS``) and at most ``SNIFF_CHARS`` past the
longest of them; a longer line is never read whole for it, so a first line longer than a header may
be is refused (422 ``too_many_columns`` or ``bad_csv``) after reading ``MAX_HEADER_CHARS`` + 1
characters of it, and parsed by no delimiter.  A header quote that never closes is a 422 ``bad_csv``.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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

    It never holds more than ``limit`` + 1 characters: each line is read with ``readline(room + 1)``,
    where ``room`` is what ``limit`` leaves, so a line longer than that is never read whole here.  Such
    a line is kept aside (``pending``), never parsed by the sniffing, and stops the look-ahead for good
    (``cut``); the rows' reader reads the rest of it.  An iteration that runs out of lines sets ``ended``.
    """

    def __init__(self, text: io.TextIOWrapper) -> None:
        self.text = text
        self.lines: list[str] = []
        self.chars = 0
        self.limit = MAX_HEADER_CHARS
        self.pending = ""
        self.cut = False
        self.ended = False

    def from_line(self, start: int) -> Iterator[str]:
        self.ended = False
        i = start
        while i < len(self.lines) or self.read_line():
            yield self.lines[i]
            i += 1
        self.ended = True

    def read_line(self) -> bool:
        room = self.limit - self.chars
        if self.pending or room <= 0:
            self.cut = True
            return False
        line = self.text.readline(room + 1)
        if len(line) > room:
            self.pending, self.cut = line, True
            return False
        if not line:
            return False
        self.lines.append(line)
        self.chars += len(line)
        return True

    def count(self, delimiter: str) -> int:
        return sum(line.count(delimiter) for line in self.lines) + self.pending.count(delimiter)

    def every_line(self) -> Iterator[str]:
        """The file's lines from the first: the kept ones, then the stream's (the pending one made whole)."""
        yield from self.lines
        line = self.pending
        if line and not line.endswith("\n"):
            more = self.text.readline()
            # readline's limit may fall between a CR and its LF; a CR line that fit exactly is whole
            if line.endswith("\r") and more != "\n":
                yield line
                line = more
            else:
                line += more
        if line:
            yield line
        yield from self.text


@dataclass(frozen=True)
class _Fit:
    """What one delimiter makes of the file's start: an error in the header, or its names and how
    many of the first rows have as many fields."""

    delimiter: str
    error: str = ""
    code: str = "bad_csv"
    # no name holds an odd number of quotes: a delimiter that splits a quoted name leaves its opening
    # quote (and any doubled ones) in one piece, which a name quoted whole (``"Say ""hi"""``) never has
    clean: bool = False
    width: int = 0
    lines: int = 0  # physical lines the header takes
    agreeing: int = 0


def _read_header(ahead: _Lookahead, delimiter: str) -> _Fit:
    """The header under ``delimiter``, parsed as the rows' reader parses it (not strictly: ``"a" ,b``
    and ``a,"b"c`` read as they always have); only a quote still open where the look-ahead ends is an error.
    """
    first = ahead.lines[0] if ahead.lines else ""
    # Without a quote the header is this one line, with count + 1 fields: a huge line is not parsed
    # once per delimiter only to be refused (with quotes the count is only an upper bound: parse).
    if first and '"' not in first and first.count(delimiter) >= MAX_COLUMNS:
        return _Fit(delimiter, f"too many columns ({first.count(delimiter) + 1} > {MAX_COLUMNS})", "too_many_columns")
    reader = csv.reader(ahead.from_line(0), delimiter=delimiter)
    try:
        header = next(reader, [])
    except csv.Error as exc:
        return _Fit(delimiter, f"CSV error in the header row (line {reader.line_num}): {exc}")
    if ahead.ended:  # the header's record took every line there is: a quote opened and never closed
        if ahead.cut:
            return _too_long(ahead, delimiter)
        return _Fit(delimiter, f"CSV error in the header row: a quote never closes (lines 1-{reader.line_num})")
    if len(header) > MAX_COLUMNS:
        return _Fit(delimiter, f"too many columns ({len(header)} > {MAX_COLUMNS})", "too_many_columns")
    clean = not any(name.count('"') % 2 for name in header)
    return _Fit(delimiter, clean=clean, width=len(header), lines=reader.line_num)


def _too_long(ahead: _Lookahead, delimiter: str) -> _Fit:
    # past MAX_HEADER_CHARS, any reading has a name over the field limit or more than MAX_COLUMNS fields
    message = f"the header row is longer than {MAX_HEADER_CHARS} characters"
    count = ahead.count(delimiter)
    if count >= MAX_COLUMNS:
        return _Fit(delimiter, f"too many columns: {message}, {count} of them {delimiter!r}", "too_many_columns")
    return _Fit(delimiter, message)


def _agreeing(ahead: _Lookahead, fit: _Fit) -> int:
    """How many of the first rows after the header have as many fields as it."""
    if fit.width < 2:
        return 0
    reader = csv.reader(ahead.from_line(fit.lines), delimiter=fit.delimiter)
    agreeing = 0
    try:
        for _, raw in zip(range(SNIFF_ROWS), reader, strict=False):
            if ahead.ended and ahead.cut:  # the record may be cut short where the look-ahead stopped
                break
            agreeing += len(raw) == fit.width
    except csv.Error:
        pass  # an odd row only ends the sample
    return agreeing


def _choose_delimiter(ahead: _Lookahead) -> str:
    """The delimiter under which the header parses cleanly into as many fields as most of the first
    rows have; then the one giving the most columns; ties go to ``DELIMITERS``' order.  A clean
    reading of one column never beats one of several columns, clean or not (``a"b,c"d``).

    With no such reading, a header error is the answer (a quote left open, a name over the field limit,
    a header too long), else the best of the readings that leave a lone quote in a name (``5" long``).
    A reading of more than ``MAX_COLUMNS`` columns is never chosen: it is the answer (too many columns)
    when the others give one column each.
    """
    ahead.limit = MAX_HEADER_CHARS
    fits = [_read_header(ahead, d) for d in DELIMITERS]
    read = [f for f in fits if not f.error]
    if read:  # the rows after the longest reading of the header, within SNIFF_CHARS
        ahead.limit = max(sum(len(line) for line in ahead.lines[: f.lines]) for f in read) + SNIFF_CHARS
        read = [replace(f, agreeing=_agreeing(ahead, f)) for f in read]
    several = [f for f in read if f.width > 1]
    wide = any(f.code == "too_many_columns" for f in fits)  # several columns too, only too many
    clean = [f for f in read if f.clean and (f.width > 1 or not (several or wide))]
    errors = [f for f in fits if f.error and (f.code == "bad_csv" or not several)]
    if not clean and errors:
        error = next((f for f in errors if f.code == "too_many_columns"), errors[0])
        raise Unprocessable(error.error, code=error.code)
    # max() keeps the first of equals
    best = max(clean or several or read, key=lambda f: (f.agreeing, f.width))
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
    ahead.read_line()  # the first line, or the start of one too long to be read whole
    if not ahead.cut and not (ahead.lines and ahead.lines[0].strip()):
        raise Unprocessable("file is empty: a header row is required", code="empty_file")
    delimiter = _choose_delimiter(ahead)
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
