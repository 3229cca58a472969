"""The models behind the API: one variant's language model and classifier, and their batched inference."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.serving.batching import Job, length_groups
from lifecycle.serving.streaming import RowStreamer


def positions(config, default: int) -> int:
    """A model's context length in tokens, as its config names it."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", default)


@dataclass
class Served:
    """The language model and classifier of one variant."""
    PADDING_SLACK = 1.25  # classification rows batch together when the longest is at most 1.25x the shortest
    variant: str
    lm: Any
    lm_tokenizer: Any
    classifier: Any
    classifier_tokenizer: Any
    sha256: dict[str, str] = field(default_factory=dict)  # kind (lm | classifier) -> model_sha256 of its directory
    registry: dict | None = None  # the registry version it came from (--model-ref): name, version, stage, commit
    lm_onnx: Path | None = None  # the LM's model.onnx (None for a PyTorch LM): what continuous batching decodes
    lm_config: Any = None  # the LM's config, when `lm` is None (its decoder processes load the model, not we)

    def model(self, kind: str) -> dict:
        """What a request-log record names as the model that served it: this variant and `kind`'s content hash
        (hashed once, at load; None for a model not loaded from a directory), and its registry version if any."""
        named = {"variant": self.variant, "sha256": self.sha256.get(kind)}
        return {**named, "registry": self.registry} if self.registry else named

    @property
    def context(self) -> int:
        return positions(self.lm.config if self.lm is not None else self.lm_config, 1024)

    @property
    def classifier_context(self) -> int:
        return positions(self.classifier.config, 512)

    @functools.cached_property
    def eos(self) -> int:
        return self.lm_tokenizer.eos_token_id  # looked up once: the tokenizer's __getattr__ costs on every request

    def prompt_ids(self, prompt: str) -> list[int]:
        # The models saw EOS before every document: it starts every prompt (so an empty prompt works too).
        tok = self.lm_tokenizer  # its Rust tokenizer straight away: the Python wrapper costs more than the encoding
        return [self.eos] + tok.backend_tokenizer.encode(prompt, add_special_tokens=False).ids

    def text_ids(self, text: str) -> list[int]:
        """A text's classifier token ids, cut to the classifier's context ([] for an empty text: no input to run)."""
        return self.classifier_tokenizer(text, truncation=True, max_length=self.classifier_context)["input_ids"]

    def generate(self, jobs: list[Job]) -> list[dict]:
        """One left-padded generate() for the batch; a streaming job's queue is ended whatever fails, so that its
        request never waits for tokens that will not come."""
        streamer = RowStreamer(jobs) if any(j.payload.get("stream") is not None for j in jobs) else None
        try:
            return self.generate_rows(jobs, streamer)
        finally:
            if streamer is not None:
                streamer.end()

    def generate_rows(self, jobs: list[Job], streamer: RowStreamer | None) -> list[dict]:
        import torch
        tok = self.lm_tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        first = jobs[0].payload
        width = max(len(j.payload["ids"]) for j in jobs)
        ids = torch.tensor([[pad] * (width - len(j.payload["ids"])) + j.payload["ids"] for j in jobs])  # left padding
        mask = torch.tensor([[0] * (width - len(j.payload["ids"])) + [1] * len(j.payload["ids"]) for j in jobs])
        sampling = first["temperature"] > 0
        if sampling and first["seed"] is not None:  # a seeded job runs alone (Completions.job)
            torch.manual_seed(first["seed"])
        kwargs = dict(do_sample=True, temperature=first["temperature"], top_p=first["top_p"], top_k=0) if sampling \
            else dict(do_sample=False)
        with torch.no_grad():
            out = self.lm.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, eos_token_id=tok.eos_token_id,
                                   streamer=streamer, max_new_tokens=max(j.payload["max_tokens"] for j in jobs),
                                   **kwargs)
        return [self.generated(row, job.payload["max_tokens"]) for row, job in zip(out[:, width:].tolist(), jobs)]

    def generated(self, row: list[int], max_tokens: int) -> dict:
        """One row of new tokens: cut at `max_tokens` and at EOS, and decoded."""
        row = row[:max_tokens]
        ended = self.eos in row
        row = row[:row.index(self.eos)] if ended else row
        return {"token_ids": row, "text": self.decoded(row), "eos": ended}

    def decoded(self, ids: list[int]) -> str:
        """lm_tokenizer.decode(ids, skip_special_tokens=True) of a fast tokenizer, by its Rust tokenizer directly."""
        tok = self.lm_tokenizer
        text = tok.backend_tokenizer.decode(ids, skip_special_tokens=True)
        return tok.clean_up_tokenization(text) if tok.clean_up_tokenization_spaces else text

    def classify(self, jobs: list[Job]) -> list[dict]:
        """One forward per group of similar lengths: a classification is compute-bound at batch 1 on a CPU,
        so padding short texts to the longest one in the batch would cost more than batching saves."""
        import torch
        tok = self.classifier_tokenizer
        encoded = [j.payload["ids"] if "ids" in j.payload else self.text_ids(j.payload["text"]) for j in jobs]
        probs: list = [None] * len(jobs)
        for group in length_groups([len(ids) for ids in encoded], self.PADDING_SLACK):
            batch = tok.pad({"input_ids": [encoded[i] for i in group]}, return_tensors="pt")
            with torch.no_grad():
                for i, p in zip(group, torch.softmax(self.classifier(**batch).logits.float(), dim=-1).tolist()):
                    probs[i] = p
        labels = self.classifier.config.id2label
        return [{"label": labels[max(range(len(p)), key=p.__getitem__)],
                 "scores": {labels[i]: v for i, v in enumerate(p)}} for p in probs]


def load_served(variant: str, root: Path, threads: int | None = None, decoded_elsewhere: bool = False) -> Served:
    """`variant`'s LM and classifier, and the content hash of each one's directory (the request log names them);
    `threads` caps ONNX Runtime's intra-op threads (serve.threads). `decoded_elsewhere` (serve.engine: continuous):
    an ONNX LM's session is not loaded here, only its config and tokenizer, since decoder processes run it."""
    from lifecycle.tokens import load_tokenizer
    from lifecycle.variants import ONNX_FILE, is_pytorch, load_classifier, load_lm, model_sha256, variant_dir
    lm_dir, lm_config = variant_dir("lm", variant, root), None
    if decoded_elsewhere and not is_pytorch(variant):
        from transformers import AutoConfig
        lm, lm_tok, lm_config = None, load_tokenizer(lm_dir), AutoConfig.from_pretrained(lm_dir)
    else:
        lm, lm_tok = load_lm(variant, root, threads)
    classifier, classifier_tok = load_classifier(variant, root, threads)
    if classifier_tok.pad_token_id is None:
        classifier_tok.pad_token = classifier_tok.eos_token
    sha256 = {kind: model_sha256(variant_dir(kind, variant, root)) for kind in ("lm", "classifier")}
    lm_onnx = None if is_pytorch(variant) else lm_dir / ONNX_FILE
    return Served(variant, lm, lm_tok, classifier, classifier_tok, sha256, lm_onnx=lm_onnx, lm_config=lm_config)


def run_batch(served: dict[str, Served], jobs: list[Job]) -> list[dict]:
    """A batch's model call: its variant's generate or classify (the key is (task, variant, ...))."""
    task, variant = jobs[0].key[:2]
    model = served[variant]
    return model.generate(jobs) if task == "generate" else model.classify(jobs)
