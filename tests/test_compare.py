"""compare: two runs of the tiny DAG (a commit and DVC experiments) as the Markdown a pull request review reads."""
import json
import re
import subprocess

import pytest

from lifecycle.params import schema as P
from lifecycle.review import compare as C
from lifecycle.review.markdown import flatten
from tests.conftest import (
    copy_repo,
    default_params,
    dvc,
    git,
    run_stage,
    stage_env,
    the_error,
    tiny_params,
    write_params,
)

# One changes the model (finetune, evaluate and report re-run), one only how it is measured (evaluate, report).
EXPERIMENTS = {"higher-lr": "finetune.learning_rate=1.0e-3", "coarse-bins": "evaluate.calibration_bins=4"}
GATES = [{"metric": "reports/eval.json:classifier.accuracy", "min": 0.0},
         {"metric": "reports/eval.json:classifier.roc_auc", "min": 1.01}]  # no classifier reaches it


def make(repo, *args) -> subprocess.CompletedProcess:
    """The Makefile targets CI runs (.github/workflows/pr.yml), run the same way."""
    return subprocess.run(["make", "--no-print-directory", *args], cwd=repo, env=stage_env(), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def repo(tiny_repo, tmp_path_factory):
    """The committed tiny run (the base) and two experiments on top of it, each changing one param; both with
    one gate that passes and one that fails."""
    repo = copy_repo(tiny_repo, tmp_path_factory.mktemp("compare") / "project")
    params = tiny_params()
    params["gates"] = GATES
    write_params(repo, params)
    for name, change in EXPERIMENTS.items():  # the second on top of the first: only evaluate and report re-run
        dvc(repo, "exp", "run", "-q", "-n", name, "-S", change)
    return repo


@pytest.fixture(scope="module")
def review(repo, tmp_path_factory):
    """`make compare` of the base commit and the experiment that changed the model."""
    out = tmp_path_factory.mktemp("review")
    result = make(repo, "compare", f"BASE={base_rev(repo)}", "HEAD=higher-lr", f"REVIEW={out}")
    assert result.returncode == 0, result.stdout + result.stderr  # a failed gate alone does not fail it
    return out, (out / "compare.md").read_text()


def base_rev(repo) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def report_at(repo, rev: str, path: str) -> dict:
    return json.loads(git(repo, "show", f"{rev}:{path}"))


def exp_ref(repo, name: str) -> str:
    refs = git(repo, "for-each-ref", "refs/exps", "--format=%(refname)").split()
    return next(r for r in refs if r.endswith(f"/{name}"))


def table_rows(markdown: str) -> dict[str, list[str]]:
    """`file:key` -> the cells after it, of every metrics-table row."""
    rows = {}
    for line in markdown.splitlines():
        match = re.match(r"\| `([^`]+\.json:[^`]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_comparison_lists_the_changed_param(review):
    _, markdown = review
    assert "| `params.yaml:finetune.learning_rate` | 0.0003 | 0.001 |" in markdown
    assert "calibration_bins" not in markdown  # the other experiment's change


def test_metric_deltas_have_the_sign_of_the_change(repo, review):
    rows = table_rows(review[1])
    head = exp_ref(repo, "higher-lr")
    checked = 0
    for file in ("reports/eval.json", "reports/finetune.json"):
        old, new = flatten(report_at(repo, base_rev(repo), file)), flatten(report_at(repo, head, file))
        for key in old:
            name = f"{file}:{key}"
            if not (C.is_number(old[key]) and C.is_number(new.get(key))) or old[key] == new[key]:
                continue
            assert name in rows, (name, review[1])
            delta, verdict = rows[name][2], rows[name][4]
            assert delta.startswith("+" if new[key] > old[key] else "-"), (name, old[key], new[key], delta)
            better = (new[key] - old[key]) * C.direction(name) > 0
            assert verdict == ("" if C.direction(name) == 0 else "🟢 better" if better else "🔴 worse"), (name, verdict)
            checked += 1
    assert "reports/finetune.json:validation.loss" in rows and checked >= 2, review[1]


def test_changed_plots_are_png_files_the_markdown_links(review):
    out, markdown = review
    links = re.findall(r"!\[([^\]]+)\]\(([^)]+\.png)\)", markdown)
    assert "Fine-tuning loss" in dict(links), markdown
    for _, link in links:
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gates_are_marked_pass_and_fail(review):
    rows = table_rows(review[1])
    assert rows["reports/eval.json:classifier.accuracy"][-1] == "✅ ≥ 0"
    assert rows["reports/eval.json:classifier.roc_auc"][-1] == "❌ ≥ 1.01"
    assert "**Quality gates: 1 of 2 passed**" in review[1]


def test_review_fails_on_a_failed_gate(repo, tmp_path):
    result = make(repo, "review", f"BASE={base_rev(repo)}", "HEAD=higher-lr", f"REVIEW={tmp_path}")
    assert result.returncode != 0
    assert "gate failed: reports/eval.json:classifier.roc_auc" in result.stderr
    assert (tmp_path / "compare.md").exists()


def test_exp_show_of_three_experiments_fits_200_columns(repo):
    third = "a-third-experiment-with-a-rather-long-descriptive-name"  # only evaluate and report re-run
    dvc(repo, "exp", "run", "-q", "-n", third, "-S", "evaluate.calibration_bins=5")
    result = make(repo, "exps")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(name in result.stdout for name in [*EXPERIMENTS, third]), result.stdout
    assert "calibration_bins" in lines[0] and "finetune.learning_rate" in lines[0], lines[0]
    assert max(len(line) for line in lines) <= 200, "\n".join(lines)
    # with the project's own gates (eight metrics), every one that moved is a column, folded into blocks
    params_file = repo / "params.yaml"
    saved = params_file.read_text()
    try:
        params = tiny_params()
        params["gates"] = default_params()["gates"]
        write_params(repo, params)
        wide = make(repo, "exps")
        assert wide.returncode == 0, wide.stderr
        lines = wide.stdout.splitlines()
        assert "finetune.learning_rate" in lines[0], lines[0]
        assert max(len(line) for line in lines) <= 200, "\n".join(lines)
        cells = folded_cells(wide.stdout)
        experiments = {e for e, _ in cells}
        assert all(any(name in e for e in experiments) for name in [*EXPERIMENTS, third]), experiments
        assert len(cells) == len(experiments) * len({c for _, c in cells}), "a block lost a row"
        assert any("classifier." in c for _, c in cells), wide.stdout  # the calibration bins moved the ECE
    finally:
        params_file.write_text(saved)


def test_unknown_revision_is_one_line(tiny_repo, tmp_path):
    result = run_stage("compare", tiny_repo, "--base", "no-such-rev", "--out", str(tmp_path))
    assert the_error(result) == "error: dvc params diff --all no-such-rev: ERROR: unknown Git revision 'no-such-rev'"
    assert the_error(run_stage("compare", tiny_repo, "--base", "workspace", "--out", str(tmp_path))) == \
        "error: --base workspace: the base must be a commit, branch or experiment"


# ---------------------------------------------------------------- pure functions

def test_direction_follows_the_name_table():
    assert C.direction("reports/eval.json:classifier.accuracy") == 1
    assert C.direction("reports/eval.json:lm_pretrained.general.perplexity") == -1
    assert C.direction("reports/bias.json:classifier.demographic_parity_difference.gender.value") == -1
    assert C.direction("reports/compress.json:int8.accuracy_drop") == -1
    assert C.direction("reports/pretrain.json:steps") == 0
    assert C.direction("reports/bench.json:generation.pytorch.prompt_64.greedy_tokens_per_s") == 1
    assert C.direction("reports/bench.json:classifier.int8_dynamic.model_peak_mb") == -1


def test_metric_rows_keep_changed_and_gated_metrics():
    diff = {"reports/eval.json": {"a.accuracy": {"old": 0.5, "new": 0.4}, "a.loss": {"old": 1.0, "new": 1.0},
                                  "a.count": {"old": 3, "new": 3}}}
    gates = [P.Gate(metric="reports/eval.json:a.loss", max=0.5)]
    rows, unchanged = C.metric_rows(diff, gates)
    assert [r.name for r in rows] == ["reports/eval.json:a.accuracy", "reports/eval.json:a.loss"] and unchanged == 1
    assert (rows[0].delta == pytest.approx(-0.1) and rows[0].delta_pct == pytest.approx(-20)
            and rows[0].verdict == "worse")
    assert rows[1].gate.passed is False and rows[1].gate.rule == "≤ 0.5"


def test_a_gate_on_a_missing_metric_fails():
    rows, _ = C.metric_rows({}, [P.Gate(metric="reports/bias.json:passed", min=1)])
    assert rows[0].new is None and not rows[0].gate.passed


def test_only_plots_whose_data_changed_are_rendered():
    def render(rows):
        return [{"type": "vega", "revisions": ["main", "workspace"], "content": {"data": {"values": rows}}}]
    same = [{"x": 1, "y": 2, "rev": "main"}, {"x": 1, "y": 2, "rev": "workspace"}]
    moved = [{"x": 1, "y": 2, "rev": "main"}, {"x": 1, "y": 3, "rev": "workspace"}]
    assert list(C.changed_plots({"data": {"same": render(same), "moved": render(moved)}})) == ["moved"]


def test_bad_gate_is_rejected_with_one_line():
    params = tiny_params()
    params["gates"] = [{"metric": "accuracy", "min": 0.5}]
    _, problems = P.validate(params)
    assert problems == ["params.yaml: gates[0]: metric = 'accuracy': must be 'file:key', e.g. "
                        "'reports/eval.json:classifier.accuracy'"]
    params["gates"] = [{"metric": "reports/eval.json:classifier.accuracy"}]
    assert P.validate(params)[1] == ["params.yaml: gates[0]: metric = 'reports/eval.json:classifier.accuracy': "
                                     "needs 'min' or 'max'"]


# ---------------------------------------------------------------- `make exps` within 200 characters

def folded_cells(text: str) -> dict[tuple[str, str], str]:
    """(experiment, column) -> cell of every block of a folded table (blocks are one blank line apart)."""
    cells = {}
    for block in text.strip("\n").split("\n\n"):
        header, rule, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
        assert header[0] == "Experiment" and set("".join(rule)) == {"-"}, block
        for row in rows:
            cells.update({(row[0], column): cell for column, cell in zip(header[1:], row[1:])})
    return cells


@pytest.mark.parametrize("experiments", [3, 12])
def test_folded_experiment_table_stays_within_200_characters_and_keeps_every_cell(experiments):
    columns = ([f"params.yaml:finetune.section_{i}.a_rather_long_parameter_name" for i in range(14)]
               + [f"reports/eval.json:classifier.metric_{i}.with_a_long_name" for i in range(7)])
    labels = ["main", "workspace"] + [f"├── {i:07x} [experiment-{i}-with-quite-a-long-descriptive-name]"
                                      for i in range(experiments)]
    rows = [[label, *(f"{r}.{c:04d}" for c in range(len(columns)))] for r, label in enumerate(labels)]
    text = C.fold_table(["Experiment", *columns], rows)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 200, "\n".join(lines)
    assert folded_cells(text) == {(row[0], column): cell for row in rows for column, cell in zip(columns, row[1:])}
    assert text.count("| Experiment") > 1  # folded: the experiment column repeats in every block


def test_a_cell_too_wide_for_any_block_is_cut_not_the_line():
    text = C.fold_table(["Experiment", "p" * 300, "short"], [["e" * 250, "1", "2"], ["main", "3", "4"]])
    assert max(len(line) for line in text.splitlines()) <= 200, text
    cells = folded_cells(text)
    assert cells[("main", "short")] == "4" and any(key[1].endswith("…") and key[0] == "main" for key in cells)


def test_every_changed_param_and_moved_gated_metric_is_a_column():
    def revision(i):
        return {"data": {"params": {"params.yaml": {"data": {
                    "finetune": {f"a_rather_long_parameter_name_{p}": i * p for p in range(12)}, "seed": 1}}},
                         "metrics": {"reports/eval.json": {"data": {
                             "classifier": {f"metric_{m}": i / (m + 1) for m in range(8)}, "fixed": 1}}}}}
    show = [{**revision(0), "experiments": [{"revs": [revision(i)]} for i in range(1, 4)]}]
    gates = [P.Gate(metric=f"reports/eval.json:classifier.metric_{m}", min=0) for m in range(8)]
    gates.append(P.Gate(metric="reports/eval.json:fixed", min=0))  # never moves: no column
    assert C.experiment_columns(show, gates) == (
        [f"finetune.a_rather_long_parameter_name_{p}" for p in sorted(range(1, 12), key=str)]
        + [f"reports/eval.json:classifier.metric_{m}" for m in range(8)])
