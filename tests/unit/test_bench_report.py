"""The bench report: result loading and validation, the HTML's content and escaping, the command."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import typer
from typer.testing import CliRunner

from tidegate_bench.report_cli import bench_report
from tidegate_bench.reporting import ResultError, load_result, write_report

SAMPLE_DIR = Path(__file__).parents[1] / "data" / "bench"
SAMPLE = SAMPLE_DIR / "result.json"
HOSTILE = '<script>alert("x")</script> $\\frac{a}{$ & "co"'


def variant(tmp_path: Path, mutate: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the sample result (CSVs included) with ``mutate`` applied to the JSON."""
    folder = tmp_path / "result"
    shutil.copytree(SAMPLE_DIR, folder)
    data = orjson.loads(SAMPLE.read_bytes())
    mutate(data)
    path = folder / "result.json"
    path.write_bytes(orjson.dumps(data))
    return path


def test_sample_loads_with_extra_fields_ignored() -> None:
    result = load_result(SAMPLE)
    assert [run.label for run in result.runs] == ["c=1", "c=10", "c=50"]
    assert all(
        [t.name for t in run.targets] == ["vllm-local", "managed-api"] for run in result.runs
    )
    assert result.workload.details()["kind"] == "synthetic"
    assert result.runs[2].targets[1].errors.http_429 > 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["runs"][0]["targets"][1].pop("ttft_ms"),
            "missing field runs[0].targets[1].ttft_ms",
        ),
        (
            lambda d: d["runs"][2]["targets"][0]["e2el_ms"].pop("p95"),
            "runs[2].targets[0].e2el_ms.p95",
        ),
        (lambda d: d["client"].update(client_bound="maybe"), "field client.client_bound"),
        (lambda d: d["runs"][1].update(shape="zigzag"), "field runs[1].shape"),
        (lambda d: d.pop("runs"), "missing field runs"),
        (lambda d: d.update(tidegate_bench=2), "tidegate_bench is 2"),
    ],
)
def test_invalid_result_names_the_field(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    with pytest.raises(ResultError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_result(variant(tmp_path, mutate))


def test_unreadable_files_raise_result_error(tmp_path: Path) -> None:
    with pytest.raises(ResultError, match="cannot read"):
        load_result(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ResultError, match="is not JSON"):
        load_result(tmp_path / "bad.json")


def test_html_lists_every_run_target_and_table(tmp_path: Path) -> None:
    written = write_report(SAMPLE, tmp_path / "out")
    html = written.html.read_text(encoding="utf-8")
    for label in ("c=1", "c=10", "c=50"):
        assert f"<strong>{label}</strong>" in html
    for name, url in (("vllm-local", "http://127.0.0.1:8080/v1"), ("managed-api", "https://api")):
        assert html.count(name) >= 6 and url in html
    for table in ("summary", "comparisons", "client", "errors", "cost", "latency"):
        assert f'id="{table}"' in html
    assert html.count('src="data:image/png;base64,') == len(written.plots) == 7
    assert "ok: not client-bound" in html and 'id="client-bound"' not in html
    assert "[-0.8, 90.4]" in html  # a non-significant comparison's CI
    assert "$0.000754" in html and "$0.0000342" in html  # per request, c=1 and c=50
    assert written.notes == ()


def test_html_is_self_contained(tmp_path: Path) -> None:
    html = write_report(SAMPLE, tmp_path / "out").html.read_text(encoding="utf-8")
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert 'src="http' not in html and "url(" not in html


def test_client_bound_run_shows_the_warning(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: d["client"].update(client_bound=True, cpu_percent=99.0))
    html = write_report(path, tmp_path / "out").html.read_text(encoding="utf-8")
    assert 'id="client-bound"' in html and "Client-bound" in html and "CPU 99%" in html
    assert '<span class="bad">client-bound</span>' in html


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    def mutate(data: dict[str, Any]) -> None:
        data["command"] = "tidegate bench </code><script>alert(1)</script>"
        data["workload"]["note"] = "<img src=x onerror=alert(1)>"
        for run in data["runs"]:
            run["label"] = "<b>" + run["label"] + "</b>"
            run["targets"][0]["name"] = HOSTILE
            run["targets"][0]["url"] = "javascript:alert(1)//<i>"
            for comparison in run["comparisons"]:
                comparison["a"] = HOSTILE

    written = write_report(variant(tmp_path, mutate), tmp_path / "out")
    html = written.html.read_text(encoding="utf-8")
    assert "<script" not in html and "<b>c=1</b>" not in html and "<img src=x" not in html
    assert "<i>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; $\\frac{a}{$ &amp; &#34;co&#34;" in html
    assert "&lt;b&gt;c=10&lt;/b&gt;" in html
    assert len(written.plots) == 7  # a "$" in a name must not break matplotlib's text rendering


def test_missing_csv_becomes_a_note(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: None)
    (path.parent / "requests-c10-managed-api.csv").unlink()
    written = write_report(path, tmp_path / "out")
    assert len(written.notes) == 1 and "c=10 / managed-api" in written.notes[0]
    html = written.html.read_text(encoding="utf-8")
    assert "requests-c10-managed-api.csv" in html
    assert (tmp_path / "out" / "cdf_run2.png").exists()  # the other target still plotted


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("report")(bench_report)

    @app.callback()
    def main() -> None:
        """Mounted like ``tidegate bench``."""

    return app


def test_command_writes_report_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = CliRunner().invoke(_cli(), ["report", str(SAMPLE), "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert (out / "report.html").is_file() and len(list(out.glob("*.png"))) == 7
    assert f"report  {out / 'report.html'}" in done.output


def test_command_reports_bad_input(tmp_path: Path) -> None:
    path = variant(tmp_path, lambda d: d["runs"][0]["targets"][0].pop("cost"))
    done = CliRunner().invoke(_cli(), ["report", str(path), "--out", str(tmp_path / "out")])
    assert done.exit_code == 2
    assert "missing field runs[0].targets[0].cost" in done.output
    assert not (tmp_path / "out").exists()
