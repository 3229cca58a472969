"""Which variant serves a request: the one its model id names, else the A/B split over a stable key."""
from __future__ import annotations

from collections.abc import Iterable

from lifecycle.core import stable_fraction
from lifecycle.params.serve import AbTest, ServeParams
from lifecycle.serving.api import ApiError
from lifecycle.serving.telemetry import Metrics


def route(key: str, ab: AbTest | None, default: str) -> str:
    """The variant serving a request: B for a stable `split` share of keys (a user id keeps its variant)."""
    if ab is None:
        return default
    return ab.variants[1] if stable_fraction(key, salt="ab") < ab.split else ab.variants[0]


class Router:
    """The model ids clients may name (serve.model_name: routed; `model_name:variant`: pinned) and their variants."""

    def __init__(self, settings: ServeParams, variants: Iterable[str], metrics: Metrics):
        self.ab, self.metrics = settings.ab, metrics
        self.default = settings.ab.variants[0] if settings.ab else settings.variant
        self.model_ids = {settings.model_name: None, **{f"{settings.model_name}:{v}": v for v in variants}}

    def pick(self, model: str | None, key: str) -> str:
        """The variant for a request naming `model` (None: the default id), routed by `key`; counted."""
        if model is not None and model not in self.model_ids:
            raise ApiError(404, f"The model '{model}' does not exist (available: {', '.join(self.model_ids)}).",
                           param="model", code="model_not_found")
        variant = (self.model_ids.get(model) if model else None) or route(key, self.ab, self.default)
        self.metrics.variant.labels(variant).inc()
        return variant
