"""Reading a CSV upload's header: its text stream, the look-ahead the delimiter is chosen on, and
the line of a byte that is not UTF-8.  ``csvfile`` reads the rows after it.

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
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO

from core.errors import Unprocessable

MAX_COLUMNS = 200
DELIMITERS = (",", ";", "\t", "|")
FIELD_LIMIT = 64 * 1024  # characters in one field (csv's own limit, set below)
# past this, a header has a field over the limit or more than MAX_COLUMNS fields: refused either way
MAX_HEADER_CHARS = MAX_COLUMNS * (FIELD_LIMIT + 3)
SNIFF_ROWS = 10  # data rows a delimiter is tried on, after the header ...
SNIFF_CHARS = 64 * 1024  # ... within this many characters
csv.field_size_limit(FIELD_LIMIT)


def text_stream(upload: IO[bytes]) -> io.TextIOWrapper:
    head = upload.read(4)
    upload.seek(0)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise Unprocessable("file is UTF-16; save it as UTF-8", code="not_utf8")
    return io.TextIOWrapper(upload, encoding="utf-8-sig", newline="", errors="strict")


class Lookahead:
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


def _read_header(ahead: Lookahead, delimiter: str) -> _Fit:
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


def _too_long(ahead: Lookahead, delimiter: str) -> _Fit:
    # past MAX_HEADER_CHARS, any reading has a name over the field limit or more than MAX_COLUMNS fields
    message = f"the header row is longer than {MAX_HEADER_CHARS} characters"
    count = ahead.count(delimiter)
    if count >= MAX_COLUMNS:
        return _Fit(delimiter, f"too many columns: {message}, {count} of them {delimiter!r}", "too_many_columns")
    return _Fit(delimiter, message)


def _agreeing(ahead: Lookahead, fit: _Fit) -> int:
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


def choose_delimiter(ahead: Lookahead) -> str:
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


def line_of_bad_byte(upload: IO[bytes]) -> int:
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
