"""Errors of the sizing planner; the CLI prints them and exits non-zero.

PlanError
├── ModelConfigError      config.json missing, unreadable or of an unsupported shape
│   └── HubUnavailableError   a hub id was given and the hub cannot be reached
└── PlanInputError        the request itself cannot be planned (e.g. context > model maximum)
"""

from __future__ import annotations


class PlanError(Exception):
    """Base of planner errors."""


class ModelConfigError(PlanError):
    """The model's config.json cannot be read or described."""


class HubUnavailableError(ModelConfigError):
    """The model was named by hub id and the hub is not reachable from here."""


class PlanInputError(PlanError):
    """The requested plan is impossible whatever the hardware."""
