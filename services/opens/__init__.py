"""Email open tracking: a signed tracking pixel, durable raw events, a processor and reports."""

RELEASES = ("1.0",)
