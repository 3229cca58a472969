"""POST /v1/classify: each text's label and scores, from the cache or a batched forward of the classifier; logged."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here

from lifecycle.serving.api import ApiError, ClassifyRequest, parse_body, within
from lifecycle.serving.services import Services


class Classifications:
    def __init__(self, services: Services):
        self.services = services

    async def classify(self, request: Request):  # one result per input text, in order (no docstring: see completions)
        settings, start = self.services.settings, time.perf_counter()
        req = await parse_body(request, ClassifyRequest, settings.max_body_bytes)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts:
            raise ApiError(400, "Invalid value for 'input': at least one text is required.", param="input")
        variant = self.services.router.pick(req.model, req.user or uuid.uuid4().hex)
        results = await within(asyncio.gather(*(self.classify_one(variant, t) for t in texts)),
                               settings.request_timeout_s)
        self.log_classifications(variant, texts, results, time.perf_counter() - start)
        return {"object": "list", "model": req.model or settings.model_name,
                "data": [{"index": i, "label": r["label"], "score": r["scores"][r["label"]], "scores": r["scores"]}
                         for i, r in enumerate(results)]}

    async def classify_one(self, variant: str, text: str) -> dict:
        cache_key = json.dumps(["classify", variant, text])
        hit = self.services.cache.get(cache_key)
        self.services.metrics.cache.labels("classify", "hit" if hit else "miss").inc()
        if hit is None:
            hit = await self.services.batcher.submit(("classify", variant), {"text": text})
            self.services.cache.put(cache_key, hit)
        return hit

    def log_classifications(self, variant: str, texts: list[str], results: list[dict], latency: float) -> None:
        for text, r in zip(texts, results):
            self.services.request_log.write({"time": time.time(), "endpoint": "classify", "variant": variant,
                                             "text": text, "label": r["label"], "score": r["scores"][r["label"]],
                                             "latency_ms": round(1000 * latency, 2), "outcome": "ok"})
