"""``make bench-burst``'s pieces that need no engine: the gateway configs it writes load as
tidegate configs with the intended policies, and the simulator's figures for the requests a
burst sent come out in the measured figures' shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.burst import Options, gateway_config, policy_of
from benchmarks.burst_sim import measured, predict, relative_error, trace_of
from tidegate.config import load_config
from tidegate.plan.pool_model import PoolModel
from tidegate.plan.simulate import QueueSettings
from tidegate_bench.phases import BurstPlan
from tidegate_bench.records import RequestRecord


@pytest.mark.parametrize(("name", "standby"), [("fixed", None), ("autoscale", 0), ("standby", 1)])
def test_gateway_configs_load_with_their_policy(
    tmp_path: Path, name: str, standby: int | None
) -> None:
    options = Options(max_num_seqs=4)
    path = tmp_path / "tidegate.yaml"
    path.write_text(yaml.safe_dump(gateway_config(tmp_path, policy_of(name, options), options)))
    config = load_config(path)
    assert config.home == tmp_path and (tmp_path / "models").is_symlink()
    assert config.engines.replicas == 1 and config.engines.profile.max_num_seqs == 4
    policy = config.engines.autoscaling
    assert policy.enabled is (standby is not None)
    if standby is not None:
        assert (policy.min_replicas, policy.max_replicas, policy.warm_standby) == (1, 2, standby)
        assert policy.target == 4.0 and policy.signal == "in_flight_per_replica"


def _records(plan: BurstPlan, rate: float) -> list[RequestRecord]:
    """Requests due at ``rate × factor`` per phase, each with a 0.2 s TTFT, none failed."""
    out: list[RequestRecord] = []
    for phase in plan.phases():
        n = round(phase.duration_s * rate * phase.factor)
        for i in range(n):
            t = phase.start_s + i / (rate * phase.factor)
            out.append(RequestRecord(
                index=len(out), target="gw", tenant="default", scheduled_s=t, sent_s=t,
                end_s=t + 1.0, content_s=(t + 0.2,), prompt_tokens=50, output_tokens=16,
                cached_tokens=None, token_mismatch=False, status=200, error="",
            ))  # fmt: skip
    return out


def test_the_simulator_predicts_each_configuration_in_the_measured_shape() -> None:
    plan = BurstPlan(baseline_s=20, burst_s=30, cooldown_s=20, factor=8)
    records = _records(plan, rate=1.0)
    assert [t.t for t in trace_of(records)] == sorted(r.scheduled_s for r in records)
    # One replica: 4 slots, 0.5 s per request alone: ~8 req/s; the burst offers 8 req/s more
    # than a replica with slowdown serves, so it queues; a new one loads in 10 s.
    pool = PoolModel(max_concurrency=4, first_token_s=0.1, tpot_s=0.025, slowdown=0.2,
                     cold_start_s=10.0)  # fmt: skip
    queue = QueueSettings(max_queue_depth=64, queue_timeout_s=20.0, ttft_target_s=2.0)
    options = Options(max_num_seqs=4)
    fixed, fixed_run = predict(records, pool=pool, policy=None, queue=queue, phases=plan.phases())
    scaled, _ = predict(
        records, pool=pool, policy=policy_of("autoscale", options), queue=queue,
        phases=plan.phases(),
    )  # fmt: skip
    standby, _ = predict(
        records, pool=pool, policy=policy_of("standby", options), queue=queue,
        phases=plan.phases(),
    )  # fmt: skip
    assert len(fixed_run.requests) == len(records)
    assert fixed.peak_ready == 1 and fixed.to_new_replica_first_request_s is None
    assert scaled.peak_ready == 2 and standby.peak_ready == 2
    # A new replica first serves after its cold start; a warm standby at once.
    assert scaled.to_new_replica_first_request_s is not None
    assert scaled.to_new_replica_first_request_s >= pool.cold_start_s
    assert scaled.to_ready_up_s is not None and scaled.to_ready_up_s >= pool.cold_start_s
    assert fixed.to_ready_up_s is None
    assert standby.to_new_replica_first_request_s is not None
    assert standby.to_new_replica_first_request_s < 3.0
    burst = {f: v.ttft_p95_s["burst"] or 0.0 for f, v in
             (("fixed", fixed), ("scaled", scaled), ("standby", standby))}  # fmt: skip
    assert burst["fixed"] > burst["scaled"] >= burst["standby"] > 0
    assert set(fixed.ttft_p95_s) == {"baseline", "burst", "cooldown", "run"}


def test_measured_figures_read_the_records_and_the_burst_block() -> None:
    plan = BurstPlan(baseline_s=2, burst_s=2, cooldown_s=2, factor=2)
    records = _records(plan, rate=2.0)
    block = {"scale_up": {"pool": {"max_ready": 2.0, "to_new_replica_first_request_s": 1.5,
                                   "to_ready_up_s": 1.0}}}  # fmt: skip
    figures = measured(records, block, plan.phases())
    assert figures.ttft_p95_s["burst"] == pytest.approx(0.2)
    assert (figures.http_429, figures.http_503, figures.peak_ready) == (0, 0, 2)
    assert figures.to_new_replica_first_request_s == 1.5 and figures.to_ready_up_s == 1.0
    assert measured(records, {"scale_up": {}}, plan.phases()).peak_ready is None
    assert relative_error(2.0, 2.5) == pytest.approx(0.25)
    assert relative_error(None, 1.0) is None and relative_error(0.0, 1.0) is None
