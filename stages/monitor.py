"""monitor: drift of served traffic against the training data, and an A/B comparison of the variants served.

The serve request log (monitor.log) -> reports/monitor.json and
reports/plots/monitor_lengths_{classify,completions}.json:
- first, whether the log is this model's: every record must name a variant the serve params serve (serve.variant,
  serve.ab) with that variant's current content hash (the classifier's for classifications, the LM's for
  completions); a log of another model, or of an older server that named none, stops the stage (status "ok" and
  the hashes checked go to the report);
- classification requests against the classifier's training texts (monitor.reference): input length PSI,
  token unigram Jensen-Shannon divergence, and predicted-label distribution shift against the training labels;
- completion prompts against the language model's training text (monitor.lm_reference), cut into lines (a
  prompt is a line or two, not a whole document): prompt length PSI and token unigram divergence;
- per variant (serve.ab names two): requests, share of traffic against the split (sample-ratio check),
  latency p50/p95, outcomes, completion tokens, filtered outputs and label distribution.
monitor.log null (the default: nothing served yet) writes status "no traffic yet", zero counts and empty plots.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.drift import check_models, monitor, read_log, served_variants, tokenizer_function
from lifecycle.io import read_jsonl, write_json
from lifecycle.params.base import load
from lifecycle.params.serve import MonitorParams, ServeParams

log = logging.getLogger("llm-lifecycle.monitor")
TOKENIZER = Path("models/tokenizer")
OUT, PLOTS = Path("reports/monitor.json"), Path("reports/plots")


def traffic_report(settings: MonitorParams, serve: ServeParams) -> dict:
    """The report of the log monitor.log names, once every record is known to come from the current model."""
    rows = read_log(Path(settings.log))
    checked = check_models(rows, Path(settings.log), served_variants(serve))
    for path in (settings.reference, settings.lm_reference):
        if not Path(path).exists():
            raise StageError(f"params.yaml: monitor reference '{path}': not found (run the prepare stage)")
    reference = read_jsonl(settings.reference)
    lm_reference = [d["text"] for d in read_jsonl(settings.lm_reference)]
    report = monitor([record for _, record in rows], reference, lm_reference, tokenizer_function(TOKENIZER),
                     settings, serve.ab)
    return {**report, "model": checked}


def main() -> None:
    params = load(monitor=MonitorParams, serve=ServeParams)
    settings = params.monitor
    if settings.log is None:
        log.info("monitor.log is null: no traffic yet (point it at the serve request log once the model serves)")
        report = monitor([], [], [], None, settings, params.serve.ab)
    else:
        report = traffic_report(settings, params.serve)
    write_json(OUT, report)
    for endpoint in ("classify", "completions"):  # one reliability-style plot per endpoint: length shares per bin
        bins = report["drift"].get(endpoint, {}).get("length_bins", [])
        write_json(PLOTS / f"monitor_lengths_{endpoint}.json",
                   [{"bin": i, "max_tokens": "more" if b["max_tokens"] is None else b["max_tokens"],
                     "reference": b["reference"], "requests": b["requests"]} for i, b in enumerate(bins)])
    for name, d in report["drift"].items():
        log.info("%s: %d requests, length PSI %.3f, token JS %.3f%s", name, d["requests"], d["length_psi"],
                 d["token_js"], f", label PSI {d['labels']['psi']:.3f}" if "labels" in d else "")


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
