from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.tiny_model import write_tiny_model
from tidegate.config import ValidationConfig
from tidegate.errors import InvalidRequestError, PermissionDeniedError, TidegateError
from tidegate.pipeline.request_checks import check_json_depth, json_depth_exceeds
from tidegate.pipeline.tokens import PromptCounter
from tidegate.pipeline.validation import ModelLimits, RequestValidator, ValidatedRequest
from tidegate.protocol.requests import CompletionRequest
from tidegate.tenancy.policy import KeySettings, TenantSettings

MODEL = "tiny"
CONTEXT = 64
ANY_KEY = KeySettings()
ANY_TENANT = TenantSettings()


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromptCounter]:
    pool = ThreadPoolExecutor(max_workers=1)
    directory = write_tiny_model(tmp_path_factory.mktemp("model") / MODEL)
    yield PromptCounter.from_model_dir(directory, executor=pool)
    pool.shutdown()


def make_validator(counter: PromptCounter | None, **config: Any) -> RequestValidator:
    return RequestValidator(
        config=ValidationConfig(**config),
        models={MODEL: ModelLimits(context_length=CONTEXT, counter=counter)},
    )


@pytest.fixture
def validator(counter: PromptCounter) -> RequestValidator:
    return make_validator(counter, max_messages=4)


def chat(*contents: str, **fields: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": c} for c in contents],
        **fields,
    }


async def check(
    validator: RequestValidator,
    payload: dict[str, Any],
    tenant: TenantSettings = ANY_TENANT,
    key: KeySettings = ANY_KEY,
    route: Any = "chat",
) -> ValidatedRequest:
    return await validator.check(route, CompletionRequest(route, payload), tenant, key, MODEL)


async def rejected(
    validator: RequestValidator, payload: dict[str, Any], **kwargs: Any
) -> TidegateError:
    with pytest.raises(TidegateError) as caught:
        await check(validator, payload, **kwargs)
    return caught.value


async def test_a_plain_chat_is_counted_and_gets_the_rest_of_the_context(
    validator: RequestValidator,
) -> None:
    result = await check(validator, chat("hello world"))
    assert result.prompt_tokens == 8  # <s> <|im_start|> user hello world <|im_end|> + 2
    assert result.max_tokens == CONTEXT - 8  # vLLM's default, not written into the payload
    assert "max_completion_tokens" not in result.payload
    assert result.reserved_tokens == CONTEXT


async def test_tenant_default_is_applied_and_clamped_to_the_room_left(
    validator: RequestValidator,
) -> None:
    tenant = TenantSettings(default_max_tokens=16)
    result = await check(validator, chat("hello"), tenant=tenant)
    assert result.max_tokens == 16
    assert result.payload["max_completion_tokens"] == 16
    long_prompt = chat(" ".join(["hello"] * 50))  # 56 tokens, 8 left
    result = await check(validator, long_prompt, tenant=tenant)
    assert result.max_tokens == result.payload["max_completion_tokens"] == 8


async def test_what_a_request_without_a_limit_reserves_at_most(
    validator: RequestValidator,
) -> None:
    """The context's room when the length is known, else validation's default; nothing when
    the client or the tenant's default sets a limit. Nothing is written here: only the limiter
    knows whether a budget needs it."""
    known = await check(validator, chat("hello world"))
    assert known.reservation_default == known.max_tokens == CONTEXT - 8
    assert "max_completion_tokens" not in known.payload
    unknown = RequestValidator(
        config=ValidationConfig(default_completion_reservation=300),
        models={MODEL: ModelLimits(context_length=None, counter=None)},
    )
    result = await check(unknown, chat("hello"))
    assert (result.max_tokens, result.reservation_default) == (None, 300)
    assert "max_completion_tokens" not in result.payload and "max_tokens" not in result.payload
    asked = await check(unknown, chat("hello", max_tokens=5))
    assert (asked.max_tokens, asked.reservation_default) == (5, None)
    tenant = TenantSettings(default_max_tokens=16)
    defaulted = await check(unknown, chat("hello"), tenant=tenant)
    assert (defaulted.max_tokens, defaulted.reservation_default) == (16, None)


async def test_completions_write_max_tokens_and_count_every_prompt(
    validator: RequestValidator,
) -> None:
    tenant = TenantSettings(default_max_tokens=10)
    payload = {"model": MODEL, "prompt": ["hello", "how are you"], "n": 2}
    result = await check(validator, payload, tenant=tenant, route="completions")
    assert result.payload["max_tokens"] == 10
    assert result.prompt_tokens == 2 + 4
    assert result.sequences == 4  # two prompts, two choices each
    assert result.reserved_tokens == 6 + 10 * 4


async def test_token_id_prompts_count_without_a_tokenizer() -> None:
    validator = make_validator(None)
    payload = {"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 5}
    result = await check(validator, payload, route="completions")
    assert (result.prompt_tokens, result.max_tokens) == (3, 5)
    unknown = await check(validator, chat("hello"))
    # Uncounted prompts are at least one token: vLLM's default leaves CONTEXT - 1 at most.
    assert unknown.prompt_tokens is None and unknown.max_tokens == CONTEXT - 1
    error = await rejected(validator, chat("hello", max_tokens=CONTEXT))
    assert (error.param, error.code) == ("max_tokens", "context_length_exceeded")


async def test_max_tokens_over_the_tenant_limit(validator: RequestValidator) -> None:
    tenant = TenantSettings(max_tokens_limit=20)
    error = await rejected(validator, chat("hello", max_completion_tokens=21), tenant=tenant)
    assert (error.status, error.param) == (400, "max_completion_tokens")
    assert "at most 20" in error.message
    error = await rejected(validator, chat("hello", max_tokens=40), tenant=tenant)
    assert error.param == "max_tokens"
    # With no default, the limit caps what the client did not ask for.
    result = await check(validator, chat("hello"), tenant=tenant)
    assert result.max_tokens == result.payload["max_completion_tokens"] == 20


async def test_prompt_over_the_tenant_limit(validator: RequestValidator) -> None:
    tenant = TenantSettings(max_prompt_tokens=10)
    error = await rejected(validator, chat("hello how are you fine thanks"), tenant=tenant)
    assert (error.status, error.param, error.code) == (400, "messages", "prompt_too_long")
    assert "12 tokens" in error.message and "max_prompt_tokens" in error.message


async def test_prompt_plus_max_tokens_over_the_context(validator: RequestValidator) -> None:
    error = await rejected(validator, chat("hello", max_tokens=60))
    assert (error.param, error.code) == ("max_tokens", "context_length_exceeded")
    assert "at most 57" in error.message  # 64 - 7
    error = await rejected(validator, chat(" ".join(["hello"] * 70)))
    assert (error.param, error.code) == ("messages", "context_length_exceeded")
    payload = {"model": MODEL, "prompt": list(range(64))}
    error = await rejected(validator, payload, route="completions")
    assert error.param == "prompt"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 9}, "n"),
        ({"best_of": 9}, "best_of"),
        ({"n": 3, "best_of": 2}, "best_of"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({"top_logprobs": -1}, "top_logprobs"),
        ({"logprobs": 5}, "logprobs"),
        ({"prompt_logprobs": 50}, "prompt_logprobs"),
        ({"best_of": "2"}, "best_of"),
    ],
)
async def test_sampling_caps(validator: RequestValidator, fields: Any, param: str) -> None:
    error = await rejected(validator, chat("hello", **fields))
    assert (error.status, error.param) == (400, param)


async def test_completions_logprobs_is_a_count(validator: RequestValidator) -> None:
    payload = {"model": MODEL, "prompt": "hello", "logprobs": 5}
    assert (await check(validator, payload, route="completions")).payload["logprobs"] == 5
    payload = {"model": MODEL, "prompt": "hello", "logprobs": 21}
    error = await rejected(validator, payload, route="completions")
    assert error.param == "logprobs"


async def test_too_many_messages(validator: RequestValidator) -> None:
    error = await rejected(validator, chat(*["hello"] * 5))
    assert (error.param, error.code) == ("messages", "too_many_messages")
    assert "at most 4" in error.message


async def test_stop_is_normalised(validator: RequestValidator) -> None:
    result = await check(validator, chat("hello", stop="END"))
    assert result.payload["stop"] == ["END"]
    result = await check(validator, chat("hello", stop=["a", "b", "a", "", "c", "b"]))
    assert result.payload["stop"] == ["a", "b", "c"]
    result = await check(validator, chat("hello", stop=""))
    assert "stop" not in result.payload
    error = await rejected(validator, chat("hello", stop=["a", "b", "c", "d", "e"]))
    assert (error.param, error.code) == ("stop", "parameter_over_limit")


async def test_unsupported_params_are_dropped_or_rejected_and_logged_once(
    counter: PromptCounter, caplog: pytest.LogCaptureFixture
) -> None:
    validator = make_validator(
        counter, unsupported_params={"logit_bias": "drop", "suffix": "reject"}
    )
    with caplog.at_level(logging.INFO, logger="tidegate.pipeline.request_checks"):
        for _ in range(3):
            result = await check(validator, chat("hello", logit_bias={"5": 1}))
            assert "logit_bias" not in result.payload
    assert sum("'logit_bias'" in r.getMessage() for r in caplog.records) == 1
    error = await rejected(validator, chat("hello", suffix="x"))
    assert (error.param, error.code) == ("suffix", "unsupported_parameter")


async def test_model_access(validator: RequestValidator) -> None:
    tenant = TenantSettings(allowed_models=["other"])
    error = await rejected(validator, chat("hello"), tenant=tenant)
    assert isinstance(error, PermissionDeniedError)
    assert (error.status, error.param, error.code) == (403, "model", "model_not_allowed")
    assert "'other'" in error.message and "allowed_models" in error.message
    key = KeySettings(allowed_models=["other"])
    error = await rejected(validator, chat("hello"), key=key)
    assert "This API key may not use" in error.message
    allowed = TenantSettings(allowed_models=[MODEL])
    assert (await check(validator, chat("hello"), tenant=allowed)).prompt_tokens == 7


async def test_a_template_refusal_is_a_400_on_messages(validator: RequestValidator) -> None:
    payload = {"model": MODEL, "messages": [{"role": "assistant", "content": "hello"}]}
    error = await rejected(validator, payload)
    assert isinstance(error, InvalidRequestError)
    assert (error.status, error.param, error.code) == (400, "messages", "chat_template_error")


def test_json_depth() -> None:
    nested: Any = "leaf"
    for _ in range(40):
        nested = {"a": [nested]}
    assert json_depth_exceeds(nested, 32)
    assert not json_depth_exceeds({"a": [{"b": 1}]}, 3)
    assert json_depth_exceeds({"a": [{"b": {}}]}, 3)
    with pytest.raises(InvalidRequestError, match="more than 32 levels"):
        check_json_depth(nested, 32)


async def test_deep_json_is_rejected_by_check(validator: RequestValidator) -> None:
    payload = chat("hello")
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    payload["metadata"] = deep
    error = await rejected(validator, payload)
    assert (error.status, error.code) == (400, "json_too_deep")
