"""The README's examples, run as written, so they stay true.

Console blocks preceded by ``<!-- readme-test: GROUP -->`` are run as bash scripts in a scratch
directory (with ``.venv`` linked in, so ``.venv/bin/tidegate`` resolves as in a checkout):

- ``tenants``: self-contained (the fake upstream and ``tidegate up`` are started by the example);
  only its ports are moved off 9000 and 8080, which a developer's own ``make run`` may hold.
- ``make-run``: against a stand-in for ``make run`` (``tidegate up`` in front of the fake upstream
  serving the bundled model's name), with the ``tg-...`` placeholder replaced by its admin key.

The lines of a block that are not commands are the expected output, matched in order (``...``
matches anything; ids and dates match their shape). Every other console and bash block is checked
for the one command form the README promises (``.venv/bin/tidegate``, ``.venv/bin/python``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from benchmarks.targets import (
    Processes,
    fake_upstream_launch,
    free_port,
    tidegate_launch,
)
from tidegate.plan.model_source import load_model_spec
from tidegate.plan.recommend import PlanRequest, evaluate_cpu

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MODEL = "smollm2-135m-instruct"
_MARK = re.compile(r"^<!-- readme-test: ([a-z-]+) -->$")
_BARE = re.compile(
    r"^(?:[A-Za-z_][A-Za-z0-9_]*=(?:'[^']*'|\"[^\"]*\"|\S+)\s+)*(tidegate|python3?|pytest)(?:\s|$)"
)


@dataclass
class Block:
    lang: str
    line: int
    group: str | None
    lines: list[str] = field(default_factory=list)

    def commands(self) -> list[str]:
        """Each command with its continuation lines (console: ``$ `` lines; bash: all)."""
        commands: list[str] = []
        continued = False
        for line in self.lines:
            if continued:
                commands[-1] += "\n" + line
            elif self.lang == "console" and line.startswith("$ "):
                commands.append(line[2:])
            elif self.lang == "bash" and line.strip() and not line.startswith("#"):
                commands.append(line)
            else:
                continue
            continued = line.rstrip().endswith("\\")
        return commands

    def expected_output(self) -> list[str]:
        expected, continued = [], False
        for line in self.lines:
            if not continued and not line.startswith("$ ") and line.strip():
                expected.append(line)
            continued = line.rstrip().endswith("\\") and (continued or line.startswith("$ "))
        return expected


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    current: Block | None = None
    mark: str | None = None
    for number, line in enumerate(README.read_text().splitlines(), start=1):
        if current is not None:
            if line.startswith("```"):
                blocks.append(current)
                current = None
            else:
                current.lines.append(line)
        elif line.startswith("```"):
            current = Block(lang=line[3:].strip(), line=number, group=mark)
            mark = None
        elif match := _MARK.match(line):
            mark = match.group(1)
        elif line.strip():
            mark = None
    return blocks


def group(name: str) -> list[Block]:
    found = [b for b in readme_blocks() if b.group == name]
    assert found, f"no README block is marked <!-- readme-test: {name} -->"
    return found


def _segments(command: str) -> list[str]:
    return [s.strip() for s in re.split(r"\$\(|&&|\|\||;|\||\bdo\b|\bthen\b", command)]


def test_every_command_uses_the_form_the_readme_promises() -> None:
    bare = [
        f"README.md:{block.line}: {command.splitlines()[0]}"
        for block in readme_blocks()
        if block.lang in ("console", "bash")
        for command in block.commands()
        if any(_BARE.match(segment) for segment in _segments(command))
    ]
    assert not bare, "write these as .venv/bin/tidegate / .venv/bin/python:\n" + "\n".join(bare)


def _pattern(expected: str) -> re.Pattern[str]:
    parts = []
    for token in expected.split():
        if re.fullmatch(r"ten_[0-9a-f]{6,}", token):
            parts.append(r"ten_[0-9a-f]+")
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}", token):
            parts.append(r"\d{4}-\d{2}-\d{2}")
        else:
            parts.append(re.escape(token).replace(r"\.\.\.", ".*"))
    return re.compile(r"^\s*" + r"\s+".join(parts) + r"\s*$")


def assert_output_in_order(output: str, expected: list[str]) -> None:
    lines = iter(output.splitlines())
    for want in expected:
        pattern = _pattern(want)
        assert any(pattern.match(line) for line in lines), f"{want!r} missing in:\n{output}"


def run_script(
    commands: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float = 240
) -> str:
    """The commands as one bash script (``set -e``); background jobs are stopped at the end."""
    script = "set -eo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    script += "\n".join(commands) + "\n"
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    finally:
        with _suppress_lookup():
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{output}"
    return output


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is ProcessLookupError


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A scratch directory laid out like a checkout: ``.venv`` is the project's."""
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv", target_is_directory=True)
    return work


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDEGATE_", "OPENAI_"))}
    return {**env, "TIDEGATE_HOME": str(home), **extra}


def _move_ports(text: str, ports: dict[int, int]) -> str:
    for old, new in ports.items():
        text = re.sub(rf"(?<=:){old}\b|(?<=--port ){old}\b", str(new), text)
    return text


def run_config_walkthrough(
    name: str, config_file: str, ports: dict[int, int], *, cwd: Path, home: Path
) -> None:
    """Runs group ``name`` as written: its YAML block saved as ``config_file`` in ``cwd``, then
    its console blocks, with the example's ports moved to free ones (``ports``; 8080 is
    `tidegate up`'s server.port)."""
    blocks = group(name)
    (config,) = [b for b in blocks if b.lang == "yaml"]
    (cwd / config_file).write_text(_move_ports("\n".join(config.lines), ports) + "\n")
    consoles = [b for b in blocks if b.lang == "console"]
    commands = [_move_ports(c, ports) for b in consoles for c in b.commands()]
    env = _env(home, TIDEGATE_SERVER__PORT=str(ports[8080]))
    output = run_script(commands, cwd=cwd, env=env, timeout_s=180)
    assert_output_in_order(output, [line for b in consoles for line in b.expected_output()])


def test_the_cost_and_time_routing_example(workdir: Path, tmp_path: Path) -> None:
    """The hybrid route: its YAML block is the config file the console block starts from."""
    ports = {9000: free_port(), 9001: free_port(), 8080: free_port()}
    run_config_walkthrough("hybrid", "hybrid.yaml", ports, cwd=workdir, home=tmp_path / "home")


def test_the_tenants_example(workdir: Path, tmp_path: Path) -> None:
    blocks = group("tenants")
    ports = {9000: free_port(), 8080: free_port()}
    commands = [_move_ports(c, ports) for b in blocks for c in b.commands()]
    # `tidegate up` listens on server.port (8080 as written): moved with the rest.
    env = _env(tmp_path / "home", TIDEGATE_SERVER__PORT=str(ports[8080]))
    output = run_script(commands, cwd=workdir, env=env, timeout_s=120)
    assert_output_in_order(output, [line for b in blocks for line in b.expected_output()])
    export = (workdir / "usage.csv").read_text().splitlines()
    assert len(export) == 1 + 4, export  # a header and one row per request


def test_the_content_safety_example(workdir: Path, tmp_path: Path) -> None:
    """A tenant refused by its content-safety policy: the YAML block is the config file."""
    ports = {9000: free_port(), 9002: free_port(), 8080: free_port()}
    run_config_walkthrough("safety", "safety.yaml", ports, cwd=workdir, home=tmp_path / "home")


@dataclass(frozen=True)
class MakeRun:
    port: int
    key: str
    home: Path


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    """``tidegate up`` serving the bundled model's name, from the fake upstream."""
    work = tmp_path_factory.mktemp("make-run")
    upstream_port, port = free_port(), free_port()
    with Processes(work) as procs:
        procs.start("fake", fake_upstream_launch(port=upstream_port, model=MODEL, tokens=8), 30)
        launch = tidegate_launch(
            upstream_base_url=f"http://127.0.0.1:{upstream_port}/v1",
            model=MODEL,
            port=port,
            home=work,
        )
        procs.start("tidegate", launch, 60)
        yield MakeRun(port=port, key=launch.env["TIDEGATE_ADMIN_KEY"], home=work)


def _against_make_run(command: str, server: MakeRun) -> str:
    # The key placeholders the README uses: `tg-...` and the quickstart's `tg-Vq...`.
    command = re.sub(r"tg-[A-Za-z]*\.\.\.", server.key, command)
    return _move_ports(command, {8080: server.port})


@pytest.mark.parametrize("index", range(len([b for b in readme_blocks() if b.group == "make-run"])))
def test_the_examples_against_make_run(
    make_run: MakeRun, workdir: Path, tmp_path: Path, index: int
) -> None:
    block = group("make-run")[index]
    env = _env(tmp_path / "cli-home", TIDEGATE_URL=f"http://127.0.0.1:{make_run.port}/v1")
    if block.lang == "python":
        script = workdir / "example.py"
        script.write_text(_against_make_run("\n".join(block.lines), make_run))
        output = run_script([".venv/bin/python example.py"], cwd=workdir, env=env)
        assert output.strip(), "the example printed nothing"
        return
    commands = [_against_make_run(c, make_run) for c in block.commands()]
    output = run_script(commands, cwd=workdir, env=env)
    assert_output_in_order(output, block.expected_output())
    assert "Traceback" not in output


def _planner_rows() -> list[list[str]]:
    rows, inside = [], False
    for line in README.read_text().splitlines():
        if line.startswith("| KV space | max_model_len | block size |"):
            inside = True
        elif inside and line.startswith("|"):
            if not line.startswith("|---"):
                rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif inside:
            break
    return rows


def test_the_planner_table_is_what_the_planner_computes() -> None:
    spec = load_model_spec(str(ROOT / "tests" / "data" / "model_configs" / "smollm2-135m.json"))
    rows = _planner_rows()
    assert len(rows) >= 4
    for space, context, block, bf16, float32 in rows:
        request = PlanRequest(context=int(context), concurrency=1, block_size=int(block))
        gib = int(space.removesuffix(" GiB"))
        for cell, element_bytes in ((bf16, 2), (float32, 4)):
            option = evaluate_cpu(spec, request, kv_space_gib=gib, kv_element_bytes=element_bytes)
            assert f"{option.capacity.tokens:,}" == cell, (space, context, block, element_bytes)
