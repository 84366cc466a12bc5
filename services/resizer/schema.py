"""Tables of the resizer: originals and a cache of rendered variants."""

from sqlalchemy import Column, DateTime, Integer, LargeBinary, MetaData, PrimaryKeyConstraint, String, Table

metadata = MetaData()

originals = Table(
    "originals",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("format", String(8), nullable=False),
    Column("width", Integer, nullable=False),  # as displayed, after EXIF orientation
    Column("height", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

variants = Table(
    "variants",
    metadata,
    Column("image_id", String(32), nullable=False),
    Column("key", String(64), nullable=False),
    Column("content_type", String(32), nullable=False),
    Column("data", LargeBinary, nullable=False),
    PrimaryKeyConstraint("image_id", "key", name="pk_variants"),
)
