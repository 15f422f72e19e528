"""The project's own benchmarks (`make bench-*`): each prints a table and writes JSON."""
