"""The parts of the server that every endpoint shares, built once from the serve settings."""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lifecycle.core import StageError
from lifecycle.params.serve import ServeParams
from lifecycle.serving.batching import Batcher
from lifecycle.serving.continuous import DecoderPool
from lifecycle.serving.engine import Served, run_batch
from lifecycle.serving.output import OutputFilter, ResultCache
from lifecycle.serving.routing import Router
from lifecycle.serving.telemetry import Metrics, RequestLog


def api_key_of(settings: ServeParams) -> str:
    """The key clients must send ('' when serve.api_key_env is unset): the value of the variable it names."""
    api_key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
    if settings.api_key_env and not api_key:
        raise StageError(f"params.yaml: serve.api_key_env = {settings.api_key_env!r}: "
                         "the environment variable is unset or empty")
    return api_key


@dataclass
class Services:
    settings: ServeParams
    served: dict[str, Served]  # the loaded variants, by name
    metrics: Metrics
    cache: ResultCache
    request_log: RequestLog
    output_filter: OutputFilter
    api_key: str
    router: Router
    executor: ThreadPoolExecutor  # the one model thread
    batcher: Batcher
    decoders: dict[str, DecoderPool]  # continuous batching of each ONNX LM variant (serve.engine: continuous)

    @classmethod
    def build(cls, settings: ServeParams, served: dict[str, Served]) -> Services:
        metrics, cache, request_log = Metrics(), ResultCache(settings.cache_size), RequestLog(settings.request_log)
        output_filter = OutputFilter(settings.output_filter)
        api_key = api_key_of(settings)
        router = Router(settings, served, metrics)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        batcher = Batcher(functools.partial(run_batch, served), settings.max_batch_size, settings.max_wait_ms, metrics,
                          executor)
        decoders = {name: DecoderPool(model, model.lm_onnx, settings.max_batch_size, settings.threads, metrics,
                                      settings.decoders)
                    for name, model in served.items() if settings.engine == "continuous" and model.lm_onnx}
        return cls(settings, served, metrics, cache, request_log, output_filter, api_key, router, executor, batcher,
                   decoders)

    async def generate(self, key: tuple, payload: dict) -> dict:
        """A checked generation (Completions.job's key and payload): by its variant's decoder process when it has one,
        else by the micro-batcher."""
        decoder = self.decoders.get(key[1])
        return await (decoder.submit(payload) if decoder else self.batcher.submit(key, payload))
