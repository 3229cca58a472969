"""pretrain on a tiny config: resume after kill -9, determinism, torchrun, reports, and the model factory."""
import json
import math
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lifecycle.modeling import build_config, parameter_counts, training_flops_per_token
from lifecycle.params import schema as P
from lifecycle.pretraining import bits_per_byte, unigram_perplexity
from tests.conftest import run_stage, stage_env, tiny_params, write_params


@pytest.fixture
def workdir(tiny_tokens, tmp_path):
    """A fresh copy of the tiny project with data stages done and no training state."""
    target = tmp_path / "project"
    shutil.copytree(tiny_tokens, target)
    return target


def report(directory) -> dict:
    return json.loads((directory / "reports/pretrain.json").read_text())


def final_weights(directory) -> dict:
    from safetensors.numpy import load_file
    return load_file(str(directory / "models/pretrained/model.safetensors"))


def test_pretrain_writes_model_reports_curves_and_samples(workdir):
    result = run_stage("pretrain", workdir)
    assert result.returncode == 0, result.stderr
    r = report(workdir)
    assert r["steps"] == 30 and r["tokens_seen"] == 30 * 4 * 64
    assert r["validation_perplexity"] == pytest.approx(math.exp(r["validation_loss"]), rel=1e-3)
    assert r["unigram_perplexity"] > 1
    assert 0 < r["mfu"] < 1 and r["tokens_per_second"] > 0
    before, after = r["peak_tflops_before_after"]  # measured twice; MFU is against the better of the two
    assert r["peak_tflops_measured"] == max(before, after) > 0
    model = json.loads((workdir / "reports/model.json").read_text())
    assert model["parameters"]["total"] == model["parameters"]["embedding"] + model["parameters"]["non_embedding"]
    from transformers import AutoModelForCausalLM, AutoTokenizer
    assert AutoTokenizer.from_pretrained(workdir / "models/pretrained").eos_token == "<|endoftext|>"
    assert AutoModelForCausalLM.from_pretrained(workdir / "models/pretrained").config.hidden_size == 32
    assert not list((workdir / "models/pretrained").glob("*.bin")), "safetensors only"
    rows = [line.split("\t") for line in
            (workdir / "reports/live/pretrain/plots/metrics/eval/loss.tsv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [10, 20, 30], "eval curve is logged against the optimizer step"
    assert float(rows[-1][-1]) < float(rows[0][-1]), "the model learns"
    assert "greedy" in (workdir / "reports/samples/pretrain.md").read_text()


def test_same_seed_gives_the_same_final_loss_and_a_rerun_starts_fresh(workdir):
    assert run_stage("pretrain", workdir).returncode == 0
    first = report(workdir)
    again = run_stage("pretrain", workdir)  # the same run, finished: trains again from scratch, not one step more
    assert again.returncode == 0, again.stderr
    second = report(workdir)
    assert "the last run finished: starting fresh" in again.stderr
    assert second["resumed_from_step"] == 0 and second["steps"] == first["steps"] == 30
    assert second["validation_loss"] == first["validation_loss"]
    assert second["weights_sha256"] == first["weights_sha256"]


def trainer_printed(stdout: str, key: str) -> float:
    """A figure the Trainer itself prints at the end of train(), about the steps of that process."""
    return float(re.findall(rf"'{key}': ([0-9.e+-]+)", stdout)[-1])


def kill_after_checkpoints(directory, stage: str, steps: tuple[int, int]) -> dict:
    """Start the stage, SIGKILL it once the second of `steps` has a complete checkpoint: when each was seen, and
    when the process started and was killed (wall clock)."""
    started = time.time()
    process = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=directory, env=stage_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen, deadline = {}, time.time() + 300
    while steps[-1] not in seen and process.poll() is None and time.time() < deadline:
        for step in steps:
            if step not in seen and (directory / f"models/checkpoints/{stage}/checkpoint-{step}/trainer_state.json"
                                     ).exists():
                seen[step] = time.time()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return {"seen": seen, "started": started, "killed": time.time()}


def kill_resume_and_rerun(project, reference, stage: str, steps: tuple[int, int]):
    """kill -9 `stage` in `project` after checkpoints `steps`, resume it there, and run it uninterrupted in
    `reference`: (kill timings, the resumed run, the uninterrupted run)."""
    kill = kill_after_checkpoints(project, stage, steps)
    assert kill["seen"].keys() == set(steps), "the run never wrote its second checkpoint"
    assert not (project / f"reports/{stage}.json").exists(), "killed before the end"
    resumed = run_stage(stage, project)
    assert resumed.returncode == 0 and "resuming from" in resumed.stderr, resumed.stderr
    uninterrupted = run_stage(stage, reference)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    return kill, resumed, uninterrupted


def assert_both_parts_counted(train_seconds: float, resumed_stdout: str, kill: dict) -> None:
    """The seconds of a resumed run: the resumed process's own (as the Trainer prints them) plus those before the
    checkpoint, which took at least the time between the two checkpoints seen and at most the killed process's
    lifetime."""
    after = trainer_printed(resumed_stdout, "train_runtime")
    first, second = sorted(kill["seen"])
    before_at_least = kill["seen"][second] - kill["seen"][first] - 0.05  # polled every 0.02 s
    assert after + before_at_least <= train_seconds <= after + kill["killed"] - kill["started"], \
        (train_seconds, after, before_at_least, kill["killed"] - kill["started"])


def test_kill_9_after_a_checkpoint_resumes_and_matches_an_uninterrupted_run(workdir, tmp_path):
    params = tiny_params()
    # logging_steps does not divide save_steps: at a checkpoint some steps' loss is not logged yet
    params["pretrain"].update(max_steps=40, save_steps=10, eval_steps=100, logging_steps=3)
    write_params(workdir, params)
    reference = tmp_path / "reference"
    shutil.copytree(workdir, reference)

    kill, resumed, uninterrupted = kill_resume_and_rerun(workdir, reference, "pretrain", (10, 20))
    r, ref = report(workdir), report(reference)
    assert r["resumed_from_step"] >= 20 and r["steps"] == 40
    assert r["validation_loss"] == pytest.approx(ref["validation_loss"], abs=1e-4)
    a, b = final_weights(workdir), final_weights(reference)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4, rtol=1e-3, err_msg=name)

    # The reports cover the whole run, not the steps after the resume. Train loss: what the Trainer itself
    # reports for the uninterrupted run (the resumed run's last checkpoint holds it unrounded).
    whole_loss = trainer_printed(uninterrupted.stdout, "train_loss")
    assert ref["train_loss"] == round(whole_loss, 4)
    assert r["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-4), (r["train_loss"], ref["train_loss"])
    state = json.loads((workdir / "models/checkpoints/pretrain/checkpoint-40/trainer_state.json").read_text())
    assert state["stateful_callbacks"]["WholeRun"]["attributes"]["loss_sum"] / 40 == pytest.approx(whole_loss,
                                                                                                    rel=1e-6)
    assert_both_parts_counted(r["train_seconds"], resumed.stdout, kill)
    # Throughput: every token of the run, over the optimizer steps' share of the whole run's seconds.
    assert r["tokens_seen"] == ref["tokens_seen"] == 40 * 4 * 64
    assert r["tokens_per_second"] >= r["tokens_seen"] / r["train_seconds"]
    assert "whole run: train loss" in resumed.stderr


def test_changed_params_start_fresh_instead_of_resuming(workdir):
    assert run_stage("pretrain", workdir).returncode == 0
    params = tiny_params()
    params["pretrain"]["learning_rate"] = 1.0e-3
    write_params(workdir, params)
    again = run_stage("pretrain", workdir)
    assert again.returncode == 0, again.stderr
    assert "starting fresh" in again.stderr and report(workdir)["resumed_from_step"] == 0


def test_two_processes_under_torchrun_end_with_identical_weights(workdir):
    env = dict(stage_env(), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                             "-m", "stages.pretrain"], cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    r = report(workdir)
    assert r["world_size"] == 2 and r["ranks_identical"] is True
    assert r["tokens_seen"] == 30 * 4 * 64 * 2


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_factory_builds_each_family_with_its_parts(family):
    from transformers import AutoModelForCausalLM

    m = P.ModelParams(family=family, n_layers=2, d_model=32, n_heads=4, d_ff=64, context_length=16,
                      n_kv_heads=2 if family == "llama" else None)
    model = AutoModelForCausalLM.from_config(build_config(m, 100, 0, 1))
    names = " ".join(n for n, _ in model.named_modules())
    if family == "gpt2":
        assert "wpe" in names and model.config.activation_function.startswith("gelu")
    else:
        assert "rotary_emb" in names and model.config.hidden_act == "silu"
        assert model.config.num_key_value_heads == 2
        assert model.model.layers[0].self_attn.k_proj.out_features == 2 * 32 // 4  # grouped-query: 2 kv heads
    counts = parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert training_flops_per_token(model, 16) > 6 * counts["non_embedding"]


def test_unigram_perplexity_of_a_uniform_stream_is_the_vocabulary_size():
    tokens = np.tile(np.arange(8), 100).reshape(-1, 8)
    assert unigram_perplexity(tokens, tokens, 8) == pytest.approx(8.0, rel=1e-6)


def test_bits_per_byte_converts_nats_per_token():
    assert bits_per_byte(math.log(2), tokens=100, n_bytes=400) == pytest.approx(0.25)


def test_curves_cut_mid_write_by_a_kill_are_repaired_for_the_resume(tmp_path):
    """A kill -9 while dvclive writes leaves a partial row and a partial summary; dvclive's resume reads the
    summary, so a partial one crashed the resumed run (JSONDecodeError) before it trained a step."""
    from dvclive import Live

    from lifecycle.training import truncate_curves

    curves = tmp_path / "live"
    (curves / "plots/metrics/train").mkdir(parents=True)
    (curves / "plots/metrics/train/loss.tsv").write_text(
        "timestamp\tstep\tloss\n1\t5\t2.0\n2\t10\t1.5\n3\t15\t1.2\n4\t2")
    (curves / "metrics.json").write_text('{"train": {"loss": 1.')
    truncate_curves(curves, 10)
    rows = (curves / "plots/metrics/train/loss.tsv").read_text().splitlines()
    assert rows == ["timestamp\tstep\tloss", "1\t5\t2.0", "2\t10\t1.5"]
    live = Live(str(curves), resume=True, save_dvc_exp=False, dvcyaml=False)
    assert live.step == 11  # dvclive resumes after the step of the checkpoint


def test_repeated_ngram_share_measures_loops():
    from lifecycle.pretraining import greedy_repetition, repeated_ngram_share, samples_markdown

    loop = "And I have a man, " * 4  # 20 words, 17 four-grams: a cycle of 5, so the first 5 are new
    assert repeated_ngram_share(loop) == 12 / 17
    assert repeated_ngram_share("the cat sat on the mat and then slept") == 0.0
    assert repeated_ngram_share("too short") == 0.0
    samples = [{"prompt": "p", "greedy": loop, "sampled": "x"}, {"prompt": "q", "greedy": "a b c d e", "sampled": "y"}]
    assert greedy_repetition(samples) == round(12 / 17 / 2, 4)
    from lifecycle.params.pretrain import Samples

    assert "Repeated word 4-grams in the greedy continuations: 35.3%" in samples_markdown(samples, Samples(), 0.353)
    penalised = samples_markdown(samples, Samples(repetition_penalty=1.3), 0.5)
    assert "repetition_penalty 1.3 (pretrain.samples); without it the greedy continuations repeat 50.0%" in penalised


def test_a_busy_stretch_during_the_peak_measurement_is_said(caplog):
    from lifecycle.pretraining import steady_peak
    with caplog.at_level("WARNING"):
        assert steady_peak([0.44e12, 0.42e12]) == 0.44e12
    assert not caplog.records
    with caplog.at_level("WARNING"):
        assert steady_peak([0.21e12, 0.44e12]) == 0.44e12
    assert "0.210 and 0.440 TFLOP/s" in caplog.text and "not comparable" in caplog.text


def test_measuring_the_peak_leaves_the_global_random_state_alone():
    import torch

    from lifecycle.hardware import matmul_peak_flops
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    matmul_peak_flops("cpu", "fp32", size=64, seconds=0.01)
    assert torch.equal(torch.rand(3), expected)  # so measuring before training cannot change the weights
