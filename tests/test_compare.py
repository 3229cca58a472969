"""compare: two runs of the tiny DAG (a commit and DVC experiments) as the Markdown a pull request review reads."""
import json
import re
import subprocess

import pytest

from lifecycle.params import schema as P
from lifecycle.review import compare as C
from lifecycle.review import exp_table as X
from lifecycle.review import verdict as V
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


def table_rows(markdown: str, section: str | None = None) -> dict[str, list[str]]:
    """`file:key` -> the cells after it, of every metrics-table row (of one section: "Gates", "Significant changes"
    or "other", the folded rest, whose tables name the key and head it with its file)."""
    rows, where, file = {}, None, ""
    for line in markdown.splitlines():
        if line.startswith("### ") or line.startswith("<details>"):
            where = "other" if line.startswith("<details>") else line[4:].split(":")[0]
        heading = re.match(r"\*\*`([^`]+)`\*\*$", line)
        file = heading.group(1) if heading else file
        match = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
        if match and (section is None or where == section) and where != "Params changed":
            name = match.group(1) if where != "other" else f"{file}:{match.group(1)}"
            rows[name] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_comparison_lists_the_changed_param(review):
    _, markdown = review
    assert "| `params.yaml:finetune.learning_rate` | 0.0003 | 0.001 |" in markdown
    assert "calibration_bins" not in markdown  # the other experiment's change


def test_metric_deltas_have_the_sign_of_the_change(repo, review):
    """Every changed metric is a row whose delta has the sign of the change; a colour only with a noise estimate
    (a paired interval or a band: there is no reports/noise.json here), and then the one its direction gives."""
    rows = {**table_rows(review[1], "Significant changes"), **table_rows(review[1], "other")}
    head = exp_ref(repo, "higher-lr")
    checked = 0
    for file in ("reports/eval.json", "reports/finetune.json"):
        old, new = flatten(report_at(repo, base_rev(repo), file)), flatten(report_at(repo, head, file))
        for key in old:
            name = f"{file}:{key}"
            if not (V.is_number(old[key]) and V.is_number(new.get(key))) or old[key] == new[key]:
                continue
            assert name in rows, (name, review[1])
            delta, verdict = rows[name][2], rows[name][4]
            assert delta.startswith("+" if new[key] > old[key] else "-"), (name, old[key], new[key], delta)
            better = (new[key] - old[key]) * C.direction(name) > 0
            if C.direction(name) == 0:
                assert verdict == "", (name, verdict)
            elif "[" not in delta and "±" not in delta:
                assert verdict == "no noise estimate", (name, verdict)
            else:
                assert verdict in ("⚪ within noise", "🟢 better" if better else "🔴 worse"), (name, verdict)
            checked += 1
    assert "reports/finetune.json:validation.loss" in rows and checked >= 2, review[1]


def test_paired_intervals_come_from_the_evaluate_stages_examples(review):
    """Needs the evaluate stage to write reports/examples/eval/ (lifecycle.examples): the classifier's changed
    metrics get a paired interval (the higher learning rate moves its calibration on the same test examples)."""
    rows = {**table_rows(review[1], "Significant changes"), **table_rows(review[1], "other")}
    delta = rows["reports/eval.json:classifier.expected_calibration_error"][2]
    assert re.fullmatch(r"[+-]\S+ \[[+-]?\S+, [+-]?\S+\]", delta), delta
    assert re.search(r"`reports/examples/eval/classifier.jsonl` \(\d+ pairs\)", review[1]), review[1]


def test_changed_plots_are_png_files_the_markdown_links(review):
    out, markdown = review
    links = re.findall(r"!\[([^\]]+)\]\(([^)]+\.png)\)", markdown)
    assert "Fine-tuning loss" in dict(links), markdown
    for _, link in links:
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gates_are_marked_pass_and_fail(review):
    rows = table_rows(review[1], "Gates")
    assert rows["reports/eval.json:classifier.accuracy"][-2:] == ["≥ 0", "✅"]
    assert rows["reports/eval.json:classifier.roc_auc"][-2:] == ["≥ 1.01", "❌"]
    assert "### Gates: 1 of 2 passed — ❌ `reports/eval.json:classifier.roc_auc`" in review[1]
    assert review[1].index("### Gates") < review[1].index("### Significant changes") < review[1].index("<details>")


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
    assert C.direction("reports/bias.json:classifier.name_disagreement.value") == -1
    assert C.direction("reports/bias.json:classifier.any_name_flip_rate.value") == -1
    assert C.direction("reports/eval.json:classifier.margin_over_baselines") == 1


def test_metric_rows_keep_changed_and_gated_metrics():
    diff = {"reports/eval.json": {"a.accuracy": {"old": 0.5, "new": 0.4}, "a.loss": {"old": 1.0, "new": 1.0},
                                  "a.count": {"old": 3, "new": 3}}}
    gates = [P.Gate(metric="reports/eval.json:a.loss", max=0.5)]
    rows, results, unchanged = C.metric_rows(diff, gates)
    assert [r.name for r in rows] == ["reports/eval.json:a.accuracy", "reports/eval.json:a.loss"] and unchanged == 1
    assert (rows[0].delta == pytest.approx(-0.1) and rows[0].delta_pct == pytest.approx(-20)
            and rows[0].verdict == "no noise estimate")  # worse, but by how much noise?
    assert results[0].row is rows[1] and results[0].passed is False and results[0].rule == "≤ 0.5"


def test_a_gate_on_a_missing_metric_fails():
    rows, results, _ = C.metric_rows({}, [P.Gate(metric="reports/bias.json:passed", min=1)])
    assert rows[0].new is None and not results[0].passed
    significant = P.Gate(metric="reports/bias.json:passed", fail_if="significant")
    assert C.metric_rows({}, [significant])[1][0].failure() == \
        "gate failed: reports/bias.json:passed = —, needs not significantly worse"


def test_a_significance_gate_without_a_base_or_an_estimate_passes_with_a_note():
    gate = P.Gate(metric="reports/eval.json:a.accuracy", fail_if="significant")
    result = C.metric_rows({"reports/eval.json": {"a.accuracy": {"old": None, "new": 0.4}}}, [gate])[1][0]
    assert result.passed and result.note == "no base"
    result = C.metric_rows({"reports/eval.json": {"a.accuracy": {"old": 0.5, "new": 0.4}}}, [gate])[1][0]
    assert result.passed and result.note == "no noise estimate: cannot judge"
    result.row.band = 0.05  # a drop of 0.1, beyond the seed-to-seed band
    assert not result.passed and result.note == "" and result.row.delta_text() == "-0.1 ±0.05"
    result.row.band = 0.15
    assert result.passed and result.row.verdict == "within noise"


def test_a_partial_pairing_shows_the_paired_delta_on_the_shared_examples():
    """Runs whose test sets differ in part (another seed samples other documents): the metric's delta is over all
    of each run's examples, the interval over the shared ones, so the page shows that paired delta beside it."""
    from lifecycle.review.significance import paired_difference

    base = [{"id": str(i), "nll": 2.0, "tokens": 1, "bytes": 1} for i in range(8)]
    head = [{"id": str(i), "nll": 2.5 if i < 6 else 9.0, "tokens": 1, "bytes": 1} for i in range(2, 10)]
    difference = paired_difference(base, head, "bits_per_byte")
    assert (difference.n, difference.only_base, difference.only_head) == (6, 2, 2)
    row = V.MetricRow("reports/eval.json:lm.bits_per_byte", 2.885, 5.410, sign=-1, paired=difference)
    paired_delta = V.signed(difference.delta)
    assert row.delta_text().startswith(f"+2.525 (on the 6 shared: {paired_delta} [")


def test_a_percentage_is_left_out_from_zero_and_across_zero():
    assert V.MetricRow("x", -0.01, 0.02).delta_pct is None and V.MetricRow("x", 0.02, -0.01).delta_pct is None
    assert V.MetricRow("x", 0, 1).delta_pct is None
    assert V.MetricRow("x", 2, 0).delta_pct == -100 and V.MetricRow("x", -2, -1).delta_pct == 50


def test_environment_keys_and_the_noise_file_are_no_metric_rows():
    diff = {"reports/bench.json": {"environment.cores": {"old": 2, "new": 4}, "x.p50_ms": {"old": 1.0, "new": 2.0}},
            "reports/eval.json": {"classifier.environment.threads": {"old": 1, "new": 2}},
            "reports/noise.json": {"metrics.a.band": {"old": 1, "new": 2}}}
    assert [row.name for row in C.metric_rows(diff, [])[0]] == ["reports/bench.json:x.p50_ms"]


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
    text = X.fold_table(["Experiment", *columns], rows)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 200, "\n".join(lines)
    assert folded_cells(text) == {(row[0], column): cell for row in rows for column, cell in zip(columns, row[1:])}
    assert text.count("| Experiment") > 1  # folded: the experiment column repeats in every block


def test_a_cell_too_wide_for_any_block_is_cut_not_the_line():
    text = X.fold_table(["Experiment", "p" * 300, "short"], [["e" * 250, "1", "2"], ["main", "3", "4"]])
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
    assert X.experiment_columns(show, gates) == (
        [f"finetune.a_rather_long_parameter_name_{p}" for p in sorted(range(1, 12), key=str)]
        + [f"reports/eval.json:classifier.metric_{m}" for m in range(8)])


# ---------------------------------------------------------------- signal or noise, on constructed revisions

N, BASE_RIGHT = 200, 140  # base: right on the first 140 of 200 examples


def predictions(right: set[int], order=range(N)) -> str:
    """A classifier's per-example file (lifecycle.examples): label 1 everywhere, right on the examples in `right`."""
    lines = [json.dumps({"id": f"ex-{i:03d}", "label": 1, "probabilities": [0.1, 0.9] if i in right else [0.7, 0.3]})
             for i in order]
    return "\n".join(lines) + "\n"


def commit_run(repo, branch: str, right: set[int], margin: float, order=range(N), cpu: str = "cpu-a",
               p50_ms: float = 3.0, noise: dict | None = None) -> None:
    """One run as a branch off main (main itself first): eval.json, its examples, bench.json and maybe noise.json."""
    if branch != "main":
        git(repo, "checkout", "-q", "-b", branch, "main")
    report = {"classifier": {"accuracy": len(right) / N, "margin_over_baselines": margin, "test_examples": N}}
    (repo / "reports/eval.json").write_text(json.dumps(report))
    (repo / "reports/examples/eval/classifier.jsonl").write_text(predictions(right, order))
    (repo / "reports/bench.json").write_text(json.dumps({"environment": {"cpu": cpu, "threads": 2},
                                                          "classifier": {"p50_ms": p50_ms}}))
    if noise is not None:
        (repo / "reports/noise.json").write_text(json.dumps(noise))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", branch)
    git(repo, "checkout", "-q", "main")


SIGNIFICANT_GATES = [{"metric": "reports/eval.json:classifier.accuracy", "fail_if": "significant"},
                     {"metric": "reports/eval.json:classifier.margin_over_baselines", "fail_if": "significant"}]
NOISE = {"seeds": [1, 2, 3], "runs": ["abc1234", "noise-seed-2", "noise-seed-3"], "confidence": 0.95,
         "environment": {}, "metrics": {
             "reports/eval.json:classifier.accuracy": {"values": [0.6, 0.8, 0.7], "mean": 0.7, "sd": 0.1,
                                                       "band": 0.35, "gated": True},
             "reports/eval.json:classifier.margin_over_baselines": {"values": [0, 0, 0], "mean": 0, "sd": 0.004,
                                                                    "band": 0.01, "gated": True}}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A git + DVC repository whose main holds a base run and whose branches each hold one head:
    shuffled (the same predictions in another order, two of them changed), better (40 more right), worse (40 fewer
    right, the margin crossing zero), other-cpu (better, benchmarked on another CPU), noisy (better, with a noise
    estimate whose band for accuracy is wider than the change), broken (an examples file with a line that is no
    JSON)."""
    repo = tmp_path_factory.mktemp("runs")
    git(repo, "init", "-q", "-b", "main")
    dvc(repo, "init", "-q")
    (repo / "dvc.yaml").write_text("metrics:\n  - reports/eval.json\n  - reports/bench.json\n")
    (repo / "reports/examples/eval").mkdir(parents=True)
    write_params(repo, {"seed": 1, "gates": SIGNIFICANT_GATES})
    base = set(range(BASE_RIGHT))
    commit_run(repo, "main", base, margin=-0.01)
    commit_run(repo, "shuffled", base - {0, 1} | {150, 151, 152}, margin=-0.01, order=reversed(range(N)))
    commit_run(repo, "better", base | set(range(140, 180)), margin=0.02)
    commit_run(repo, "worse", set(range(100)), margin=0.02 - 0.05)
    commit_run(repo, "other-cpu", base | set(range(140, 180)), margin=0.02, cpu="cpu-b", p50_ms=9.0)
    commit_run(repo, "noisy", base | set(range(140, 180)), margin=0.02, noise=NOISE)
    git(repo, "checkout", "-q", "-b", "broken", "main")
    with open(repo / "reports/examples/eval/classifier.jsonl", "a") as examples:
        examples.write("{not json\n")
    (repo / "reports/eval.json").write_text(json.dumps({"classifier": {"accuracy": 0.69}}))
    git(repo, "commit", "-qam", "broken")
    git(repo, "checkout", "-q", "main")
    return repo


def compare_runs(repo, head: str, tmp_path, *flags: str) -> tuple[subprocess.CompletedProcess, str]:
    result = run_stage("compare", repo, "--base", "main", "--head", head, "--out", str(tmp_path), *flags)
    page = tmp_path / "compare.md"
    return result, page.read_text() if page.exists() else ""


ACCURACY, MARGIN = "reports/eval.json:classifier.accuracy", "reports/eval.json:classifier.margin_over_baselines"


def test_the_same_predictions_shuffled_are_within_noise(runs, tmp_path):
    result, page = compare_runs(runs, "shuffled", tmp_path)
    assert result.returncode == 0, result.stderr
    row = table_rows(page, "other")[ACCURACY]
    assert row[:2] == ["0.7", "0.705"] and row[-1] == "⚪ within noise", row
    assert re.fullmatch(r"\+0\.005 \[-?\S+, \+\S+\] p=1", row[2]), row[2]  # b = 2, c = 3
    assert "`reports/examples/eval/classifier.jsonl` (200 pairs)" in page
    assert table_rows(page, "Significant changes") == {}


def test_a_clearly_better_head_is_significant(runs, tmp_path):
    result, page = compare_runs(runs, "better", tmp_path)
    assert result.returncode == 0, result.stderr
    row = table_rows(page, "Significant changes")[ACCURACY]
    assert row[-1] == "🟢 better" and row[3] == "+28.57%", row
    low = float(re.match(r"\+0\.2 \[\+(\S+), \+\S+\] p=\S+", row[2]).group(1))
    assert 0 < low < 0.2
    # no per-example file and no noise band: the margin's change is not judged, and its Δ % is blank across zero
    margin = table_rows(page, "other")[MARGIN]
    assert margin == ["-0.01", "0.02", "+0.03", "", "no noise estimate"], margin
    gates = table_rows(page, "Gates")
    assert gates[ACCURACY][-2:] == ["not significantly worse", "✅"]
    assert gates[MARGIN][-1] == "✅ no noise estimate: cannot judge"
    assert "%" not in "".join(gates[MARGIN]) and "-200" not in page
    assert "different hardware" not in page


def test_a_significance_gate_fails_only_when_significantly_worse(runs, tmp_path):
    for head in ("shuffled", "better"):
        result, _ = compare_runs(runs, head, tmp_path, "--fail-on-gate")
        assert result.returncode == 0, (head, result.stderr)
    result, page = compare_runs(runs, "worse", tmp_path, "--fail-on-gate")
    assert result.returncode == 1
    failed = [line for line in result.stderr.splitlines() if line.startswith("gate failed")]
    assert len(failed) == 1 and failed[0].startswith(
        f"gate failed: {ACCURACY} is significantly worse: 0.7 → 0.5 (Δ -0.2 ["), failed
    assert failed[0].endswith("), needs not significantly worse")
    assert table_rows(page, "Gates")[ACCURACY][-1] == "❌"
    assert table_rows(page, "Significant changes")[ACCURACY][-1] == "🔴 worse"


def test_a_change_inside_the_seed_band_is_within_noise_even_when_the_paired_test_says_otherwise(runs, tmp_path):
    result, page = compare_runs(runs, "noisy", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "reports/noise.json of `noisy` (seeds 1, 2, 3; 95%)" in page
    accuracy = table_rows(page, "other")[ACCURACY]
    assert accuracy[-1] == "⚪ within noise" and accuracy[2].endswith("±0.35"), accuracy  # +0.2 < 0.35
    margin = table_rows(page, "Significant changes")[MARGIN]  # no examples, but +0.03 is beyond its band of 0.01
    assert margin[2:] == ["+0.03 ±0.01", "", "🟢 better"], margin
    assert table_rows(page, "Gates")[MARGIN][-1] == "✅"


def test_other_hardware_makes_timings_not_comparable(runs, tmp_path):
    result, page = compare_runs(runs, "other-cpu", tmp_path)
    assert result.returncode == 0, result.stderr
    assert page.splitlines()[2] == ("> ⚠️ base and head ran on different hardware: cpu: cpu-a → cpu-b; speed "
                                    "figures are not comparable")
    assert table_rows(page, "other")["reports/bench.json:classifier.p50_ms"][-1] == "not comparable"
    assert table_rows(page, "Significant changes")[ACCURACY][-1] == "🟢 better"  # quality is still compared
    assert "environment" not in "".join(table_rows(page))


def test_a_broken_examples_file_is_one_line_naming_file_revision_and_row(runs, tmp_path):
    result, _ = compare_runs(runs, "broken", tmp_path)
    assert the_error(result).startswith("error: reports/examples/eval/classifier.jsonl at broken: row 201: not valid "
                                        "JSON"), result.stderr


def test_significant_timings_and_interval_bounds_are_folded_below_the_figures():
    """A run on a busy machine moves every timing beyond its band: the figures a reviewer must read stay on top."""
    rows = [V.MetricRow("reports/bias.json:classifier.parity.value", 0.01, 0.3, sign=-1, band=0.02),
            V.MetricRow("reports/bias.json:classifier.parity.ci_high", 0.02, 0.4, sign=-1, band=0.03),
            V.MetricRow("reports/bench.json:classifier.pytorch.p50_ms", 10.0, 30.0, sign=-1, band=2.0),
            V.MetricRow("reports/eval.json:classifier.accuracy", 0.70, 0.71, sign=+1, band=0.08)]
    page = "\n".join(C.significant_section(rows))
    top, folded = page.split("<details>")
    assert "classifier.parity.value" in top and "p50_ms" not in top and "ci_high" not in top
    assert "2 more beyond their noise: 1 timings (was either machine busy?), 1 interval bounds" in folded
    assert "p50_ms" in folded and "ci_high" in folded and "accuracy" not in page  # within noise: not here
