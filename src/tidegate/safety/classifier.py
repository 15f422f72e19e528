"""The classifier check: a guard model asked whether a text is safe.

``GuardPool`` asks a chat model served as one of the gateway's own pools, in Llama Guard's
format (the guard's chat template wraps the conversation in its instructions; the answer is
``safe``, or ``unsafe`` and the violated categories on the next line, ``unsafe\\nS1,S10``).
``ModerationEndpoint`` posts to an endpoint shaped like OpenAI's /v1/moderations. Both have
their own time limit; a guard that times out, fails or answers something unreadable raises
``CheckError``, and the check's ``on_error`` decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp
import orjson

from tidegate.config import ClassifierCheck
from tidegate.errors import TidegateError
from tidegate.protocol.requests import CompletionRequest
from tidegate.routing.replicas import RoutingTable
from tidegate.safety.checks import CheckError, FailureMode
from tidegate.upstream.exchange import Provider

__all__ = ["Classifier", "GuardPool", "ModerationEndpoint", "build_classifier"]

_GUARD_MAX_TOKENS = 20  # "unsafe\nS1,S2,..." fits


class Classifier(Protocol):
    label: str
    kind: str
    on_error: FailureMode

    async def classify(self, text: str, *, prompt: str | None, request_id: str) -> str | None:
        """None: safe; else the reason to refuse. ``prompt``: the request's text when ``text``
        is an answer (the guard judges the answer in its conversation)."""
        ...


class _Base:
    kind = "classifier"

    def __init__(self, config: ClassifierCheck) -> None:
        self.label = config.label
        self.on_error: FailureMode = config.on_error
        self._timeout_s = config.timeout_s
        self._max_chars = config.max_chars
        self._categories = frozenset(c.lower() for c in config.categories)

    async def classify(self, text: str, *, prompt: str | None, request_id: str) -> str | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._ask(text[-self._max_chars :], prompt, request_id)
        except TimeoutError:
            raise CheckError(f"the guard did not answer within {self._timeout_s:g} s") from None

    async def _ask(self, text: str, prompt: str | None, request_id: str) -> str | None:
        raise NotImplementedError

    def _blocks(self, categories: list[str]) -> bool:
        if not self._categories:
            return True
        return any(category.lower() in self._categories for category in categories)


class GuardPool(_Base):
    """A Llama Guard-style model behind one of the gateway's pools (picked, leased and
    balanced like any request's replica)."""

    def __init__(
        self, config: ClassifierCheck, routing: RoutingTable, providers: Mapping[str, Provider]
    ) -> None:
        super().__init__(config)
        self._pool = config.pool
        self._model = config.model
        self._routing = routing
        self._providers = providers

    async def _ask(self, text: str, prompt: str | None, request_id: str) -> str | None:
        if prompt is None:
            messages = [{"role": "user", "content": text}]
        else:
            messages = [
                {"role": "user", "content": prompt[-self._max_chars :]},
                {"role": "assistant", "content": text},
            ]
        try:
            pool = self._routing.pool(self._pool)
        except KeyError:
            raise CheckError(f"the guard pool '{self._pool}' does not exist") from None
        try:
            replica = pool.pick()
            model = self._model or replica.upstream_model
            body = {"model": model, "messages": messages, "max_tokens": _GUARD_MAX_TOKENS}
            body["temperature"] = 0
            response = await self._providers[replica.provider].open(
                replica, CompletionRequest("chat", body), model=model, request_id=request_id
            )
            completion = await response.read()
        except TidegateError as error:
            # Not the error's message: an upstream's error body may quote the text.
            raise CheckError(
                f"the guard pool '{self._pool}' failed ({error.error_type}, {error.status})"
            ) from None
        return self._verdict(completion.json())

    def _verdict(self, data: Any) -> str | None:
        try:
            answer = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            answer = None
        if not isinstance(answer, str):
            raise CheckError("the guard's answer has no text")
        lines = answer.strip().splitlines()
        head = lines[0].strip().lower() if lines else ""
        if head == "safe":
            return None
        if head != "unsafe":
            raise CheckError("the guard answered neither safe nor unsafe")
        categories = [c.strip() for c in lines[1].split(",") if c.strip()] if len(lines) > 1 else []
        if not self._blocks(categories):
            return None
        named = f" ({', '.join(categories)})" if categories else ""
        return f"the guard model classified the text unsafe{named}"


class ModerationEndpoint(_Base):
    """An external moderation endpoint: POST {"input": text} → results[0].flagged/categories."""

    def __init__(self, config: ClassifierCheck, session: aiohttp.ClientSession) -> None:
        super().__init__(config)
        self._url = config.url
        self._model = config.model
        self._session = session
        key = config.resolved_api_key()
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"

    async def _ask(self, text: str, prompt: str | None, request_id: str) -> str | None:
        body: dict[str, Any] = {"input": text}
        if self._model:
            body["model"] = self._model
        try:
            async with self._session.post(
                self._url,
                data=orjson.dumps(body),
                headers={**self._headers, "X-Request-Id": request_id},
            ) as response:
                if response.status >= 400:
                    raise CheckError(f"the moderation endpoint answered {response.status}")
                data = orjson.loads(await response.read())
        except (aiohttp.ClientError, orjson.JSONDecodeError) as error:
            raise CheckError(f"the moderation endpoint failed: {type(error).__name__}") from None
        try:
            result = data["results"][0]
            flagged = result["flagged"]
        except (KeyError, IndexError, TypeError):
            raise CheckError("the moderation endpoint's answer has no results[0].flagged") from None
        if flagged is not True:
            return None
        raw = result.get("categories")
        categories = sorted(k for k, v in raw.items() if v is True) if isinstance(raw, dict) else []
        if not self._blocks(categories):
            return None
        named = f" ({', '.join(categories)})" if categories else ""
        return f"the moderation endpoint flagged the text{named}"


def build_classifier(
    config: ClassifierCheck,
    *,
    routing: RoutingTable,
    providers: Mapping[str, Provider],
    session: aiohttp.ClientSession,
) -> Classifier:
    if config.protocol == "llama_guard":
        return GuardPool(config, routing, providers)
    return ModerationEndpoint(config, session)
