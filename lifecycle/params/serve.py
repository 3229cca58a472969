"""The `serve` and `monitor` sections."""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from lifecycle.params.base import Fraction, Section, at_least, between, positive

VariantName = Literal["pytorch", "onnx_fp32", "onnx_optimized", "int8_dynamic", "int8_static", "pruned"]


def _regex(value: str) -> str:
    import re
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"not a valid regular expression ({err})") from None
    return value


class OutputFilter(Section):
    """Applied to generated text: each match is replaced and counted in the metrics."""
    block_list: list[str] = Field(default_factory=list,
                                  description="words or phrases, matched case-insensitively as whole words")
    patterns: list[Annotated[str, AfterValidator(_regex)]] = Field(default_factory=list,
                                                                   description="regular expressions")
    replacement: str = "[filtered]"


class AbTest(Section):
    variants: list[VariantName] = Field(min_length=2, max_length=2, description="A and B")
    split: Fraction = Field(0.5, description="share of traffic routed to B")

    @model_validator(mode="after")
    def _distinct(self):
        if self.variants[0] == self.variants[1]:
            raise ValueError(f"variants: A and B are both {self.variants[0]!r}")
        return self


class ServeParams(Section):
    host: str = "127.0.0.1"
    port: between(0, 65535, int) = 8000
    model_name: str = Field("llm-lifecycle", description="the id clients pass as `model`")
    variant: VariantName = Field("onnx_optimized", description="served when `ab` is null")
    ab: AbTest | None = Field(None, description="serve two variants, routing requests by `split`")
    engine: Literal["continuous", "batch"] = Field(
        "continuous", description="continuous: an ONNX variant's completions decode in a worker process, requests "
                                  "joining and leaving the batch at every step; batch: dynamic micro-batching (the "
                                  "pytorch variant and classifications always use it)")
    max_batch_size: between(1, 1024, int) = Field(16, description="rows decoded together; 1 turns batching off")
    decoders: between(1, 64, int) = Field(2, description="continuous engine: decoder processes per variant, each with "
                                                         "max_batch_size / decoders slots and `threads` threads")
    threads: at_least(1) | None = Field(1, description="ONNX Runtime intra-op threads of the model; null: every core")
    max_wait_ms: between(0, 10_000) = Field(10.0, description="how long the first request of a batch waits for others")
    cache_size: at_least(0) = Field(1024, description="LRU entries for deterministic requests; 0: off")
    max_prompt_tokens: at_least(1) = 96
    max_tokens_limit: at_least(1) = Field(64, description="upper bound on a request's max_tokens")
    default_max_tokens: at_least(1) = 16
    max_body_bytes: at_least(256) = 65_536
    request_timeout_s: positive() = 30.0
    api_key_env: str | None = Field(None,
                                    description="name of the environment variable holding the API key; null: no key")
    output_filter: OutputFilter = OutputFilter()
    request_log: str | None = Field("logs/requests.jsonl", description="JSONL, PII scrubbed; null: no log")

    @model_validator(mode="after")
    def _tokens(self):
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(f"default_max_tokens = {self.default_max_tokens} is above "
                             f"max_tokens_limit = {self.max_tokens_limit}")
        return self


REQUESTS = "data/requests"  # the folder of request logs: a DVC dependency of monitor, so a new log re-runs it


class MonitorParams(Section):
    log: str | None = Field(None, description=f"the serve request log to read, copied under {REQUESTS}/ (the "
                                              "monitor stage's DVC dependency): the log of the server now serving the "
                                              "model; null: no traffic yet")
    reference: str = Field("data/prepared/finetune/train",
                           description="training texts (and labels) that requests are compared with: a .jsonl file "
                                       "or a folder of .jsonl shards (read in name order)")
    lm_reference: str = Field("data/prepared/pretrain/train",
                              description="the language model's training texts: a .jsonl file or a folder of shards")
    bins: between(2, 100, int) = Field(10, description="quantile bins of the reference's lengths for the PSI")
    psi_alert: positive() = Field(
        0.2, description="PSI above this is reported as drift (0.1 moderate, 0.2 major by convention)")

    @model_validator(mode="after")
    def _log_in_requests(self):
        parts = PurePosixPath(self.log).parts if self.log else ()
        if self.log and (parts[:2] != tuple(REQUESTS.split("/")) or ".." in parts or len(parts) < 3):
            raise ValueError(f"log = {self.log!r}: must lie under {REQUESTS}/ (the monitor stage's DVC dependency: a "
                             f"new log there re-runs it); copy the server's log (serve.request_log) into {REQUESTS}/")
        return self
