"""TrafficSplit: sticky keys, shares close to the weights, and a growing first pool that only
ever gains keys."""

from __future__ import annotations

import pytest

from tidegate.routing.split import TrafficSplit, sticky_point

KEYS = [f"s:session-{i}" for i in range(10_000)]


def shares(split: TrafficSplit) -> dict[str, float]:
    counts: dict[str, int] = {}
    for key in KEYS:
        pool = split.choose(key)
        counts[pool] = counts.get(pool, 0) + 1
    return {pool: count / len(KEYS) for pool, count in counts.items()}


def test_a_key_always_lands_on_one_pool() -> None:
    split = TrafficSplit(weights=(("candidate", 30), ("stable", 70)))
    again = TrafficSplit(weights=(("candidate", 30), ("stable", 70)))
    for key in KEYS[:1000]:
        first = split.choose(key)
        assert all(split.choose(key) == first for _ in range(3))
        assert again.choose(key) == first  # another gateway replica agrees
    assert 0 <= sticky_point("anything") < 1


@pytest.mark.parametrize(
    "weights",
    [
        (("candidate", 5), ("stable", 95)),
        (("candidate", 25), ("stable", 75)),
        (("candidate", 50), ("stable", 50)),
        (("a", 1), ("b", 1), ("c", 2)),
    ],
)
def test_shares_follow_the_weights(weights: tuple[tuple[str, float], ...]) -> None:
    split = TrafficSplit(weights=weights)
    total = sum(weight for _, weight in weights)
    seen = shares(split)
    for pool, weight in weights:
        assert seen.get(pool, 0.0) == pytest.approx(weight / total, abs=0.02), seen
        assert split.share(pool) == pytest.approx(weight / total)


def test_raising_the_first_pool_share_never_moves_a_key_off_it() -> None:
    previous: set[str] = set()
    for share in (5, 25, 50, 75, 100):
        split = TrafficSplit(weights=(("candidate", share), ("stable", 100 - share)))
        on_candidate = {key for key in KEYS if split.choose(key) == "candidate"}
        assert previous <= on_candidate, f"keys left the candidate at {share}%"
        assert len(on_candidate) / len(KEYS) == pytest.approx(share / 100, abs=0.02)
        previous = on_candidate
    assert len(previous) == len(KEYS)


def test_zero_weights_take_nothing_and_all_zero_is_refused() -> None:
    split = TrafficSplit(weights=(("candidate", 0), ("stable", 100)))
    assert set(shares(split)) == {"stable"}
    assert split.share("candidate") == 0.0
    with pytest.raises(ValueError):
        TrafficSplit(weights=(("candidate", 0), ("stable", 0)))


def test_sticky_key_is_the_session_else_the_conversation_else_the_tenant() -> None:
    split = TrafficSplit(weights=(("a", 1), ("b", 1), ("c", 1), ("d", 1)), sticky_by="session")
    opening = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    later = [*opening, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "?"}]

    def pick(session_id: str | None, payload: dict[str, object], tenant: str = "acme") -> str:
        return split.pick(tenant=tenant, session_id=session_id, payload=payload)

    assert pick("conv-1", {"messages": opening}) == split.choose("s:conv-1")
    # Without a session id, every turn of a conversation lands where its first one did...
    conversations = [[{"role": "user", "content": f"topic {i}"}] for i in range(40)]
    for messages in conversations:
        assert pick(None, {"messages": messages}) == pick(
            None, {"messages": [*messages, {"role": "assistant", "content": "ok"}]}
        )
    # ... conversations spread, whatever the tenant ...
    assert len({pick(None, {"messages": m}) for m in conversations}) == 4
    assert pick(None, {"messages": later}, tenant="x") == pick(None, {"messages": later})
    # ... and a body with nothing to hash is sticky by tenant.
    assert pick(None, {}) == split.choose("t:acme")
    by_tenant = TrafficSplit(weights=(("a", 1), ("b", 1)), sticky_by="tenant")
    assert by_tenant.pick(tenant="acme", session_id="conv-1", payload={"messages": opening}) == (
        by_tenant.choose("t:acme")
    )
