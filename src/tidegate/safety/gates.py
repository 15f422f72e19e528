"""Policies compiled from config, and the gate of one request.

A request's policies are its model's (``safety.models``) and its tenant's (the operator-set
``safety_policy`` setting), both applied: neither can lift the other. A tenant naming a policy
this gateway does not know is refused (fails closed) rather than served unchecked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import Counter

from tidegate.config import ClassifierCheck, SafetyConfig, SafetyPolicy
from tidegate.config.safety import SafetyCheck
from tidegate.observability.capture import ResponseCapture
from tidegate.observability.records import RequestRecord
from tidegate.safety.checks import (
    Check,
    CheckError,
    DenyList,
    Patterns,
    PiiBlock,
    PiiDetectors,
    ScriptLimit,
    SizeLimit,
)
from tidegate.safety.classifier import Classifier
from tidegate.safety.metrics import Outcome, SafetyMetrics, Stage
from tidegate.safety.refusal import Refusal, filtered_answer, mark_cut, refused
from tidegate.safety.stream import StreamWindow, guard_stream
from tidegate.safety.text import answer_texts, request_text

__all__ = ["OFFLOAD_CHARS", "ClassifierFactory", "RequestGate", "SafetyGates"]

OFFLOAD_CHARS = 16_384
"""Texts longer than this are checked on a worker thread: the redactor's detectors take about
0.35 ms per 1,000 characters, so a 4 MiB prompt would otherwise hold the event loop (and every
other request) for over a second. Shorter texts, nearly all of them, are checked inline."""

ClassifierFactory = Callable[[ClassifierCheck], Classifier]


@dataclass(frozen=True, slots=True)
class _Step:
    policy: str
    stage: Stage
    check: Check | Classifier
    classifier: bool
    counters: Mapping[Outcome, Counter]


class _Policy:
    __slots__ = ("name", "input", "output", "window")

    def __init__(
        self,
        name: str,
        config: SafetyPolicy,
        build: Callable[[SafetyCheck], Check | Classifier],
        metrics: SafetyMetrics,
    ) -> None:
        self.name = name

        def steps(stage: Stage, checks: list[SafetyCheck]) -> tuple[_Step, ...]:
            return tuple(
                _Step(
                    name,
                    stage,
                    build(check),
                    isinstance(check, ClassifierCheck),
                    metrics.children(name, check.label, stage),
                )
                for check in checks
            )

        self.input = steps("input", config.input)
        self.output = steps("output", config.output)
        self.window = StreamWindow(
            window_chars=config.window_chars,
            hold_chars=config.hold_chars,
            max_hold_s=config.max_hold_ms / 1000,
        )


class SafetyGates:
    def __init__(
        self,
        config: SafetyConfig,
        *,
        metrics: SafetyMetrics,
        pii: PiiDetectors,
        classifier: ClassifierFactory,
    ) -> None:
        """``pii``: the redactor's detectors for some families; ``classifier``: builds a
        classifier check (it needs the gateway's pools or its HTTP session)."""

        def build(check: SafetyCheck) -> Check | Classifier:
            if isinstance(check, ClassifierCheck):
                return classifier(check)
            if check.kind == "deny_list":
                return DenyList(check)
            if check.kind == "regex":
                return Patterns(check)
            if check.kind == "pii":
                return PiiBlock(check, pii)
            if check.kind == "size":
                return SizeLimit(check)
            return ScriptLimit(check)

        self._policies = {
            name: _Policy(name, policy, build, metrics) for name, policy in config.policies.items()
        }
        self._models = {model: self._policies[policy] for model, policy in config.models.items()}
        self._plans: dict[tuple[str, str | None], _Plan] = {}

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._policies)

    def gate(self, model: str, tenant_policy: str | None) -> RequestGate | None:
        """The gate of one request, or None when no policy applies (nothing to pay)."""
        model_policy = self._models.get(model)
        if model_policy is None and tenant_policy is None:
            return None
        key = (model, tenant_policy)
        plan = self._plans.get(key)
        if plan is None:
            # Bounded: models come from the routing table, tenant policies from the operator.
            plan = self._plans[key] = self._plan(model_policy, tenant_policy)
        return RequestGate(plan)

    def _plan(self, model_policy: _Policy | None, tenant_policy: str | None) -> _Plan:
        policies = [] if model_policy is None else [model_policy]
        missing = None
        if tenant_policy is not None:
            found = self._policies.get(tenant_policy)
            if found is None:
                missing = tenant_policy
            elif found is not model_policy:
                policies.append(found)
        windows = [p.window for p in policies if p.output]
        window = (
            StreamWindow(
                window_chars=max(w.window_chars for w in windows),
                hold_chars=min(w.hold_chars for w in windows),
                max_hold_s=min(w.max_hold_s for w in windows),
            )
            if windows
            else None
        )
        return _Plan(
            input=tuple(step for p in policies for step in p.input),
            output=tuple(step for p in policies for step in p.output),
            window=window,
            missing=missing,
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    input: tuple[_Step, ...]
    output: tuple[_Step, ...]
    window: StreamWindow | None
    missing: str | None
    """A tenant policy this gateway does not define."""


class RequestGate:
    """One request's checks: ``check_input`` before anything else is spent on it, then
    ``check_answer`` (a whole answer) or ``guard_stream`` (a stream)."""

    __slots__ = ("_plan", "_prompt")

    def __init__(self, plan: _Plan) -> None:
        self._plan = plan
        self._prompt: str | None = None

    @property
    def checks_output(self) -> bool:
        return bool(self._plan.output)

    async def check_input(self, fields: Mapping[str, Any], record: RequestRecord) -> None:
        """Raises ``ContentPolicyError`` (a 400) for a refused request, or
        ``ContentPolicyUnavailableError`` (a 503) when a guard could not decide."""
        plan = self._plan
        if plan.missing is not None:
            missing = Refusal(
                plan.missing,
                "policy",
                "input",
                "missing",
                "this gateway defines no such policy (safety.policies)",
                undecided=True,
                retryable=True,
            )
            raise refused(missing, record, fields)
        text = request_text(fields)
        if plan.output and any(step.classifier for step in plan.output):
            self._prompt = text  # the guard judges an answer in its conversation
        if plan.input:
            refusal = await run_checks(plan.input, text, prompt=None, request_id=record.request_id)
            if refusal is not None:
                raise refused(refusal, record, fields)

    async def check_answer(self, data: Any, record: RequestRecord) -> Any:
        """A whole answer: None when it passes, else the answer to send instead, its choices
        emptied with finish_reason ``content_filter`` (and, in chat, the message's
        ``refusal`` saying which policy and check)."""
        if not self._plan.output:
            return None
        for text in answer_texts(data):
            refusal = await run_checks(
                self._plan.output, text, prompt=self._prompt, request_id=record.request_id
            )
            if refusal is not None:
                mark_cut(record, refusal)
                return filtered_answer(data, refusal)
        return None

    def guard_stream(
        self, events: AsyncGenerator[bytes, None], record: RequestRecord
    ) -> AsyncGenerator[bytes, None]:
        """The relayed events, released once the output checks passed on them."""
        window = self._plan.window
        if window is None:
            return events
        if record.capture is None:
            record.capture = ResponseCapture()  # the text the relay reads out of the events
        output, prompt, request_id = self._plan.output, self._prompt, record.request_id

        async def check(text: str) -> Refusal | None:
            return await run_checks(output, text, prompt=prompt, request_id=request_id)

        return guard_stream(events, record, record.capture, window, check)


async def run_checks(
    steps: tuple[_Step, ...], text: str, *, prompt: str | None, request_id: str
) -> Refusal | None:
    """The checks in order; the first refusal wins. Every decision is counted."""
    for step in steps:
        check = step.check
        try:
            if step.classifier:
                classifier = cast(Classifier, check)
                reason = await classifier.classify(text, prompt=prompt, request_id=request_id)
            elif len(text) > OFFLOAD_CHARS:
                reason = await asyncio.to_thread(cast(Check, check).check, text)
            else:
                reason = cast(Check, check).check(text)
        except CheckError as error:
            if check.on_error == "open":
                step.counters["error_open"].inc()
                continue
            step.counters["error_closed"].inc()
            return Refusal(
                step.policy,
                check.label,
                step.stage,
                check.kind,
                str(error),
                undecided=True,
                # A guard slow or down is retryable; a pattern timing out is the text's doing.
                retryable=step.classifier,
            )
        if reason is None:
            step.counters["pass"].inc()
            continue
        step.counters["block"].inc()
        return Refusal(step.policy, check.label, step.stage, check.kind, reason)
    return None
