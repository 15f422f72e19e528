"""Poll a URL every few milliseconds from a process of its own and record every answer's latency.

    python -m tidegate_bench.healthz_poller --url http://127.0.0.1:PORT/healthz [--interval 0.01]

Its own process, so nothing the benchmark client does (building bodies, writing 300 MB) delays a
poll: a slow poll is the gateway's. Each poll is one line on stdout, ``start latency_ms status``,
with ``start`` on the machine-wide monotonic clock (``time.monotonic``), which the benchmark
compares with the times of its phases. It stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import sys
import time
from dataclasses import dataclass
from types import FrameType
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Poll:
    start: float
    latency_ms: float
    status: int
    """0: no answer (connection refused, reset or timed out)."""


def parse_polls(text: str) -> list[Poll]:
    polls = []
    for line in text.splitlines():
        start, latency, status = line.split()
        polls.append(Poll(float(start), float(latency), int(status)))
    return polls


def _poll_once(connection: http.client.HTTPConnection, path: str) -> int:
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    return response.status


def run(url: str, interval_s: float, timeout_s: float) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    while not stop:
        start = time.monotonic()
        try:
            status = _poll_once(connection, parts.path or "/")
        except (OSError, http.client.HTTPException):
            status = 0
            connection.close()  # reconnects on the next request
        latency_ms = (time.monotonic() - start) * 1000
        sys.stdout.write(f"{start:.6f} {latency_ms:.3f} {status}\n")
        time.sleep(max(0.0, interval_s - (time.monotonic() - start)))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Poll a URL and print each latency.")
    parser.add_argument("--url", required=True)
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    run(args.url, args.interval, args.timeout)


if __name__ == "__main__":
    main()
