"""Sharded training (FSDP): the params setting, the Trainer arguments it becomes, the clear refusal where the Trainer
cannot shard (CPU, one process), and two processes on CPU reaching the same loss sharded as data-parallel."""
import json
import os

import pytest

from benchmarks.fsdp_cpu import launch
from lifecycle import sharding
from lifecycle.core import StageError
from lifecycle.params.base import Fsdp
from lifecycle.params.finetune import FinetuneParams
from lifecycle.params.pretrain import PretrainParams
from lifecycle.params.schema import validate
from tests.conftest import default_params, run_stage, the_error, write_params


def with_fsdp(section: str, value, **more) -> dict:
    params = default_params()
    params[section] |= {"fsdp": value, **more}
    return params


def test_fsdp_is_off_unless_set():
    assert PretrainParams().fsdp is None and FinetuneParams().fsdp is None
    params, problems = validate(with_fsdp("pretrain", {}))
    assert problems == [] and params.pretrain.fsdp == Fsdp(sharding="full_shard", version=2, offload=False)


@pytest.mark.parametrize("section,value,more,expected", [
    ("pretrain", {"sharding": "zero3"}, {},
     "pretrain.fsdp.sharding = 'zero3': must be one of 'full_shard', 'shard_grad_op' or 'hybrid_shard'"),
    ("pretrain", True, {}, "pretrain.fsdp = True: must be a mapping"),
    ("finetune", {"version": 3}, {}, "finetune.fsdp.version = 3: must be one of 1 or 2"),
    ("finetune", {"shards": 2}, {}, "finetune.fsdp.shards = 2: unknown key (allowed: sharding, version, offload)"),
    ("pretrain", {"sharding": "hybrid_shard"}, {},
     "pretrain.fsdp: sharding = 'hybrid_shard' needs version = 1 (the Trainer's FSDP 2 shards over every process)"),
    ("finetune", {}, {"method": "lora"},
     "finetune: fsdp with method 'lora' is not supported (the adapters are small: plain data parallel holds them); "
     "set fsdp: null or method: full"),
])
def test_a_bad_fsdp_setting_is_one_line_naming_the_key(section, value, more, expected):
    _, problems = validate(with_fsdp(section, value, **more))
    assert problems == [f"params.yaml: {expected}"]


@pytest.fixture
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=16))


@pytest.fixture
def two_gpus(monkeypatch):
    """As if under torchrun on two GPUs; the environment (where the FSDP settings travel) restored afterwards."""
    monkeypatch.setattr(sharding, "world", lambda: (0, 0, 2))
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_the_trainer_arguments_carry_the_fsdp_setting(stage, tiny_model, two_gpus, tmp_path):
    from transformers.trainer_utils import FSDPOption

    from lifecycle import finetuning, pretraining
    params, _ = validate(with_fsdp(stage, {"sharding": "shard_grad_op", "offload": True}))
    section = getattr(params, stage)
    extra = sharding.fsdp_arguments(section.fsdp, f"{stage}.fsdp", tiny_model, "cuda", checkpointing=True)
    module = pretraining if stage == "pretrain" else finetuning
    args = module.training_arguments(section, "fp32", "cuda", 0, tmp_path, **extra)
    assert args.fsdp == [FSDPOption.SHARD_GRAD_OP, FSDPOption.AUTO_WRAP, FSDPOption.OFFLOAD]
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert args.fsdp_config["activation_checkpointing"] is True and args.gradient_checkpointing is False
    assert os.environ["ACCELERATE_USE_FSDP"] == "true" and os.environ["FSDP_VERSION"] == "2"
    assert os.environ["FSDP_RESHARD_AFTER_FORWARD"] == "false" and os.environ["FSDP_OFFLOAD_PARAMS"] == "true"


def test_no_setting_leaves_the_trainer_arguments_unsharded(tiny_model, tmp_path):
    from lifecycle import pretraining
    extra = sharding.fsdp_arguments(None, "pretrain.fsdp", tiny_model, "cpu")
    assert extra == {} and pretraining.training_arguments(PretrainParams(), "fp32", "cpu", 0, tmp_path).fsdp == []


def test_fsdp_on_cpu_is_refused_with_one_line():
    with pytest.raises(StageError) as err:
        sharding.refuse_unshardable(Fsdp(), "finetune.fsdp", "cpu", 2)
    assert str(err.value).startswith("params.yaml: finetune.fsdp is set but this machine has no GPU: the Trainer's "
                                     "FSDP (accelerate) shards on GPUs only; set finetune.fsdp: null")


def test_fsdp_in_one_process_is_refused_with_one_line():
    with pytest.raises(StageError, match=r"pretrain.fsdp is set but this is one process, nothing to shard over: "
                                         r"run under torchrun --nproc_per_node N"):
        sharding.refuse_unshardable(Fsdp(), "pretrain.fsdp", "cuda", 1)


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_the_stage_refuses_fsdp_on_cpu_before_any_work(stage, tmp_path):
    write_params(tmp_path, with_fsdp(stage, {}))  # no data at all: the refusal comes first
    assert the_error(run_stage(stage, tmp_path)).startswith(f"error: params.yaml: {stage}.fsdp is set but this "
                                                            "machine has no GPU")


# Two processes differ from DDP only in the order of float32 reductions (reduce-scatter vs all-reduce of the same
# two gradients: a + b = b + a, so measured 0 here); 1e-4 nats leaves room for reordering at other process counts
# and versions, while the loss itself falls by more than 0.5 nats in these 30 steps: a shard left unsynchronised,
# ranks training apart or a wrong gather would show far above it.
TOLERANCE = 1e-4


def test_two_processes_sharded_on_cpu_reach_the_ddp_loss(tmp_path):
    modes = ("ddp", "fsdp2_full_shard", "fsdp1_full_shard")
    result = launch(tmp_path, "train", *modes, steps=30, width=32, timeout=300)
    assert result == {"exit_code": 0, "error": None}
    runs = {m: json.loads((tmp_path / f"{m}.json").read_text()) for m in modes}
    ddp = runs["ddp"]
    assert ddp["losses"][0] - ddp["final_loss"] > 0.5
    for mode in modes[1:]:
        r = runs[mode]
        assert max(abs(a - b) for a, b in zip(r["losses"], ddp["losses"])) <= TOLERANCE, mode
        assert abs(r["gathered"]["held_out_loss"] - ddp["gathered"]["held_out_loss"]) <= TOLERANCE, mode
        assert r["gathered"]["parameters"] == ddp["gathered"]["parameters"]
        held = [x["weights_bytes"] + x["adam_state_bytes"] for x in r["ranks"]]
        whole = ddp["ranks"][0]["weights_bytes"] + ddp["ranks"][0]["adam_state_bytes"]
        assert max(held) <= 0.55 * whole, (mode, held, whole)  # each rank holds about half
