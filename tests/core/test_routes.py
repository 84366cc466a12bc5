"""The route table: the sticky salt (per rollout, so that no customer is on every canary), bucket
groups, upstream URLs and the mirror's baseline flag, each refused with its field."""

from __future__ import annotations

import pytest

from canary.router.split import choose_track
from core.routes import TableError, parse_table


def _route(salt: str | None) -> dict[str, object]:
    sticky: dict[str, object] = {"header": "X-Account-Id"}
    if salt is not None:
        sticky["salt"] = salt
    return {
        "upstreams": {"stable": "http://127.0.0.1:1", "canary": "http://127.0.0.1:2"},
        "weight": 10,
        "sticky": sticky,
    }


def _canary_accounts(salt: str | None) -> set[int]:
    route = parse_table({"services": {"svc": _route(salt)}}).services["svc"]
    return {a for a in range(2000) if choose_track(route, {"x-account-id": str(a)}, []) == "canary"}


def test_a_salt_moves_other_customers_onto_the_canary_and_round_trips() -> None:
    unsalted, first, second = _canary_accounts(None), _canary_accounts("r-1"), _canary_accounts("r-2")
    for accounts in (unsalted, first, second):
        assert 140 <= len(accounts) <= 260  # about 10% of 2000
    assert len(first & second) < 0.3 * len(first)  # other rollouts, mostly other customers
    assert _canary_accounts("r-1") == first  # the same salt: the same customers, on every replica
    table = parse_table({"services": {"svc": _route("r-1")}})
    assert parse_table(table.to_dict()) == table


def test_a_bad_salt_is_refused_with_its_field() -> None:
    with pytest.raises(TableError, match=r"services\.svc\.sticky\.salt"):
        parse_table({"services": {"svc": _route("x" * 65)}})


def test_sticky_bucket_groups_round_trip_and_bad_ones_are_refused_with_their_field() -> None:
    route = _route("r-1")
    route["sticky"] = {**route["sticky"], "groups": [1000, 5000]}  # type: ignore[dict-item]
    table = parse_table({"services": {"svc": route}})
    assert table.services["svc"].sticky.groups == (1000, 5000)
    assert parse_table(table.to_dict()) == table
    for bad in ([5000, 1000], [0, 10], [10_000], "500", [True], list(range(1, 40))):
        route["sticky"] = {"header": "X-Account-Id", "groups": bad}
        with pytest.raises(TableError, match=r"services\.svc\.sticky\.groups"):
            parse_table({"services": {"svc": route}})


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:99999", "bad port"),
        ("http://h:abc", "bad port"),
        ("http://h:0", "bad port"),
        ("http://[::1", "not an http"),
        ("ftp://h", "not an http"),
        ("http://:80", "not an http"),
    ],
)
def test_an_upstream_url_with_a_bad_port_or_host_is_refused_with_its_field(url: str, problem: str) -> None:
    route = {"upstreams": {"stable": url}}
    with pytest.raises(TableError, match=r"^services\.svc\.upstreams\.stable: ") as caught:
        parse_table({"services": {"svc": route}})
    assert problem in str(caught.value) and repr(url) in str(caught.value)


def test_an_upstream_url_with_or_without_a_port_still_parses() -> None:
    ups = {"stable": "http://127.0.0.1:8001/", "canary": "https://canary.internal", "baseline": "http://[::1]:65535"}
    table = parse_table({"services": {"svc": {"upstreams": ups}}})
    assert table.services["svc"].upstreams == {
        "stable": "http://127.0.0.1:8001",
        "canary": "https://canary.internal",
        "baseline": "http://[::1]:65535",
    }


def test_the_mirrors_stable_baseline_flag_round_trips_and_anything_but_a_flag_is_refused() -> None:
    route = {**_route(None), "mirror": {"share": 1.0, "stable_baseline": True}}
    table = parse_table({"services": {"svc": route}})
    assert table.services["svc"].mirror.stable_baseline is True
    assert parse_table(table.to_dict()) == table
    for bad in ("yes", 1, None):
        route["mirror"] = {"share": 1.0, "stable_baseline": bad}
        with pytest.raises(TableError, match=r"services\.svc\.mirror\.stable_baseline: must be true or false"):
            parse_table({"services": {"svc": route}})
