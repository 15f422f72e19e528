"""Prometheus metrics, structured logs and (later) traces."""
