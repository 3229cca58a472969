"""benchmarks/serve_load.py end to end on the tiny int8 models: both servers answer every workload without a
failure, the ratios are the measured throughputs' and the mixed workload's request log is kept; under the load of
64 clients sending 20 mixed requests each, one in ten invalid, every valid request succeeds and every invalid one
gets a 4xx in OpenAI's error shape."""
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
                             "--prompt-words", "6", "--isolation-clients", "64", "--isolation-requests", "20",
                             "--sample-log", "sample.jsonl"], cwd=project, env=stage_env(), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
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


def test_under_load_invalid_requests_fail_alone(load_report):
    _, report = load_report
    iso = report["isolation"]
    assert iso["clients"] == 64 and iso["requests_per_client"] == 20 and iso["requests"] == 64 * 20
    assert iso["invalid"] == 64 * 20 // 10 and iso["valid"] == iso["requests"] - iso["invalid"]
    assert iso["valid_failed"] == 0, iso["first_failures"]
    assert iso["invalid_4xx"] == iso["invalid"] and iso["invalid_not_4xx"] == 0, iso["first_failures"]
    statuses = iso["invalid_statuses"]
    assert {"empty_text", "huge_seed", "malformed_json", "unknown_model"} <= set(statuses)
    assert all(set(by_status) <= {"400", "404"} for by_status in statuses.values()), statuses
    assert set(statuses["unknown_model"]) == {"404"} and set(statuses["empty_text"]) == {"400"}
    assert 0 < iso["latency_p50_ms"] <= iso["latency_p95_ms"]


def test_both_engines_are_compared_and_a_missing_llama_cpp_is_said(load_report):
    _, report = load_report
    versus = report["versus_llama_cpp"]
    assert versus["engine"] == report["engine"] == "continuous" and versus["rounds"] == 2
    assert set(versus["servers"]) == {"ours (continuous)", "ours (batch)"}  # no GGUF in this project
    for rows in versus["servers"].values():
        assert set(rows) == {"completions", "long_completions"}
        for row in rows.values():
            assert row["runs"] == 2 and row["failed"] == 0 and len(row["requests_per_s_each"]) == 2
            assert row["requests_per_s"] == pytest.approx(sum(row["requests_per_s_each"]) / 2, abs=0.01)
    assert "make llama-cpp gguf" in versus["llama_cpp_skipped"] and "targets" not in versus


def test_the_verdict_holds_ours_against_the_best_llama_cpp_run():
    from benchmarks.serve_load import verdict

    def row(rps, p50=100.0, p95=110.0, failed=0):
        return {"requests_per_s": rps, "latency_p50_ms": p50, "latency_p95_ms": p95, "failed": failed}
    servers = {"ours (continuous)": {"completions": row(300), "long_completions": row(120, 100, 125)},
               "llama.cpp q8_0 -t 1": {"completions": row(310), "long_completions": row(90)},
               "llama.cpp q8_0 -t 2": {"completions": row(250), "long_completions": row(110)}}
    v = verdict(servers, "ours (continuous)", 0.3)
    assert v["throughput"]["completions"]["llama_cpp"] == "llama.cpp q8_0 -t 1"  # the best run of each workload
    assert v["throughput"]["completions"]["ratio"] == 0.97 and v["throughput"]["long_completions"]["ratio"] == 1.09
    assert v["long_p95_over_p50"] == 1.25 and v["failed"] == 0
    assert v["met"] == {"throughput_at_least_llama_cpp": False, "long_p95_within_1.2x_p50": False,
                        "no_failures": True, "perplexity_within_2pct": True}
    assert not verdict(servers, "ours (continuous)", None)["met"]["perplexity_within_2pct"]  # not measured: not met
