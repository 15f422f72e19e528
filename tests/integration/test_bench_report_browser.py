"""The bench HTML report renders in headless Chromium: styled tables, embedded plots, the warning.

Needs the Debian ``chromium`` package (``apt-get install -y chromium fonts-dejavu-core``). Without
it the test skips, unless TIDEGATE_TEST_REQUIRE_BROWSER=1 (CI) turns that into a failure. Set
TIDEGATE_TEST_SCREENSHOTS=DIR to keep the screenshots for a look.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from matplotlib import image

from tidegate_bench.reporting import write_report

SAMPLE_DIR = Path(__file__).parents[1] / "data" / "bench"
WINDOW = (1280, 2000)


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        reason = "chromium is not installed (apt-get install -y chromium fonts-dejavu-core)"
        if os.environ.get("TIDEGATE_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} but TIDEGATE_TEST_REQUIRE_BROWSER=1")
        pytest.skip(f"{reason}; set TIDEGATE_TEST_REQUIRE_BROWSER=1 to fail instead")
    return found


def screenshot(html: Path, tmp_path: Path) -> np.ndarray[Any, Any]:
    shot = tmp_path / f"{html.parent.name}.png"
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu"]
    command += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    command += ["--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    command += [f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", html.as_uri()]
    done = subprocess.run(command, capture_output=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and shot.is_file(), done.stderr.decode()[-2000:]
    if keep := os.environ.get("TIDEGATE_TEST_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    pixels: np.ndarray[Any, Any] = image.imread(shot)[..., :3]
    return pixels


def count_colour(pixels: np.ndarray[Any, Any], hex_colour: str, tolerance: float = 0.03) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    return int(np.all(np.abs(pixels - rgb) < tolerance, axis=-1).sum())


def report_for(tmp_path: Path, name: str, **client: Any) -> Path:
    folder = tmp_path / name
    shutil.copytree(SAMPLE_DIR, folder)
    data = orjson.loads((folder / "result.json").read_bytes())
    data["client"].update(client)
    (folder / "result.json").write_bytes(orjson.dumps(data))
    return write_report(folder / "result.json", tmp_path / f"{name}-report").html


def test_report_renders_tables_and_plots(tmp_path: Path) -> None:
    pixels = screenshot(report_for(tmp_path, "healthy"), tmp_path)
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    assert float(pixels.std()) > 0.05, "the page rendered blank"
    assert count_colour(pixels, "#eef2f7") > 20_000  # table headers: the inline CSS applied
    assert count_colour(pixels, "#1f77b4") > 500  # plot lines: the base64 PNGs loaded
    assert count_colour(pixels, "#ff7f0e") > 500
    assert count_colour(pixels[:600], "#fdecea") < 2_000  # no warning box (a few text edges)


def test_client_bound_warning_is_visible(tmp_path: Path) -> None:
    pixels = screenshot(report_for(tmp_path, "bound", client_bound=True), tmp_path)
    # The warning box sits above the first table, inside the first screen.
    assert count_colour(pixels[:600], "#fdecea") > 30_000
