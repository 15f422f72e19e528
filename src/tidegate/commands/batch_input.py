"""Turn a user's JSONL file into an OpenAI batch input file.

Each non-blank line is either a full batch line (``{"custom_id", "method", "url", "body"}``) or
just a request body. A bare body gets ``custom_id`` ``line-N`` (N: its line number in the file,
so a result points back at the line that asked for it), ``method`` POST and the batch's endpoint
as ``url``. ``--model`` fills ``body.model`` where a line has none. Everything else (duplicate
ids, a wrong url, a body the gateway rejects) is left to the gateway's validation, which reports
line numbers itself; only what cannot be sent at all is refused here.
"""

from __future__ import annotations

from typing import Any

import orjson


class InputFileError(ValueError):
    """The file cannot be turned into a batch input file; the message names the line."""


def is_batch_line(data: dict[str, Any]) -> bool:
    return "custom_id" in data and "body" in data


def normalise_line(
    data: dict[str, Any], *, number: int, endpoint: str, model: str | None
) -> dict[str, Any]:
    """One line (1-based ``number``) as a full batch line."""
    if is_batch_line(data):
        line = dict(data)
        line.setdefault("method", "POST")
        line.setdefault("url", endpoint)
    else:
        line = {"custom_id": f"line-{number}", "method": "POST", "url": endpoint, "body": data}
    body = line["body"]
    if not isinstance(body, dict):
        raise InputFileError(f"line {number}: body must be a JSON object")
    if "model" not in body:
        if model is None:
            raise InputFileError(f"line {number}: the request has no model; pass --model")
        line["body"] = {**body, "model": model}
    return line


def build_input_file(content: bytes, *, endpoint: str, model: str | None) -> tuple[bytes, int]:
    """The batch input file for ``content``, and its number of lines."""
    out: list[bytes] = []
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InputFileError(f"line {number}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise InputFileError(f"line {number}: expected a JSON object")
        line = normalise_line(data, number=number, endpoint=endpoint, model=model)
        out.append(orjson.dumps(line))
    if not out:
        raise InputFileError("the file has no requests")
    return b"\n".join(out) + b"\n", len(out)
