"""Command-line options for tenant and key settings, turned into JSON merge patches.

An option left out is not in the patch (an update keeps the stored value); ``0`` for a limit
and an empty ``--models`` reset it to "unlimited" / "every model".
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

Rpm = Annotated[int | None, typer.Option("--rpm", min=0, help="Requests per minute (0: none).")]
Tpm = Annotated[int | None, typer.Option("--tpm", min=0, help="Tokens per minute (0: none).")]
Concurrency = Annotated[
    int | None, typer.Option("--concurrency", min=0, help="Requests in flight (0: none).")
]
DailyTokens = Annotated[
    int | None, typer.Option("--daily-tokens", min=0, help="Tokens per UTC day (0: none).")
]
MonthlyTokens = Annotated[
    int | None, typer.Option("--monthly-tokens", min=0, help="Tokens per UTC month (0: none).")
]
DailyCost = Annotated[
    float | None, typer.Option("--daily-cost", min=0, help="USD per UTC day (0: none).")
]
MonthlyCost = Annotated[
    float | None, typer.Option("--monthly-cost", min=0, help="USD per UTC month (0: none).")
]
Models = Annotated[
    str | None,
    typer.Option("--models", help="Allowed models, comma-separated (empty: every model)."),
]
MaxPromptTokens = Annotated[
    int | None,
    typer.Option("--max-prompt-tokens", min=0, help="Longest prompt in tokens (0: no cap)."),
]
Extensions = Annotated[
    str | None,
    typer.Option(
        "--extensions",
        help="Engine extensions forwarded for the tenant, comma-separated (README, Engine "
        "extensions; e.g. remote_media_urls,chat_template_kwargs). Empty: none.",
    ),
]
LogPrompts = Annotated[
    bool | None,
    typer.Option("--log-prompts/--no-log-prompts", help="Keep redacted prompts and completions."),
]


def _number(value: float | None) -> float | None:
    return value or None  # 0 resets the field (null in a merge patch)


def _models(value: str) -> list[str] | None:
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def limits_patch(rpm: int | None, tpm: int | None, concurrency: int | None) -> dict[str, Any]:
    given = {
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
        "concurrent_requests": concurrency,
    }
    return {name: _number(value) for name, value in given.items() if value is not None}


def tenant_settings_patch(
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    concurrency: int | None = None,
    daily_tokens: int | None = None,
    monthly_tokens: int | None = None,
    daily_cost: float | None = None,
    monthly_cost: float | None = None,
    models: str | None = None,
    max_prompt_tokens: int | None = None,
    log_prompts: bool | None = None,
    extensions: str | None = None,
) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    limits = limits_patch(rpm, tpm, concurrency)
    if limits:
        patch["limits"] = limits
    budgets = {
        name: _number(value)
        for name, value in {
            "daily_tokens": daily_tokens,
            "monthly_tokens": monthly_tokens,
            "daily_cost_usd": daily_cost,
            "monthly_cost_usd": monthly_cost,
        }.items()
        if value is not None
    }
    if budgets:
        patch["budgets"] = budgets
    if models is not None:
        patch["allowed_models"] = _models(models)
    if max_prompt_tokens is not None:
        patch["max_prompt_tokens"] = _number(max_prompt_tokens)
    if log_prompts is not None:
        patch["log_prompts"] = log_prompts
    if extensions is not None:
        patch["allowed_extensions"] = _models(extensions)  # None: back to the default, none
    return patch


def key_settings_patch(
    *, rpm: int | None, tpm: int | None, concurrency: int | None, models: str | None
) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    limits = limits_patch(rpm, tpm, concurrency)
    if limits:
        patch["limits"] = limits
    if models is not None:
        patch["allowed_models"] = _models(models)
    return patch
