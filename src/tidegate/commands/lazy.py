"""A Typer group whose sub-commands are imported on first use (click's LazyGroup pattern).

Each entry names its command ("module:attr", a Typer app or a command function) and keeps the
short help the group's own ``--help`` lists, so listing the commands imports none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, ClassVar, NamedTuple

import typer
from typer.core import TyperCommand, TyperGroup


class LazyCommand(NamedTuple):
    name: str
    target: str
    """``module:attr``: a ``typer.Typer`` (a group) or a command function."""
    help: str


def load(entry: LazyCommand) -> Any:
    """The click command `entry` names, imported now; the help is the one in the table."""
    module_name, attr = entry.target.split(":")
    obj = getattr(importlib.import_module(module_name), attr)
    command: Any
    if isinstance(obj, typer.Typer):
        command = typer.main.get_group(obj)
    else:
        single = typer.Typer(add_completion=False)
        single.command(entry.name, help=entry.help)(obj)
        command = typer.main.get_command(single)
    command.name = entry.name
    command.help = entry.help
    return command


class _Commands(MutableMapping[str, Any]):
    """The group's name → command map: lazy entries load when looked up.

    While the group prints its help a lookup answers a stand-in holding the name and help only.
    """

    def __init__(self, eager: MutableMapping[str, Any], order: list[str], lazy: dict[str, Any]):
        self._loaded = eager
        self._order = order
        self._lazy = lazy
        self.listing = False

    def __getitem__(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        entry = self._lazy[name]  # KeyError: no such command
        if self.listing:
            return TyperCommand(entry.name, help=entry.help)
        command = self._loaded[name] = load(entry)
        return command

    def __setitem__(self, name: str, command: Any) -> None:
        if name not in self._order:
            self._order.append(name)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._order.remove(name)
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order


class LazyGroup(TyperGroup):
    """Subclass it with the lazy entries; pass it as ``typer.Typer(cls=...)``."""

    lazy_commands: ClassVar[tuple[LazyCommand, ...]] = ()
    """Listed before the eagerly registered commands (Typer lists commands, then groups)."""
    lazy_groups: ClassVar[tuple[LazyCommand, ...]] = ()
    """Listed after the eager commands and before the eager groups."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        eager = dict(self.commands)
        plain = [n for n, c in eager.items() if not isinstance(c, TyperGroup)]
        groups = [n for n, c in eager.items() if isinstance(c, TyperGroup)]
        order = [
            *(e.name for e in self.lazy_commands),
            *plain,
            *(e.name for e in self.lazy_groups),
            *groups,
        ]
        lazy = {e.name: e for e in (*self.lazy_commands, *self.lazy_groups)}
        self._lazy_commands = _Commands(eager, order, lazy)
        self.commands = self._lazy_commands

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        try:
            return self.commands[cmd_name]
        except KeyError:
            return None

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        with self._listing():
            super().format_help(ctx, formatter)

    @contextmanager
    def _listing(self) -> Iterator[None]:
        self._lazy_commands.listing = True
        try:
            yield
        finally:
            self._lazy_commands.listing = False
