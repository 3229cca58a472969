"""benchmark on the tiny compressed models: every variant x batch x length timed, ratios against PyTorch,
generation with and without the KV cache per prompt length, peak memory per variant, the small config, plot data;
summary statistics are exact; the environment it ran on is recorded as scalars."""
import json
import shutil

import numpy as np
import pytest

from lifecycle.benchmarking import add_speedups, latency_summary
from lifecycle.environment import KNOWN_FLAGS, NOT_INSTALLED, describe
from tests.conftest import run_in_copy, run_stage, the_error, tiny_params, write_params

VARIANTS = {"pytorch", "onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned",
            "distilled", "distilled_onnx_fp32", "distilled_int8_dynamic"}


@pytest.fixture(scope="module")
def bench(tiny_compressed, tmp_path_factory):
    project = run_in_copy(tiny_compressed, tmp_path_factory.mktemp("bench") / "project", "benchmark")
    return project, json.loads((project / "reports/bench.json").read_text())


def test_every_variant_is_timed_at_every_batch_size_and_length(bench):
    _, report = bench
    assert set(report["classifier"]) == VARIANTS
    for _variant, result in report["classifier"].items():
        assert set(result["latency"]) == {"batch_1", "batch_2"}
        for by_length in result["latency"].values():
            assert set(by_length) == {"seq_8", "seq_16"}
            for summary in by_length.values():
                assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
                assert summary["sequences_per_s"] > 0
    assert report["classifier"]["pytorch"]["speedup_vs_pytorch"] == 1.0


def test_generation_reports_each_decoding_with_and_without_the_kv_cache_per_prompt_length(bench):
    _, report = bench
    assert set(report["generation"]) == {"pytorch", "onnx_fp32", "int8_dynamic"}
    for _variant, by_prompt in report["generation"].items():
        for length in ("prompt_4", "prompt_8"):
            speeds = by_prompt[length]
            for mode in ("greedy", "sampling", "beam", "greedy_no_cache"):
                assert speeds[f"{mode}_tokens_per_s"] > 0
            assert speeds["kv_cache_speedup"] == pytest.approx(
                speeds["greedy_tokens_per_s"] / speeds["greedy_no_cache_tokens_per_s"], rel=1e-3)
            assert speeds["greedy_speedup_vs_pytorch"] == pytest.approx(
                speeds["greedy_tokens_per_s"] / report["generation"]["pytorch"][length]["greedy_tokens_per_s"],
                rel=1e-3)
    for variant in ("pytorch", "onnx_fp32"):  # fp32: recomputing the text picks the tokens the cache picks
        assert report["generation"][variant]["prompt_8"]["no_cache_same_tokens"] is True, variant


def test_each_variant_peak_memory_comes_from_a_process_of_its_own(bench):
    _, report = bench
    rows = [*report["classifier"].values(), *report["generation"].values()]
    for row in rows:
        assert 0 < row["model_peak_mb"] < row["peak_rss_mb"]


def test_peak_memory_does_not_count_the_calling_process(tiny_compressed):
    import resource

    from lifecycle.benchmarking import peak_memory
    ballast = np.ones(2**27)  # 1 GiB resident here, none of it in the variant's process
    mine = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    measured = peak_memory("classifier", "int8_dynamic", tiny_compressed / "models", 1,
                           {"texts": ["a fine film"], "batch_size": 2, "length": 8})
    assert measured["peak_rss_mb"] < mine - 512 and measured["model_peak_mb"] > 0
    del ballast


def test_prompt_and_new_tokens_longer_than_the_context_stop_before_work(tmp_path):
    params = tiny_params()
    params["benchmark"]["generation"].update(prompt_tokens=[16, 60], new_tokens=8)
    write_params(tmp_path, params)
    assert the_error(run_stage("benchmark", tmp_path)) == (
        "error: params.yaml: benchmark.generation: prompt_tokens 60 + new_tokens 8 = 68 is longer than "
        "model.context_length = 64")


def test_small_config_reports_int8_over_ort_fp32(bench):
    _, report = bench
    small = report["small"]
    assert small["parameters"] > 0
    assert small["int8_speedup_vs_onnx_fp32"] == pytest.approx(small["onnx_fp32_p50_ms"] / small["int8_dynamic_p50_ms"],
                                                               rel=1e-3)


def test_plot_rows_join_speed_with_size_and_quality(bench):
    project, report = bench
    rows = json.loads((project / "reports/plots/speedup.json").read_text())
    compress = json.loads((project / "reports/compress.json").read_text())
    assert {r["variant"] for r in rows} == VARIANTS
    for row in rows:
        assert row["accuracy"] == compress["classifier"][row["variant"]]["accuracy"]
        assert row["speedup_vs_pytorch"] == report["classifier"][row["variant"]]["speedup_vs_pytorch"]


def test_latency_summary_is_exact():
    summary = latency_summary(np.arange(1, 101, dtype=float), batch_size=4)
    assert summary["p50_ms"] == 50.5 and summary["p99_ms"] == pytest.approx(99.01)
    assert summary["sequences_per_s"] == pytest.approx(4 * 1000 / 50.5, rel=1e-3)


def test_speedups_are_p50_ratios_against_pytorch():
    def shape(p50):
        return {"batch_1": {"seq_8": {"p50_ms": p50}}, "batch_4": {"seq_8": {"p50_ms": 4 * p50}}}

    results = {"pytorch": {"latency": shape(8.0)}, "int8": {"latency": shape(2.0)}}
    add_speedups(results)
    assert results["int8"]["speedup_vs_pytorch"] == 4.0 and results["int8"]["speedup_vs_pytorch_batch_1"] == 4.0
    assert results["int8"]["latency"]["batch_4"]["seq_8"]["speedup_vs_pytorch"] == 4.0


def test_unknown_variant_stops_the_benchmark_in_one_line(tiny_compressed, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tiny_compressed, project)
    params = tiny_params()
    params["benchmark"]["variants"] = ["int4"]
    write_params(project, params)
    assert the_error(run_stage("benchmark", project)) == (
        "error: params.yaml: benchmark.variants: classifier variant 'int4' not found (available: pytorch, distilled, "
        "distilled_int8_dynamic, distilled_onnx_fp32, int8_dynamic, int8_static, onnx_fp32, onnx_optimized, pruned)")


ENVIRONMENT_KEYS = {"cpu", "cpu_flags", "cores", "threads", "gpu", "python", "torch", "transformers", "onnxruntime",
                    "optimum", "os"}


def test_environment_is_scalars_and_flags_are_known_ones():
    environment = describe()
    assert set(environment) == ENVIRONMENT_KEYS
    assert all(isinstance(v, (str, int)) for v in environment.values())
    assert set(environment["cpu_flags"].split()) <= set(KNOWN_FLAGS)
    assert environment["cores"] >= 1 and environment["threads"] >= 1
    assert environment["torch"] != NOT_INSTALLED


def test_environment_reads_the_model_and_known_flags_from_cpuinfo():
    x86 = ("processor : 0\nmodel : 143\nmodel name : Intel(R) Xeon(R) Platinum 8480+\n"
           "flags : fpu sse4_2 avx2 fma avx512f avx512_vnni amx_int8 amx_tile ht\nprocessor : 1\n"
           "model name : Intel(R) Xeon(R) Platinum 8480+\nflags : fpu avx2\n")
    environment = describe(x86)
    assert environment["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert environment["cpu_flags"] == "sse4_2 avx2 fma avx512f avx512_vnni amx_tile amx_int8"
    arm = "processor : 0\nFeatures : fp asimd evtstrm aes asimddp sve i8mm bf16\nCPU part : 0xd40\n"
    assert describe(arm)["cpu_flags"] == "asimd asimddp i8mm bf16 sve"


def test_bench_json_records_the_environment(bench):
    _, report = bench
    assert set(report["environment"]) == ENVIRONMENT_KEYS
    assert report["environment"]["threads"] == report["threads"]
