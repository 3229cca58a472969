"""POST /v1/completions: a request checked and routed, each prompt answered from the cache or by a batched
generation, cut at its stop sequences, filtered, counted, cached and logged; sent whole, or streamed live."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

from fastapi import Request  # at module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse, StreamingResponse

from lifecycle.serving.api import (
    ApiError,
    CompletionRequest,
    completion_body,
    completion_head,
    invalid_value,
    parse_body,
    server_error,
    timeout_error,
    within,
)
from lifecycle.serving.services import Services
from lifecycle.serving.streaming import DONE, LiveText, cut_at_stop, error_event, event, whole_answer_events

log = logging.getLogger("llm-lifecycle.serve")


@dataclass
class Call:
    """A completion request, checked: its prompts (and their token ids), the variant serving it, its token budget
    and stop sequences."""
    req: CompletionRequest
    prompts: list[str]
    variant: str
    max_tokens: int
    stops: list[str]
    start: float  # time.perf_counter() when the request came
    ids: list[list[int]] = field(default_factory=list)  # each prompt's, checked before any is queued


class Completions:
    def __init__(self, services: Services):
        self.services = services

    # A route's docstring would show in /openapi.json: comments only. Live server-sent events for one prompt not
    # answered yet (and no output filter to see the whole text); otherwise the whole answer, as one body or as a
    # stream of its tokens.
    async def completions(self, request: Request):
        start = time.perf_counter()
        call = self.checked(await parse_body(request, CompletionRequest, self.services.settings.max_body_bytes), start)
        if call.req.stream and len(call.prompts) == 1 and not self.services.output_filter.rules:
            cache_key, hit = self.cached(call, call.prompts[0])
            if hit is None:
                return StreamingResponse(self.live_events(call, call.ids[0], cache_key), media_type="text/event-stream")
        results = await self.complete_all(call)
        body = completion_body(completion_head(call.req, self.services.settings.model_name), results)
        if call.req.stream:
            tokenizer = self.services.served[call.variant].lm_tokenizer
            return StreamingResponse(whole_answer_events(body, tokenizer), media_type="text/event-stream")
        return JSONResponse(body)  # already plain JSON: FastAPI's encoder would walk it again

    def checked(self, req: CompletionRequest, start: float) -> Call:
        """The request's limits (the schema checked its ranges) and every prompt's tokens, before anything is queued:
        a request that cannot run is its own 400, never its batch's failure."""
        settings = self.services.settings
        if req.max_tokens is not None and req.max_tokens > settings.max_tokens_limit:
            raise ApiError(400, f"max_tokens = {req.max_tokens} is over the limit of {settings.max_tokens_limit}.",
                           param="max_tokens", code="invalid_value")
        max_tokens = req.max_tokens or settings.default_max_tokens
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if not prompts:
            raise invalid_value("prompt", "at least one prompt is required.")
        stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
        variant = self.services.router.pick(req.model, req.user or uuid.uuid4().hex)
        call = Call(req, prompts, variant, max_tokens, stops, start)
        call.ids = [self.checked_ids(call, prompt) for prompt in prompts]
        return call

    def checked_ids(self, call: Call, prompt: str) -> list[int]:
        """The prompt's token ids, within the prompt limit and, with max_tokens, the model's context."""
        model, max_tokens = self.services.served[call.variant], call.max_tokens
        limit = self.services.settings.max_prompt_tokens
        ids = model.prompt_ids(prompt)
        if len(ids) - 1 > limit:
            raise ApiError(400, f"The prompt has {len(ids) - 1} tokens, over the limit of {limit}.",
                           param="prompt", code="context_length_exceeded")
        if len(ids) + max_tokens > model.context:
            raise ApiError(400, f"This model's context is {model.context} tokens; the prompt ({len(ids) - 1}) plus "
                           f"max_tokens ({max_tokens}) do not fit.", param="max_tokens", code="context_length_exceeded")
        return ids

    def cached(self, call: Call, prompt: str) -> tuple[str | None, dict | None]:
        """(the cache key, or None for a request that is not deterministic; the cached answer, if any)."""
        req = call.req
        if not (req.temperature == 0 or req.seed is not None):
            return None, None
        key = json.dumps(["completions", call.variant, prompt, call.max_tokens, req.temperature, req.top_p, call.stops,
                          req.seed])
        hit = self.services.cache.get(key)
        self.services.metrics.cache.labels("completions", "hit" if hit else "miss").inc()
        return key, hit

    @staticmethod
    def job(call: Call, ids: list[int], **extra) -> tuple[tuple, dict]:
        """The batcher's (key, payload) of a generation: greedy ones batch together, a seeded one runs alone."""
        req, variant = call.req, call.variant
        if req.temperature == 0:
            key = ("generate", variant, "greedy")
        elif req.seed is not None:  # a seeded sample is reproducible only alone
            key = ("generate", variant, "seed", uuid.uuid4().hex)
        else:
            key = ("generate", variant, "sample", req.temperature, req.top_p)
        return key, {"ids": ids, "max_tokens": call.max_tokens, "temperature": req.temperature, "top_p": req.top_p,
                     "seed": req.seed, **extra}

    def finished(self, result: dict, ids: list[int], stops: list[str], cache_key: str | None) -> dict:
        """A generation's answer: cut at a stop sequence, filtered, counted and cached."""
        text, stopped = cut_at_stop(result["text"], stops)
        text, n_filtered = self.filtered(text)
        answer = {"text": text, "finish_reason": "stop" if stopped or result["eos"] else "length",
                  "completion_tokens": len(result["token_ids"]), "prompt_tokens": len(ids) - 1, "filtered": n_filtered}
        if cache_key is not None:
            self.services.cache.put(cache_key, answer)
        metrics = self.services.metrics
        metrics.tokens.labels("prompt").inc(len(ids) - 1)
        metrics.tokens.labels("completion").inc(len(result["token_ids"]))
        return answer

    def filtered(self, text: str) -> tuple[str, int]:
        """`text` through the output filter, and the number of replacements (counted by rule)."""
        text, hits = self.services.output_filter.apply(text)
        for rule, n in hits.items():
            self.services.metrics.filtered.labels(rule).inc(n)
        return text, sum(hits.values())

    async def complete_one(self, call: Call, prompt: str, ids: list[int]) -> dict:
        cache_key, hit = self.cached(call, prompt)
        if hit is not None:
            return {**hit, "cached": True}
        result = await self.services.generate(*self.job(call, ids))
        return {**self.finished(result, ids, call.stops, cache_key), "cached": False}

    async def complete_all(self, call: Call) -> list[dict]:
        """Every prompt's answer, within the request timeout; each prompt logged with the request's outcome."""
        outcome, results = "ok", []
        try:
            answers = [self.complete_one(call, p, ids) for p, ids in zip(call.prompts, call.ids)]
            results = await within(answers, self.services.settings.request_timeout_s)
        except ApiError as err:
            outcome = err.code or err.type
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            for i, prompt in enumerate(call.prompts):
                self.log_completion(call, prompt, results[i] if results else {}, outcome)
        return results

    def log_completion(self, call: Call, prompt: str, r: dict, outcome: str) -> None:
        self.services.request_log.write({
            "time": time.time(), "endpoint": "completions", "variant": call.variant,
            "model": self.services.served[call.variant].model("lm"), "prompt": prompt,
            "completion": r.get("text"), "prompt_tokens": r.get("prompt_tokens"),
            "completion_tokens": r.get("completion_tokens"), "finish_reason": r.get("finish_reason"),
            "filtered": r.get("filtered"), "cached": r.get("cached"), "temperature": call.req.temperature,
            "latency_ms": round(1000 * (time.perf_counter() - call.start), 2), "outcome": outcome})

    async def live_events(self, call: Call, ids: list[int], cache_key: str | None):
        """Server-sent events as the batch decodes (see LiveText), then the finish reason and [DONE]; the answer is
        logged, counted and cached as usual, and a timeout or failure becomes an error event. When the batch failed
        and this job ran again alone (see Batcher.run), the rest of the rerun's answer follows what was sent."""
        loop, queue, timeout = asyncio.get_running_loop(), asyncio.Queue(), self.services.settings.request_timeout_s
        task = asyncio.ensure_future(self.services.generate(*self.job(call, ids, stream=queue, loop=loop)))
        head, outcome, answer = completion_head(call.req, self.services.settings.model_name), "ok", {}
        text = LiveText(self.services.served[call.variant].lm_tokenizer, call.stops, call.max_tokens)
        deadline = call.start + timeout
        try:
            while (token := await asyncio.wait_for(queue.get(), max(0.0, deadline - time.perf_counter()))) is not None:
                if ready := text.push(token):
                    yield event(head, ready, None)
            result = await asyncio.wait_for(task, max(0.0, deadline - time.perf_counter()))
            answer = {**self.finished(result, ids, call.stops, cache_key), "cached": False}
            if not answer["text"].startswith(text.sent):  # a rerun (sampled) that differs from what was sent
                raise RuntimeError("the rerun of a failed batch's streamed row differs from the text already sent")
            if rest := text.rest(answer["text"]):
                yield event(head, rest, None)
            yield event(head, "", answer["finish_reason"])
        except TimeoutError:
            outcome = "timeout"
            yield error_event(timeout_error(timeout))
        except Exception:
            log.exception("streamed completion failed")
            outcome = "error"
            yield error_event(server_error())
        finally:
            self.log_completion(call, call.prompts[0], answer, outcome)
        yield DONE
