"""Continuous (iteration-level) batching of one ONNX language model, run as its own process so that its decode loop
never competes with the server's event loop for a core.

Every decode step runs the rows in flight as one batch: a request joins at the next step (its prompt prefilled, the
new rows' KV caches left-padded to the batch's length and stacked under it) and leaves as soon as it ends (EOS or its
max_tokens), its rows of the cache dropped and the columns no row needs any more trimmed. Each row keeps its own
positions and attention mask, so what it generates does not depend on the others.

The server talks to it over stdin/stdout, one JSON object per line (no pickle):
    in:  {"op": "add", "id", "ids", "max_tokens", "temperature", "top_p", "seed", "stream"}, {"op": "cancel", "id"},
         {"op": "stop"}
    out: {"ready": slots} once loaded, then, after any step that has something to tell,
         {"batches": [rows of each step since the last message], "tokens": [[id, [token, ...], done], ...],
          "errors": [[id, message], ...]}
A streamed request's tokens come at every step; any other request's come all at once, when it ends (a message per
step would cost the server a wake-up per step).

    python -m lifecycle.serving.decoder MODEL.onnx --eos 0 [--threads 1] [--slots 16]
numpy, onnx and onnxruntime are what it imports (and lifecycle.variants' session options): no torch, no transformers.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np

NICE = 5  # below the server's priority: the kernel prefers the event loop, which hands out tokens and takes new
#          requests, to a decode step (measured on 2 cores: about the same throughput, a slightly shorter tail)
ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass
class Row:
    """A request in flight: its sampling settings, and the tokens it has produced (kept until it ends, unless it
    streams)."""
    rid: int
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    stream: bool = False
    produced: int = 0
    held: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, request: dict) -> Row:
        return cls(request["id"], request["max_tokens"], request.get("temperature") or 0.0, request.get("top_p") or 1.0,
                   np.random.default_rng(seed_of(request.get("seed"))), bool(request.get("stream")))

    def sample(self, logits: np.ndarray) -> int:
        """A token from the top-p nucleus of softmax(logits / temperature)."""
        z = logits.astype(np.float64) / self.temperature
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        ranked = p[order]
        kept = np.cumsum(ranked) - ranked < self.top_p  # the smallest head whose mass reaches top_p (at least one)
        return int(self.rng.choice(order[kept], p=ranked[kept] / ranked[kept].sum()))


def seed_of(seed: int | None) -> int | None:
    """OpenAI's seeds are int64s; numpy's must not be negative: the same 64 bits, read unsigned."""
    return None if seed is None else seed % 2 ** 64


def left_pad(array: np.ndarray, width: int, axis: int) -> np.ndarray:
    """`array` with zeros before its entries along `axis`, up to `width`."""
    missing = width - array.shape[axis]
    if missing <= 0:
        return array
    shape = list(array.shape)
    shape[axis] = width
    padded = np.zeros(shape, array.dtype)
    padded[(slice(None),) * axis + (slice(missing, None),)] = array
    return padded


def last_position_head(path: str):
    """The graph of `path` with its LM head applied at the last position only, as bytes: a prefill then computes
    one row of logits per prompt, not one per prompt token (the head is 40 % of this model's prefill). Only where
    the head is one MatMul (optimum's fp32 exports, whose node is /lm_head/MatMul); other graphs (int8 ones split
    it into several nodes), and graphs whose weights are external files, load as they are (`path`)."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(path, load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return path  # weights in files of their own (a model over 2 GB): one protobuf could not hold them
    heads = [n for n in model.graph.node if n.name.startswith("/lm_head/")]
    if len(heads) != 1 or heads[0].op_type != "MatMul" or [o.name for o in model.graph.output][:1] != ["logits"]:
        return path
    head = heads[0]
    bounds = {"last_position_starts": -1, "last_position_ends": np.iinfo(np.int64).max, "last_position_axes": 1}
    model.graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), k) for k, v in bounds.items())
    cut = helper.make_node("Slice", [head.input[0], *bounds], ["last_position_hidden"], name="/lm_head/last_position")
    head.input[0] = "last_position_hidden"
    model.graph.node.insert(list(model.graph.node).index(head), cut)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "last_position"
    return model.SerializeToString()


class Decoder:
    """The batch in flight over one ONNX session with a KV cache (optimum's causal-LM export: input_ids,
    attention_mask, position_ids, past_key_values.N.key/value in; logits, present.N.key/value out).

    The cache has a row per slot. A request that ends frees its slot, and the next one to join is written into it
    in place, so that neither a row's end nor a join copies the whole cache; the batch is compacted only when half
    its slots are free, and the columns no row needs are cut once there are TRIM of them."""
    TRIM = 32

    def __init__(self, model: str, eos: int, threads: int | None = 1):
        import onnxruntime

        from lifecycle.variants import session_options
        self.session = onnxruntime.InferenceSession(last_position_head(model), session_options(threads),
                                                    providers=["CPUExecutionProvider"])
        self.past_inputs = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        if not self.past_inputs:
            raise ValueError(f"{model}: no past_key_values inputs (an ONNX export without the KV cache)")
        self.eos = eos
        self.rows: list[Row | None] = []            # each slot's request; None: a free slot
        self.past = list(self.empty_past(0).values())
        self.mask = np.zeros((0, 0), np.int64)   # (slots, cached positions): 0 on each row's left padding
        self.next = np.zeros(0, np.int64)        # each row's last token, fed at the next step
        self.pos = np.zeros(0, np.int64)         # and its position

    @property
    def active(self) -> int:
        return sum(row is not None for row in self.rows)

    def empty_past(self, n: int) -> dict[str, np.ndarray]:
        return {i.name: np.zeros((n, i.shape[1], 0, i.shape[3]), ONNX_TYPES.get(i.type, np.float32))
                for i in self.past_inputs}

    def prefill(self, requests: list[dict]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(last logits, present cache, mask) of the requests' prompts, run as one left-padded batch."""
        width = max(len(r["ids"]) for r in requests)
        ids = np.full((len(requests), width), self.eos, np.int64)
        mask = np.zeros((len(requests), width), np.int64)
        for i, r in enumerate(requests):
            ids[i, width - len(r["ids"]):], mask[i, width - len(r["ids"]):] = r["ids"], 1
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        logits, *present = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                                   "position_ids": positions, **self.empty_past(len(requests))})
        return logits[:, -1], present, mask

    def admit(self, requests: list[dict]) -> list[list]:
        """The requests' prompts prefilled and joined to the rows in flight, into free slots first; the first token
        of each ([id, tokens, done] events)."""
        logits, present, mask = self.prefill(requests)
        rows = [Row.of(r) for r in requests]
        tokens = self.choose(logits, rows)
        columns = max(self.mask.shape[1], mask.shape[1])
        self.past = [left_pad(a, columns, 2) for a in self.past]
        self.mask = left_pad(self.mask, columns, 1)
        present, mask = [left_pad(a, columns, 2) for a in present], left_pad(mask, columns, 1)
        free = [i for i, row in enumerate(self.rows) if row is None][:len(rows)]
        for j, slot in enumerate(free):  # in place
            for a, b in zip(self.past, present):
                a[slot] = b[j]
            self.mask[slot], self.next[slot], self.pos[slot] = mask[j], tokens[j], mask[j].sum()
            self.rows[slot] = rows[j]
        n = len(free)
        if n < len(rows):  # the batch grows by the rest
            self.past = [np.concatenate([a, b[n:]]) for a, b in zip(self.past, present)]
            self.mask = np.concatenate([self.mask, mask[n:]])
            self.next, self.pos = np.concatenate([self.next, tokens[n:]]), np.concatenate([self.pos, mask[n:].sum(1)])
        slots = free + list(range(len(self.rows), len(self.rows) + len(rows) - n))
        self.rows += rows[n:]
        return self.emit(slots, tokens)

    def step(self) -> list[list]:
        """One decode step of every row in flight ([id, tokens, done] events)."""
        self.compact()
        mask = np.concatenate([self.mask, np.ones((len(self.rows), 1), np.int64)], axis=1)
        feed = {"input_ids": self.next[:, None], "attention_mask": mask, "position_ids": self.pos[:, None],
                **{i.name: a for i, a in zip(self.past_inputs, self.past)}}
        logits, *self.past = self.session.run(None, feed)
        self.mask, self.pos = mask, self.pos + 1
        self.next = self.choose(logits[:, -1], self.rows)
        live = [i for i, row in enumerate(self.rows) if row is not None]
        return self.emit(live, self.next[live])

    @staticmethod
    def choose(logits: np.ndarray, rows: list[Row | None]) -> np.ndarray:
        tokens = logits.argmax(axis=-1).astype(np.int64)
        for i, row in enumerate(rows):
            if row is not None and row.temperature > 0:
                tokens[i] = row.sample(logits[i])
        return tokens

    def emit(self, slots: list[int], tokens: np.ndarray) -> list[list]:
        """The rows in `slots` produced `tokens`: the events of those that stream or ended; the rows that ended free
        their slots."""
        events = []
        for slot, token in zip(slots, tokens.tolist()):
            row = self.rows[slot]
            row.produced += 1
            row.held.append(token)
            done = token == self.eos or row.produced >= row.max_tokens
            if done or row.stream:
                events.append([row.rid, row.held, done])
                row.held = []
            if done:
                self.free(slot)
        return events

    def free(self, slot: int) -> None:
        self.rows[slot] = None
        self.mask[slot] = 0

    def compact(self) -> None:
        """Drops the free slots once they are half the batch, and the leading columns no row needs once there are
        TRIM of them (one copy of the cache for both)."""
        live = [i for i, row in enumerate(self.rows) if row is not None]
        keep = live if 2 * len(live) <= len(self.rows) else slice(None)
        used = np.flatnonzero(self.mask[keep].any(axis=0))
        start = int(used[0]) if used.size else self.mask.shape[1]
        if isinstance(keep, slice) and start < self.TRIM:
            return
        self.rows = [self.rows[i] for i in live] if isinstance(keep, list) else self.rows
        self.next, self.pos, self.mask = self.next[keep], self.pos[keep], self.mask[keep, start:]
        self.past = [np.ascontiguousarray(a[keep, :, start:]) for a in self.past]

    def cancel(self, rid: int) -> None:
        for slot, row in enumerate(self.rows):
            if row is not None and row.rid == rid:
                self.free(slot)

    def fail_all(self) -> list[int]:
        """Every row's id; the batch is emptied (a decode step failed)."""
        ids = [row.rid for row in self.rows if row is not None]
        for slot in range(len(self.rows)):
            self.free(slot)
        self.compact()
        return ids


def admitted(decoder: Decoder, requests: list[dict]) -> tuple[list[list], list[list]]:
    """(events, errors) of admitting `requests`: together, or, when that fails, each alone, so that only a request
    that cannot run fails."""
    try:
        return decoder.admit(requests), []
    except Exception as err:  # noqa: BLE001 - any failure is reported to its request, never the process
        if len(requests) == 1:
            return [], [[requests[0]["id"], f"{type(err).__name__}: {err}"]]
    events, errors = [], []
    for request in requests:
        e, f = admitted(decoder, [request])
        events += e
        errors += f
    return events, errors


class Inbox:
    """The server's messages on a file descriptor, read without a thread (one would compete with the decode loop for
    the GIL): whatever has come, or, when told to block, the next ones. End of file is a stop."""

    def __init__(self, fd: int):
        self.fd, self.buffer = fd, b""

    def __call__(self, block: bool) -> list[dict]:
        import select
        if select.select([self.fd], [], [], None if block else 0)[0]:
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return [{"op": "stop"}]
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def loop(decoder: Decoder, slots: int, receive, send) -> None:
    """Until told to stop (or stdin closes): take what came (`receive(block)`, blocking only when there is nothing
    to decode), admit waiting requests into free slots, decode a step, send what it produced."""
    waiting: collections.deque = collections.deque()
    batches: list[int] = []  # rows of each step not reported yet
    while True:
        for m in receive(not (decoder.active or waiting)):
            if m["op"] == "stop":
                return
            if m["op"] == "add":
                waiting.append(m)
            elif m["op"] == "cancel":
                waiting = collections.deque(w for w in waiting if w["id"] != m["id"])
                decoder.cancel(m["id"])
        events, errors = [], []
        if waiting and decoder.active < slots:
            joining = [waiting.popleft() for _ in range(min(len(waiting), slots - decoder.active))]
            events, errors = admitted(decoder, joining)
        if decoder.active:
            batches.append(decoder.active)
            try:
                events += decoder.step()
            except Exception as err:  # noqa: BLE001 - the batch's requests fail, the process goes on
                errors += [[rid, f"{type(err).__name__}: {err}"] for rid in decoder.fail_all()]
        if events or errors:
            send({"batches": batches, "tokens": events, "errors": errors})
            batches = []


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.serving.decoder", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="the LM's model.onnx (with past_key_values inputs)")
    parser.add_argument("--eos", type=int, required=True, help="the end-of-sequence token id")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0: every core)")
    parser.add_argument("--slots", type=int, default=16, help="rows decoded together at most")
    args = parser.parse_args(argv)
    os.nice(NICE)
    out = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol's own channel; anything printed goes to stderr
    os.dup2(2, 1)

    def send(message: dict) -> None:
        out.write(json.dumps(message, separators=(",", ":")) + "\n")
    try:
        decoder = Decoder(args.model, args.eos, args.threads or None)
    except Exception as err:  # noqa: BLE001 - the server names the failure in one line
        send({"fatal": f"{type(err).__name__}: {err}"})
        sys.exit(1)
    send({"ready": args.slots})
    loop(decoder, args.slots, Inbox(sys.stdin.fileno()), send)


if __name__ == "__main__":
    main()
