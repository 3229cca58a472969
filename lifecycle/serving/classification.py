"""POST /v1/classify: each text's label and scores, from the cache or a batched forward of the classifier; logged."""
from __future__ import annotations

import json
import time
import uuid

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse

from lifecycle.serving.api import ClassifyRequest, invalid_value, parse_body, within
from lifecycle.serving.services import Services


class Classifications:
    def __init__(self, services: Services):
        self.services = services

    async def classify(self, request: Request):  # one result per input text, in order (no docstring: see completions)
        settings, start = self.services.settings, time.perf_counter()
        req = await parse_body(request, ClassifyRequest, settings.max_body_bytes)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts:
            raise invalid_value("input", "at least one text is required.")
        variant = self.services.router.pick(req.model, req.user or uuid.uuid4().hex)
        ids = self.checked_ids(variant, texts, isinstance(req.input, list))
        results = await within([self.classify_one(variant, t, i) for t, i in zip(texts, ids)],
                               settings.request_timeout_s)
        self.log_classifications(variant, texts, results, time.perf_counter() - start)
        return JSONResponse({"object": "list", "model": req.model or settings.model_name,
                             "data": [{"index": i, "label": r["label"], "score": r["scores"][r["label"]],
                                       "scores": r["scores"]} for i, r in enumerate(results)]})

    def checked_ids(self, variant: str, texts: list[str], listed: bool) -> list[list[int]]:
        """Each text's token ids, every text checked before any is queued: a text the classifier cannot run (an
        empty one) is this request's 400, never its batch's failure."""
        model, ids = self.services.served[variant], []
        for i, text in enumerate(texts):
            ids.append(model.text_ids(text))
            if not ids[-1]:
                raise invalid_value("input", f"text {i} is empty." if listed else "the text is empty.")
        return ids

    async def classify_one(self, variant: str, text: str, ids: list[int]) -> dict:
        cache_key = json.dumps(["classify", variant, text])
        hit = self.services.cache.get(cache_key)
        self.services.metrics.cache.labels("classify", "hit" if hit else "miss").inc()
        if hit is None:
            hit = await self.services.batcher.submit(("classify", variant), {"text": text, "ids": ids})
            self.services.cache.put(cache_key, hit)
        return hit

    def log_classifications(self, variant: str, texts: list[str], results: list[dict], latency: float) -> None:
        model = self.services.served[variant].model("classifier")
        for text, r in zip(texts, results):
            self.services.request_log.write({"time": time.time(), "endpoint": "classify", "variant": variant,
                                             "model": model, "text": text, "label": r["label"],
                                             "score": r["scores"][r["label"]], "latency_ms": round(1000 * latency, 2),
                                             "outcome": "ok"})
