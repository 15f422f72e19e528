"""The simulator's inputs: traces (the bench's own CSV writer and JSON Lines), the pool model
fitted to bench results (the bench's own cold-start document), policy files and SLAs; every
bad value is an error naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tidegate.plan.errors import PlanInputError
from tidegate.plan.pool_model import PoolModel, cold_start_from_bench, from_bench
from tidegate.plan.simulate_inputs import parse_policy, parse_sla
from tidegate.plan.traces import TraceRequest, load_trace
from tidegate_bench.coldstart import ColdStart
from tidegate_bench.records import RequestRecord
from tidegate_bench.results import build_document, write_csv, write_document
from tidegate_bench.runner import LoadPoint, PointResult
from tidegate_bench.selfcheck import ClientHealth
from tidegate_bench.spec import Slo, Target


def record(index: int, scheduled: float, prompt: int | None, output: int | None) -> RequestRecord:
    failed = prompt is None
    return RequestRecord(
        index=index, target="gw", tenant="t", scheduled_s=scheduled, sent_s=scheduled + 0.001,
        end_s=scheduled + 1.0, content_s=() if failed else (scheduled + 0.2,),
        prompt_tokens=prompt, output_tokens=output, cached_tokens=None, token_mismatch=False,
        status=503 if failed else 200, error="http_5xx" if failed else "",
    )  # fmt: skip


def test_the_bench_csv_is_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_csv(
        path,
        [record(0, 2.0, 10, 5), record(1, 1.5, 30, 7), record(2, 3.0, None, None),
         record(3, 4.0, 20, 9)],
    )  # fmt: skip
    trace = load_trace(path)
    # In arrival order, at the run's times; the failed request arrived too, at the median sizes.
    assert trace == [
        TraceRequest(1.5, 30, 7),
        TraceRequest(2.0, 10, 5),
        TraceRequest(3.0, 20, 7),
        TraceRequest(4.0, 20, 9),
    ]


def test_jsonl_is_a_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [{"t": 1.0, "prompt_tokens": 3, "completion_tokens": 4}, {"t": 0.5, "prompt_tokens": 1,
            "completion_tokens": 2}]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert load_trace(path) == [TraceRequest(0.5, 1, 2), TraceRequest(1.0, 3, 4)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "neither JSON Lines nor a bench request CSV"),
        ('{"t": 1, "prompt_tokens": 2}\n', "missing completion_tokens"),
        ('{"t": 1, "prompt_tokens": 2, "completion_tokens": 3, "x": 1}\n', "unknown field x"),
        ('{"t": -1, "prompt_tokens": 2, "completion_tokens": 3}\n', "finite and >= 0"),
        ('{"t": "NaN", "prompt_tokens": 2, "completion_tokens": 3}\n', "finite and >= 0"),
        ('{"t": true, "prompt_tokens": 2, "completion_tokens": 3}\n', "must be a number"),
        ('{"t": 1, "prompt_tokens": -2, "completion_tokens": 3}\n', "prompt_tokens must be"),
        ('{"t": 1, "prompt_tokens": 2.5, "completion_tokens": 3}\n', "prompt_tokens must be"),
        ('{"t": 1, "prompt_tokens": 2, "completion_tokens": false}\n', "completion_tokens must"),
        ('{"t": 1, "prompt_tokens": 2, "completion_tokens": 3}\n{oops\n', ":2: not JSON"),
        ("[1, 2]\n", "neither JSON Lines"),
        ('{"t": 1, "prompt_tokens": 2, "completion_tokens": 3}\n[1]\n', "a JSON object"),
        ("time,prompt_tokens,output_tokens\n1,2,3\n", "no column scheduled_s"),
        ("scheduled_s,prompt_tokens,output_tokens\n", "holds no requests"),
        ("scheduled_s,prompt_tokens,output_tokens\nx,2,3\n", ":2: the arrival time"),
        ("scheduled_s,prompt_tokens,output_tokens\n1,2\n", "number of fields"),
        ("scheduled_s,prompt_tokens,output_tokens\n1,2,3,4\n", "number of fields"),
        ("scheduled_s,prompt_tokens,output_tokens\n1,-5,3\n", "prompt_tokens must be"),
        ("scheduled_s,prompt_tokens,output_tokens\n1,,\n", "no row has token counts"),
    ],
)
def test_a_bad_trace_names_its_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "trace.txt"
    path.write_text(text)
    with pytest.raises(PlanInputError, match=message):
        load_trace(path)


def test_an_unreadable_trace_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(PlanInputError, match="cannot read trace"):
        load_trace(tmp_path / "missing.csv")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PlanInputError, match="cannot read trace"):
        load_trace(binary)


def bench_doc(
    points: list[tuple[int | None, float, float]], *, targets: int = 1
) -> dict[str, object]:
    """A `tidegate bench run` document: (concurrency or None for an open loop, TTFT ms, TPOT ms)."""
    runs = []
    for concurrency, ttft, tpot in points:
        rows = [
            {"name": f"t{i}", "completed": 10, "ttft_ms": {"median": ttft},
             "tpot_ms": {"median": tpot}}
            for i in range(targets)
        ]  # fmt: skip
        runs.append({"label": f"c{concurrency}", "concurrency": concurrency, "targets": rows})
    return {"tidegate_bench": 1, "runs": runs}


def write(tmp_path: Path, doc: object, name: str = "run.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def test_the_pool_model_fits_tpot_and_slowdown_to_bench_points(tmp_path: Path) -> None:
    # TPOT 20 ms alone, +25% of that per extra sequence: 20, 25, 35 ms at 1, 2, 4.
    doc = bench_doc([(1, 200.0, 20.0), (2, 250.0, 25.0), (4, 350.0, 35.0), (None, 1.0, 1.0)])
    model = from_bench(write(tmp_path, doc), max_concurrency=8)
    assert model.tpot_s == pytest.approx(0.020)
    assert model.slowdown == pytest.approx(0.25)
    assert model.first_token_s == pytest.approx(0.2)
    assert model.max_concurrency == 8


def test_one_bench_point_gives_no_slowdown(tmp_path: Path) -> None:
    model = from_bench(write(tmp_path, bench_doc([(4, 300.0, 30.0)])), max_concurrency=4)
    assert (model.first_token_s, model.tpot_s, model.slowdown) == (0.3, 0.03, 0.0)


def test_several_targets_need_a_name(tmp_path: Path) -> None:
    path = write(tmp_path, bench_doc([(1, 100.0, 10.0)], targets=2))
    with pytest.raises(PlanInputError, match="several targets"):
        from_bench(path, max_concurrency=1)
    assert from_bench(path, max_concurrency=1, target="t1").tpot_s == pytest.approx(0.01)
    with pytest.raises(PlanInputError, match="for target 'nope'"):
        from_bench(path, max_concurrency=1, target="nope")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "not a JSON object"),
        ({"tidegate_bench": 2, "runs": []}, "not a `tidegate bench run` result"),
        (bench_doc([(None, 1.0, 1.0)]), "no completed closed-loop run"),
        ({"tidegate_bench": 1, "runs": [{"concurrency": 1}]}, "a run without targets"),
        (
            {"tidegate_bench": 1, "runs": [{"concurrency": 1, "targets": [
                {"completed": 1, "ttft_ms": {"median": "x"}, "tpot_ms": {"median": 1}}]}]},
            "ttft_ms.median is not a number",
        ),
    ],
)  # fmt: skip
def test_a_bad_bench_file_is_refused(tmp_path: Path, doc: object, message: str) -> None:
    with pytest.raises(PlanInputError, match=message):
        from_bench(write(tmp_path, doc), max_concurrency=1)


def test_cold_start_comes_from_the_bench_cold_start_document(tmp_path: Path) -> None:
    cold = ColdStart(
        ready_s=42.5, first_ttft_ms=900.0, first_e2el_ms=1000.0, first_error="",
        warm_ttft_ms=100.0, warm_e2el_ms=200.0, ttft_ratio=9.0, time_to_first_token_s=43.4,
    )  # fmt: skip
    assert cold_start_from_bench(write(tmp_path, cold.as_json())) == 42.5
    with pytest.raises(PlanInputError, match="not a `tidegate bench cold-start` result"):
        cold_start_from_bench(write(tmp_path, bench_doc([(1, 1.0, 1.0)])))
    with pytest.raises(PlanInputError, match="cannot read"):
        cold_start_from_bench(tmp_path / "none.json")


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_concurrency", 0), ("first_token_s", -1.0), ("tpot_s", float("nan")),
     ("slowdown", -0.1), ("cold_start_s", float("inf")), ("prefill_tokens_per_s", 0.0)],
)  # fmt: skip
def test_the_pool_model_refuses_bad_numbers(field: str, value: float) -> None:
    base = PoolModel(max_concurrency=1, first_token_s=0.1, tpot_s=0.01)
    with pytest.raises(PlanInputError, match=field):
        base.with_options(**{field: value})


def test_policy_files_and_shorthands(tmp_path: Path) -> None:
    bare = tmp_path / "bare.yaml"
    bare.write_text("min_replicas: 1\nmax_replicas: 3\nwarm_standby: 1\n")
    nested = tmp_path / "nested.yaml"
    nested.write_text("autoscaling:\n  signal: queue_depth\n  target: 2\n")
    assert parse_policy("fixed:3").fixed == 3
    spec = parse_policy(str(bare))
    assert spec.name == "bare" and spec.policy is not None and spec.policy.warm_standby == 1
    named = parse_policy(f"qd={nested}")
    assert named.name == "qd" and named.policy is not None and named.policy.target == 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("min_replicas: 3\nmax_replicas: 2\n", "must not exceed"),
        ("min_replicas: -1\n", "min_replicas"),
        ("maxreplicas: 2\n", "maxreplicas: Extra inputs are not permitted"),
        ("signal: cpu\n", "signal"),
        ("target: 0\n", "target"),
        ("- 1\n", "must hold the autoscaling block"),
        ("a: [\n", "is not YAML"),
    ],
)
def test_a_bad_policy_file_names_its_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PlanInputError, match=message):
        parse_policy(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [("fixed:0", "1..10000"), ("fixed:two", "whole number"), ("missing.yaml", "cannot read"),
     ("bad name=x.yaml", "the name must be")],
)  # fmt: skip
def test_a_bad_policy_option_names_its_problem(text: str, message: str) -> None:
    with pytest.raises(PlanInputError, match=message):
        parse_policy(text)


def test_sla_targets() -> None:
    sla = parse_sla("ttft_p95=2s, error_rate=0.01,queue_wait_p95=500ms,ttft_p50=0.8")
    assert sla.times == {"ttft_p95": 2.0, "queue_wait_p95": 0.5, "ttft_p50": 0.8}
    assert sla.error_rate == 0.01 and sla.ttft_limit_s == 0.8


@pytest.mark.parametrize(
    ("text", "message"),
    [("ttft_p95", "KEY=VALUE"), ("ttft_p95=", "KEY=VALUE"), ("ttft_p95=fast", "a duration"),
     ("ttft_p95=-1s", "a duration"), ("ttft_p95=0s", "positive"), ("error_rate=2", "0..1"),
     ("error_rate=x", "0..1"), ("cpu=1", "unknown target 'cpu'")],
)  # fmt: skip
def test_a_bad_sla_names_its_problem(text: str, message: str) -> None:
    with pytest.raises(PlanInputError, match=message):
        parse_sla(text)


def timed(index: int, ttft_s: float, tpot_s: float, tokens: int = 5) -> RequestRecord:
    start = float(index)
    content = tuple(start + ttft_s + i * tpot_s for i in range(tokens))
    return RequestRecord(
        index=index, target="replica", tenant="t", scheduled_s=start, sent_s=start,
        end_s=content[-1], content_s=content, prompt_tokens=10, output_tokens=tokens,
        cached_tokens=None, token_mismatch=False, status=200, error="",
    )  # fmt: skip


def test_the_pool_model_fits_a_document_the_bench_wrote(tmp_path: Path) -> None:
    # Concurrency 1: TTFT 200 ms, TPOT 20 ms; concurrency 4: 26 ms (+10% per extra sequence).
    target = Target(name="replica", url="http://127.0.0.1:1/v1")
    health = ClientHealth(schedule_lag_p99_ms=0.0, loop_lag_p99_ms=0.0, cpu_percent=1.0)
    results = [
        PointResult(
            point=LoadPoint(label=f"c{c}", concurrency=c),
            records={"replica": [timed(i, 0.2, tpot) for i in range(5)]},
            health=health,
            window_start_s=0.0,
        )
        for c, tpot in ((1, 0.020), (4, 0.026))
    ]
    json_path = tmp_path / "run.json"
    doc = build_document(
        command="tidegate bench run", workload={}, results=results,
        targets=[(target, "m")], slo=Slo(), json_path=json_path, seed=0, min_effect=0.05,
    )  # fmt: skip
    write_document(json_path, doc)
    model = from_bench(json_path, max_concurrency=4)
    assert model.tpot_s == pytest.approx(0.020)
    assert model.slowdown == pytest.approx(0.1)
    assert model.first_token_s == pytest.approx(0.2)
