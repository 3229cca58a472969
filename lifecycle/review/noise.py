"""noise: how far apart two runs fall that differ only in their seed, measured, so a change can be told from noise.

`python -m lifecycle.review.noise --seeds 1235 1236 [--confidence 0.95] [--rerun] [--out reports/noise.json]`
(= make noise SEEDS='1235 1236')

Runs `dvc exp run --temp -S seed=<s> -n noise-seed-<s>` for each seed, one after another, in a temporary folder
(the workspace is left alone; stages the seed does not reach are restored from DVC's cache). An experiment of that
name on the same baseline commit is reused (--rerun removes it and runs it again). Then, over the K runs (the
baseline, i.e. HEAD's committed metrics at its params.yaml `seed`, and the experiments), every numeric metric
(`file:dotted.key` as DVC flattens it; `*environment.*` left out) gets its mean, sd (ddof=1) and band:
t_{(1+confidence)/2, K-1} * sqrt(2) * sd, the half-width within which the difference of two runs that differ only
in seed falls at that confidence. Written to reports/noise.json, which lifecycle.review.compare reads to tell a
metric's change from seed noise.

How long: one full pipeline per seed where the seed changes the data sampling (about 15-20 minutes each on 2
cores); an existing experiment costs nothing. HEAD must hold the code and params to measure: tracked files that
differ from it stop the run (the experiments would carry the change, the baseline would not).
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib
import importlib.util
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.io import write_json
from lifecycle.review.markdown import flatten, fmt
from lifecycle.review.verdict import is_number

SKIPPED = ("*environment.*",)  # where the machine is described, not measured
LOGS = Path(".dvc/tmp/noise")  # DVC's own scratch folder: ignored by Git


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """`file:dotted.key` -> value of every numeric metric in DVC's {file: {"data": {...}}} (exp show's metrics)."""
    out = {}
    for file, content in (metrics or {}).items():
        for key, value in flatten((content or {}).get("data") or {}).items():
            name = f"{file}:{key}"
            if is_number(value) and not any(fnmatch.fnmatchcase(name, p) for p in SKIPPED):
                out[name] = value
    return out


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def band(values: list[float], confidence: float = 0.95) -> dict[str, float]:
    """mean, sd (ddof=1) and the half-width a seed-only difference of two runs stays within at `confidence`."""
    from scipy import stats

    k = len(values)
    if k < 2:
        raise StageError(f"the noise band needs at least 2 runs (the baseline and a seed), got {k}")
    if not 0 < confidence < 1:
        raise StageError(f"--confidence {confidence}: must be between 0 and 1")
    mean, sd = statistics.mean(values), statistics.stdev(values)  # exact sums: equal values give sd 0
    half = stats.t.ppf((1 + confidence) / 2, k - 1) * math.sqrt(2) * sd
    return {"mean": _round(mean), "sd": _round(sd), "band": _round(float(half))}


def noise_table(runs: list[dict[str, float]], gated: set[str], confidence: float = 0.95) -> tuple[dict, int]:
    """{metric: {values, mean, sd, band, gated}} over the metrics every run has, and how many some runs lack."""
    names = sorted(set().union(*runs)) if runs else []
    table, missing = {}, 0
    for name in names:
        if not all(name in run for run in runs):
            missing += 1
            continue
        values = [run[name] for run in runs]
        table[name] = {"values": values, **band(values, confidence), "gated": name in gated}
    return table, missing


# ---------------------------------------------------------------- DVC

def experiment_name(seed: int) -> str:
    return f"noise-seed-{seed}"


def baseline(root: str | Path = ".") -> dict:
    """exp show's entry of the HEAD commit (dumpd form): rev, data.params, data.metrics, experiments."""
    from lifecycle.review.plots import dvc_errors, open_repo

    with open_repo(root) as repo, dvc_errors("exp show"):
        entries = [e.dumpd() for e in repo.experiments.show(hide_queued=True, hide_failed=True, hide_workspace=True)]
    if not entries:
        raise StageError("dvc exp show: no HEAD commit to measure against (git commit first)")
    return entries[0]


def experiment_revs(entry: dict):
    """(name, rev, data) of each experiment on a baseline entry that is not still queued or running (those carry
    their parent's metrics)."""
    for exp in entry.get("experiments") or []:
        if (exp.get("executor") or {}).get("state") in ("running", "queued"):
            continue
        for rev in exp.get("revs") or []:
            yield rev.get("name") or exp.get("name"), rev.get("rev"), rev.get("data") or {}


def experiments(entry: dict) -> dict[str, dict]:
    """name -> data of the experiments on a baseline entry."""
    found = {}
    for name, _, data in experiment_revs(entry):
        found.setdefault(name, data)
    return found


def baseline_seed(entry: dict) -> int:
    seed = ((entry.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data", {}).get("seed")
    if not isinstance(seed, int):
        raise StageError(f"params.yaml at HEAD ({entry['rev'][:7]}): seed = {seed!r}, needs an integer")
    return seed


def require_clean(*keep: Path) -> None:
    """Stop when tracked files differ from HEAD (other than this command's own input and outputs, `keep`)."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    changed = [line[3:] for line in status.stdout.splitlines() if Path(line[3:]) not in keep]
    if status.returncode or changed:
        raise StageError(f"the workspace differs from HEAD ({', '.join(changed[:3]) or status.stderr.strip()}): "
                         "commit first; the experiments would carry the change and the baseline would not")


def dvc_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def run_seed(seed: int) -> None:
    """`dvc exp run --temp` at one seed, its output streamed and kept in a log; a failure is one line."""
    name, log = experiment_name(seed), LOGS / f"{experiment_name(seed)}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = dvc_command("exp", "run", "--temp", "-S", f"seed={seed}", "-n", name)
    print(f"$ dvc {' '.join(command[3:])}", flush=True)
    with open(log, "w", encoding="utf-8") as out, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1")) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
    if proc.returncode:
        raise StageError(f"seed {seed}: dvc exp run failed (exit {proc.returncode}); its output: {log}")


def run_seeds(seeds: list[int], existing: set[str], rerun: bool) -> None:
    for seed in seeds:
        name = experiment_name(seed)
        if name in existing and not rerun:
            print(f"seed {seed}: reusing experiment {name} (--rerun runs it again)", flush=True)
            continue
        if name in existing:
            subprocess.run(dvc_command("exp", "remove", name), check=False)
        run_seed(seed)


# ---------------------------------------------------------------- the report

def environment() -> dict:
    """lifecycle.environment.describe() where that module exists: the machine the runs were measured on."""
    if importlib.util.find_spec("lifecycle.environment") is None:
        return {}
    return importlib.import_module("lifecycle.environment").describe()


def gated_metrics() -> set[str]:
    from lifecycle.params.base import load
    from lifecycle.params.report import Gate

    return {g.metric for g in load(gates=(list[Gate], [])).gates}


def report(entry: dict, seeds: list[int], confidence: float) -> dict:
    """noise.json's content from exp show's baseline entry (after the runs)."""
    found = experiments(entry)
    names = [experiment_name(s) for s in seeds]
    absent = [n for n in names if n not in found]
    if absent:
        raise StageError(f"dvc exp show: no experiment {absent[0]} on {entry['rev'][:7]} after its run")
    runs = [numeric_metrics((entry.get("data") or {}).get("metrics"))]
    runs += [numeric_metrics(found[n].get("metrics")) for n in names]
    metrics, missing = noise_table(runs, gated_metrics(), confidence)
    return {"seeds": [baseline_seed(entry), *seeds], "runs": [entry["rev"][:7], *names], "confidence": confidence,
            "environment": environment(), "metrics": metrics, "skipped_missing_in_some_runs": missing}


def summary(data: dict, out: Path) -> str:
    gated = {k: v for k, v in data["metrics"].items() if v["gated"]}
    width = max(map(len, gated), default=0)
    lines = [f"noise over {len(data['runs'])} runs (seeds {', '.join(map(str, data['seeds']))}); band: a seed-only "
             f"difference of two runs stays within ±band at {data['confidence']:.0%}"]
    lines += [f"  {k:<{width}}  mean {fmt(v['mean'])}  sd {fmt(v['sd'])}  band ±{fmt(v['band'])}"
              for k, v in gated.items()]
    lines.append(f"{len(data['metrics'])} metrics measured ({len(gated)} gated), "
                 f"{data['skipped_missing_in_some_runs']} skipped (missing from some runs); wrote {out}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.review.noise", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="seeds to run besides the baseline's")
    parser.add_argument("--confidence", type=float, default=0.95, help="of the band (0.95)")
    parser.add_argument("--rerun", action="store_true", help="run an experiment again even where it exists")
    parser.add_argument("--out", type=Path, default=Path("reports/noise.json"), help="(reports/noise.json)")
    args = parser.parse_args(argv)
    band([0.0] * (len(args.seeds) + 1), args.confidence)  # too few runs or a bad confidence: before any work
    entry = baseline()
    own = baseline_seed(entry)
    if own in args.seeds or len(set(args.seeds)) < len(args.seeds):
        raise StageError(f"--seeds {' '.join(map(str, args.seeds))}: each seed once, and not the baseline's ({own})")
    require_clean(args.out)
    run_seeds(args.seeds, set(experiments(entry)), args.rerun)
    data = report(baseline(), args.seeds, args.confidence)
    write_json(args.out, data)
    print(summary(data, args.out))


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
