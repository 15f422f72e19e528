"""Fake upstreams for tests, benchmarks and the load tester's self-check.

The serving path never imports them (an import-linter contract says so).
"""
