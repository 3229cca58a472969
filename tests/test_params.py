"""Bad params stop a stage before any work with one line: the key, the value, what is allowed."""
import json

import pytest
import yaml

from lifecycle.params import base
from lifecycle.params import schema as P
from tests.conftest import ROOT, default_params, run_stage, the_error, write_params


def edit(params: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = params
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return params


DELETE = object()

BAD = [
    ("prepare.dedup.near.threshold", 1.7, "prepare.dedup.near.threshold = 1.7: must be between 0 and 1"),
    ("prepare.dedup.near.treshold", 0.5,
     "prepare.dedup.near.treshold = 0.5: unknown key (allowed: enabled, threshold, num_perm, shingle_size)"),
    ("seed", "abc", "seed = 'abc': must be an integer"),
    ("seed", -1, "seed = -1: must be at least 0"),
    ("tokenizer.vocab_size", 5.5, "tokenizer.vocab_size = 5.5: must be an integer"),
    ("tokenizer.vocab_size", 100, "tokenizer.vocab_size = 100: must be between 260 and 1000000"),
    ("prepare.normalization", "NFD", "prepare.normalization = 'NFD': must be one of 'NFC', 'NFKC' or 'none'"),
    ("collect.pretrain.0.kind", "ftp",
     "collect.pretrain[0].kind = 'ftp': must be one of 'package', 'path', 'hf' or 'url'"),
    ("collect.pretrain.0.weight", 0, "collect.pretrain[0].weight = 0: must be greater than 0"),
    ("prepare.pii.email", 1, "prepare.pii.email = 1: must be true or false"),
    ("prepare.split.test", 0.9, "prepare.split.test = 0.9: must be above 0 and at most 0.5 (pretraining needs a "
                                "validation split, evaluation a test split)"),
    ("monitor.log", "logs/requests.jsonl", "monitor: log = 'logs/requests.jsonl': must lie under data/requests/"),
    ("prepare.filters.pretrain.min_words", 500000,
     "prepare.filters.pretrain: min_words = 500000 is above max_words = 100000"),
    ("tokenize.block_size", "128", "tokenize.block_size = '128': must be an integer"),
    ("prepare.dedup.near.num_perm", DELETE, None),  # optional: the default applies
    ("collect", DELETE, "collect: is required"),
    ("pretrian", {}, "unknown section 'pretrian' (did you mean 'pretrain'?)"),
]


# A stage validates the sections it reads (so that editing one section's schema re-runs only its stages);
# `python -m lifecycle.params` (run by `make repro` before DVC) validates the whole file, unknown sections included.
READER = {"seed": "collect", "collect": "collect", "prepare": "prepare", "tokenizer": "tokenizer",
          "tokenize": "tokenize"}


@pytest.mark.parametrize("key,value,expected", [b for b in BAD if b[2]], ids=[f"{b[0]}={b[1]!r}" for b in BAD if b[2]])
def test_bad_param_stops_stage_with_one_line(project, key, value, expected):
    write_params(project, edit(default_params(), key, value))
    result = run_stage(READER.get(key.split(".")[0], "params"), project)
    assert the_error(result).startswith(f"error: params.yaml: {expected}"), result.stderr
    assert not (project / "data").exists(), "no work may start on bad params"


@pytest.mark.parametrize("key,value,expected", [b for b in BAD if b[2]], ids=[f"{b[0]}={b[1]!r}" for b in BAD if b[2]])
def test_whole_file_validation_finds_every_bad_param(key, value, expected):
    _, problems = P.validate(edit(default_params(), key, value))
    assert problems and problems[0].startswith(f"params.yaml: {expected}")


def test_optional_key_may_be_left_out():
    params, problems = P.validate(edit(default_params(), "prepare.dedup.near.num_perm", DELETE))
    assert problems == [] and params.prepare.dedup.near.num_perm == 128


def test_url_source_needs_sha256():
    params = default_params()
    params["collect"]["pretrain"][0] = {"name": "web", "kind": "url", "url": "https://example.org/a.txt"}
    _, problems = P.validate(params)
    assert problems == ["params.yaml: collect.pretrain[0]: kind 'url' needs 'sha256'"]


def test_validate_command_lists_every_problem(project):
    params = edit(edit(default_params(), "seed", "x"), "tokenize.block_size", 2)
    path = write_params(project, params)
    result = run_stage("params", project, str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 2


def test_default_params_are_valid(project):
    result = run_stage("params", project)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_invalid_yaml_names_the_line(project):
    (project / "params.yaml").write_text("seed: 1\nprepare: [unclosed\n")
    error = the_error(run_stage("collect", project))
    assert error.startswith("error: params.yaml: line 3: not valid YAML")


MODEL_BAD = [
    ({"model": {"d_model": 100, "n_heads": 3}}, "model: n_heads = 3 must divide d_model = 100"),
    ({"model": {"family": "llama", "d_model": 384, "n_heads": 6, "n_kv_heads": 4}},
     "model: n_kv_heads = 4 must divide n_heads = 6"),
    ({"model": {"family": "bert"}}, "model.family = 'bert': must be one of 'gpt2' or 'llama'"),
    ({"model": {"context_length": 256}},
     "model.context_length = 256 is longer than the packed blocks (tokenize.block_size = 128)"),
    ({"model": {"family": "gpt2", "n_kv_heads": 2}},
     "model: n_kv_heads = 2: only family 'llama' has grouped-query attention"),
    ({"pretrain": {"learning_rate": "3e-4"}},
     "pretrain.learning_rate = '3e-4': must be a number (YAML reads 3e-4 as text: write 3.0e-4)"),
    ({"pretrain": {"learning_rate": "1.5E3"}},
     "pretrain.learning_rate = '1.5E3': must be a number (YAML reads 1.5E3 as text: write 1.5e+3)"),
    ({"pretrain": {"precision": "fp8"}}, "pretrain.precision = 'fp8': must be one of 'auto', 'bf16', 'fp16' or 'fp32'"),
]


@pytest.mark.parametrize("change,expected", MODEL_BAD, ids=[e for _, e in MODEL_BAD])
def test_bad_model_params_stop_pretrain_with_one_line(project, change, expected):
    params = default_params()
    for section, values in change.items():
        params[section].update(values)
    write_params(project, params)
    assert the_error(run_stage("pretrain", project)).startswith(f"error: params.yaml: {expected}")
    assert not (project / "models").exists()


# ---------------------------------------------------------------- typos never pass silently

@pytest.mark.parametrize("stage", ["prepare", "tokenizer"])
def test_misspelt_section_stops_every_stage_before_work(project, stage):
    """A stage validates only its sections, but an unknown top-level key (here `pretrian`) fails it too, so `dvc repro`
    of any stage fails instead of running on the defaults the typo left in place."""
    params = default_params()
    params["pretrian"] = params.pop("pretrain")
    write_params(project, params)
    assert the_error(run_stage(stage, project)) == \
        "error: params.yaml: unknown section 'pretrian' (did you mean 'pretrain'?)"
    assert not (project / "data").exists() and not (project / "models").exists()


def test_every_section_name_is_known_to_the_stage_loader():
    """base.SECTION_NAMES (what a stage accepts at the top level) is exactly the whole-file schema's sections, and
    holds every top-level key of the project's params.yaml."""
    assert set(base.SECTION_NAMES) == set(P.Params.model_fields)
    assert set(default_params()) <= set(base.SECTION_NAMES)


def gate_project(project) -> dict:
    """A project whose dvc.yaml declares reports/eval.json (written) and reports/bench.json (not yet)."""
    stages = {name: {"cmd": f"python -m stages.{name}", "metrics": [{f"reports/{file}": {"cache": False}}]}
              for name, file in (("evaluate", "eval.json"), ("benchmark", "bench.json"))}
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages, "metrics": ["reports/bench/serve.json"]}))
    (project / "reports").mkdir()
    report = {"classifier": {"accuracy": 0.8, "macro_f1": 0.7, "name": "x"}}
    (project / "reports/eval.json").write_text(json.dumps(report))
    return default_params()


RULE = "a gate names a number in a metrics file of dvc.yaml, checked against the file on disk once its stage has " \
       "written it"
GATE_BAD = [
    ("reports/eval.json:classifier.acuracy", "reports/eval.json holds no number 'classifier.acuracy' (nearest: "
     f"reports/eval.json:classifier.accuracy, reports/eval.json:classifier.macro_f1); {RULE}"),
    ("reports/evals.json:classifier.accuracy", "reports/evals.json is not a metrics file of dvc.yaml (nearest: "
     "reports/eval.json:classifier.accuracy, reports/eval.json:classifier.macro_f1)"),
    ("reports/eval.json:classifier.name", "reports/eval.json holds no number 'classifier.name' (nearest: "  # text
     f"reports/eval.json:classifier.macro_f1, reports/eval.json:classifier.accuracy); {RULE}"),
    ("reports/eval.json:loss", f"reports/eval.json holds no number 'loss' (`dvc metrics show` lists them); {RULE}"),
]


@pytest.mark.parametrize("metric,why", GATE_BAD, ids=[m for m, _ in GATE_BAD])
def test_gate_on_a_metric_dvc_yaml_does_not_declare_fails_validation(project, metric, why):
    """Not later in `compare --fail-on-gate` as "= —": the gate, its metric and the nearest real ones, at once."""
    params = gate_project(project)
    params["gates"] = [{"metric": "reports/eval.json:classifier.accuracy", "min": 0.5}, {"metric": metric, "min": 0.5}]
    write_params(project, params)
    result = run_stage("params", project)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: params.yaml: gates[1]: metric = {metric!r}: {why}"


def test_gate_on_a_declared_metrics_file_not_yet_written_is_accepted(project):
    params = gate_project(project)
    params["gates"] = [{"metric": "reports/bench.json:classifier.int8_dynamic.speedup_vs_pytorch_batch_1", "min": 3},
                       {"metric": "reports/bench/serve.json:rps", "min": 1}]
    assert P.validate(params, project / "params.yaml")[1] == []


ACCURACY = "reports/eval.json:classifier.accuracy"
FAIL_IF = [
    ({"metric": ACCURACY, "fail_if": "significant"}, None),
    ({"metric": ACCURACY, "fail_if": "threshold", "min": 0.5}, None),
    ({"metric": ACCURACY, "min": 0.5}, None),  # threshold by default
    ({"metric": ACCURACY, "fail_if": "significant", "min": 0.5},
     f"gates[0]: metric = {ACCURACY!r}: fail_if: significant takes no 'min' or 'max' (it compares with the base run)"),
    ({"metric": ACCURACY, "fail_if": "significant", "max": 0.9},
     f"gates[0]: metric = {ACCURACY!r}: fail_if: significant takes no 'min' or 'max' (it compares with the base run)"),
    ({"metric": ACCURACY, "fail_if": "threshold"}, f"gates[0]: metric = {ACCURACY!r}: needs 'min' or 'max'"),
    ({"metric": ACCURACY, "fail_if": "worse"}, "gates[0].fail_if = 'worse': must be one of 'threshold' or "
                                                "'significant'"),
]


@pytest.mark.parametrize("gate,problem", FAIL_IF, ids=[str(sorted(g.items())) for g, _ in FAIL_IF])
def test_a_significance_gate_takes_no_threshold_and_a_threshold_gate_needs_one(gate, problem):
    params = default_params()
    params["gates"] = [gate]
    gates = [line for line in P.validate(params)[1] if "gates[" in line]
    assert gates == ([] if problem is None else [f"params.yaml: {problem}"])
    if problem is None:
        assert P.Gate.model_validate(gate).fail_if == gate.get("fail_if", "threshold")


def test_the_projects_own_gates_name_its_metrics():
    assert P.validate(default_params(), ROOT / "params.yaml")[1] == []


def test_a_word_for_a_number_gets_no_yaml_hint():
    """The YAML hint is for 1e-3 (which YAML 1.1 reads as text) only: `fast` is simply not a number."""
    params = default_params()
    params["pretrain"]["learning_rate"] = "fast"
    assert P.validate(params)[1] == ["params.yaml: pretrain.learning_rate = 'fast': must be a number"]
    params["pretrain"]["learning_rate"] = "1e-3"
    assert P.validate(params)[1] == [
        "params.yaml: pretrain.learning_rate = '1e-3': must be a number (YAML reads 1e-3 as text: write 1.0e-3)"]
