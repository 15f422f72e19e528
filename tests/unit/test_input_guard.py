"""NUL characters in path, query and admin-body parameters are found and named."""

from __future__ import annotations

from typing import Any

import pytest

from tidegate.api.input_guard import check_params, find_nul
from tidegate.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"name": "a\x00b"}, "name"),
        ({"settings": {"allowed_models": ["ok", "b\x00"]}}, "settings.allowed_models.1"),
        ({"metadata": {"k\x00": "v"}}, "metadata.k"),
        ([{"a": 1}, {"b": ["\x00"]}], "1.b.0"),
        ({"name": "fine", "n": 5, "x": None, "deep": [[[[["ok"]]]]]}, None),
    ],
)
def test_find_nul_names_the_field(value: Any, path: str | None) -> None:
    assert find_nul(value) == path


def test_find_nul_is_iterative() -> None:
    deep: Any = "\x00"
    for _ in range(50_000):
        deep = [deep]
    assert find_nul(deep) is not None


def test_check_params_names_path_and_query_parameters() -> None:
    with pytest.raises(InvalidRequestError) as path:
        check_params({"path_params": {"file_id": "file-\x00"}, "query_string": b""})
    assert (path.value.status, path.value.param) == (400, "file_id")
    with pytest.raises(InvalidRequestError) as query:
        check_params({"path_params": {}, "query_string": b"limit=5&after=ab%00cd"})
    assert query.value.param == "after"
    check_params({"path_params": {"file_id": "file-1"}, "query_string": b"after=a%20b"})
