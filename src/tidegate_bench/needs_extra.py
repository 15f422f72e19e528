"""The load tester's heavy dependencies are the ``bench`` extra: say how to install them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

BENCH_EXTRA = frozenset({"numpy", "matplotlib"})


def missing_extra_message(command: str, module: str) -> str:
    return (
        f"error: `tidegate {command}` needs {module}, which is not installed: "
        "pip install 'tidegate[bench]'"
    )


@contextmanager
def bench_extra(command: str) -> Iterator[None]:
    """Around the imports `command` needs: a missing extra is a one-line message and exit 2."""
    try:
        yield
    except ModuleNotFoundError as exc:
        module = (exc.name or "").split(".")[0]
        if module not in BENCH_EXTRA:
            raise
        typer.echo(missing_extra_message(command, module), err=True)
        raise typer.Exit(2) from None
