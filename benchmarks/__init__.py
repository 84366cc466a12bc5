"""Measured, not asserted: each benchmark prints one JSON object last (see DESIGN.md)."""
