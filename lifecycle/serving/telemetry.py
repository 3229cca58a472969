"""What the server tells about itself: Prometheus metrics and the PII-scrubbed request log."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from lifecycle.corpus import scrub_pii


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llm_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("llm_request_latency_seconds", "request latency", ["endpoint"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.tokens = Counter("llm_tokens", "prompt and completion tokens", ["kind"], registry=r)
        self.batch_size = Histogram("llm_batch_size", "jobs per model call", ["task"], registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.failed_batches = Counter("llm_failed_batches", "model calls that raised (batched: each job reruns alone)",
                                      ["task", "batched"], registry=r)
        self.cache = Counter("llm_cache", "LRU cache lookups of deterministic requests", ["endpoint", "result"],
                             registry=r)
        self.errors = Counter("llm_errors", "error responses by type", ["type"], registry=r)
        self.filtered = Counter("llm_output_filtered", "output filter replacements by rule", ["rule"], registry=r)
        self.variant = Counter("llm_variant_requests", "requests routed to each variant", ["variant"], registry=r)


class RequestLog:
    """Append-only JSONL with personal data scrubbed from every text field. Each record names the model that served
    it (`model`: variant and content hash, see Served.model), so that monitor can refuse a log of another model."""
    TEXT_FIELDS = ("prompt", "text", "completion")

    def __init__(self, path: str | None):
        self.path, self.lock, self.file = (Path(path) if path else None), threading.Lock(), None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        record = {k: scrub_pii(v)[0] if k in self.TEXT_FIELDS and isinstance(v, str) else v for k, v in record.items()}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock:
            self.opened().write(line)
            self.file.flush()  # readers (monitor, a tail) see whole records at once

    def opened(self):
        """The log, open for appending: opened again when the file was moved or deleted (rotated), so that records
        never go to a file no longer at `path`."""
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if self.file is None or current != os.fstat(self.file.fileno()).st_ino:
            if self.file is not None:
                self.file.close()
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across records
        return self.file
