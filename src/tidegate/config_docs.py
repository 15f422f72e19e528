"""Generates the README's configuration reference from the schema in the ``config`` package.

``python -m tidegate.config_docs`` prints it; ``--write README.md`` replaces the text between
the reference markers in that file.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tidegate.config import Config

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if value is None:
        return "unset"
    if isinstance(value, str) and value == "":
        return '""'
    if isinstance(value, Path) and str(value).startswith(str(Path.home())):
        return "~/" + str(value.relative_to(Path.home()))
    return json.dumps(value, default=str) if not isinstance(value, str) else value


@functools.cache
def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """The docstring under each field of `model` and its bases, read from their source."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not issubclass(cls, BaseModel) or cls.__module__.startswith("pydantic"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for field, doc in zip(body, body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                docs[field.target.id] = inspect.cleandoc(doc.value.value)
    return docs


def _model(annotation: Any) -> type[BaseModel] | None:
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _item_models(annotation: Any) -> list[type[BaseModel]]:
    """The sections the items of a ``list[X]`` field may be: X, or each member of a union X
    (a discriminated union such as the content-safety checks)."""
    args = get_args(annotation)
    if get_origin(annotation) is not list or len(args) != 1:
        return []
    item = args[0]
    if get_origin(item) is Annotated:
        item = get_args(item)[0]
    members = get_args(item) if get_origin(item) in (Union, UnionType) else (item,)
    return [model for model in map(_model, members) if model is not None]


def _value_model(annotation: Any) -> type[BaseModel] | None:
    """Y of a ``dict[str, Y]`` field whose values are sections (named entries)."""
    args = get_args(annotation)
    return _model(args[1]) if get_origin(annotation) is dict and len(args) == 2 else None


def _kind(model: type[BaseModel]) -> str | None:
    """The ``kind`` literal that tells a union member apart, if it has one."""
    field = model.model_fields.get("kind")
    values = get_args(field.annotation) if field is not None else ()
    return str(values[0]) if len(values) == 1 else None


def _rows(
    model: type[BaseModel],
    prefix: str,
    *,
    in_list: bool = False,
    unions: dict[tuple[type[BaseModel], ...], str] | None = None,
) -> Iterator[tuple[str, str, str]]:
    """``unions``: the item unions documented so far, with where (a second list of the same
    union refers to the first)."""
    unions = {} if unions is None else unions
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        doc = field.description or _attribute_docs(model).get(name, "")
        description = doc.replace("\n", " ")
        section = _model(field.annotation)
        if section is not None:
            yield key, "", description
            if not in_list:  # a section inside list items refers to one documented elsewhere
                yield from _rows(section, key + ".", unions=unions)
            continue
        if name == "kind" and "[kind=" in prefix:
            continue  # said by the prefix
        items = _item_models(field.annotation) if not in_list else []
        union = tuple(items) if len(items) > 1 else None
        if union is not None and union in unions:
            yield key, _default(field), f"{description} Items: as in `{unions[union]}`."
            continue
        yield key, _default(field), description
        if in_list:
            continue
        if union is not None:
            unions[union] = key
        for item in items:
            kind = _kind(item) if union is not None else None
            if kind is None:
                yield from _rows(item, key + "[].", in_list=True)
                continue
            about = inspect.cleandoc(item.__doc__ or "").replace("\n", " ")
            yield f"{key}[kind={kind}]", "", about  # the kind's own docstring says what it does
            yield from _rows(item, f"{key}[kind={kind}].", in_list=True)
        value = _value_model(field.annotation)
        if value is not None:
            yield from _rows(value, key + ".<name>.", unions=unions)


def render() -> str:
    lines = [
        "| key | env variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, default, description in _rows(Config, ""):
        # A list item's fields have no variable of their own: the list's variable takes JSON.
        entry = "[" in key or "<name>" in key
        env = "" if entry else "`TIDEGATE_" + key.upper().replace(".", "__") + "`"
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | {env} | {shown} | {description} |")
    return "\n".join(lines)


def write(path: Path) -> None:
    text = path.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{path} has no {START} marker")
    path.write_text(f"{head}{START}\n{render()}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="file whose reference section to replace")
    args = parser.parse_args()
    if args.write:
        write(args.write)
    else:
        print(render())


if __name__ == "__main__":
    main()
