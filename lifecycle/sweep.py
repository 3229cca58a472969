"""sweep: pretraining variants as DVC experiments under one wall-clock budget, measured on this machine.

    make sweep        (= python -m lifecycle.sweep [--grid benchmarks/sweep.yaml] [--only NAME ...] [--rerun])

1. Every variant of the grid (params overrides, `-S` style) is validated against params.yaml before any work.
2. Its training speed is probed here: a few optimizer steps of its model at the stage's precision
   (lifecycle.throughput). Its `pretrain.max_steps` is set so that training takes about `budget_seconds`, its warmup
   to `warmup_share` of those steps: each variant gets the same minutes, not the same steps.
3. Each is queued, `dvc exp run --queue -n sweep-<name> -S ... pretrain`, and the queue runs one experiment at a
   time (`dvc exp run --run-all -j 1`): two at once would share the cores and time each other. An experiment of
   that name on the same commit is reused (--rerun runs it again).
4. Every finished experiment's model is read from DVC's cache (its commit) and scored on the pretraining test
   split exactly as evaluate scores `general` (sliding window, whole documents).
5. reports/sweep.md: one row per variant, best test bits per byte first, with the machine's CPU flags;
   reports/sweep.json: the same figures.

HEAD must hold the code and params to measure (commit first): the experiments run from it.
"""
from __future__ import annotations

import argparse
import copy
import subprocess
import tempfile
from pathlib import Path

import yaml

from lifecycle.core import StageError
from lifecycle.io import atomic_path, write_json
from lifecycle.review.noise import baseline, dvc_command, experiment_revs, require_clean

GRID, OUT = Path("benchmarks/sweep.yaml"), Path("reports/sweep.md")
PREFIX = "sweep-"


def read_grid(path: Path) -> dict:
    try:
        grid = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise StageError(f"{path}: cannot read the sweep grid ({str(err).splitlines()[0]})") from None
    if not isinstance(grid, dict) or not isinstance(grid.get("variants"), list) or not grid["variants"]:
        raise StageError(f"{path}: needs `variants:`, a list of {{name, set}}")
    names = [v.get("name") for v in grid["variants"] if isinstance(v, dict)]
    if len(names) != len(grid["variants"]) or len(set(names)) != len(names) or not all(names):
        raise StageError(f"{path}: every variant needs a unique `name` (got {names})")
    return grid


def with_overrides(data: dict, overrides: dict) -> dict:
    """params.yaml's content with dotted keys set, as `dvc exp run -S key=value` would."""
    out = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node, keys = out, dotted.split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise StageError(f"sweep: -S {dotted}: params.yaml has no section {key!r} there")
            node = node[key]
        if keys[-1] not in node:
            raise StageError(f"sweep: -S {dotted}: params.yaml has no key {keys[-1]!r} there")
        node[keys[-1]] = value
    return out


def validated(data: dict, name: str, overrides: dict):
    """The whole params of a variant, validated; a bad override stops the sweep before any work."""
    from lifecycle.params.schema import validate

    params, problems = validate(with_overrides(data, overrides), f"variant {name}")
    if problems:
        raise StageError(problems[0])
    return params


def probe_key(params) -> str:
    """What a probe's speed depends on: variants equal in these get the same probe, hence the same steps."""
    p = params.pretrain
    return yaml.safe_dump([params.model.model_dump(), params.tokenizer.vocab_size, p.batch_size,
                           p.gradient_accumulation_steps, p.precision], sort_keys=True)


def probe(params, steps: int = 16, warmup: int = 4) -> dict:
    """Tokens/s of the variant's model in a bare training loop at the stage's precision, and its size."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    from lifecycle.core import seed_everything
    from lifecycle.hardware import choose_precision, device_type
    from lifecycle.modeling import build_config, parameter_counts
    from lifecycle.throughput import bare_tokens_per_second

    m, vocab = params.model, params.tokenizer.vocab_size
    seed_everything(params.seed)
    model = AutoModelForCausalLM.from_config(build_config(m, vocab, 0, 1), attn_implementation=m.attn_implementation)
    model.config.use_cache = False
    blocks = np.random.default_rng(params.seed).integers(0, vocab, (256, m.context_length))
    precision = choose_precision(params.pretrain.precision, device_type())
    speed = bare_tokens_per_second(model, blocks, params.pretrain, precision, steps, warmup, params.seed)
    return {"tokens_per_s": speed, "parameters": parameter_counts(model)["total"], "precision": precision}


def steps_for(params, speed: float, budget: float, warmup_share: float) -> dict:
    """max_steps (and warmup) that fill `budget` seconds at `speed` tokens/s."""
    p = params.pretrain
    per_step = p.batch_size * p.gradient_accumulation_steps * params.model.context_length
    steps = max(10, round(budget * speed / per_step))
    return {"pretrain.max_steps": steps, "pretrain.warmup_steps": max(1, round(warmup_share * steps))}


def yaml_value(value) -> str:
    """A value as `-S key=value` writes it (DVC parses the right-hand side as YAML)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def set_args(overrides: dict) -> list[str]:
    return [arg for key, value in overrides.items() for arg in ("-S", f"{key}={yaml_value(value)}")]


def queue(name: str, overrides: dict, target: str) -> None:
    command = dvc_command("exp", "run", "--queue", "-n", PREFIX + name, *set_args(overrides), target)
    print(f"$ dvc {' '.join(command[3:])}", flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def plan(grid: dict, only: list[str], done: set[str]) -> list[dict]:
    """Each variant to run (not in `done`): name, its overrides, and the steps its probed speed buys within the
    budget. Every chosen variant is validated first, before any probe."""
    from lifecycle.params.base import PARAMS_FILE, read_yaml

    data, fixed = read_yaml(PARAMS_FILE), grid.get("set") or {}
    chosen = [v for v in grid["variants"] if not only or v["name"] in only]
    variants = [(v["name"], {**fixed, **(v.get("set") or {})}) for v in chosen]
    checked = [(name, overrides, validated(data, name, overrides)) for name, overrides in variants]
    out, probes = [], {}
    for name, overrides, params in checked:
        if name in done:
            print(f"{name}: reusing experiment {PREFIX}{name} (--rerun runs it again)", flush=True)
            continue
        key = probe_key(params)
        if key not in probes:  # the same model and batch: the same probe, so the same steps
            probes[key] = probe(params)
        speed = probes[key]
        steps = steps_for(params, speed["tokens_per_s"], grid.get("budget_seconds", 120), grid.get("warmup_share", 0.1))
        validated(data, name, overrides | steps)
        print(f"{name}: {speed['parameters'] / 1e6:.2f}M parameters, probe {speed['tokens_per_s']:.0f} tokens/s "
              f"-> {steps['pretrain.max_steps']} steps", flush=True)
        out.append({"name": name, "set": overrides, "steps": steps, "probe": speed})
    return out


def run_queue() -> None:
    status = subprocess.run(dvc_command("exp", "run", "--run-all", "-j", "1")).returncode
    if status:
        raise StageError(f"dvc exp run --run-all failed (exit {status}); see `dvc queue logs <name>`")


def score_test_split(rev: str, params) -> dict:
    """The experiment's pretrained model, read from DVC's cache at its commit, scored on the test split like
    evaluate's `general`."""
    from dvc.api import DVCFileSystem
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lifecycle.io import read_jsonl
    from lifecycle.scoring import language_model_scores

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"  # get() copies the folder's files into a folder it creates
        DVCFileSystem(".", rev=rev).get("models/pretrained", str(folder), recursive=True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
        texts = [d["text"] for d in read_jsonl(Path("data/prepared/pretrain/test"))]
        metrics, _ = language_model_scores(model, tokenizer, texts, params.evaluate.stride,
                                           params.evaluate.batch_size, f"test {rev[:7]}")
    return metrics


def finished(entry: dict) -> dict[str, dict]:
    """sweep name -> {rev, metrics (file -> data)} of the finished experiments on exp show's baseline entry."""
    found = {}
    for name, rev, data in experiment_revs(entry):
        name = name or ""
        if name.startswith(PREFIX) and name[len(PREFIX):] not in found and data.get("metrics"):
            metrics = {f: (v or {}).get("data") or {} for f, v in data["metrics"].items()}
            found[name[len(PREFIX):]] = {"rev": rev, "metrics": metrics}
    return found


def row(variant: dict, result: dict, test: dict) -> dict:
    """The sweep table's figures of one variant."""
    pre, model = result["metrics"].get("reports/pretrain.json", {}), result["metrics"].get("reports/model.json", {})
    minutes = pre.get("train_seconds", 0) / 60
    return {"name": variant["name"], "set": variant["set"], "rev": result["rev"][:7],
            "parameters": (model.get("parameters") or {}).get("total"), "steps": pre.get("steps"),
            "tokens_seen": pre.get("tokens_seen"), "train_seconds": pre.get("train_seconds"),
            "tokens_per_second": pre.get("tokens_per_second"), "mfu": pre.get("mfu"),
            "validation_bits_per_byte": pre.get("validation_bits_per_byte"),
            "test_bits_per_byte": test["bits_per_byte"], "test_perplexity": test["perplexity"],
            "greedy_repeated_4gram_share": pre.get("greedy_repeated_4gram_share"),
            "bits_per_byte_per_minute": round(test["bits_per_byte"] / minutes, 4) if minutes else None}


def markdown(rows: list[dict], grid: dict, machine: dict, command: str) -> str:
    """reports/sweep.md: the command, the machine, and one row per variant, best test bits per byte first."""
    flags = machine.get("cpu_flags", "")
    lines = ["# Pretraining sweep", "",
             f"`{command}`: every variant trained for about {grid.get('budget_seconds', 120)} s on this machine "
             "(steps from a probe of its speed), one `dvc exp run` at a time, then scored on the pretraining test "
             "split like evaluate's `general` (lower bits per byte is better).", "",
             f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
             f"AMX {'yes' if 'amx_bf16' in flags else 'no'}, AVX512-BF16 {'yes' if 'avx512_bf16' in flags else 'no'}"
             f"; torch {machine.get('torch', '?')}. CPU flags: `{flags}`.", "",
             "| variant | changes | params | steps | tokens | train s | tokens/s | MFU | val bpb | **test bpb** | "
             "test ppl | greedy 4-gram repeats | exp |", "|" + "---|" * 13]
    for r in sorted(rows, key=lambda r: r["test_bits_per_byte"]):
        changes = ", ".join(f"{k}={v}" for k, v in r["set"].items()) or "(params.yaml)"
        lines.append(f"| {r['name']} | {changes} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | "
                     f"{r['tokens_seen'] / 1e6:.2f}M | {r['train_seconds']:.0f} | {r['tokens_per_second']:.0f} | "
                     f"{r['mfu']:.2f} | {r['validation_bits_per_byte']:.4f} | **{r['test_bits_per_byte']:.4f}** | "
                     f"{r['test_perplexity']:.1f} | {r['greedy_repeated_4gram_share']:.0%} | {r['rev']} |")
    return "\n".join(lines) + "\n"


def scored_rows(grid: dict, results: dict, previous: list[dict]) -> list[dict]:
    """A row for every grid variant with a finished experiment; a test score already measured for the same
    experiment commit (in the previous sweep.json) is reused."""
    from lifecycle.params.schema import load

    params, known = load(), {r["rev"]: r for r in previous}
    rows = []
    for v in grid["variants"]:
        result = results.get(v["name"])
        if result is None:
            continue
        old = known.get(result["rev"][:7])
        test = ({"bits_per_byte": old["test_bits_per_byte"], "perplexity": old["test_perplexity"]} if old
                else score_test_split(result["rev"], params))
        rows.append(row({"name": v["name"], "set": v.get("set") or {}}, result, test))
    return rows


def run_variants(variants: list[dict], existing: dict, target: str) -> None:
    for v in variants:
        if v["name"] in existing:
            subprocess.run(dvc_command("exp", "remove", PREFIX + v["name"]), check=False)
        queue(v["name"], v["set"] | v["steps"], target)
    if variants:
        run_queue()


def main(argv: list[str] | None = None) -> None:
    import json

    from lifecycle.environment import describe

    parser = argparse.ArgumentParser(prog="python -m lifecycle.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=Path, default=GRID, help=f"the variants ({GRID})")
    parser.add_argument("--only", nargs="*", default=[], help="run only these variants (the table keeps all found)")
    parser.add_argument("--rerun", action="store_true", help="run a variant again even where its experiment exists")
    parser.add_argument("--out", type=Path, default=OUT, help=f"({OUT}; the figures also to .json beside it)")
    args = parser.parse_args(argv)
    grid, figures = read_grid(args.grid), args.out.with_suffix(".json")
    require_clean(args.out, figures, args.grid)
    existing = finished(baseline())
    variants = plan(grid, args.only, set() if args.rerun else set(existing))
    run_variants(variants, existing, grid.get("target", "pretrain"))
    previous = json.loads(figures.read_text())["rows"] if figures.exists() else []
    rows = scored_rows(grid, finished(baseline()), previous)
    with atomic_path(args.out) as tmp:
        tmp.write_text(markdown(rows, grid, describe(), "make sweep"), encoding="utf-8")
    write_json(figures, {"grid": grid, "planned": variants, "rows": rows, "environment": describe()})
    print(f"wrote {args.out}: {len(rows)} of {len(grid['variants'])} variants")


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
