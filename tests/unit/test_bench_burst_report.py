"""The HTML report of a burst run: the load, replicas and TTFT p95 plot on one time axis, the
per-phase table and the SLA verdict."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import orjson
from matplotlib import image

from tests.unit.test_bench_burst_metrics import _record, _timeline
from tidegate_bench.burst.scraper import ScrapeLog
from tidegate_bench.burst.sla import parse_sla
from tidegate_bench.burst.summary import burst_block
from tidegate_bench.phases import BurstPlan
from tidegate_bench.reporting import parse_result, write_report
from tidegate_bench.reporting.plots import FIG_SIZE_PX, burst_timeline

SAMPLE = Path(__file__).parents[1] / "data" / "bench" / "result.json"


def _burst_result(tmp_path: Path) -> Path:
    snaps, start_unix = _timeline()
    plan = BurstPlan(baseline_s=10, burst_s=10, cooldown_s=10, factor=4)
    records = [
        _record(i, t / 4, 0.05 if not 40 <= t < 80 else 2.5) for i, t in enumerate(range(120))
    ]
    block = burst_block(
        plan=plan, records=records, scrapes=ScrapeLog(tuple(snaps), 0, ""),
        metrics_url="http://gw/metrics", metrics_error="", started_unix=start_unix,
        sla=parse_sla("ttft_p95=2s,error_rate=0.01"),
    )  # fmt: skip
    data = orjson.loads(SAMPLE.read_bytes())
    data["runs"][0]["burst"] = block
    # The sample's CSVs sit beside it: keep them reachable from the copy.
    for run in data["runs"]:
        for target in run["targets"]:
            target["requests_csv"] = str(SAMPLE.parent / target["requests_csv"])
    path = tmp_path / "burst.json"
    path.write_bytes(orjson.dumps(data))
    return path


def test_burst_plot_draws_load_replicas_and_ttft(tmp_path: Path) -> None:
    result = parse_result(orjson.loads(_burst_result(tmp_path).read_bytes()))
    plot = burst_timeline(result.runs[0], 0)
    assert plot is not None and plot.file == "burst_run1.png"
    pixels = image.imread(io.BytesIO(plot.png), format="png")
    assert (pixels.shape[1], pixels.shape[0]) == FIG_SIZE_PX
    for colour in ("#1f77b4", "#2ca02c", "#d62728", "#9467bd"):  # load, desired, ready, TTFT
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
        drawn = np.all(np.abs(pixels[..., :3] - rgb) < 0.05, axis=-1)
        assert int(drawn.sum()) > 50, colour
    # Runs without a burst draw no burst plot.
    assert burst_timeline(result.runs[1], 1) is None


def test_report_shows_phases_scale_up_and_verdict(tmp_path: Path) -> None:
    written = write_report(_burst_result(tmp_path), tmp_path / "report")
    assert "burst_run1.png" in {p.name for p in written.plots}
    html = written.html.read_text()
    assert 'id="sla-verdict"' in html and '<span class="bad">FAIL</span>' in html
    assert "missed: ttft_p95" in html  # the burst phase
    assert html.count('<span class="ok">met</span>') == 2  # baseline and cool-down
    assert "chat-r1" in html and "7.4" in html
