"""Generates the README's configuration reference from the schema in ``config.py``.

``python -m tidegate.config_docs`` prints it; ``--write README.md`` replaces the text between
the reference markers in that file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield key, "", (field.description or "").replace("\n", " ")
            yield from _rows(annotation, key + ".")
            continue
        yield key, _default(field), (field.description or "").replace("\n", " ")


def render() -> str:
    lines = [
        "| key | env variable | default | meaning |",
        "|---|---|---|---|",
    ]
    for key, default, description in _rows(Config, ""):
        env = "TIDEGATE_" + key.upper().replace(".", "__")
        shown = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | `{env}` | {shown} | {description} |")
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
