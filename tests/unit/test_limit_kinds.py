"""Every kind of the gateway's table has what the table promises: a settings field, a CLI option
on the commands that set it, a refusal that names it, and headers where it is a bucket."""

from __future__ import annotations

import pytest
import typer

from tidegate.commands.keys import keys_app
from tidegate.commands.tenants import tenants_app
from tidegate.pipeline.limits import lua
from tidegate.pipeline.limits.headers import HeaderBuilder
from tidegate.pipeline.limits.layout import LAYOUT, Check
from tidegate.pipeline.limits.model import Demand
from tidegate.pipeline.limits.periods import PeriodClock
from tidegate.pipeline.limits.refusals import refusal
from tidegate.tenancy.limit_kinds import KINDS, LimitKind
from tidegate.tenancy.policy import Budgets, KeySettings, RateLimits, TenantSettings


def _options(app: typer.Typer, command: str) -> set[str]:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    return {opt for param in commands[command].params for opt in param.opts}


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_kind_has_a_settings_field(kind: LimitKind) -> None:
    model = RateLimits if kind.section == "limits" else Budgets
    field = model.model_fields[kind.field]
    assert field.description == kind.description
    assert field.default is None
    value = 1.5 if kind.usd else 7
    settings = TenantSettings.model_validate({kind.section: {kind.field: value}})
    assert getattr(getattr(settings, kind.section), kind.field) == value
    if kind.section == "limits":  # keys have rate limits, not budgets
        assert KeySettings.model_validate({"limits": {kind.field: value}})


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_kind_has_a_cli_option(kind: LimitKind) -> None:
    assert kind.option in _options(tenants_app, "create")
    assert kind.option in _options(tenants_app, "update")
    assert (kind.option in _options(keys_app, "create")) == (kind.section == "limits")


@pytest.mark.parametrize("check", LAYOUT.checks, ids=lambda c: f"{c.owner}-{c.kind.name}")
def test_every_check_has_a_refusal_that_names_its_setting(check: Check) -> None:
    limits = [0] * (2 * LAYOUT.rate_count)
    budget = [0] * len(LAYOUT.budgets)
    (budget if check.kind.section == "budgets" else limits)[check.value] = 7_000_000_000
    demand = Demand(
        "t1",
        "k1",
        tuple(limits),
        tuple(budget),
        10,
        5,
        1,
        0,
        0.0,
        PeriodClock(LAYOUT.periods).periods(1_800_000_000.0),
    )
    error = refusal(demand, check, 2.0, [])
    assert error.code == check.kind.code
    assert f"{check.kind.section}.{check.kind.field}" in str(error)
    assert check.kind.what in str(error)
    assert "{" not in str(error)  # every placeholder filled in


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.name)
def test_every_bucket_kind_reports_headers_and_no_other_kind_does(kind: LimitKind) -> None:
    assert (kind.headers is not None) == (kind.mechanism == "bucket")
    limits = tuple(100 if c.kind is kind else 0 for c in LAYOUT.checks[: 2 * LAYOUT.rate_count])
    headers = HeaderBuilder(LAYOUT).build(limits, [40.0] * len(LAYOUT.buckets))
    if kind.headers is None:
        assert headers == []
    else:
        limit, remaining, reset = kind.headers
        assert headers == [(limit, b"100"), (remaining, b"40"), (reset, b"36s")]


def test_the_scripts_are_generated_once_for_the_gateways_table() -> None:
    assert lua.ADMIT == lua.admit_script(LAYOUT)
    for name in ("local R, P, NB = 3, 2, 2", "local BUCKET = {1, 2}", "local SLOTS = {3}"):
        assert name in lua.ADMIT
