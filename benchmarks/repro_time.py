"""How long the whole DAG takes, and each stage's share: one `dvc repro` timed from its own output.

    python -m benchmarks.repro_time [--command "dvc repro --force"] [--out reports/bench/repro.json]

The command's output is streamed; each "Running stage 'X'" line starts X's clock and the next stage's line (or the
end) stops it, so a stage's seconds include DVC saving its outputs. On a fresh clone, time the README's command
(`--command "make repro"`): the set-up before the first stage is reported as `setup`. Prints a Markdown table for
the README. Run it on a quiet machine: anything else on the cores slows every stage.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.environment import describe
from lifecycle.io import write_json

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")


def stage_seconds(events: list[tuple[float, str]], start: float, end: float) -> dict[str, float]:
    """Seconds per stage from (time, stage) starts in order; time before the first start is `setup`."""
    out, marks = {}, [*events, (end, None)]
    if events and events[0][0] - start > 0.5:
        out["setup"] = events[0][0] - start
    for (t0, name), (t1, _) in zip(marks, marks[1:]):
        out[name] = out.get(name, 0.0) + t1 - t0
    return {name: round(seconds, 1) for name, seconds in out.items()}


def timed(command: list[str]) -> tuple[dict[str, float], float]:
    start, events = time.perf_counter(), []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            match = STAGE_LINE.match(line)
            if match:
                events.append((time.perf_counter(), match.group(1)))
    end = time.perf_counter()
    if proc.returncode:
        raise StageError(f"{shlex.join(command)} failed (exit {proc.returncode}): nothing written")
    return stage_seconds(events, start, end), end - start


def table(stages: dict[str, float], total: float) -> str:
    lines = ["| stage | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {name} | {seconds:.0f} | {seconds / total:.0%} |" for name, seconds in stages.items()]
    return "\n".join(lines + [f"| **total** | **{total:.0f}** | 100% |"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.repro_time", description=__doc__.splitlines()[0])
    parser.add_argument("--command", default="dvc repro --force", help="what to time (dvc repro --force)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/repro.json"))
    args = parser.parse_args(argv)
    stages, total = timed(shlex.split(args.command))
    write_json(args.out, {"command": args.command, "total_seconds": round(total, 1), "stages": stages,
                          "shares": {k: round(v / total, 3) for k, v in stages.items()}, "environment": describe()})
    print(table(stages, total))


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
