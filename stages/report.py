"""report: one page for the whole run (reports/report.md) and the model card (reports/MODEL_CARD.md).

Every metric and plot that dvc.yaml declares -> reports/report.md, reports/MODEL_CARD.md and reports/figures/ (a PNG
per plot with data, drawn from the Vega-Lite spec DVC makes of it, as `dvc plots show` would).
"""
from __future__ import annotations

import logging

import yaml

from lifecycle.core import StageError
from lifecycle.io import atomic_path
from lifecycle.params.base import load
from lifecycle.params.collect import CollectParams
from lifecycle.params.finetune import FinetuneParams
from lifecycle.params.model import ModelParams
from lifecycle.params.report import ReportParams
from lifecycle.params.serve import ServeParams
from lifecycle.review.card import KNOWN, MONITOR, model_card
from lifecycle.review.plots import workspace_specs
from lifecycle.review.report import (
    CARD,
    DVC_YAML,
    FIGURES,
    REPORT,
    declared_metrics,
    draw_all,
    read_reports,
    report_markdown,
)

log = logging.getLogger("llm-lifecycle.report")


def main() -> None:
    params = load(collect=CollectParams, finetune=FinetuneParams, model=ModelParams, serve=ServeParams,
                  report=ReportParams)
    if not DVC_YAML.exists():
        raise StageError(f"{DVC_YAML}: not found (run from the project root)")
    dvc = yaml.safe_load(DVC_YAML.read_text(encoding="utf-8"))
    # Known reports are read even before their stage's metrics are declared; the deps test keeps them in sync.
    paths = dict.fromkeys([*KNOWN.values(), MONITOR, *(p for p in declared_metrics(dvc) if p.endswith(".json"))])
    reports = read_reports(list(paths))
    specs = workspace_specs()  # dvc.yaml's plots as DVC makes them; reading them takes no lock (we run in `dvc repro`)
    with atomic_path(FIGURES, directory=True) as tmp:
        figures = draw_all(specs, tmp, params.report.dpi)
    for path, text in ((REPORT, report_markdown(params, reports, figures)), (CARD, model_card(params, reports))):
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    log.info("wrote %s, %s and %d figures from %d reports", REPORT, CARD, sum(map(len, figures.values())), len(reports))


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
