"""The importer's header and delimiter, through its HTTP API: headers 1.0 read are read as 1.0 read
them, and a first line too long to be a header is refused without being read whole.

The expected columns are what release 1.0's reader made of each header before the delimiter was
chosen by parsing (the raw line's most frequent delimiter, then a lenient parse of that line).
"""

from __future__ import annotations

import json
import tracemalloc

import pytest

from services.importer import RELEASES, csv_header
from tests.conftest import asgi_client
from tests.services.test_importer import app_for, contacts_of, upload

pytestmark = pytest.mark.anyio


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


QUOTED_COMMA_NAMES = [f"c{i}, x" for i in range(150)]  # 300 commas in the line, 151 columns


@pytest.mark.parametrize(
    ("header", "sep", "columns"),
    [
        # the review's table: a space next to a closing quote, a name that goes on after one
        ('"email" ,"first"', ",", ["email", "first"]),
        ('"email","first" ', ",", ["email", "first"]),
        ('email,"first"name', ",", ["email", "firstname"]),
        ('email,name,"Notes" (optional)', ",", ["email", "name", "Notes (optional)"]),
        ('email;"first"name', ";", ["email", "firstname"]),
        # one column that is "clean" (an even number of quotes) does not beat several that are not
        ('email,Size 5" long,Size 6" wide', ",", ["email", 'Size 5" long', 'Size 6" wide']),
        ('"em""ail",x', ",", ['em"ail', "x"]),
        ('email,"x"\t"y"', ",", ["email", 'x\t"y"']),
        # more than MAX_COLUMNS commas, most of them quoted: still its 151 columns
        ("email," + ",".join(f'"{n}"' for n in QUOTED_COMMA_NAMES), ",", ["email", *QUOTED_COMMA_NAMES]),
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
async def test_headers_release_1_0_read_are_read_as_it_read_them(db_url, release, header, sep, columns, newline):
    values = [f"v{i}" for i in range(1, len(columns))]
    payload = (header + newline + sep.join(["ann@example.com", *values]) + newline).encode()
    mapping = {columns[0]: "email"} | {name: f"data.c{i}" for i, name in enumerate(columns[1:], 1)}
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=json.dumps(mapping))
        assert r.status_code == 201, r.text
        assert (r.json()["created"], r.json()["rejected"]) == (1, 0)
        stored = (await contacts_of(c))["ann@example.com"]
        assert stored["data"] == {f"c{i}": v for i, v in enumerate(values, 1)}


async def test_a_semicolon_file_whose_quoted_names_hold_many_commas_is_read_with_semicolons(db_url, release):
    # 1.0 counted the commas (over MAX_COLUMNS of them) and refused the file as too many columns
    names = [f"q{i}, a, b, c, d, e, f, g" for i in range(30)]
    header = ";".join(["email", *(f'"{n}"' for n in names)])
    payload = (header + "\nann@example.com" + ";v" * 30 + "\n").encode()
    mapping = {"email": "email", names[29]: "data.last"}
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=json.dumps(mapping))
        assert r.status_code == 201, r.text
        assert (await contacts_of(c))["ann@example.com"]["data"] == {"last": "v"}


HUGE = csv_header.MAX_HEADER_CHARS + 3 * 1024 * 1024  # characters in the first line: more than a header may have


@pytest.mark.parametrize(
    ("unit", "code"),
    [(",", "too_many_columns"), (",;\t|", "too_many_columns"), ("a;", "too_many_columns"), ("x", "bad_csv")],
)
async def test_a_huge_first_line_is_refused_without_being_read_whole(db_url, unit, code):
    payload = (unit * (HUGE // len(unit))).encode() + b"\nann@example.com\n"
    async with asgi_client(app_for(db_url)) as c:
        tracemalloc.start()
        try:
            r = await upload(c, payload, mapping=json.dumps({"email": "email"}))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # read whole, the line alone is len(payload) characters, and parsed a list item per field (before:
        # 157-302 MB here); the look-ahead holds at most MAX_HEADER_CHARS + 1 of it (with the upload's own
        # copies: 26 MB)
        assert peak < len(payload) + 3 * csv_header.MAX_HEADER_CHARS, peak
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == code and str(csv_header.MAX_HEADER_CHARS) in error["message"]
        assert await contacts_of(c) == {}


async def test_a_header_line_of_more_than_max_columns_fields_is_refused_as_too_many_columns(db_url):
    payload = b"email" + b",x" * csv_header.MAX_COLUMNS + b"\nann@example.com\n"
    async with asgi_client(app_for(db_url)) as c:
        r = await upload(c, payload, mapping=json.dumps({"email": "email"}))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "too_many_columns" and f"({csv_header.MAX_COLUMNS + 1} > " in error["message"]


@pytest.mark.parametrize(
    ("long_row", "newline"),
    [
        # a row longer than the look-ahead's room: its start is kept aside and the rows' reader reads it whole
        ("a@example.com," + "x" * 60_000 + "," + "y" * 60_000, "\n"),
        # exactly the room + 1 characters read: the limit falls between CR and LF, or after a whole line
        ("a@example.com," + "x" * (csv_header.SNIFF_CHARS - 14), "\r\n"),
        ("a@example.com," + "x" * (csv_header.SNIFF_CHARS - 14), "\r"),
        ("a@example.com," + "x" * (csv_header.SNIFF_CHARS - 14), "\n"),
    ],
)
async def test_a_row_longer_than_the_look_ahead_is_read_as_one_row(db_url, long_row, newline):
    header = "email,notes"
    payload = newline.join([header, long_row, "b@example.com,y", "bad,z", "c@example.com,w"]) + newline
    async with asgi_client(app_for(db_url)) as c:
        r = await upload(c, payload.encode(), mapping=json.dumps({"email": "email", "notes": "data.notes"}))
        assert r.status_code == 201, r.text
        result = r.json()
        assert result["created"] == 2  # the long row is line 2, refused for its value's length
        reasons = [(x["line"], x["reason"]) for x in result["rejections"]]
        assert reasons == [
            (2, "value of 'notes' longer than 1000 characters"),
            (4, "email 'bad' is not a valid address"),
        ]
        stored = await contacts_of(c)
        assert stored["b@example.com"]["data"] == {"notes": "y"} and "c@example.com" in stored
