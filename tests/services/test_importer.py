"""The importer's contract, through its HTTP API, on real SQLite and PostgreSQL.

Tests taking ``release`` state what every release must do; the release-specific tests at the end
pin 1.1's bug (suppressed contacts with empty mapped cells fail the whole import) and 1.2's fix.
"""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from core.settings import Settings
from services.importer import RELEASES, csvfile
from services.importer.app import create_importer_app
from tests.conftest import asgi_client, healthz_answers_while_held

pytestmark = pytest.mark.anyio

MAPPING = json.dumps({"Email": "email", "First": "first_name", "Last": "last_name", "City": "data.city"})


def csv_bytes(rows: list[list[str]], header: str = "Email,First,Last,City", sep: str = ",") -> bytes:
    lines = [header.replace(",", sep)] + [sep.join(r) for r in rows]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def app_for(db_url: str, release: str = "1.0", **overrides: object):
    return create_importer_app(Settings(db_url=db_url, release=release, **overrides))  # type: ignore[arg-type]


async def upload(client, data: bytes, mapping: str = MAPPING, book: int = 1, headers=None):
    return await client.post(
        f"/address-books/{book}/imports",
        files={"file": ("contacts.csv", data, "text/csv")},
        data={"mapping": mapping},
        headers=headers or {},
    )


async def contacts_of(client, book: int = 1) -> dict[str, dict]:
    r = await client.get(f"/address-books/{book}/contacts", params={"limit": 1000})
    assert r.status_code == 200
    return {c["email"]: c for c in r.json()["contacts"]}


async def test_import_creates_and_rejects_with_line_and_reason(db_url, release):
    data = csv_bytes(
        [
            ["ann@example.com", "Ann", "Lee", "Leeds"],
            ["not-an-email", "Bob", "", ""],
            ["ANN@example.com", "Ann2", "", ""],
            ["cy@example.org", "C" * 300, "", ""],
            ["dee@example.org", "Dee", "", ""],
        ]
    )
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, data)
        assert r.status_code == 201, r.text
        result = r.json()
        assert (result["created"], result["updated"], result["rejected"]) == (2, 0, 3)
        reasons = {x["line"]: x["reason"] for x in result["rejections"]}
        assert "not a valid address" in reasons[3]
        assert reasons[4] == "duplicate of line 2"
        assert "longer than 255" in reasons[5]
        stored = await contacts_of(c)
        assert set(stored) == {"ann@example.com", "dee@example.org"}
        assert stored["ann@example.com"]["data"] == {"city": "Leeds"}
        again = await c.get(f"/imports/{result['id']}")
        assert again.json() == result


async def test_release_1_0_skips_suppressed_contacts(db_url):
    async with asgi_client(app_for(db_url)) as c:
        await upload(c, csv_bytes([["sup@example.com", "Old", "Name", "Paris"]]))
        r = await c.put("/suppressions/sup@example.com", json={"reason": "unsubscribed"})
        assert r.status_code == 200
        r = await upload(c, csv_bytes([["sup@example.com", "New", "", ""], ["new@example.com", "N", "", ""]]))
        result = r.json()
        assert (result["created"], result["updated"], result["suppressed_skipped"]) == (1, 0, 1)
        stored = await contacts_of(c)
        assert stored["sup@example.com"]["first_name"] == "Old"
        listed = (await c.get("/suppressions")).json()["suppressions"]
        assert listed == [{"email": "sup@example.com", "reason": "unsubscribed"}]
        assert (await c.delete("/suppressions/sup@example.com")).status_code == 204
        assert (await c.delete("/suppressions/sup@example.com")).status_code == 404
        assert (await c.put("/suppressions/x@example.com", json={"reason": "bored"})).status_code == 422


async def test_update_keeps_values_of_empty_cells(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        await upload(c, csv_bytes([["ann@example.com", "Ann", "Lee", "Leeds"]]))
        r = await upload(c, csv_bytes([["ann@example.com", "", "Smith", ""]]))
        assert r.json()["updated"] == 1
        ann = (await contacts_of(c))["ann@example.com"]
        assert (ann["first_name"], ann["last_name"], ann["data"]) == ("Ann", "Smith", {"city": "Leeds"})


async def test_idempotency_key_returns_first_result_without_importing_twice(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        data = csv_bytes([["ann@example.com", "Ann", "", ""]])
        first = await upload(c, data, headers={"Idempotency-Key": "k-1"})
        second = await upload(c, data, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == 201 and second.status_code == 200
        assert second.headers["idempotent-replayed"] == "true"
        assert second.json() == first.json()
        third = await upload(c, data, headers={"Idempotency-Key": "k-2"})
        assert third.json()["updated"] == 1 and third.json()["id"] != first.json()["id"]


async def test_bom_and_semicolons_are_accepted(db_url, release):
    data = b"\xef\xbb\xbf" + csv_bytes([["ann@example.com", "Ann", "", "Lyon"]], sep=";")
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, data)
        assert r.status_code == 201 and r.json()["created"] == 1
        assert (await contacts_of(c))["ann@example.com"]["data"] == {"city": "Lyon"}


@pytest.mark.parametrize(
    ("payload", "columns"),
    [
        # the audit's file: the delimiter was chosen by counting characters in the raw line, quotes and all
        (b'email,"Notes; comments; misc"\nann@example.com,hello\n', ["email", "Notes; comments; misc"]),
        (b'email,"Notes; comments; misc"\n', ["email", "Notes; comments; misc"]),  # no row to agree with
        (b'email;"Notes, comments, misc"\nann@example.com;hello\n', ["email", "Notes, comments, misc"]),
        (b'email|"a;b;c;d"|"e,f,g"\nann@example.com|hello|x\n', ["email", "a;b;c;d", "e,f,g"]),
        (b'email\t"x,y;z|w"\nann@example.com\thello\n', ["email", "x,y;z|w"]),
        (b'"email";"Say ""hi""; or ""bye"""\nann@example.com;hello\n', ["email", 'Say "hi"; or "bye"']),
        (b'email,Size 5" long\nann@example.com,hello\n', ["email", 'Size 5" long']),  # a lone quote, as before
    ],
)
async def test_delimiters_inside_quoted_header_names_do_not_choose_the_delimiter(db_url, release, payload, columns):
    mapping = json.dumps({"email": "email", columns[1]: "data.notes"})
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=mapping)
        assert r.status_code == 201, r.text
        stored = await contacts_of(c)
        if b"ann@" in payload:
            assert r.json()["created"] == 1 and stored["ann@example.com"]["data"] == {"notes": "hello"}
        else:
            assert r.json()["created"] == 0 and stored == {}


async def test_a_quoted_newline_in_a_header_name_is_read_as_one_name_and_lines_count_on(db_url, release):
    payload = (
        b'email,"Notes\nmore"\r\nann@example.com,hello\r\nnot-an-email,x\r\nbo@example.com,"two\nlines"\r\nbad,y\r\n'
    )
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=json.dumps({"email": "email", "Notes\nmore": "data.notes"}))
        assert r.status_code == 201, r.text
        assert r.json()["created"] == 2
        assert [(x["line"], x["reason"][:5]) for x in r.json()["rejections"]] == [(4, "email"), (7, "email")]
        stored = await contacts_of(c)
        assert stored["bo@example.com"]["data"] == {"notes": "two\nlines"}


@pytest.mark.parametrize(
    "payload",
    [
        b'email,"Notes\nann@example.com,hello\nbo@example.com,x\n',  # the quote never closes: not one long name
        b'email;"Notes\nann@example.com;hello\n',
    ],
)
async def test_a_header_quote_that_never_closes_is_a_422_not_a_header_of_the_whole_file(db_url, release, payload):
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=json.dumps({"email": "email"}))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_csv" and "header row" in error["message"]
        assert await contacts_of(c) == {}


@pytest.mark.parametrize("bad_line", [2, 3, 5000])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
async def test_a_byte_that_is_not_utf8_is_reported_on_its_own_line(db_url, release, bad_line, newline):
    # the header's read decoded a whole chunk ahead: a bad byte on line 2 was reported as "line 1"
    lines = [b"Email,First"] + [f"u{i}@example.com,U".encode() for i in range(2, 5002)]
    lines[bad_line - 1] = lines[bad_line - 1].replace(b",U", b",J\xe9r\xf4me")
    payload = b"\xef\xbb\xbf" + newline.encode().join(lines) + newline.encode()
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=json.dumps({"Email": "email", "First": "first_name"}))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "not_utf8" and error["message"] == f"file is not UTF-8 text (line {bad_line})"
        assert await contacts_of(c) == {}


@pytest.mark.parametrize(
    ("payload", "mapping", "status", "code"),
    [
        ("Email,First\nann@example.com,J\xe9r\xf4me\n".encode("latin-1"), None, 422, "not_utf8"),
        ("Email,First\nann@example.com,Ann\n".encode("utf-16"), None, 422, "not_utf8"),
        (b"", None, 422, "empty_file"),
        (b"Mail,First\nann@example.com,Ann\n", None, 422, "mapped_column_missing"),
        (b"Email\nann@example.com\n", json.dumps({"Email": "phone"}), 422, "bad_mapping"),
        (b"Email\nann@example.com\n", "{not json", 422, "bad_mapping"),
        (b"Email\nann@example.com\n", json.dumps({"Email": "first_name"}), 422, "bad_mapping"),
    ],
)
async def test_bad_files_get_a_clear_4xx_and_import_nothing(db_url, release, payload, mapping, status, code):
    mapping = mapping or json.dumps({"Email": "email", "First": "first_name"})
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=mapping)
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
        assert await contacts_of(c) == {}


async def test_header_cell_over_the_csv_field_limit_is_a_422_not_a_500(db_url, release):
    # csv's field limit is 64 KiB; a header cell over it used to escape as csv.Error -> 500.
    payload = b"Email,First," + b"x" * (70 * 1024) + b"\nann@example.com,Ann,y\n"
    mapping = json.dumps({"Email": "email", "First": "first_name"})
    async with asgi_client(app_for(db_url, release)) as c:
        r = await upload(c, payload, mapping=mapping)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_csv"
        assert "header" in error["message"]
        assert await contacts_of(c) == {}


async def test_too_many_rows_and_too_large_leave_no_partial_rows(db_url, release):
    rows = [[f"u{i}@example.com", "U", "", ""] for i in range(50)]
    async with asgi_client(app_for(db_url, release, import_max_rows=20, import_max_bytes=4000)) as c:
        r = await upload(c, csv_bytes(rows[:30]))
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_rows"
        r = await upload(c, csv_bytes(rows * 6))
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert await contacts_of(c) == {}


async def test_non_multipart_upload_is_refused(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        r = await c.post("/address-books/1/imports", content=b"Email\na@b.co\n", headers={"content-type": "text/csv"})
        assert r.status_code == 415


async def test_contact_listing_pages(db_url, release):
    rows = [[f"u{i:03d}@example.com", "U", "", ""] for i in range(25)]
    async with asgi_client(app_for(db_url, release)) as c:
        await upload(c, csv_bytes(rows), book=7)
        await upload(c, csv_bytes(rows[:3]), book=8)
        page = (await c.get("/address-books/7/contacts", params={"limit": 10})).json()
        seen = [x["email"] for x in page["contacts"]]
        while page["next_after"]:
            page = (await c.get("/address-books/7/contacts", params={"limit": 10, "after": page["next_after"]})).json()
            seen += [x["email"] for x in page["contacts"]]
        assert sorted(seen) == sorted(r[0] for r in rows)
        assert (await c.get("/address-books/7/contacts", params={"limit": 0})).status_code == 400
        assert (await c.get("/imports/nope")).status_code == 404


async def test_health_ready_and_metrics(db_url, release):
    async with asgi_client(app_for(db_url, release)) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok", "service": "importer", "release": release}
        assert (await c.get("/readyz")).status_code == 200
        await upload(c, csv_bytes([["ann@example.com", "Ann", "", ""]]))
        metrics = (await c.get("/metrics")).text
        assert (
            f'http_requests_total{{method="POST",release="{release}",route="/address-books/{{book_id}}/imports",'
            'service="importer",status="201"} 1.0' in metrics
        )
        assert f'importer_rows_total{{outcome="created",release="{release}",service="importer"}} 1.0' in metrics
        r = await c.get("/nowhere")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        assert "x-request-id" in r.headers


SUPPRESSED_WITH_EMPTY = [["sup@example.com", "new", "", "york"], ["fresh@example.com", "Fresh", "", ""]]


async def _book_with_suppressed_contact(c) -> None:
    await upload(c, csv_bytes([["sup@example.com", "Old", "Name", "Paris"]]))
    assert (await c.put("/suppressions/sup@example.com", json={"reason": "unsubscribed"})).status_code == 200


async def test_release_1_1_fails_the_whole_import_on_a_suppressed_contact_with_an_empty_cell(db_url):
    async with asgi_client(app_for(db_url, "1.1")) as c:
        await _book_with_suppressed_contact(c)
        r = await upload(c, csv_bytes(SUPPRESSED_WITH_EMPTY))
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
        stored = await contacts_of(c)
        assert set(stored) == {"sup@example.com"}  # the transaction rolled back: "fresh" was not created
        assert stored["sup@example.com"]["first_name"] == "Old"
        # the same contact with every mapped cell filled imports fine: only empty cells break it
        ok = await upload(c, csv_bytes([["sup@example.com", "new", "name", "york"]]))
        assert ok.status_code == 201 and ok.json()["suppressed_updated"] == 1
        assert (await contacts_of(c))["sup@example.com"]["first_name"] == "New"
        # and empty cells of contacts that are not suppressed are fine too
        assert (await upload(c, csv_bytes([["other@example.com", "", "", ""]]))).status_code == 201


async def test_release_1_2_refreshes_suppressed_contacts_and_keeps_values_of_empty_cells(db_url):
    async with asgi_client(app_for(db_url, "1.2")) as c:
        await _book_with_suppressed_contact(c)
        r = await upload(c, csv_bytes(SUPPRESSED_WITH_EMPTY))
        assert r.status_code == 201, r.text
        result = r.json()
        assert (result["created"], result["updated"], result["suppressed_updated"], result["suppressed_skipped"]) == (
            1,
            0,
            1,
            0,
        )
        sup = (await contacts_of(c))["sup@example.com"]
        assert (sup["first_name"], sup["last_name"], sup["data"]) == ("New", "Name", {"city": "York"})


async def test_release_1_2_result_equals_1_0_except_for_the_intended_change(tmp_path):
    results = {}
    for release in ("1.0", "1.2"):
        async with asgi_client(app_for(f"sqlite:///{tmp_path / release}.db", release)) as c:
            await _book_with_suppressed_contact(c)
            r = await upload(
                c, csv_bytes([*SUPPRESSED_WITH_EMPTY, ["bad-address", "", "", ""], ["nobody@example.com", "N", "", ""]])
            )
            results[release] = {k: v for k, v in r.json().items() if k not in ("id", "release")}
    assert results["1.0"]["suppressed_skipped"] == results["1.2"]["suppressed_updated"] == 1
    for key in ("created", "updated", "rejected", "rejections"):
        assert results["1.0"][key] == results["1.2"][key]


HUGE = "9" * 25  # past SQLite's and PostgreSQL's int64: the driver raised OverflowError (a 500)
INT32 = 2**31 - 1  # address book and contact ids are INTEGER columns: PostgreSQL's hold no more


@pytest.mark.parametrize(
    ("method", "path", "params", "status"),
    [
        ("GET", f"/address-books/{HUGE}/contacts", {}, 404),
        ("GET", f"/address-books/{'9' * 5000}/contacts", {}, 404),  # int() itself refused the path: a 500
        ("POST", f"/address-books/{HUGE}/imports", {}, 404),
        ("POST", f"/address-books/{INT32 + 1}/imports", {}, 404),  # PostgreSQL: integer out of range, a 500
        ("GET", f"/address-books/{INT32 + 1}/contacts", {}, 404),
        ("GET", "/address-books/1/contacts", {"after": str(INT32 + 1)}, 400),
        ("GET", "/address-books/1/contacts", {"after": HUGE}, 400),
        ("GET", "/address-books/1/contacts", {"after": "9" * 5000}, 400),
        ("GET", "/address-books/1/contacts", {"after": "²"}, 400),
        ("GET", "/address-books/1/contacts", {"after": "-1"}, 400),
        ("GET", "/address-books/1/contacts", {"limit": "²"}, 400),
        ("GET", "/address-books/1/contacts", {"limit": "9" * 5000}, 400),
        ("GET", "/suppressions", {"limit": HUGE}, 400),
    ],
)
async def test_ids_and_numbers_past_what_their_columns_hold_are_a_clear_4xx(db_url, method, path, params, status):
    async with asgi_client(app_for(db_url)) as c:
        if method == "POST":
            files = {"file": ("c.csv", csv_bytes([["ann@example.com", "Ann", "", ""]]), "text/csv")}
            r = await c.post(path, files=files, data={"mapping": MAPPING})
        else:
            r = await c.get(path, params=params)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        name = next(iter(params), "")
        assert (name in error["message"]) if name else ("ids are integers" in error["message"])
        assert len(error["message"]) < 200  # the 5,000 digits are not echoed back
        assert await contacts_of(c) == {}


async def test_listing_reads_the_largest_id_and_a_zero_padded_one(db_url):
    async with asgi_client(app_for(db_url)) as c:
        await upload(c, csv_bytes([["ann@example.com", "Ann", "", ""]]), book=INT32)
        assert set(await contacts_of(c, book=INT32)) == {"ann@example.com"}
        r = await c.get(f"/address-books/{'0' * 30}{INT32}/contacts", params={"after": "000"})
        assert [x["email"] for x in r.json()["contacts"]] == ["ann@example.com"]


@pytest.mark.parametrize("body", [b"[" * 4000, b'{"reason": NaN}', b"Infinity"])
async def test_suppression_bodies_json_refuses_are_a_400(db_url, body):
    async with asgi_client(app_for(db_url)) as c:
        r = await c.put("/suppressions/ann@example.com", content=body)
        assert r.status_code == 400, r.text
        assert "reason" in r.json()["error"]["message"]
        assert (await c.get("/suppressions")).json()["suppressions"] == []


async def test_a_mapping_of_more_columns_than_a_file_may_have_is_refused_at_once(db_url):
    # 40,000 columns (about 1 MB): the duplicate check counted each target in the whole list, and
    # blocked the event loop for the whole importer for seconds on end before its answer
    columns = {"Email": "email", **{f"c{i}": f"data.c{i}" for i in range(40_000)}}
    async with asgi_client(app_for(db_url)) as c:
        r = await upload(c, csv_bytes([["ann@example.com", "Ann", "", ""]]), mapping=json.dumps(columns))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_mapping"
        assert "40001 columns" in error["message"] and "at most 200" in error["message"]
        assert await contacts_of(c) == {}
        widest = {"Email": "email", **{f"c{i}": f"data.c{i}" for i in range(199)}}
        header = ",".join(widest)
        row = ",".join(["ann@example.com", *("x" * 199)])
        ok = await upload(c, f"{header}\n{row}\n".encode(), mapping=json.dumps(widest))
        assert ok.status_code == 201, ok.text
        assert len((await contacts_of(c))["ann@example.com"]["data"]) == 199


@pytest.mark.parametrize(
    "mapping",
    [
        "[" * 100_000,
        '{"Email": "email", "First": ' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"Email": "email", "First": ' + "9" * 5000 + "}",
        '{"Email": "email", "First": NaN}',
    ],
)
async def test_a_mapping_json_refuses_is_a_422_not_a_500(db_url, mapping):
    async with asgi_client(app_for(db_url)) as c:
        r = await upload(c, csv_bytes([["ann@example.com", "Ann", "", ""]]), mapping=mapping)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "bad_mapping" and error["message"].startswith("mapping")
        assert len(error["message"]) < 300
        assert await contacts_of(c) == {}


async def test_a_bad_mapping_target_is_named_in_a_short_message(db_url):
    async with asgi_client(app_for(db_url)) as c:
        mapping = json.dumps({"Email": "email", "C" * 50_000: ["x" * 50_000]})
        r = await upload(c, csv_bytes([["ann@example.com", "Ann", "", ""]]), mapping=mapping)
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_mapping"
        assert len(r.json()["error"]["message"]) < 300


async def test_the_mapping_is_parsed_off_the_event_loop(tmp_path, monkeypatch):
    entered, healthy = threading.Event(), threading.Event()
    answered_while_parsing: list[bool] = []
    parse = csvfile.Mapping.parse

    def parse_once_healthz_answered(raw: str | None) -> csvfile.Mapping:
        entered.set()
        # the event loop answers /healthz meanwhile, unless the parse holds it (then nothing answers)
        answered_while_parsing.append(healthy.wait(10))
        return parse(raw)

    monkeypatch.setattr(csvfile.Mapping, "parse", staticmethod(parse_once_healthz_answered))
    async with asgi_client(app_for(f"sqlite:///{tmp_path / 'i.db'}")) as c:
        importing = asyncio.create_task(upload(c, csv_bytes([["ann@example.com", "Ann", "", ""]])))
        await healthz_answers_while_held(c, entered, healthy, "the import's mapping parse", 10)
        assert (await importing).status_code == 201
    assert answered_while_parsing == [True]


async def test_text_with_nul_which_postgresql_cannot_hold_is_a_clear_4xx(db_url):
    # PostgreSQL's text refuses NUL: each of these was a DataError, a 500 (SQLite took them)
    async with asgi_client(app_for(db_url)) as c:
        assert (await c.get("/imports/a%00b")).status_code == 404
        assert (await c.delete("/suppressions/a%00b@example.com")).status_code == 404
        r = await c.put("/suppressions/a%00b@example.com", json={"reason": "bounced"})
        assert r.status_code == 422 and "not a valid address" in r.json()["error"]["message"]
        r = await c.get("/suppressions", params={"after": "a\x00"})
        assert r.status_code == 400 and "after" in r.json()["error"]["message"]
        rows = [
            ["a\x00b@example.com", "A", "", ""],
            ["ann@example.com", "An\x00n", "", ""],
            ["bo@example.com", "Bo", "", "x\x00"],
        ]
        r = await upload(c, csv_bytes(rows))
        assert r.status_code == 201, r.text
        reasons = {x["line"]: x["reason"] for x in r.json()["rejections"]}
        assert "not a valid address" in reasons[2] and "NUL" in reasons[3] and set(reasons) == {2, 3}
        stored = await contacts_of(c)
        assert set(stored) == {"bo@example.com"} and stored["bo@example.com"]["data"] == {"city": "x\x00"}
