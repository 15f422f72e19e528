"""How listing commands print: whole tables, or ``--json`` for scripts.

Off a terminal (a pipe, a log, CI) Rich would fit tables into 80 columns and wrap every cell;
there the console is as wide as the widest row instead. ``--json`` prints the records themselves
(one JSON array), with ids, full timestamps and settings the table abbreviates.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console

UNBOUNDED_WIDTH = 10_000
"""Rich needs a width; a table only takes what its rows need, so this never pads."""

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the records as one JSON array instead of a table.")
]


def table_console(*, stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=UNBOUNDED_WIDTH)


def _default(value: Any) -> Any:
    from pydantic import BaseModel  # here: `--help` of the listing commands never needs it

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def print_json(records: Any) -> None:
    """``records`` (dataclasses, pydantic models, datetimes...) as indented JSON on stdout."""
    data = orjson.dumps(records, default=_default, option=orjson.OPT_INDENT_2)
    sys.stdout.write(data.decode() + "\n")
