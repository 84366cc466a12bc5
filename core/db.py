"""Database engines and schema creation, for SQLite (the embedded default) and PostgreSQL.

``make_engine`` turns a URL into a configured engine: SQLite gets WAL mode, a busy timeout and
foreign keys on every connection; ``postgresql://`` URLs use psycopg 3.  ``create_schema`` is safe
to run twice and on a live database that another process is creating at the same moment.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from core.errors import ConfigError
from core.settings import Settings


def normalise_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    pool_timeout_s: float = 5.0,
    busy_timeout_ms: int = 10_000,
    echo: bool = False,
    durable_commits: bool = False,
) -> Engine:
    """SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit survives the process's crash,
    not the machine's (a power loss can take the last commits back).  ``durable_commits`` makes it
    ``FULL``: the WAL is synced on every commit (about 4 ms on this machine's disk: for callers that
    answer "stored" to someone who will not send again, and commit in groups).  PostgreSQL's
    durability is its server's settings."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=pool_timeout_s,
            connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False},
        )
        synchronous = "FULL" if durable_commits else "NORMAL"
        event.listen(engine, "connect", functools.partial(_sqlite_on_connect, busy_timeout_ms, synchronous))
        # pysqlite's own transaction handling starts transactions late; we issue BEGIN ourselves so
        # that a claiming transaction takes its write lock up front (BEGIN IMMEDIATE where asked).
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if url.startswith("postgresql"):
        return create_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_timeout=pool_timeout_s, pool_pre_ping=True
        )
    raise ConfigError(f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://...")


def engine_for(settings: Settings, *, durable_commits: bool = False) -> Engine:
    return make_engine(
        settings.db_url,
        pool_size=settings.db_pool_size,
        pool_timeout_s=settings.db_pool_timeout_s,
        busy_timeout_ms=settings.db_busy_timeout_ms,
        durable_commits=durable_commits,
    )


def _sqlite_on_connect(busy_timeout_ms: int, synchronous: str, dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # autocommit at the driver; SQLAlchemy's BEGIN rules
    cursor = dbapi_connection.cursor()
    # the busy timeout first: switching to WAL takes the file's lock, and releases starting at once
    # on one file (a stable and its baseline copy) met "database is locked" and exited at start
    cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA synchronous={synchronous}")
    cursor.close()


def _sqlite_on_begin(conn: Any) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "")
    conn.exec_driver_sql(f"BEGIN {mode}".strip())


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def placeholder(engine: Engine) -> str:
    """The driver's positional placeholder, for raw ``executemany`` on hot paths."""
    return "?" if engine.dialect.paramstyle == "qmark" else "%s"


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write after it reads.

    On SQLite it takes the write lock up front (``BEGIN IMMEDIATE``): two deferred transactions
    that both read and then write deadlock, and SQLite answers one of them "database is locked"
    at once instead of waiting out the busy timeout.
    """
    options = {"sqlite_begin": "IMMEDIATE"} if is_sqlite(engine) else {}
    with engine.connect().execution_options(**options) as conn, conn.begin():
        yield conn


def create_schema(engine: Engine, metadata: MetaData, *, attempts: int = 5) -> None:
    """Create missing tables and indexes; tables that exist are left alone.

    Two processes starting at once may both see a table missing and race to create it; the loser
    gets a duplicate-object error, which we answer by looking again.
    """
    for attempt in range(attempts):
        try:
            with write_transaction(engine) as conn:
                metadata.create_all(conn, checkfirst=True)
            return
        except (IntegrityError, ProgrammingError, OperationalError) as exc:
            if attempt == attempts - 1 or not _is_duplicate_object(exc):
                raise
            time.sleep(0.05 * (attempt + 1))


def _is_duplicate_object(exc: DBAPIError) -> bool:
    message = str(exc.orig).lower()
    return "already exists" in message or "duplicate" in message


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
