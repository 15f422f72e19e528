"""Command-line options for tenant and key settings, turned into JSON merge patches.

An option left out is not in the patch (an update keeps the stored value); ``0`` for a limit
and an empty ``--models`` reset it to "unlimited" / "every model". The limit options (``--rpm``,
``--daily-cost``, ...) come from the kinds table (``tenancy.limit_kinds.KINDS``): a command
decorated with ``limit_options`` gets one option per kind in place of its ``limits``
parameter, and receives what was given as ``limits`` (kind name → value).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

import typer

from tidegate.tenancy.limit_kinds import KINDS, LimitKind

LimitValues = Mapping[str, float | None]
"""Kind name → the option's value (None: not given)."""
NO_LIMITS: LimitValues = MappingProxyType({})
"""The ``limits`` parameter's default; ``limit_options`` replaces the parameter."""

_Command = TypeVar("_Command", bound=Callable[..., Any])


def option_parameter(kind: LimitKind) -> str:
    """The Python parameter a kind's option binds to (``--daily-cost``: ``daily_cost``)."""
    return kind.option.lstrip("-").replace("-", "_")


def _annotation(kind: LimitKind) -> Any:
    number = float if kind.usd else int
    return Annotated[number | None, typer.Option(kind.option, min=0, help=kind.help)]


def limit_options(
    *, budgets: bool, kinds: tuple[LimitKind, ...] = KINDS
) -> Callable[[_Command], _Command]:
    """Replace the command's ``limits`` parameter with one option per kind (rate kinds only,
    unless ``budgets``: a key has no budgets of its own), in table order."""
    chosen = tuple(kind for kind in kinds if budgets or kind.section == "limits")

    def decorate(command: _Command) -> _Command:
        signature = inspect.signature(command, eval_str=True)
        hints = dict(inspect.get_annotations(command, eval_str=True))
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name != "limits":
                params.append(param)
                continue
            for kind in chosen:
                name, annotation = option_parameter(kind), _annotation(kind)
                params.append(
                    # In the place of ``limits``, so --help lists them where it was.
                    inspect.Parameter(name, param.kind, default=None, annotation=annotation)
                )
                hints[name] = annotation
        hints.pop("limits", None)
        names = tuple((kind.name, option_parameter(kind)) for kind in chosen)

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            limits = {kind: kwargs.pop(parameter, None) for kind, parameter in names}
            return command(*args, limits=limits, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = hints
        return wrapper  # type: ignore[return-value]

    return decorate


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
SafetyPolicy = Annotated[
    str | None,
    typer.Option(
        "--safety-policy",
        help="The content-safety policy (a name in safety.policies) applied on top of the "
        "model's. Empty: none.",
    ),
]


def _number(value: float | None) -> float | None:
    return value or None  # 0 resets the field (null in a merge patch)


def _models(value: str) -> list[str] | None:
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def limits_patch(limits: LimitValues, kinds: tuple[LimitKind, ...] = KINDS) -> dict[str, Any]:
    """The settings sections (``limits``, ``budgets``) the given options change."""
    patch: dict[str, Any] = {}
    for kind in kinds:
        value = limits.get(kind.name)
        if value is not None:
            patch.setdefault(kind.section, {})[kind.field] = _number(value)
    return patch


def tenant_settings_patch(
    limits: LimitValues,
    *,
    models: str | None = None,
    max_prompt_tokens: int | None = None,
    log_prompts: bool | None = None,
    extensions: str | None = None,
    safety_policy: str | None = None,
) -> dict[str, Any]:
    patch = limits_patch(limits)
    if models is not None:
        patch["allowed_models"] = _models(models)
    if max_prompt_tokens is not None:
        patch["max_prompt_tokens"] = _number(max_prompt_tokens)
    if log_prompts is not None:
        patch["log_prompts"] = log_prompts
    if extensions is not None:
        patch["allowed_extensions"] = _models(extensions)  # None: back to the default, none
    if safety_policy is not None:
        patch["safety_policy"] = safety_policy.strip() or None  # empty: none
    return patch


def key_settings_patch(limits: LimitValues, *, models: str | None) -> dict[str, Any]:
    patch = limits_patch(limits)
    patch.pop("budgets", None)  # a key has none of its own
    if models is not None:
        patch["allowed_models"] = _models(models)
    return patch
