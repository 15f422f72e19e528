"""Run one fuzz harness under atheris (libFuzzer, coverage-guided).

    python -m tests.fuzz.runner NAME [--seconds S | --runs N] [--seed N] [--corpus DIR]

NAME is one of ``HARNESSES``. The harness's seed corpus is ``tests/fuzz/corpus/NAME``; by
default new inputs that reach new code are added to it (``make fuzz`` grows it), with
``--corpus DIR`` they go to DIR and the committed corpus is only read (the brief run in
``make test``). A failing input is written under ``--artifacts`` (default
``tests/fuzz/artifacts/``) and the process exits non-zero; replay it with
``python -m tests.fuzz.runner NAME --replay FILE``.

Each harness module exposes ``check(data: bytes) -> None``, which raises ``AssertionError``
(or anything unexpected) when an invariant breaks. Only the modules listed for a harness are
instrumented, so coverage feedback stays on the code under test.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

FUZZ_DIR = Path(__file__).resolve().parent
HARNESSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "sse": ("tests.fuzz.fuzz_sse", ("tidegate.protocol.sse",)),
    "redaction": (
        "tests.fuzz.fuzz_redaction",
        ("tidegate.pipeline.redaction", "tidegate.pipeline.redaction_patterns"),
    ),
    "batch_lines": (
        "tests.fuzz.fuzz_batch_lines",
        ("tidegate.batch.validate", "tidegate.protocol.requests", "tidegate.pipeline.validation"),
    ),
    "multipart": (
        "tests.fuzz.fuzz_multipart",
        ("tidegate.api.files", "starlette.formparsers", "multipart", "python_multipart"),
    ),
}
"""name: (harness module, modules to instrument)."""


def load(name: str, *, instrument: bool) -> Callable[[bytes], None]:
    module_name, targets = HARNESSES[name]
    if instrument:
        with atheris.instrument_imports(include=list(targets)):
            module = importlib.import_module(module_name)
    else:
        module = importlib.import_module(module_name)
    check: Callable[[bytes], None] = module.check
    return check


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(HARNESSES))
    parser.add_argument("--seconds", type=int, default=0, help="stop after this long")
    parser.add_argument("--runs", type=int, default=0, help="stop after this many inputs")
    parser.add_argument("--seed", type=int, default=1313, help="libFuzzer's random seed")
    parser.add_argument("--corpus", type=Path, help="where new inputs go (default: the seeds)")
    parser.add_argument("--artifacts", type=Path, default=FUZZ_DIR / "artifacts")
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--replay", type=Path, help="run one input file and stop")
    args = parser.parse_args(argv)

    if args.replay is not None:
        load(args.name, instrument=False)(args.replay.read_bytes())
        print(f"{args.replay}: no invariant broken")
        return
    seeds = FUZZ_DIR / "corpus" / args.name
    corpora = [seeds] if args.corpus is None else [args.corpus, seeds]
    for corpus in corpora:
        corpus.mkdir(parents=True, exist_ok=True)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    flags = [
        f"-seed={args.seed}",
        f"-max_len={args.max_len}",
        f"-artifact_prefix={args.artifacts}/{args.name}-",
        "-print_final_stats=1",
    ]
    if args.runs:
        flags.append(f"-runs={args.runs}")
    if args.seconds:
        flags.append(f"-max_total_time={args.seconds}")
    check = load(args.name, instrument=True)
    atheris.Setup([sys.argv[0], *flags, *map(str, corpora)], check)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
