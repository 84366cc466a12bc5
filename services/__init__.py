"""The three services of the incident, each with its releases.

What every service reads the same way lives here: integers from a path or a query string, and
text a database can hold.  A request's digits are checked before ``int()`` sees them, so that no
input reaches the database as an integer it cannot hold (SQLite raised ``OverflowError``, a 500) nor
makes ``int()`` itself fail (over 4,300 digits) or read what is not ASCII (``str.isdigit`` takes
``²`` and other Unicode digits).  Text with NUL never reaches PostgreSQL, whose text types refuse
it (a ``DataError``, a 500).
"""

from __future__ import annotations

from typing import overload

from starlette.requests import Request

from core.errors import BadRequest, NotFound

MAX_ID = 2**63 - 1  # the largest integer SQLite's INTEGER and PostgreSQL's BIGINT hold
MAX_INT32 = 2**31 - 1  # the largest PostgreSQL's INTEGER holds (SQLAlchemy's Integer)


def storable(text: str) -> bool:
    """Whether every database the services run on holds ``text`` (PostgreSQL's text refuses NUL)."""
    return "\x00" not in text


def decimal(raw: str, lo: int, hi: int) -> int | None:
    """``raw`` as an integer from ``lo`` to ``hi`` (both >= 0), or None: ASCII digits only, and never
    more of them (past leading zeros) than ``hi`` has."""
    digits = raw.lstrip("0") or raw[:1]
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(hi)):
        return None
    value = int(digits)
    return value if lo <= value <= hi else None


@overload
def query_int(request: Request, name: str, lo: int, hi: int, default: int) -> int: ...
@overload
def query_int(request: Request, name: str, lo: int, hi: int, default: None = None) -> int | None: ...
def query_int(request: Request, name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    """The query parameter ``name`` (absent or empty: ``default``), or a 400 that says what it must be."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = decimal(raw, lo, hi)
    if value is None:
        raise BadRequest(f"{name} must be an integer from {lo} to {hi}", code="bad_parameter")
    return value


def path_id(request: Request, name: str, what: str, hi: int = MAX_ID) -> int:
    """The id in the path parameter ``name``, or a 404: a path whose id is no integer from 0 to
    ``hi`` (what the id's column holds) names nothing that can exist (``what``: "campaign"...)."""
    raw: str = request.path_params[name]
    value = decimal(raw, 0, hi)
    if value is None:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise NotFound(f"no {what} {shown!r}: ids are integers from 0 to {hi}")
    return value
