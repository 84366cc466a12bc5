"""Metric sources behind one Protocol (``base.MetricProvider``): builtin, and Prometheus (own issue)."""
