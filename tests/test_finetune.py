"""finetune from a tiny local base model made here: full, LoRA (merged), causal-LM; bad labelled data."""
import json
import shutil

import pytest

from lifecycle.params import schema as P
from tests.conftest import default_params, run_stage, the_error, write_params
from tests.test_pretrain import assert_both_parts_counted, kill_resume_and_rerun, trainer_printed

POSITIVE = ["a wonderful moving film", "great acting and a great story", "delightful and warm", "a joy to watch"]
NEGATIVE = ["a dull boring mess", "terrible script and bad acting", "tedious and flat", "a waste of time"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny gpt2 model and tokenizer saved as a local directory, as a user's base model would be."""
    from transformers import AutoModelForCausalLM

    from lifecycle.modeling import build_config
    from lifecycle.tokens import train_bpe

    directory = tmp_path_factory.mktemp("base")
    tokenizer = train_bpe((POSITIVE + NEGATIVE) * 10, P.TokenizerParams(vocab_size=300, min_frequency=1))
    config = build_config(P.ModelParams(n_layers=1, d_model=32, n_heads=2, d_ff=64, context_length=32),
                          len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def labelled_project(directory, base, train=None, **finetune):
    params = default_params()
    params["finetune"].update(base=str(base), epochs=2, batch_size=4, eval_steps=2, **finetune)
    write_params(directory, params)
    data = directory / "data/prepared/finetune"
    data.mkdir(parents=True)
    rows = train if train is not None else [{"text": t, "label": "positive"} for t in POSITIVE] + \
        [{"text": t, "label": "negative"} for t in NEGATIVE]
    for split in ("train", "validation", "test"):
        (data / split).mkdir()
        (data / split / "00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
            rows if split == "train" else rows[:2] + rows[-2:])))
    return directory


def test_full_finetuning_from_a_local_base_directory(tmp_path, base_model):
    project = labelled_project(tmp_path, base_model)
    result = run_stage("finetune", project)
    assert result.returncode == 0, result.stderr
    from transformers import AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(project / "models/finetuned")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    report = json.loads((project / "reports/finetune.json").read_text())
    assert report["parameters"]["trainable_share"] == 1.0
    assert set(report["validation"]) == {"loss", "accuracy", "macro_f1"}


def test_lora_trains_a_small_share_and_is_merged_into_a_plain_model(tmp_path, base_model):
    project = labelled_project(tmp_path, base_model, method="lora", lora={"r": 2, "alpha": 4, "dropout": 0.0})
    result = run_stage("finetune", project)
    assert result.returncode == 0, result.stderr
    report = json.loads((project / "reports/finetune.json").read_text())
    assert 0 < report["parameters"]["trainable_share"] < 0.5
    from safetensors import safe_open
    with safe_open(str(project / "models/finetuned/model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k], "adapters are merged: export sees a plain model"
    assert not (project / "models/finetuned/adapter_config.json").exists()


def test_causal_lm_domain_adaptation(tmp_path, base_model):
    project = labelled_project(tmp_path, base_model, task="causal_lm", max_length=8,
                               early_stopping={"metric": "loss", "patience": 2})
    result = run_stage("finetune", project)
    assert result.returncode == 0, result.stderr
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(project / "models/finetuned").config.model_type == "gpt2"


def test_kill_9_resumes_and_reports_the_whole_run(tmp_path, base_model):
    rows = [{"text": t, "label": label} for _ in range(10) for label, texts in (("positive", POSITIVE),
                                                                                 ("negative", NEGATIVE)) for t in texts]
    (tmp_path / "project").mkdir()
    project = labelled_project(tmp_path / "project", base_model, train=rows)
    params = default_params()  # 80 examples, 4 a step, 2 epochs: 40 steps; a checkpoint every 5
    params["finetune"].update(base=str(base_model), epochs=2, batch_size=4, eval_steps=5,
                              early_stopping={"metric": "loss", "patience": 100})
    write_params(project, params)
    reference = tmp_path / "reference"
    shutil.copytree(project, reference)

    kill, resumed, uninterrupted = kill_resume_and_rerun(project, reference, "finetune", (5, 10))

    r, ref = (json.loads((d / "reports/finetune.json").read_text()) for d in (project, reference))
    assert r["steps"] == ref["steps"] == 40 and r["validation"] == pytest.approx(ref["validation"], abs=1e-4)
    assert ref["train_loss"] == round(trainer_printed(uninterrupted.stdout, "train_loss"), 5)
    assert r["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5), (r["train_loss"], ref["train_loss"])
    assert_both_parts_counted(r["train_seconds"], resumed.stdout, kill)


def test_label_outside_the_classes_names_file_and_row(tmp_path, base_model):
    rows = [{"text": "fine", "label": "positive"}, {"text": "meh", "label": "neutral"}]
    project = labelled_project(tmp_path, base_model, train=rows)
    assert the_error(run_stage("finetune", project)) == (
        "error: data/prepared/finetune/train/00000.jsonl: row 2: label 'neutral' is not one of finetune.classes "
        "(negative, positive)")
    assert not (project / "models/finetuned").exists()


def test_missing_label_column_names_file_and_row(tmp_path, base_model):
    project = labelled_project(tmp_path, base_model,
                               train=[{"text": "fine", "label": "positive"}, {"text": "no label"}])
    assert the_error(run_stage("finetune", project)) == (
        "error: data/prepared/finetune/train/00000.jsonl: row 2: missing column 'label' (has: text)")


def test_class_without_examples_is_one_clear_line(tmp_path, base_model):
    project = labelled_project(tmp_path, base_model, train=[{"text": t, "label": "positive"} for t in POSITIVE])
    assert the_error(run_stage("finetune", project)) == (
        "error: data/prepared/finetune/train: class 'negative' of finetune.classes has no examples")
