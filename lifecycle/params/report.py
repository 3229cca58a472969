"""The `report` section (the model card's prose) and the review's `gates`."""
from __future__ import annotations

from pydantic import Field, model_validator

from lifecycle.params.base import Section, between


class ReportParams(Section):
    """What the model card says that no metric can: who the model is for, and what it must not be used for."""
    intended_use: str = "A demonstration of a reproducible LLM lifecycle; not for decisions about people."
    licences: dict[str, str] = Field(default_factory=dict, description="data source name -> its licence (collect's "
                                     "sources, and any other data the run uses, e.g. the audit's)")
    out_of_scope: list[str] = Field(default_factory=list, description="uses the model is not meant for")
    limitations: list[str] = Field(default_factory=list, description="known limitations, one sentence each")
    dpi: between(50, 300, int) = Field(100, description="resolution of the report's PNG figures")


class Gate(Section):
    """A quality gate on one metric of the head run: `file:dotted.key` at least `min` and/or at most `max`."""
    metric: str = Field(description="e.g. reports/eval.json:classifier.accuracy")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _well_formed(self):
        if ":" not in self.metric or not all(self.metric.split(":", 1)):
            raise ValueError(f"metric = {self.metric!r}: must be 'file:key', "
                             "e.g. 'reports/eval.json:classifier.accuracy'")
        if self.min is None and self.max is None:
            raise ValueError(f"metric = {self.metric!r}: needs 'min' or 'max'")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min = {self.min} is above max = {self.max}")
        return self
