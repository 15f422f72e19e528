"""A refusal: which policy and check refused which stage, and why (never the text); what the
request's record says about it; the answer sent instead of a refused whole answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidegate.errors import ContentPolicyError, ContentPolicyUnavailableError
from tidegate.observability.records import RequestRecord
from tidegate.safety.metrics import Stage

__all__ = ["Refusal", "filtered_answer", "mark_cut", "refused"]


@dataclass(frozen=True, slots=True)
class Refusal:
    policy: str
    check: str
    stage: Stage
    kind: str
    reason: str
    undecided: bool = False
    """The check could not decide and fails closed."""
    retryable: bool = False
    """Undecided for the service's sake (a guard slow or down, a policy not defined here), not
    the text's: the client gets a 503 to retry, not a 400 to change its request."""

    def message(self) -> str:
        what = f"its {self.stage} check '{self.check}' ({self.kind})"
        done = "refused this request" if self.stage == "input" else "stopped this answer"
        if self.undecided:
            return (
                f"Content policy '{self.policy}' {done}: {what} could not decide "
                f"({self.reason}) and fails closed. "
                + (
                    "Retry later; if it persists, ask the operator about the policy."
                    if self.retryable
                    else "Shorten or simplify the text; the operator sets which policy applies."
                )
            )
        return (
            f"Content policy '{self.policy}' {done}: {what} found that "
            f"{self.reason}. Change the request; the operator sets which policy applies."
        )

    @property
    def label(self) -> str:
        return f"{self.stage}:{self.policy}/{self.check}"


def refused(
    refusal: Refusal, record: RequestRecord, fields: Mapping[str, Any]
) -> ContentPolicyError | ContentPolicyUnavailableError:
    """The refused request's error; its text is kept only for a tenant that logs prompts."""
    record.safety = refusal.label
    if record.log_prompt:
        record.refused_fields = fields
    error = ContentPolicyUnavailableError if refusal.retryable else ContentPolicyError
    return error(refusal.message(), policy=refusal.policy, check=refusal.check)


def mark_cut(record: RequestRecord, refusal: Refusal) -> None:
    """An answer the output checks stopped: what the access line and usage record say."""
    record.safety = refusal.label
    record.outcome = "validation"
    record.error_type = "invalid_request_error"
    record.rejection = "content_policy"


def filtered_answer(data: Any, refusal: Refusal) -> Any:
    choices = []
    for choice in data.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        choice = {**choice, "finish_reason": "content_filter"}
        if isinstance(choice.get("message"), dict):
            choice["message"] = {
                "role": "assistant",
                "content": None,
                "refusal": refusal.message(),
            }
        else:
            choice["text"] = ""
        choices.append(choice)
    return {**data, "choices": choices}
