"""Streaming: decoded tokens handed from the model thread to each request, text released once whole and past any
stop sequence, and the server-sent events of OpenAI's completion stream."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lifecycle.serving.api import ApiError
    from lifecycle.serving.batching import Job

DONE = "data: [DONE]\n\n"


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the first stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(cuts)], True) if cuts else (text, False)


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


class RowStreamer:
    """A transformers streamer for a whole batch: each decoding step's token of row i goes to job i's queue (when
    the job streams), handed from the model thread to the event loop; None then ends every queue, also when
    generation fails."""

    def __init__(self, jobs: list[Job]):
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
        if self.ended:  # generate() ends it, and so does Served.generate (whatever failed)
            return
        self.ended = True
        for queue, loop in self.targets:
            if queue is not None:
                loop.call_soon_threadsafe(queue.put_nowait, None)


class LiveText:
    """One row's text as its tokens arrive: each token's text once it is whole and can no longer be part of a
    stop sequence; past EOS, a stop sequence or `max_tokens`, the row is done (the batch's other rows may still
    be decoding)."""

    def __init__(self, tokenizer, stops: list[str], max_tokens: int):
        self.tokenizer, self.stops, self.max_tokens = tokenizer, stops, max_tokens
        self.holdback = max((len(s) for s in stops), default=1) - 1  # characters that may yet begin a stop sequence
        self.tokens: list[int] = []
        self.sent, self.done = "", False

    def push(self, token: int) -> str:
        """The text `token` makes ready to send ('' when none)."""
        if self.done or token == self.tokenizer.eos_token_id:
            self.done = True
            return ""
        self.tokens.append(token)
        text, stopped = cut_at_stop(self.tokenizer.decode(self.tokens, skip_special_tokens=True), self.stops)
        self.done = stopped or len(self.tokens) >= self.max_tokens
        ready = text if self.done else text[:len(text) - self.holdback]
        if ready.endswith("\ufffd") or len(ready) <= len(self.sent):  # a character split across tokens waits
            return ""
        new, self.sent = ready[len(self.sent):], ready
        return new

    def rest(self, answer: str) -> str:
        """What of the final `answer` was not sent yet."""
        return answer[len(self.sent):]


# ---------------------------------------------------------------- server-sent events

def event(head: dict, text: str, finish_reason: str | None, index: int = 0) -> str:
    """One server-sent event of OpenAI's completion stream (`head`: id, object, created, model)."""
    return "data: " + json.dumps({**head, "choices": [{"text": text, "index": index, "logprobs": None,
                                                        "finish_reason": finish_reason}]}) + "\n\n"


def error_event(err: ApiError) -> str:
    return "data: " + json.dumps(err.body()) + "\n\n"


async def whole_answer_events(body: dict, tokenizer):
    """OpenAI's stream of an answer already whole (cached, several prompts, or an output filter to apply): one
    chunk per token of text, the last with finish_reason, then [DONE]."""
    head = {k: v for k, v in body.items() if k not in ("choices", "usage")}
    for choice in body["choices"]:
        for piece in token_pieces(choice["text"], tokenizer):
            yield event(head, piece, None, choice["index"])
        yield event(head, "", choice["finish_reason"], choice["index"])
    yield DONE
