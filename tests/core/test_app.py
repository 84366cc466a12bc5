"""The app factory, served by uvicorn on 127.0.0.1: what a consumer sees when a request fails early."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.app import MAX_HEADER_BYTES, create_app, parse_json
from core.errors import BadRequest, Unprocessable
from core.serve import serve_in_thread
from core.settings import Settings

CHUNK = b"x" * 65536
CHUNKS = 96  # 6 MiB: far more than the socket buffers hold, so the client is still sending


async def _fails_after_first_chunk(request: Request) -> JSONResponse:
    if request.path_params["how"] == "read-all":
        return JSONResponse({"bytes": len(await request.body())})
    async for _chunk in request.stream():
        if request.path_params["how"] == "crash":
            raise IndexError("string index out of range")  # a bug, like importer 1.1's
        raise Unprocessable("line 2: no email")
    return JSONResponse({"ok": True})


def _app():
    routes = [Route("/upload/{how}", _fails_after_first_chunk, methods=["POST"])]
    return create_app(Settings(db_url="sqlite://"), routes, max_body_bytes=len(CHUNK) * CHUNKS * 2)


def _upload():
    for _ in range(CHUNKS):
        yield CHUNK


@pytest.mark.parametrize(("how", "status"), [("crash", 500), ("invalid", 422)])
def test_client_still_uploading_gets_the_error_answer_not_a_reset(how, status):
    with serve_in_thread(_app()) as url, httpx.Client(timeout=30) as client:
        for _ in range(5):  # a reset is a race: give it several chances to show
            answer = client.post(f"{url}/upload/{how}", content=_upload())
            assert answer.status_code == status
            assert answer.headers["content-type"] == "application/json"
            assert "error" in answer.json()


def test_body_over_the_limit_while_streaming_is_413():
    app = create_app(
        Settings(db_url="sqlite://"),
        [Route("/upload/{how}", _fails_after_first_chunk, methods=["POST"])],
        max_body_bytes=1000,
    )
    with serve_in_thread(app) as url, httpx.Client(timeout=30) as client:
        for _ in range(5):  # the rest of the body is read and dropped: a 413, not a reset
            answer = client.post(f"{url}/upload/read-all", content=iter([b"y" * 600, b"y" * 600]))
            assert answer.status_code == 413


def test_an_idle_keep_alive_connection_outlives_the_clients_pool_expiry():
    # httpx drops idle connections after 5 s, the router's upstream pool after 30 s; the server must
    # keep them longer, or a request sent as the server closes fails (seen under load as ReadError)
    import socket
    import time

    with serve_in_thread(_app()) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            s.sendall(request)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            time.sleep(6)  # longer than httpx's expiry and uvicorn's default keep-alive (5 s)
            s.sendall(request)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_headers_over_the_limit_are_431_on_a_real_server():
    with serve_in_thread(_app()) as url, httpx.Client(timeout=30) as client:
        big = client.post(f"{url}/upload/read-all", content=b"x", headers={"X-Big": "y" * (MAX_HEADER_BYTES + 1)})
        assert big.status_code == 431 and big.json()["error"]["code"] == "headers_too_large"
        fine = client.post(f"{url}/upload/read-all", content=b"x", headers={"X-Big": "y" * 1000})
        assert fine.status_code == 200


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "Expecting property name enclosed in double quotes"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"n": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits) for integer string conversion"),
        (b'{"n": Infinity}', "Infinity is not a number JSON allows"),
        (b"\xff{", "'utf-8' codec can't decode byte 0xff in position 0"),
        (b'{"n": 1e400}', "1e400 is too large a number"),
        (b'{"s": ["ok", {"k\\ud800": 1}]}', "a string holds a lone surrogate escape"),
    ],
)
def test_a_body_json_cannot_parse_is_a_400_saying_why(raw, reason):
    with pytest.raises(BadRequest) as refused:
        parse_json(raw, "a JSON object")
    assert refused.value.message.startswith("body must be a JSON object (")
    assert reason in refused.value.message
    assert parse_json(b'{"n": 1}', "a JSON object") == {"n": 1}
