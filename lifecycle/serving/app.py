"""serve: an OpenAI-compatible HTTP API over a model variant, with dynamic micro-batching, an LRU cache,
limits, an optional API key, an output filter, Prometheus metrics and a PII-scrubbed request log.

    python -m stages.serve [--variant int8_dynamic] [--port 8000] [--max-batch-size 16] [--models-root models]

Endpoints: POST /v1/completions (stream: server-sent events), GET /v1/models, POST /v1/classify,
GET /healthz, /readyz, /metrics. Not a DVC stage: it runs until stopped.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lifecycle.params.base import error_lines, load
from lifecycle.params.serve import AbTest, OutputFilter as OutputFilterParams, ServeParams
from lifecycle.core import StageError, stable_fraction
from lifecycle.corpus import scrub_pii

log = logging.getLogger("llm-lifecycle.serve")


# ---------------------------------------------------------------- errors in OpenAI's shape

class ApiError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ---------------------------------------------------------------- request bodies

class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # OpenAI fields we do not implement (logprobs, user...) are ignored
    model: Optional[str] = None
    prompt: Union[str, list[str]]
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    stream: bool = False
    n: int = Field(1, ge=1, le=1)
    user: Optional[str] = None


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = None
    input: Union[str, list[str]]
    user: Optional[str] = None


# ---------------------------------------------------------------- pure pieces

class OutputFilter:
    """Block-list words (whole words, any case) and regular expressions replaced in generated text."""

    def __init__(self, settings: OutputFilterParams):
        self.rules = [(f"block:{w}", re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE)) for w in settings.block_list]
        self.rules += [(f"pattern:{p}", re.compile(p)) for p in settings.patterns]
        self.replacement = settings.replacement

    def apply(self, text: str) -> tuple[str, collections.Counter]:
        hits: collections.Counter = collections.Counter()
        for name, rule in self.rules:
            text, n = rule.subn(self.replacement, text)
            if n:
                hits[name] += n
        return text, hits


class LruCache:
    def __init__(self, size: int):
        self.size, self.items, self.lock = size, collections.OrderedDict(), threading.Lock()

    def get(self, key: str):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: str, value) -> None:
        if self.size == 0:
            return
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the first stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


def route(key: str, ab: AbTest | None, default: str) -> str:
    """The variant serving a request: B for a stable `split` share of keys (a user id keeps its variant)."""
    if ab is None:
        return default
    return ab.variants[1] if stable_fraction(key, salt="ab") < ab.split else ab.variants[0]


def token_pieces(text: str, tokenizer) -> list[str]:
    """`text` cut at token boundaries (one piece per token; a character split across tokens waits for its end)."""
    ids, pieces, sent = tokenizer(text, add_special_tokens=False)["input_ids"], [], ""
    for i in range(1, len(ids) + 1):
        prefix = tokenizer.decode(ids[:i])
        if prefix.endswith("\ufffd") and i < len(ids):
            continue
        pieces.append(prefix[len(sent):])
        sent = prefix
    return pieces


# ---------------------------------------------------------------- models and batched inference

class RowStreamer:
    """A transformers streamer for a whole batch: each decoding step's token of row i goes to job i's queue (when
    the job streams), handed from the model thread to the event loop; None then ends every queue, also when
    generation fails."""

    def __init__(self, jobs: list["Job"]):
        self.targets = [(j.payload.get("stream"), j.payload.get("loop")) for j in jobs]
        self.prompt_seen = self.ended = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first puts the prompts
            self.prompt_seen = True
            return
        for (queue, loop), token in zip(self.targets, value.reshape(len(self.targets), -1)[:, -1].tolist()):
            if queue is not None:
                loop.call_soon_threadsafe(queue.put_nowait, token)

    def end(self) -> None:
        if self.ended:  # generate() ends it, and so does Served.generate (when generate() fails)
            return
        self.ended = True
        for queue, loop in self.targets:
            if queue is not None:
                loop.call_soon_threadsafe(queue.put_nowait, None)


def length_groups(lengths: list[int], slack: float) -> list[list[int]]:
    """Indices grouped by length, shortest first: a group's longest is at most `slack` x its shortest (the padding
    a group's shortest rows pay)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= slack * max(1, lengths[groups[-1][0]]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class Served:
    """The language model and classifier of one variant."""
    PADDING_SLACK = 1.25  # classification rows batch together when the longest is at most 1.25x the shortest
    variant: str
    lm: Any
    lm_tokenizer: Any
    classifier: Any
    classifier_tokenizer: Any

    @property
    def context(self) -> int:
        config = self.lm.config
        return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1024)

    def prompt_ids(self, prompt: str) -> list[int]:
        # The models saw EOS before every document: it starts every prompt (so an empty prompt works too).
        return [self.lm_tokenizer.eos_token_id] + self.lm_tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def generate(self, jobs: list["Job"]) -> list[dict]:
        import torch
        tok = self.lm_tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        first = jobs[0].payload
        width = max(len(j.payload["ids"]) for j in jobs)
        ids = torch.tensor([[pad] * (width - len(j.payload["ids"])) + j.payload["ids"] for j in jobs])  # left padding
        mask = torch.tensor([[0] * (width - len(j.payload["ids"])) + [1] * len(j.payload["ids"]) for j in jobs])
        sampling = first["temperature"] > 0
        if first["seed"] is not None:
            torch.manual_seed(first["seed"])
        kwargs = dict(do_sample=True, temperature=first["temperature"], top_p=first["top_p"], top_k=0) if sampling \
            else dict(do_sample=False)
        streamer = RowStreamer(jobs) if any(j.payload.get("stream") is not None for j in jobs) else None
        try:
            with torch.no_grad():
                out = self.lm.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, eos_token_id=tok.eos_token_id,
                                       max_new_tokens=max(j.payload["max_tokens"] for j in jobs), streamer=streamer,
                                       **kwargs)
        finally:
            if streamer is not None:
                streamer.end()
        results = []
        for row, job in zip(out[:, width:].tolist(), jobs):
            row = row[:job.payload["max_tokens"]]
            ended = tok.eos_token_id in row
            row = row[:row.index(tok.eos_token_id)] if ended else row
            results.append({"token_ids": row, "text": tok.decode(row, skip_special_tokens=True), "eos": ended})
        return results

    def classify(self, jobs: list["Job"]) -> list[dict]:
        """One forward per group of similar lengths: a classification is compute-bound at batch 1 on a CPU,
        so padding short texts to the longest one in the batch would cost more than batching saves."""
        import torch
        tok = self.classifier_tokenizer
        encoded = tok([j.payload["text"] for j in jobs], truncation=True, max_length=self.classifier_context)["input_ids"]
        probs: list = [None] * len(jobs)
        for group in length_groups([len(ids) for ids in encoded], self.PADDING_SLACK):
            batch = tok.pad({"input_ids": [encoded[i] for i in group]}, return_tensors="pt")
            with torch.no_grad():
                for i, p in zip(group, torch.softmax(self.classifier(**batch).logits.float(), dim=-1).tolist()):
                    probs[i] = p
        labels = self.classifier.config.id2label
        return [{"label": labels[max(range(len(p)), key=p.__getitem__)], "scores": {labels[i]: v for i, v in enumerate(p)}}
                for p in probs]

    @property
    def classifier_context(self) -> int:
        config = self.classifier.config
        return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 512)


def load_served(variant: str, root: Path, threads: int | None = None) -> Served:
    """`variant`'s LM and classifier; `threads` caps ONNX Runtime's intra-op threads (serve.threads)."""
    from lifecycle.variants import load_classifier, load_lm
    lm, lm_tok = load_lm(variant, root, threads)
    classifier, classifier_tok = load_classifier(variant, root, threads)
    if classifier_tok.pad_token_id is None:
        classifier_tok.pad_token = classifier_tok.eos_token
    return Served(variant, lm, lm_tok, classifier, classifier_tok)


@dataclass
class Job:
    key: tuple          # jobs batch together only when their keys are equal
    payload: dict
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    """Dynamic micro-batching: the first job of a batch waits up to `max_wait_ms` for up to `max_batch_size - 1`
    others with the same key; the batch runs in one worker thread, so the event loop keeps serving."""

    def __init__(self, run_batch, max_batch_size: int, max_wait_ms: float, metrics: "Metrics", executor):
        self.run_batch, self.max_batch_size, self.max_wait = run_batch, max_batch_size, max_wait_ms / 1000
        self.metrics, self.executor = metrics, executor
        self.queue: asyncio.Queue = asyncio.Queue()
        self.held: collections.deque = collections.deque()  # jobs that did not fit the last batch's key

    async def submit(self, key: tuple, payload: dict) -> Any:
        job = Job(key, payload, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def next_batch(self) -> list[Job]:
        first = self.held.popleft() if self.held else await self.queue.get()
        batch, others = [first], collections.deque()
        for job in list(self.held):
            if len(batch) < self.max_batch_size and job.key == first.key:
                batch.append(job)
            else:
                others.append(job)
        self.held = others
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                job = self.queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.queue.get(), remaining)
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            (batch if job.key == first.key else self.held).append(job)
        return batch

    async def work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [j for j in await self.next_batch() if not j.future.done()]  # timed-out jobs are dropped
            if not batch:
                continue
            task = batch[0].key[0]
            self.metrics.batch_size.labels(task).observe(len(batch))
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, batch)
            except Exception as err:  # one bad batch fails its requests, never the server
                log.exception("batch of %d %s jobs failed", len(batch), task)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            for job, result in zip(batch, results):
                if not job.future.done():
                    job.future.set_result(result)


# ---------------------------------------------------------------- metrics and request log

class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llm_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r)
        self.latency = Histogram("llm_request_latency_seconds", "request latency", ["endpoint"], registry=r,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.tokens = Counter("llm_tokens", "prompt and completion tokens", ["kind"], registry=r)
        self.batch_size = Histogram("llm_batch_size", "jobs per model call", ["task"], registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.cache = Counter("llm_cache", "LRU cache lookups of deterministic requests", ["endpoint", "result"], registry=r)
        self.errors = Counter("llm_errors", "error responses by type", ["type"], registry=r)
        self.filtered = Counter("llm_output_filtered", "output filter replacements by rule", ["rule"], registry=r)
        self.variant = Counter("llm_variant_requests", "requests routed to each variant", ["variant"], registry=r)


class RequestLog:
    """Append-only JSONL with personal data scrubbed from every text field."""
    TEXT_FIELDS = ("prompt", "text", "completion")

    def __init__(self, path: str | None):
        self.path, self.lock = (Path(path) if path else None), threading.Lock()
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        record = {k: scrub_pii(v)[0] if k in self.TEXT_FIELDS and isinstance(v, str) else v for k, v in record.items()}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)


# ---------------------------------------------------------------- the app

def error_response(err: ApiError):
    from fastapi.responses import JSONResponse
    return JSONResponse(err.body(), status_code=err.status)


def create_app(settings: ServeParams, served: dict[str, Served]):
    """The FastAPI app over already-loaded variants (keyed by variant name)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    metrics, cache, request_log = Metrics(), LruCache(settings.cache_size), RequestLog(settings.request_log)
    output_filter = OutputFilter(settings.output_filter)
    api_key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
    if settings.api_key_env and not api_key:
        raise StageError(f"params.yaml: serve.api_key_env = {settings.api_key_env!r}: the environment variable is unset or empty")
    default_variant = settings.ab.variants[0] if settings.ab else settings.variant
    model_ids = {settings.model_name: None, **{f"{settings.model_name}:{v}": v for v in served}}
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    state = {"ready": False}

    def run_batch(jobs: list[Job]) -> list[dict]:
        task, variant = jobs[0].key[:2]
        model = served[variant]
        return model.generate(jobs) if task == "generate" else model.classify(jobs)

    batcher = Batcher(run_batch, settings.max_batch_size, settings.max_wait_ms, metrics, executor)

    async def lifespan(app):
        worker = asyncio.create_task(batcher.work())
        state["ready"] = True
        yield
        state["ready"] = False
        worker.cancel()
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="llm-lifecycle", lifespan=lifespan)
    app.state.metrics, app.state.batcher = metrics, batcher

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Body size limit, API key, and metrics; any unexpected failure becomes a 500 in OpenAI's shape."""
        endpoint, start = request.url.path, time.perf_counter()
        try:
            if endpoint.startswith("/v1/"):
                if api_key:
                    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                    if not hmac.compare_digest(given.encode(), api_key.encode()):
                        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
                declared = request.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
                    raise ApiError(413, f"Request body of {declared} bytes is over the limit of {settings.max_body_bytes}.",
                                   code="body_too_large")
            response = await call_next(request)
        except ApiError as err:
            response = error_response(err)
        except Exception:  # never let a request take the server down
            log.exception("unhandled error on %s", endpoint)
            response = error_response(ApiError(500, "Internal server error.", type="server_error"))
        if response.status_code >= 400:
            metrics.errors.labels(str(response.status_code)).inc()
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        first = err.errors()[0]
        if first["type"] == "json_invalid":
            return error_response(ApiError(400, f"We could not parse the JSON body of your request ({first.get('ctx', {}).get('error', 'invalid JSON')}).",
                                           code="invalid_json"))
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return error_response(ApiError(400, f"Invalid value for '{param}': {first['msg']}.", param=param,
                                       code="invalid_value"))

    async def parse_body(request: Request, schema: type[BaseModel]):
        """The request body as `schema`: over the size limit -> 413, malformed or invalid -> 400 (by `invalid`)."""
        body = await request.body()  # a chunked body has no content-length: check what arrived
        if len(body) > settings.max_body_bytes:
            raise ApiError(413, f"Request body over the limit of {settings.max_body_bytes} bytes.", code="body_too_large")
        try:
            return schema.model_validate_json(body)
        except ValueError as err:  # pydantic's ValidationError, incl. malformed JSON
            raise RequestValidationError(err.errors()) from None

    def pick_variant(model: str | None, key: str) -> str:
        if model is not None and model not in model_ids:
            raise ApiError(404, f"The model '{model}' does not exist (available: {', '.join(model_ids)}).",
                           param="model", code="model_not_found")
        variant = (model_ids.get(model) if model else None) or route(key, settings.ab, default_variant)
        metrics.variant.labels(variant).inc()
        return variant

    async def wait(coro):
        try:
            return await asyncio.wait_for(coro, settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"The request took longer than {settings.request_timeout_s} s.", type="timeout",
                           code="timeout") from None

    def filtered(text: str) -> tuple[str, int]:
        text, hits = output_filter.apply(text)
        for rule, n in hits.items():
            metrics.filtered.labels(rule).inc(n)
        return text, sum(hits.values())

    # ------------------------------------------------ completions

    def checked_ids(model: Served, prompt: str, max_tokens: int) -> list[int]:
        ids = model.prompt_ids(prompt)
        if len(ids) - 1 > settings.max_prompt_tokens:
            raise ApiError(400, f"The prompt has {len(ids) - 1} tokens, over the limit of {settings.max_prompt_tokens}.",
                           param="prompt", code="context_length_exceeded")
        if len(ids) + max_tokens > model.context:
            raise ApiError(400, f"This model's context is {model.context} tokens; the prompt ({len(ids) - 1}) plus "
                           f"max_tokens ({max_tokens}) do not fit.", param="max_tokens", code="context_length_exceeded")
        return ids

    def cached(req: CompletionRequest, prompt: str, variant: str, max_tokens: int, stops: list[str]) -> tuple[str | None, dict | None]:
        """(the cache key, or None for a request that is not deterministic; the cached answer, if any)."""
        if not (req.temperature == 0 or req.seed is not None):
            return None, None
        key = json.dumps(["completions", variant, prompt, max_tokens, req.temperature, req.top_p, stops, req.seed])
        hit = cache.get(key)
        metrics.cache.labels("completions", "hit" if hit else "miss").inc()
        return key, hit

    def generation_job(req: CompletionRequest, variant: str, ids: list[int], max_tokens: int, **extra) -> tuple[tuple, dict]:
        if req.temperature == 0:
            key = ("generate", variant, "greedy")
        elif req.seed is not None:  # a seeded sample is reproducible only alone
            key = ("generate", variant, "seed", uuid.uuid4().hex)
        else:
            key = ("generate", variant, "sample", req.temperature, req.top_p)
        return key, {"ids": ids, "max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p,
                     "seed": req.seed, **extra}

    def finished(result: dict, ids: list[int], stops: list[str], cache_key: str | None) -> dict:
        """A generation's answer: cut at a stop sequence, filtered, counted and cached."""
        text, stopped = cut_at_stop(result["text"], stops)
        text, n_filtered = filtered(text)
        answer = {"text": text, "finish_reason": "stop" if stopped or result["eos"] else "length",
                  "completion_tokens": len(result["token_ids"]), "prompt_tokens": len(ids) - 1, "filtered": n_filtered}
        if cache_key is not None:
            cache.put(cache_key, answer)
        metrics.tokens.labels("prompt").inc(len(ids) - 1)
        metrics.tokens.labels("completion").inc(len(result["token_ids"]))
        return answer

    async def complete_one(prompt: str, req: CompletionRequest, variant: str, max_tokens: int, stops: list[str]) -> dict:
        ids = checked_ids(served[variant], prompt, max_tokens)
        cache_key, hit = cached(req, prompt, variant, max_tokens, stops)
        if hit is not None:
            return {**hit, "cached": True}
        result = await batcher.submit(*generation_job(req, variant, ids, max_tokens))
        return {**finished(result, ids, stops, cache_key), "cached": False}

    def log_completion(variant: str, prompt: str, r: dict, req: CompletionRequest, start: float, outcome: str) -> None:
        request_log.write({"time": time.time(), "endpoint": "completions", "variant": variant, "prompt": prompt,
                           "completion": r.get("text"), "prompt_tokens": r.get("prompt_tokens"),
                           "completion_tokens": r.get("completion_tokens"), "finish_reason": r.get("finish_reason"),
                           "filtered": r.get("filtered"), "cached": r.get("cached"), "temperature": req.temperature,
                           "latency_ms": round(1000 * (time.perf_counter() - start), 2), "outcome": outcome})

    def completion_body(req: CompletionRequest) -> dict:
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": req.model or settings.model_name}

    def event(body: dict, text: str, finish_reason: str | None, index: int = 0) -> str:
        """One server-sent event of OpenAI's completion stream (`body`: id, object, created, model)."""
        return "data: " + json.dumps({**body, "choices": [{"text": text, "index": index, "logprobs": None,
                                                            "finish_reason": finish_reason}]}) + "\n\n"

    async def live_events(req: CompletionRequest, prompt: str, variant: str, max_tokens: int, stops: list[str],
                          ids: list[int], cache_key: str | None, start: float):
        """Server-sent events as the batch decodes: each token's text once it is whole and can no longer be part
        of a stop sequence, then the finish reason and [DONE]; the answer is logged, counted and cached as usual."""
        tok, loop, queue = served[variant].lm_tokenizer, asyncio.get_running_loop(), asyncio.Queue()
        task = asyncio.ensure_future(batcher.submit(*generation_job(req, variant, ids, max_tokens, stream=queue, loop=loop)))
        body, tokens, sent, done, outcome, answer = completion_body(req), [], "", False, "ok", {}
        holdback = max((len(s) for s in stops), default=1) - 1  # characters that may yet begin a stop sequence
        deadline = start + settings.request_timeout_s
        try:
            while (token := await asyncio.wait_for(queue.get(), max(0.0, deadline - time.perf_counter()))) is not None:
                if done or token == tok.eos_token_id:  # the batch's other rows may still be decoding
                    done = True
                    continue
                tokens.append(token)
                text = tok.decode(tokens, skip_special_tokens=True)
                text, stopped = cut_at_stop(text, stops)
                done = stopped or len(tokens) >= max_tokens
                ready = text if done else text[:len(text) - holdback]
                if ready.endswith("\ufffd"):  # a character split across tokens waits for its end
                    continue
                if len(ready) > len(sent):
                    yield event(body, ready[len(sent):], None)
                    sent = ready
            answer = {**finished(await task, ids, stops, cache_key), "cached": False}
            if len(answer["text"]) > len(sent):
                yield event(body, answer["text"][len(sent):], None)
            yield event(body, "", answer["finish_reason"])
        except asyncio.TimeoutError:
            outcome = "timeout"
            yield "data: " + json.dumps(ApiError(504, f"The request took longer than {settings.request_timeout_s} s.",
                                                 type="timeout", code="timeout").body()) + "\n\n"
        except Exception:
            log.exception("streamed completion failed")
            outcome = "error"
            yield "data: " + json.dumps(ApiError(500, "Internal server error.", type="server_error").body()) + "\n\n"
        finally:
            log_completion(variant, prompt, answer, req, start, outcome)
        yield "data: [DONE]\n\n"

    @app.post("/v1/completions")
    async def completions(request: Request):
        start = time.perf_counter()
        req = await parse_body(request, CompletionRequest)
        if req.max_tokens is not None and req.max_tokens > settings.max_tokens_limit:
            raise ApiError(400, f"max_tokens = {req.max_tokens} is over the limit of {settings.max_tokens_limit}.",
                           param="max_tokens", code="invalid_value")
        max_tokens = req.max_tokens or settings.default_max_tokens
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise ApiError(400, "Invalid value for 'prompt': at least one prompt is required.", param="prompt")
        stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
        variant = pick_variant(req.model, req.user or uuid.uuid4().hex)
        if req.stream and len(prompts) == 1 and not output_filter.rules:  # live, unless a filter must see it whole
            ids = checked_ids(served[variant], prompts[0], max_tokens)
            cache_key, hit = cached(req, prompts[0], variant, max_tokens, stops)
            if hit is None:
                return StreamingResponse(live_events(req, prompts[0], variant, max_tokens, stops, ids, cache_key, start),
                                         media_type="text/event-stream")
        outcome, results = "ok", []
        try:
            results = await wait(asyncio.gather(*(complete_one(p, req, variant, max_tokens, stops) for p in prompts)))
        except ApiError as err:
            outcome = err.code or err.type
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            for i, prompt in enumerate(prompts):
                log_completion(variant, prompt, results[i] if results else {}, req, start, outcome)
        body = {**completion_body(req),
                "choices": [{"text": r["text"], "index": i, "logprobs": None, "finish_reason": r["finish_reason"]}
                            for i, r in enumerate(results)],
                "usage": {"prompt_tokens": sum(r["prompt_tokens"] for r in results),
                          "completion_tokens": sum(r["completion_tokens"] for r in results),
                          "total_tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in results)}}
        if req.stream:
            return StreamingResponse(stream_chunks(body, served[variant].lm_tokenizer), media_type="text/event-stream")
        return body

    async def stream_chunks(body: dict, tokenizer):
        """OpenAI's stream of an answer already whole (cached, several prompts, or an output filter to apply): one
        chunk per token of text, the last with finish_reason, then [DONE]."""
        head = {k: v for k, v in body.items() if k not in ("choices", "usage")}
        for choice in body["choices"]:
            for piece in token_pieces(choice["text"], tokenizer):
                yield event(head, piece, None, choice["index"])
            yield event(head, "", choice["finish_reason"], choice["index"])
        yield "data: [DONE]\n\n"

    # ------------------------------------------------ classification

    @app.post("/v1/classify")
    async def classify(request: Request):
        start = time.perf_counter()
        req = await parse_body(request, ClassifyRequest)
        texts = [req.input] if isinstance(req.input, str) else req.input
        if not texts:
            raise ApiError(400, "Invalid value for 'input': at least one text is required.", param="input")
        variant = pick_variant(req.model, req.user or uuid.uuid4().hex)

        async def one(text: str) -> dict:
            cache_key = json.dumps(["classify", variant, text])
            hit = cache.get(cache_key)
            metrics.cache.labels("classify", "hit" if hit else "miss").inc()
            if hit is None:
                hit = await batcher.submit(("classify", variant), {"text": text})
                cache.put(cache_key, hit)
            return hit

        results = await wait(asyncio.gather(*(one(t) for t in texts)))
        latency = time.perf_counter() - start
        for text, r in zip(texts, results):
            request_log.write({"time": time.time(), "endpoint": "classify", "variant": variant, "text": text,
                               "label": r["label"], "score": r["scores"][r["label"]],
                               "latency_ms": round(1000 * latency, 2), "outcome": "ok"})
        return {"object": "list", "model": req.model or settings.model_name,
                "data": [{"index": i, "label": r["label"], "score": r["scores"][r["label"]], "scores": r["scores"]}
                         for i, r in enumerate(results)]}

    # ------------------------------------------------ the rest

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "llm-lifecycle"}
                                           for m in model_ids]}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not state["ready"]:
            return JSONResponse({"status": "starting"}, status_code=503)
        return {"status": "ready", "variants": sorted(served), "queued": batcher.queue.qsize()}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# ---------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stages.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--variant", help="overrides serve.variant (and serve.ab)")
    parser.add_argument("--max-batch-size", type=int, help="overrides serve.max_batch_size (1: no batching)")
    parser.add_argument("--cache-size", type=int, help="overrides serve.cache_size")
    parser.add_argument("--request-log", help="overrides serve.request_log")
    parser.add_argument("--models-root", default="models", help="directory holding finetuned/, pretrained/, compressed/")
    return parser.parse_args(argv)


def settings_from(params: ServeParams, args: argparse.Namespace) -> ServeParams:
    """serve params with command-line overrides, validated like params.yaml."""
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "variant": args.variant,
                                   "max_batch_size": args.max_batch_size, "cache_size": args.cache_size,
                                   "request_log": args.request_log}.items() if v is not None}
    if args.variant:
        overrides["ab"] = None
    try:
        return ServeParams.model_validate({**params.model_dump(), **overrides})
    except ValidationError as err:
        raise StageError(error_lines(err, "command line", ServeParams)[0]) from None


def main(argv=None) -> None:
    import uvicorn
    args = parse_args(argv)
    settings = settings_from(load(serve=ServeParams).serve, args)
    variants = settings.ab.variants if settings.ab else [settings.variant]
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)  # a PyTorch variant gets the same cap as ONNX Runtime's
    served = {v: load_served(v, Path(args.models_root), settings.threads) for v in variants}
    app = create_app(settings, served)
    log.info("serving %s on http://%s:%d (batch <= %d, wait %s ms)", ", ".join(variants), settings.host, settings.port,
             settings.max_batch_size, settings.max_wait_ms)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
