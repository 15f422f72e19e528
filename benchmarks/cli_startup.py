"""``make bench-cli``: how long the ``tidegate`` command takes to start, hyperfine-style.

Each case (``--help``, a group's ``--help``, ``config show``) is run as a fresh process, a few
times untimed first (warm file cache), then ``--runs`` times timed: wall time (what a user waits)
and the CPU the process used (user + system, which a busy machine inflates less). Prints a table
and writes the figures as JSON. The target is a wall-time median under 0.5 s.

    python -m benchmarks.cli_startup [--runs 20] [--out bench-results/cli-startup.json]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

TARGET_S = 0.5
CASES: dict[str, list[str]] = {
    "--help": ["--help"],
    "keys --help": ["keys", "--help"],
    "bench --help": ["bench", "--help"],
    "plan --help": ["plan", "--help"],
    "config show": ["config", "show"],
}


@dataclass(frozen=True)
class Figures:
    case: str
    runs: int
    wall_mean_s: float
    wall_stdev_s: float
    wall_min_s: float
    wall_median_s: float
    wall_max_s: float
    cpu_median_s: float
    """User + system CPU time of the process."""
    meets_target: bool


def tidegate_command() -> list[str]:
    """The console script beside this interpreter, else ``python -m`` on the module."""
    script = Path(sys.executable).with_name("tidegate")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from tidegate.cli import main; main()"]


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; a failing command is an error, not a figure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(case: str, argv: list[str], *, runs: int, warmup: int, env: dict[str, str]) -> Figures:
    for _ in range(warmup):
        run_once(argv, env)
    samples = [run_once(argv, env) for _ in range(runs)]
    walls = [wall for wall, _ in samples]
    median = statistics.median(walls)
    return Figures(
        case=case,
        runs=runs,
        wall_mean_s=statistics.fmean(walls),
        wall_stdev_s=statistics.stdev(walls) if runs > 1 else 0.0,
        wall_min_s=min(walls),
        wall_median_s=median,
        wall_max_s=max(walls),
        cpu_median_s=statistics.median(cpu for _, cpu in samples),
        meets_target=median < TARGET_S,
    )


def table(rows: list[Figures]) -> str:
    lines = [
        f"{'case':<14} {'runs':>4} {'median':>8} {'mean ± σ':>16} {'min':>7} {'max':>7} "
        f"{'CPU':>7}  < {TARGET_S:g} s",
    ]
    for r in rows:
        spread = f"{r.wall_mean_s:.3f} ± {r.wall_stdev_s:.3f}"
        lines.append(
            f"{r.case:<14} {r.runs:>4} {r.wall_median_s:>8.3f} {spread:>16} {r.wall_min_s:>7.3f} "
            f"{r.wall_max_s:>7.3f} {r.cpu_median_s:>7.3f}  {'yes' if r.meets_target else 'NO'}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench-results/cli-startup.json"))
    args = parser.parse_args()
    command = tidegate_command()
    with tempfile.TemporaryDirectory() as home:
        # No config file and a scratch home: `config show` prints the defaults, nothing local.
        # Bytecode is written (the warm-up runs leave it) as an installed tidegate has it.
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith("TIDEGATE_") and k != "PYTHONDONTWRITEBYTECODE"
            },
            "HOME": home,
            "COLUMNS": "100",
        }
        rows = [
            measure(case, [*command, *argv], runs=args.runs, warmup=args.warmup, env=env)
            for case, argv in CASES.items()
        ]
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "cli_startup",
        "target_s": TARGET_S,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "cases": [asdict(r) for r in rows],
    }
    args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
