"""benchmarks/serve_load.py end to end on the tiny int8 models: both servers answer every workload without a
failure, the ratios are the measured throughputs' and the mixed workload's request log is kept."""
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import stage_env, tiny_params, write_params


@pytest.fixture(scope="module")
def load_report(tiny_compressed, tmp_path_factory):
    project = tmp_path_factory.mktemp("serve-load") / "project"
    shutil.copytree(tiny_compressed, project)
    params = tiny_params()
    params["serve"].update(max_tokens_limit=16, default_max_tokens=4)  # short prompts + 16 fit the tiny context
    write_params(project, params)
    result = subprocess.run([sys.executable, "-m", "benchmarks.serve_load", "--requests", "12", "--clients", "4",
                             "--prompt-words", "6",
                             "--sample-log", "sample.jsonl"], cwd=project, env=stage_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return project, json.loads((project / "reports/bench/serve.json").read_text())


def test_every_workload_is_measured_with_and_without_batching(load_report):
    _, report = load_report
    assert set(report["workloads"]) == {"completions", "long_completions", "classifications", "mixed"}
    for row in report["workloads"].values():
        on, off = row["batching"], row["no_batching"]
        assert on["requests"] == off["requests"] == 12 and on["failed"] == off["failed"] == 0
        assert on["max_batch_size"] > 1 and off["max_batch_size"] == 1
        assert row["throughput_ratio"] == pytest.approx(on["requests_per_s"] / off["requests_per_s"], abs=0.01)
        assert 0 < on["latency_p50_ms"] <= on["latency_p95_ms"]


def test_the_mixed_workload_log_is_kept(load_report):
    project, _ = load_report
    records = [json.loads(line) for line in (project / "sample.jsonl").read_text().splitlines()]
    assert len(records) == 12
    assert {r["endpoint"] for r in records} == {"completions", "classify"}
    assert all(r["outcome"] == "ok" for r in records)
