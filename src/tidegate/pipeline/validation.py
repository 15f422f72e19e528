"""Validation before the engine: everything a request must satisfy before it may reach a replica.

``RequestValidator.check`` runs after the body has passed the schema (``protocol.requests``) and
the key and tenant are known. It checks model access, the request's size and sampling caps,
counts the prompt with the model's own tokenizer (``PromptCounter``), applies the tenant's
``max_tokens`` default and limit, and normalises the request (its ``set``/``drop``). It returns
what the limits and quotas reserve: ``prompt_bound + max_tokens * sequences``, where the prompt
bound is the exact count, or for a model without a tokenizer an upper bound read from the body
(``prompt_bound``), so a reservation is never smaller than what the engine will count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.config import ValidationConfig
from tidegate.errors import InvalidRequestError
from tidegate.pipeline.chat_template import ChatTemplateError
from tidegate.pipeline.extensions import check_extensions
from tidegate.pipeline.prompt_bound import prompt_token_bound
from tidegate.pipeline.request_checks import (
    UnsupportedParams,
    check_json_depth,
    check_model_access,
    check_sampling_caps,
    normalise_stop,
)
from tidegate.pipeline.tokens import NoChatTemplateError, PromptCounter
from tidegate.protocol.endpoints import Endpoint
from tidegate.protocol.requests import BodyCaps, CompletionRequest
from tidegate.tenancy.policy import KeySettings, TenantSettings

__all__ = ["ModelLimits", "RequestValidator", "ValidatedRequest"]


@dataclass(slots=True, kw_only=True)
class ModelLimits:
    context_length: int | None
    """The model's context length (the engine's max_model_len). None: not checked. Set later
    for a pool that learns it from its engine (``gateway.context_lengths``)."""
    counter: PromptCounter | None
    """The model's tokenizer. None: prompts are not counted (token-id prompts still are)."""


@dataclass(slots=True, kw_only=True)
class ValidatedRequest:
    prompt_tokens: int | None
    """Prompt tokens as the engine will count them (summed over a batch of prompts). None: the
    model has no tokenizer configured."""
    prompt_bound: int
    """What limits and budgets reserve for the prompt: ``prompt_tokens`` when counted, else an
    upper bound on it from the body's text (``gateway.prompt_bound``)."""
    max_tokens: int | None
    """Completion tokens one sequence may generate: the request's, the tenant's default, or what
    is left of the context (vLLM's own default). None only when none of those is known."""
    sequences: int
    """Sequences the engine generates: prompts in the batch × max(n, best_of)."""
    reservation_default: int | None
    """For a request that sets no completion limit (and gets no tenant default): the most
    completion tokens per sequence to reserve where a budget or token limit counts its tokens,
    lowered to what they have left and then written into the forwarded request: the context's
    room (``max_tokens``, vLLM's own default) when the context length is known, else
    ``validation.default_completion_reservation``. None: the request carries its limit."""
    payload: Mapping[str, Any]
    """The normalised body to forward (the fields of the request that was passed in)."""

    @property
    def reserved_tokens(self) -> int | None:
        """Tokens to reserve against limits and budgets; None when unbounded."""
        if self.max_tokens is None:
            return None
        return self.prompt_bound + self.max_tokens * self.sequences


def _fmt(count: int) -> str:
    return f"{count:,}"


class RequestValidator:
    def __init__(self, *, config: ValidationConfig, models: Mapping[str, ModelLimits]) -> None:
        self._config = config
        self.body_caps = BodyCaps(
            max_messages=config.max_messages,
            max_prompts=config.max_prompts,
            max_content_parts=config.max_content_parts,
            max_tools=config.max_tools,
        )
        """The count caps the schema check applies first (``protocol.requests.check_body``)."""
        self._models = dict(models)
        self._unsupported = UnsupportedParams(actions=config.unsupported_params)

    def add_model(self, model: str, limits: ModelLimits) -> None:
        """Validate ``model`` with ``limits`` from now on, unless it has its own: a LoRA
        adapter added at runtime counts and fits like its base pool's model."""
        self._models.setdefault(model, limits)

    async def check(
        self,
        route: Endpoint,
        request: CompletionRequest,
        tenant: TenantSettings,
        key: KeySettings,
        model: str,
    ) -> ValidatedRequest:
        """Validate and normalise ``request`` for ``model`` (its public name); raise a
        ``TidegateError`` for anything that must not reach the engine."""
        config = self._config
        chat = route == "chat"
        payload = request.fields
        check_json_depth(payload, config.max_json_depth)
        check_model_access(model, tenant, key)
        self._unsupported.apply(request)
        if chat:
            self._check_message_count(payload)
        # After the count cap: it walks every content part.
        check_extensions(payload, tenant.allowed_extensions)
        per_prompt = check_sampling_caps(
            payload,
            chat=chat,
            max_n=config.max_n,
            max_best_of=config.max_best_of,
            max_top_logprobs=config.max_top_logprobs,
        )
        normalise_stop(request, max_sequences=config.max_stop_sequences)
        limits = self._models.get(model, ModelLimits(context_length=None, counter=None))
        counts = await self._count(route, payload, model, limits.counter)
        prompt_param = "messages" if chat else "prompt"
        if counts is not None:
            for count in counts:
                self._check_prompt(count, tenant, limits.context_length, prompt_param)
        longest = max(counts) if counts else None
        max_tokens = self._max_tokens(request, chat, tenant, limits.context_length, longest)
        # Neither the client nor the tenant's default (written above) set a completion limit.
        fields = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
        implicit = all(payload.get(name) is None for name in fields)
        prompts = len(counts) if counts else _batch_size(payload, chat)
        return ValidatedRequest(
            prompt_tokens=sum(counts) if counts is not None else None,
            prompt_bound=sum(counts)
            if counts is not None
            else prompt_token_bound(payload, chat=chat),
            max_tokens=max_tokens,
            sequences=prompts * per_prompt,
            reservation_default=(
                None
                if not implicit
                else config.default_completion_reservation
                if max_tokens is None
                else max_tokens
            ),
            payload=payload,
        )

    def _check_message_count(self, payload: Mapping[str, Any]) -> None:
        count = len(payload.get("messages") or ())
        if count > self._config.max_messages:
            raise InvalidRequestError(
                f"The request has {_fmt(count)} messages; at most "
                f"{_fmt(self._config.max_messages)} are allowed. Drop or summarise earlier turns.",
                param="messages",
                code="too_many_messages",
            )

    async def _count(
        self, route: Endpoint, payload: Mapping[str, Any], model: str, counter: PromptCounter | None
    ) -> list[int] | None:
        if route == "completions":
            prompt = payload["prompt"]
            if counter is not None:
                return await counter.count_prompts(prompt)
            return _count_token_ids(prompt)
        if counter is None:
            return None
        tools = payload.get("tools")
        template_kwargs = payload.get("chat_template_kwargs")
        try:
            count = await counter.count_chat(
                payload["messages"],
                tools=tools if isinstance(tools, list) else None,
                template_kwargs=template_kwargs if isinstance(template_kwargs, dict) else None,
            )
        except ChatTemplateError as error:
            raise InvalidRequestError(
                f"The chat template of '{model}' cannot format these messages: {error}. Check "
                "the order and roles of the messages (many templates want user and assistant "
                "turns to alternate, with at most one leading system message).",
                param="messages",
                code="chat_template_error",
            ) from None
        except NoChatTemplateError:
            raise InvalidRequestError(
                f"The model '{model}' has no chat template, so it cannot serve "
                "/v1/chat/completions. Send a plain prompt to /v1/completions instead.",
                param="messages",
                code="no_chat_template",
            ) from None
        return [count]

    @staticmethod
    def _check_prompt(
        count: int, tenant: TenantSettings, context_length: int | None, param: str
    ) -> None:
        limit = tenant.max_prompt_tokens
        if limit is not None and count > limit:
            raise InvalidRequestError(
                f"The prompt is {_fmt(count)} tokens, above your tenant's limit of "
                f"{_fmt(limit)} (max_prompt_tokens). Shorten the prompt, or ask an administrator "
                "to raise the limit.",
                param=param,
                code="prompt_too_long",
            )
        # The engine needs room for at least one generated token.
        if context_length is not None and count >= context_length:
            raise InvalidRequestError(
                f"This model's maximum context length is {_fmt(context_length)} tokens, and the "
                f"prompt is {_fmt(count)} tokens, leaving no room for a completion. Shorten the "
                "prompt.",
                param=param,
                code="context_length_exceeded",
            )

    @staticmethod
    def _max_tokens(
        request: CompletionRequest,
        chat: bool,
        tenant: TenantSettings,
        context_length: int | None,
        prompt_tokens: int | None,
    ) -> int | None:
        # vLLM reads max_completion_tokens first on the chat route, then the deprecated max_tokens.
        fields = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
        param = next((name for name in fields if request.get(name) is not None), None)
        room: int | None = None
        if context_length is not None:
            # Without a count the prompt is at least one token.
            room = context_length - (prompt_tokens if prompt_tokens is not None else 1)
        if param is None:
            defaults = [v for v in (tenant.default_max_tokens, tenant.max_tokens_limit) if v]
            if not defaults:
                # vLLM's own default is the rest of the context: nothing to write.
                return room
            # A default the client never asked for is clamped to the room left, not rejected.
            value = min(defaults) if room is None else min(*defaults, room)
            request.set(fields[0], value)
            return value
        requested: int = request.get(param)
        limit = tenant.max_tokens_limit
        if limit is not None and requested > limit:
            raise InvalidRequestError(
                f"'{param}' is {_fmt(requested)}, above your tenant's limit of {_fmt(limit)}. "
                f"Ask for at most {_fmt(limit)} tokens.",
                param=param,
                code="parameter_over_limit",
            )
        if room is not None and context_length is not None and requested > room:
            prompt = f"{_fmt(prompt_tokens)} tokens" if prompt_tokens else "at least 1 token"
            raise InvalidRequestError(
                f"This model's maximum context length is {_fmt(context_length)} tokens. The "
                f"prompt is {prompt} and '{param}' is {_fmt(requested)}. Lower '{param}' to at "
                f"most {_fmt(room)}, or shorten the prompt.",
                param=param,
                code="context_length_exceeded",
            )
        return requested


def _count_token_ids(prompt: Any) -> list[int] | None:
    # Token-id prompts count without a tokenizer; text prompts cannot.
    if isinstance(prompt, list) and prompt:
        if all(isinstance(item, int) for item in prompt):
            return [len(prompt)]
        if all(isinstance(item, list) for item in prompt):
            return [len(item) for item in prompt]
    return None


def _batch_size(payload: Mapping[str, Any], chat: bool) -> int:
    prompt = payload.get("prompt")
    if chat or not isinstance(prompt, list) or not prompt or isinstance(prompt[0], int):
        return 1
    return len(prompt)
