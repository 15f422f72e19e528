"""Routes without a server: rule precedence, each condition, implicit routes, config checks and
the per-route validation limits."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.tiny_model import write_tiny_model
from tidegate.config import Config, ModelRoute, RouteRule
from tidegate.errors import ModelNotFoundError
from tidegate.pipeline.model_limits import model_limits
from tidegate.routing.build import build_routing
from tidegate.routing.replicas import Replica, RoutingTable
from tidegate.routing.rules import RequestTraits, Route, response_format_type


def traits(
    tier: str = "interactive",
    prompt_tokens: int | None = 10,
    response_format: str = "text",
    quality: str | None = None,
) -> RequestTraits:
    return RequestTraits(
        tier=tier, prompt_tokens=prompt_tokens, response_format=response_format, quality=quality
    )


def route(*rules: dict[str, Any], pools: tuple[str, ...] = ("default",)) -> Route:
    return Route.from_config(
        ModelRoute(model="chat", pools=list(pools), rules=[RouteRule(**rule) for rule in rules])
    )


def config(tmp_path: Path, **fields: Any) -> Config:
    return Config(home=tmp_path, engines={"replicas": 0}, **fields)


# -- conditions -------------------------------------------------------------------------------


def test_no_rule_matching_gives_the_default_chain() -> None:
    chat = route({"pools": ["big"], "quality": ["high"]}, pools=("a", "b"))
    assert chat.chain(traits()) == ("a", "b")


def test_tier_condition() -> None:
    chat = route({"pools": ["cheap", "a"], "tiers": ["batch"]}, pools=("a",))
    assert chat.chain(traits(tier="batch")) == ("cheap", "a")
    assert chat.chain(traits(tier="interactive")) == ("a",)
    assert chat.chain(traits(tier="internal")) == ("a",)


def test_prompt_token_bounds_are_inclusive() -> None:
    chat = route(
        {"pools": ["long"], "min_prompt_tokens": 100},
        {"pools": ["short"], "max_prompt_tokens": 10},
        pools=("mid",),
    )
    assert chat.chain(traits(prompt_tokens=100)) == ("long",)
    assert chat.chain(traits(prompt_tokens=99)) == ("mid",)
    assert chat.chain(traits(prompt_tokens=11)) == ("mid",)
    assert chat.chain(traits(prompt_tokens=10)) == ("short",)
    assert chat.chain(traits(prompt_tokens=0)) == ("short",)


def test_prompt_token_rules_never_match_an_uncounted_prompt() -> None:
    """No tokenizer: the count is unknown, so neither bound can be said to hold."""
    chat = route(
        {"pools": ["long"], "min_prompt_tokens": 1},
        {"pools": ["short"], "max_prompt_tokens": 1_000_000},
        pools=("mid",),
    )
    assert chat.chain(traits(prompt_tokens=None)) == ("mid",)


def test_response_format_condition() -> None:
    chat = route({"pools": ["json"], "response_format": ["json_object", "json_schema"]})
    assert chat.chain(traits(response_format="json_object")) == ("json",)
    assert chat.chain(traits(response_format="json_schema")) == ("json",)
    assert chat.chain(traits(response_format="text")) == ("default",)


def test_response_format_type_of_a_payload() -> None:
    assert response_format_type({}) == "text"
    assert response_format_type({"response_format": {"type": "json_object"}}) == "json_object"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    assert response_format_type({"response_format": schema}) == "json_schema"
    assert response_format_type({"response_format": {"type": "text"}}) == "text"
    assert response_format_type({"response_format": "json_object"}) == "text"  # not the shape


def test_quality_condition_needs_the_header() -> None:
    chat = route({"pools": ["big"], "quality": ["high", "best"]})
    assert chat.chain(traits(quality="high")) == ("big",)
    assert chat.chain(traits(quality="best")) == ("big",)
    assert chat.chain(traits(quality="low")) == ("default",)
    assert chat.chain(traits(quality=None)) == ("default",)


def test_all_conditions_of_a_rule_must_hold() -> None:
    chat = route({"pools": ["x"], "tiers": ["batch"], "response_format": ["json_object"]})
    assert chat.chain(traits(tier="batch", response_format="json_object")) == ("x",)
    assert chat.chain(traits(tier="batch")) == ("default",)
    assert chat.chain(traits(response_format="json_object")) == ("default",)


def test_an_empty_rule_matches_everything() -> None:
    assert route({"pools": ["all"]}).chain(traits(prompt_tokens=None)) == ("all",)


# -- precedence -------------------------------------------------------------------------------


def test_the_first_matching_rule_wins_in_config_order() -> None:
    quality_first = route(
        {"pools": ["big"], "quality": ["high"]}, {"pools": ["cheap"], "tiers": ["batch"]}
    )
    tier_first = route(
        {"pools": ["cheap"], "tiers": ["batch"]}, {"pools": ["big"], "quality": ["high"]}
    )
    both = traits(tier="batch", quality="high")
    assert quality_first.chain(both) == ("big",)
    assert tier_first.chain(both) == ("cheap",)
    # Each still matches on its own when the other does not.
    assert quality_first.chain(traits(tier="batch")) == ("cheap",)
    assert tier_first.chain(traits(quality="high")) == ("big",)


# -- the routing table ------------------------------------------------------------------------


def replica(rid: str, model: str, pool: str = "") -> Replica:
    return Replica(
        id=rid, model=model, pool=pool, base_url=f"http://{rid}/v1", upstream_model=model
    )


def test_implicit_routes_grow_in_config_order() -> None:
    table = RoutingTable()
    table.add(replica("r1", "m", pool="gpu"))
    table.add(replica("r2", "m", pool="cloud"))
    table.add(replica("r3", "m", pool="gpu"))  # a pool already in the chain is not repeated
    table.add(replica("r4", "other"))
    assert table.route("m").pools == ("gpu", "cloud")
    assert [p.name for p in table.chain(table.route("m"), traits())] == ["gpu", "cloud"]
    assert [r.id for r in table.pool("gpu").replicas] == ["r1", "r3"]
    assert table.route("other").pools == ("other",)
    assert table.models() == ["m", "other"]
    assert table.pool("gpu").replicas[0].backend == b"gpu/r1"


def test_a_configured_route_is_not_grown_by_replicas() -> None:
    table = RoutingTable(routes=[Route(model="m", pools=("cloud",), explicit=True)])
    table.add(replica("r1", "m", pool="gpu"))
    table.add(replica("r2", "x", pool="cloud"))
    assert table.route("m").pools == ("cloud",)
    assert table.route("x").pools == ("cloud",)


def test_unknown_model_is_404_naming_routes_and_implicit_models() -> None:
    table = RoutingTable(routes=[Route(model="chat", pools=("gpu",), explicit=True)])
    table.add(replica("r1", "m", pool="gpu"))
    with pytest.raises(ModelNotFoundError, match="chat, m"):
        table.route("nope")


def test_build_routing_implicit_routes_follow_upstream_order(tmp_path: Path) -> None:
    routing = build_routing(
        config(
            tmp_path,
            upstreams=[
                {"url": "http://b:1/v1", "model": "m", "pool": "second"},
                {"url": "http://a:1/v1", "model": "m", "pool": "first"},
                {"url": "http://c:1/v1", "model": "m", "pool": "second"},
            ],
        )
    )
    assert routing.route("m").pools == ("second", "first")
    assert [r.id for r in routing.pool("second").replicas] == ["u0", "u2"]
    # Remote pools get a circuit breaker by default.
    assert routing.pool("second").breaker is not None


def test_implicit_routes_keep_config_order_with_dns_upstreams(tmp_path: Path) -> None:
    """A DNS-discovered upstream's replicas join later, but its pool keeps its place."""
    routing = build_routing(
        config(
            tmp_path,
            upstreams=[
                {
                    "url": "http://gpu.internal:8000/v1",
                    "model": "m",
                    "pool": "gpu",
                    "discovery": "dns",
                },
                {"url": "http://a:1/v1", "model": "m", "pool": "cloud"},
            ],
        )
    )
    assert routing.route("m").pools == ("gpu", "cloud")
    assert routing.pool("gpu").replicas == []


def test_implicit_routes_put_local_engines_first(tmp_path: Path) -> None:
    """The engines section comes before the upstreams: local replicas, which join when the
    supervisor starts them, are the first pool of their model's implicit route."""
    routing = build_routing(
        Config(
            home=tmp_path,
            engines={"replicas": 1, "served_model_name": "m"},
            upstreams=[{"url": "http://a:1/v1", "model": "m", "pool": "cloud"}],
        )
    )
    assert routing.route("m").pools == ("m", "cloud")


def test_build_routing_rejects_unknown_pool_names(tmp_path: Path) -> None:
    bad = config(
        tmp_path,
        upstreams=[{"url": "http://a:1/v1", "model": "m", "pool": "gpu"}],
        routing={
            "routes": [
                {
                    "model": "chat",
                    "pools": ["gpu", "cloud"],
                    "rules": [{"pools": ["typo"], "tiers": ["batch"]}],
                }
            ]
        },
    )
    with pytest.raises(ValueError, match="nothing provides: cloud, typo") as raised:
        build_routing(bad)
    assert "routing.pools" in str(raised.value)  # says where a pool may come from


def test_build_routing_accepts_pools_from_every_source(tmp_path: Path) -> None:
    routing = build_routing(
        Config(
            home=tmp_path,
            engines={"replicas": 1, "served_model_name": "local"},
            upstreams=[{"url": "http://a:1/v1", "model": "m", "pool": "cloud"}],
            routing={
                "pools": [{"name": "spare"}],
                "routes": [{"model": "chat", "pools": ["local", "cloud", "spare"]}],
            },
        )
    )
    assert routing.route("chat").explicit
    assert routing.models() == ["chat", "local", "m"]
    assert routing.pool("local").breaker is None  # local engines are the supervisor's


def test_api_key_env_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ROUTE_RULES_KEY", "sk-from-env")
    routing = build_routing(
        config(
            tmp_path,
            upstreams=[
                {"url": "http://a:1/v1", "model": "m", "api_key_env": "TEST_ROUTE_RULES_KEY"},
                {"url": "http://b:1/v1", "model": "m", "api_key": "sk-config"},
                {"url": "http://c:1/v1", "model": "m", "api_key_env": "TEST_ROUTE_RULES_UNSET"},
            ],
        )
    )
    assert [r.api_key for r in routing.pool("m").replicas] == ["sk-from-env", "sk-config", None]


# -- validation limits per route ----------------------------------------------------------------


@pytest.fixture(scope="module")
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def test_a_route_is_validated_like_its_primary_pool(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    tiny = write_tiny_model(tmp_path / "tiny")
    limits = model_limits(
        config(
            tmp_path,
            upstreams=[
                {"url": "http://a:1/v1", "model": "small", "pool": "gpu", "context_length": 4096},
                {
                    "url": "http://b:1/v1",
                    "model": "big",
                    "pool": "cloud",
                    "context_length": 200_000,
                    "tokenizer": str(tiny),
                },
            ],
            routing={
                "routes": [
                    {"model": "chat", "pools": ["cloud", "gpu"]},
                    {"model": "fast", "pools": ["gpu", "cloud"]},
                ]
            },
        ),
        local_model_dir=None,
        executor=executor,
    )
    assert limits["chat"] is limits["big"]
    assert limits["chat"].context_length == 200_000
    assert limits["chat"].counter is not None
    assert limits["fast"] is limits["small"]
    assert limits["fast"].context_length == 4096
    assert limits["fast"].counter is None


def test_a_route_whose_primary_pool_shares_a_model_name_uses_that_pool(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    """Two pools serving one public model name, with different context lengths: a route's
    limits are its primary pool's, not the first upstream's."""
    limits = model_limits(
        config(
            tmp_path,
            upstreams=[
                {"url": "http://a:1/v1", "model": "m", "pool": "gpu", "context_length": 4096},
                {"url": "http://b:1/v1", "model": "m", "pool": "cloud", "context_length": 200_000},
            ],
            routing={"routes": [{"model": "long", "pools": ["cloud"]}]},
        ),
        local_model_dir=None,
        executor=executor,
    )
    assert limits["m"].context_length == 4096  # the implicit route's first pool
    assert limits["long"].context_length == 200_000


def test_a_route_on_local_engines_uses_their_profile(
    tmp_path: Path, executor: ThreadPoolExecutor
) -> None:
    limits = model_limits(
        Config(
            home=tmp_path,
            engines={
                "replicas": 1,
                "served_model_name": "local",
                "profile": {"max_model_len": 2048},
            },
            upstreams=[{"url": "http://a:1/v1", "model": "m", "context_length": 8192}],
            routing={"routes": [{"model": "chat", "pools": ["local", "m"]}]},
        ),
        local_model_dir=str(write_tiny_model(tmp_path / "tiny")),
        executor=executor,
    )
    assert limits["chat"].context_length == 2048
    assert limits["chat"].counter is not None
