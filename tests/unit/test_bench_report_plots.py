"""The bench report's PNG plots: created, the documented size, and not blank."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import orjson
import pytest
from matplotlib import image

from tidegate_bench.reporting import load_result, parse_result, write_report
from tidegate_bench.reporting.plots import FIG_SIZE_PX, latency_vs_load, throughput_over_time
from tidegate_bench.reporting.samples import read_latencies

SAMPLE = Path(__file__).parents[1] / "data" / "bench" / "result.json"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_drawn(data: bytes) -> None:
    assert png_size(data) == FIG_SIZE_PX
    pixels = image.imread(io.BytesIO(data), format="png")
    assert float(np.std(pixels[..., :3])) > 0.05  # white canvas with axes, lines and text
    blue = np.all(np.abs(pixels[..., :3] - np.array([0x1F, 0x77, 0xB4]) / 255) < 0.05, axis=-1)
    assert int(blue.sum()) > 200  # the first target's colour: data lines were drawn


def test_report_writes_every_plot(tmp_path: Path) -> None:
    written = write_report(SAMPLE, tmp_path)
    names = sorted(p.name for p in written.plots)
    expected = ["latency_vs_load.png"]
    expected += [f"{kind}_run{i}.png" for kind in ("cdf", "throughput") for i in (1, 2, 3)]
    assert names == sorted(expected)
    for path in written.plots:
        assert path.stat().st_size > 10_000
        assert_drawn(path.read_bytes())


def test_latency_axis_follows_the_load_shape() -> None:
    data = orjson.loads(SAMPLE.read_bytes())
    assert (plot := latency_vs_load(parse_result(data))) and plot.title.endswith("concurrency")
    for rate, run in zip((2.0, 5.0, 10.0), data["runs"], strict=True):
        run.update(shape="poisson", concurrency=None, rate=rate)
    assert (plot := latency_vs_load(parse_result(data))) and "request rate" in plot.title
    data["runs"][0]["rate"] = None
    assert (plot := latency_vs_load(parse_result(data))) and plot.title == "Latency vs run"
    assert_drawn(plot.png)


def test_empty_inputs_draw_nothing() -> None:
    data = orjson.loads(SAMPLE.read_bytes())
    for target in data["runs"][0]["targets"]:
        target["timeline"] = []
    result = parse_result(data)
    assert throughput_over_time(result.runs[0], 0, {}) is None
    assert latency_vs_load(parse_result({**data, "runs": []})) is None


def test_csv_reader_keeps_successful_requests_only(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "index,target,tenant,scheduled_s,sent_s,ttft_ms,e2el_ms,tpot_ms,prompt_tokens,"
        "output_tokens,status,error\n"
        "0,a,t,0,0,30.5,900,7,10,100,200,\n"
        "1,a,t,0,0,,12,,10,0,429,http_429\n"
        "2,a,t,0,0,20.0,800,6,10,100,200,\n"
    )
    latencies = read_latencies(path)
    assert latencies.ttft_ms == (20.0, 30.5) and latencies.e2el_ms == (800.0, 900.0)
    path.write_text("index,target\n0,a\n")
    with pytest.raises(ValueError, match="missing column"):
        read_latencies(path)


def test_sample_csvs_match_the_json_counts() -> None:
    result = load_result(SAMPLE)
    for run in result.runs:
        for target in run.targets:
            latencies = read_latencies(SAMPLE.parent / target.requests_csv)
            assert len(latencies.e2el_ms) == target.completed
