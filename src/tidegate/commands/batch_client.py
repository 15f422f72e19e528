"""A small client for the OpenAI Files and Batch HTTP APIs, as tidegate serves them.

The ``tidegate batch`` commands and the batch benchmark use it. It speaks the public HTTP API
only (not the gateway's Python internals), so it works against any OpenAI-compatible server.
aiohttp because it is already a runtime dependency (the ``openai`` package is not).

Failures become one exception, :class:`BatchApiError`, whose message is what a person should
read: the OpenAI error body's message for HTTP errors, or why the gateway could not be reached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:  # imported where a request is made: `tidegate batch --help` needs no HTTP stack
    import aiohttp

TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


class BatchApiError(Exception):
    """An HTTP error answer (``status`` set) or a transport failure (``status`` None)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class LineError:
    """One entry of a batch's ``errors.data``: why validation rejected the input file."""

    message: str
    code: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Batch:
    """The fields of an OpenAI batch object the CLI shows; ``raw`` keeps the whole object."""

    id: str
    status: str
    endpoint: str
    input_file_id: str
    completion_window: str
    created_at: int
    total: int
    completed: int
    failed: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[LineError, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def done(self) -> int:
        """Lines with a result so far (succeeded or failed)."""
        return self.completed + self.failed

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        counts = data.get("request_counts") or {}
        errors = (data.get("errors") or {}).get("data") or []
        return cls(
            id=str(data["id"]),
            status=str(data["status"]),
            endpoint=str(data.get("endpoint", "")),
            input_file_id=str(data.get("input_file_id", "")),
            completion_window=str(data.get("completion_window", "")),
            created_at=int(data.get("created_at") or 0),
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            output_file_id=data.get("output_file_id"),
            error_file_id=data.get("error_file_id"),
            errors=tuple(
                LineError(str(e.get("message", "")), e.get("code"), e.get("line")) for e in errors
            ),
            raw=data,
        )


@dataclass(frozen=True)
class BatchPage:
    batches: list[Batch]
    has_more: bool
    last_id: str | None


class BatchClient:
    """``async with BatchClient(base_url=..., api_key=...) as client: ...``

    ``base_url`` ends in /v1 (like OPENAI_BASE_URL).
    """

    def __init__(self, *, base_url: str, api_key: str | None, timeout_s: float = 300.0) -> None:
        self._base_url = base_url.rstrip("/")
        import aiohttp

        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BatchClient:
        import aiohttp

        self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    async def upload(self, *, filename: str, content: bytes, purpose: str = "batch") -> str:
        """Upload a file; returns its id."""
        import aiohttp

        form = aiohttp.FormData()
        form.add_field("purpose", purpose)
        form.add_field("file", content, filename=filename, content_type="application/jsonl")
        data = orjson.loads(await self._request("POST", "/files", data=form))
        return str(data["id"])

    async def create(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
    ) -> Batch:
        body: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            body["metadata"] = metadata
        return Batch.from_json(orjson.loads(await self._request("POST", "/batches", json=body)))

    async def retrieve(self, batch_id: str) -> Batch:
        return Batch.from_json(orjson.loads(await self._request("GET", f"/batches/{batch_id}")))

    async def list_page(self, *, limit: int, after: str | None = None) -> BatchPage:
        params = {"limit": str(limit), **({"after": after} if after else {})}
        data = orjson.loads(await self._request("GET", "/batches", params=params))
        return BatchPage(
            batches=[Batch.from_json(b) for b in data.get("data") or []],
            has_more=bool(data.get("has_more")),
            last_id=data.get("last_id"),
        )

    async def cancel(self, batch_id: str) -> Batch:
        raw = await self._request("POST", f"/batches/{batch_id}/cancel")
        return Batch.from_json(orjson.loads(raw))

    async def content(self, file_id: str) -> bytes:
        return await self._request("GET", f"/files/{file_id}/content")

    async def _request(self, method: str, path: str, **kwargs: Any) -> bytes:
        if self._session is None:
            raise RuntimeError("use BatchClient as an async context manager")
        import aiohttp

        url = self._base_url + path
        try:
            async with self._session.request(method, url, **kwargs) as response:
                body = await response.read()
                if response.status >= 400:
                    raise BatchApiError(
                        _error_message(response.status, body), status=response.status
                    )
                return body
        except aiohttp.ClientError as exc:
            # Connection refused, reset, bad URL: name the URL so a wrong --url is obvious.
            raise BatchApiError(f"cannot reach {url}: {exc}") from exc
        except TimeoutError as exc:
            raise BatchApiError(f"{method} {url} timed out") from exc


def _error_message(status: int, body: bytes) -> str:
    """The OpenAI error body's message, else the start of whatever the server sent."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return f"{error['message']} (HTTP {status})"
    text = body.decode("utf-8", "replace").strip()[:300]
    return f"HTTP {status}" + (f": {text}" if text else "")
