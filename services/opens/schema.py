"""Tables of the open tracker: raw pixel events (durable intake) and processed outcomes."""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()
Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

raw_events = Table(
    "raw_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("campaign_id", BigInteger, nullable=False),
    Column("contact_id", BigInteger, nullable=False),
    Column("send_id", BigInteger, nullable=False),
    Column("user_agent", String(512), nullable=False),
    Column("client_ip", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    # 0..9999, a stable hash of event_id: queue consumers split their work by it.
    Column("bucket", Integer, nullable=False),
    Column("processed_at", DateTime(timezone=True)),
    Column("processed_by", String(16)),
)
Index(
    "ix_raw_events_pending",
    raw_events.c.id,
    postgresql_where=raw_events.c.processed_at.is_(None),
    sqlite_where=raw_events.c.processed_at.is_(None),
)

# One row per processed event: an open (filtered IS NULL) or a filtered event with its reason.
opens = Table(
    "opens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("campaign_id", BigInteger, nullable=False),
    Column("contact_id", BigInteger, nullable=False),
    Column("send_id", BigInteger, nullable=False),
    Column("client", String(40), nullable=False),
    Column("device", String(20), nullable=False),
    Column("machine", Boolean, nullable=False),
    Column("filtered", String(40)),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("release", String(16), nullable=False),
)
Index("ix_opens_campaign", opens.c.campaign_id)
