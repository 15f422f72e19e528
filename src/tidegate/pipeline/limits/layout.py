"""Where each limit kind of a kinds table sits in a ``Demand``, a ``Verdict`` and the scripts.

A store checks one request against every kind at once. The checks are numbered (``Verdict.
failed``): first each rate kind of the tenant, then each rate kind of the key (both in table
order), then the budgets, grouped by period (in the order the periods first appear in the
table, table order within one). ``Demand.limits`` holds the rate checks' values and
``Demand.budget`` the budgets', in that order; the Redis scripts get them as ARGV 1..N and
their counters as KEYS (the rate kinds' counters, then one budget hash per period). Buckets
report their levels (``Verdict.levels``): the tenant's buckets, then the key's. The counters a
Redis store rebuilds from the usage records when they are lost (tokens buckets, then budget
periods) are numbered too: the admit script's "needs seed" mask has one bit per counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tidegate.pipeline.pricing import usd_to_nanos
from tidegate.tenancy.limit_kinds import KINDS, WINDOW_S, LimitKind
from tidegate.tenancy.policy import Budgets, RateLimits

__all__ = ["LAYOUT", "Bucket", "Check", "Layout", "Rebuilt"]

OWNERS = ("tenant", "API key")


@dataclass(frozen=True, slots=True)
class Check:
    index: int
    kind: LimitKind
    owner: str
    """"tenant" or "API key": whose setting it is (budgets: the tenant)."""
    value: int
    """Where its value is in ``Demand.limits`` (rate kinds) or ``Demand.budget`` (budgets)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    check: int
    """The check index (= its value's place in ``Demand.limits``)."""
    slot: int
    """Its place among one scope's buckets (in-process state)."""
    level: int
    """Its place in ``Verdict.levels``."""
    owner: int
    """0 tenant, 1 key."""
    tokens: bool
    """Charged the request's tokens (else one per request)."""
    window_s: float


@dataclass(frozen=True, slots=True)
class Rebuilt:
    label: str
    """The metric label (``tenant_tpm``, ``day``)."""
    bit: int
    """Its bit in the admit script's "needs seed" mask."""
    key: int
    """Its place in the scripts' KEYS (0-based)."""
    check: int
    """A bucket's check index; -1 for a budget period."""
    period: int
    """A budget period's place in ``Layout.periods``; -1 for a bucket."""
    window_s: float = 0.0


@dataclass(frozen=True)
class Layout:
    kinds: tuple[LimitKind, ...]
    rates: tuple[LimitKind, ...] = field(init=False)
    budgets: tuple[LimitKind, ...] = field(init=False)
    """The budget kinds in check order."""
    periods: tuple[str, ...] = field(init=False)
    checks: tuple[Check, ...] = field(init=False)
    buckets: tuple[Bucket, ...] = field(init=False)
    """Every bucket of both owners, in check order."""
    slots: tuple[int, ...] = field(init=False)
    """The check indices of slots kinds (tenant's, then key's)."""
    budget_periods: tuple[int, ...] = field(init=False)
    """Each budget's period (index into ``periods``), in check order."""
    rebuilt: tuple[Rebuilt, ...] = field(init=False)

    def __post_init__(self) -> None:
        rates = tuple(kind for kind in self.kinds if kind.section == "limits")
        spend = [kind for kind in self.kinds if kind.section == "budgets"]
        periods = tuple(dict.fromkeys(kind.period for kind in spend))
        budgets = tuple(sorted(spend, key=lambda kind: periods.index(kind.period)))
        r = len(rates)
        checks = [
            Check(owner * r + i, kind, OWNERS[owner], owner * r + i)
            for owner in (0, 1)
            for i, kind in enumerate(rates)
        ]
        checks += [Check(2 * r + j, kind, "tenant", j) for j, kind in enumerate(budgets)]
        bucket_kinds = [i for i, kind in enumerate(rates) if kind.mechanism == "bucket"]
        buckets = tuple(
            Bucket(
                check=owner * r + i,
                slot=b,
                level=owner * len(bucket_kinds) + b,
                owner=owner,
                tokens=rates[i].charge == "tokens",
                window_s=WINDOW_S[rates[i].period],
            )
            for owner in (0, 1)
            for b, i in enumerate(bucket_kinds)
        )
        rebuilt = [bucket for bucket in buckets if bucket.tokens]
        set_ = object.__setattr__  # frozen: derived fields are set once, here
        set_(self, "rates", rates)
        set_(self, "budgets", budgets)
        set_(self, "periods", periods)
        set_(self, "checks", tuple(checks))
        set_(self, "buckets", buckets)
        set_(
            self,
            "slots",
            tuple(
                owner * r + i
                for owner in (0, 1)
                for i, kind in enumerate(rates)
                if kind.mechanism == "slots"
            ),
        )
        set_(self, "budget_periods", tuple(periods.index(kind.period) for kind in budgets))
        set_(
            self,
            "rebuilt",
            tuple(
                Rebuilt(
                    label=f"{('tenant', 'key')[b.owner]}_{rates[b.check % r].name}",
                    bit=1 << n,
                    key=b.check,
                    check=b.check,
                    period=-1,
                    window_s=b.window_s,
                )
                for n, b in enumerate(rebuilt)
            )
            + tuple(
                Rebuilt(
                    label=period,
                    bit=1 << (len(rebuilt) + p),
                    key=2 * r + p,
                    check=-1,
                    period=p,
                )
                for p, period in enumerate(periods)
            ),
        )

    @property
    def rate_count(self) -> int:
        return len(self.rates)

    def rate_values(self, limits: RateLimits) -> tuple[int, ...]:
        """One owner's rate settings, in table order (0: none)."""
        return tuple(getattr(limits, kind.field) or 0 for kind in self.rates)

    def budget_values(self, budgets: Budgets) -> tuple[int, ...]:
        """The budgets in check order (0: none); dollars as nano-USD."""
        return tuple(
            usd_to_nanos(getattr(budgets, kind.field) or 0.0)
            if kind.usd
            else getattr(budgets, kind.field) or 0
            for kind in self.budgets
        )

    def check_of(self, name: str, owner: str = "tenant") -> int:
        """The check index of kind ``name`` for ``owner`` ("tenant" or "API key")."""
        for check in self.checks:
            if check.kind.name == name and check.owner == owner:
                return check.index
        raise KeyError(name)


LAYOUT = Layout(KINDS)
"""The layout of the gateway's own kinds table."""
