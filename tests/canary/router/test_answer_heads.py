"""The cache of encoded answer heads (canary/router/answer_heads.py) keeps what it promises: the
same bytes as encoding afresh, and bounded memory however many distinct heads upstreams send."""

from __future__ import annotations

from canary.router import answer_heads
from canary.router.answer_heads import HEADS_CACHED, answer_head, encode_head


def test_a_cached_head_is_the_encoded_head_and_keep_alive_is_part_of_the_key() -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    first = answer_head(200, headers, True, b"")
    assert (
        first
        == encode_head(200, headers, True, b"")
        == (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n")
    )
    assert answer_head(200, headers, True, b"") is first  # the second time, from the cache
    closing = answer_head(200, headers, False, b"")
    assert closing.endswith(b"connection: close\r\n\r\n")
    chunked = answer_head(200, headers[:1], True, b"transfer-encoding: chunked\r\n")
    assert chunked.endswith(b"transfer-encoding: chunked\r\n\r\n")


def test_distinct_and_large_heads_never_grow_the_cache_past_its_bound() -> None:
    for i in range(HEADS_CACHED * 3):
        answer_head(200, [(b"etag", b"%d" % i)], True, b"")
        assert len(answer_heads._HEADS) <= HEADS_CACHED
    answer_heads._HEADS.clear()
    big = [(b"x-big", b"v" * 5000)]
    assert answer_head(200, big, True, b"") == encode_head(200, big, True, b"")
    many = [(b"h%d" % i, b"v") for i in range(17)]
    assert answer_head(200, many, True, b"") == encode_head(200, many, True, b"")
    assert not answer_heads._HEADS  # neither a head over 4 KiB nor one of over 16 headers is kept
