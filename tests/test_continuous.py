"""Continuous batching (lifecycle.serving.decoder, lifecycle.serving.continuous) on the tiny pipeline's ONNX LMs:
requests that join and leave the batch at any step generate what they generate alone and what optimum's generate()
gives; free slots are reused and the cache trimmed; the LM head at the last position only changes no logit; one bad
request fails alone; a decoder process that dies fails only what it held and is started again; a timed-out request
frees its slot."""
import contextlib
import json
import os
import signal
import time

import httpx
import numpy as np
import pytest

from lifecycle.params import schema as P
from lifecycle.serving.decoder import Decoder, Inbox, admitted, last_position_head, loop, seed_of
from lifecycle.variants import load_lm
from tests.test_serve import running

PROMPTS = ["The history of", "To be, or not", "Once upon a time there was a king who", "A", "The film is",
           "I think that the best way to"]


@pytest.fixture(scope="module")
def models(tiny_compressed):
    return tiny_compressed / "models"


def lm_file(models, variant: str) -> str:
    return str(models / "compressed" / "lm" / variant / "model.onnx")


def request(tok, i: int, prompt: str, max_tokens: int, **extra) -> dict:
    ids = [tok.eos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
    return {"id": i, "ids": ids, "max_tokens": max_tokens, "temperature": 0, "top_p": 1.0, "seed": None, **extra}


def decode(decoder: Decoder, requests: list[dict], join_every: int) -> dict[int, list[int]]:
    """Every request's tokens, the requests joining one by one every `join_every` steps."""
    got, waiting, step = {r["id"]: [] for r in requests}, list(requests), 0
    while waiting or decoder.active:
        events = decoder.admit([waiting.pop(0)]) if waiting and step % join_every == 0 else \
            (decoder.step() if decoder.active else [])
        for rid, tokens, _ in events:
            got[rid] += tokens
        step += 1
    return got


@pytest.mark.parametrize("variant", ["onnx_fp32", "int8_dynamic"])
def test_joining_at_any_step_generates_what_generate_gives(models, variant):
    import torch
    lm, tok = load_lm(variant, models, threads=1)
    requests = [request(tok, i, p, 12 - i) for i, p in enumerate(PROMPTS)]
    expected = {}
    for r in requests:
        out = lm.generate(input_ids=torch.tensor([r["ids"]]), attention_mask=torch.ones(1, len(r["ids"]), dtype=int),
                          max_new_tokens=r["max_tokens"], do_sample=False, pad_token_id=tok.eos_token_id,
                          eos_token_id=tok.eos_token_id)[0, len(r["ids"]):].tolist()
        expected[r["id"]] = out[:out.index(tok.eos_token_id) + 1] if tok.eos_token_id in out else out
    together = decode(Decoder(lm_file(models, variant), tok.eos_token_id), requests, join_every=3)
    alone = {r["id"]: decode(Decoder(lm_file(models, variant), tok.eos_token_id), [r], 1)[r["id"]] for r in requests}
    assert together == alone == expected


def test_ended_rows_free_slots_that_new_requests_reuse_and_the_cache_is_trimmed(models):
    _, tok = load_lm("onnx_fp32", models)
    decoder = Decoder(lm_file(models, "onnx_fp32"), tok.eos_token_id)
    long_prompt = "The history of the kingdom and of its people, " * 3
    decoder.admit([request(tok, 0, long_prompt, 3), request(tok, 1, "To be", 40)])
    while decoder.active == 2:
        decoder.step()
    assert len(decoder.rows) == 2 and decoder.rows[0] is None  # request 0 ended: its slot is free, nothing copied
    decoder.admit([request(tok, 2, "A", 5)])
    assert len(decoder.rows) == 2 and decoder.rows[0].rid == 2  # the new request took the free slot
    width = decoder.mask.shape[1]
    while decoder.active:
        decoder.step()
        assert decoder.mask.shape[1] <= max(width + 40, Decoder.TRIM + 45)
    assert decoder.rows and all(row is None for row in decoder.rows)
    decoder.compact()  # the next step's: every slot is free
    assert decoder.past[0].shape[0] == len(decoder.rows) == 0 and decoder.mask.shape == (0, 0)


def test_a_graph_with_external_weights_is_left_as_it_is(models, tmp_path):
    import onnx
    onnx.save(onnx.load(lm_file(models, "onnx_fp32")), tmp_path / "model.onnx", save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    assert last_position_head(str(tmp_path / "model.onnx")) == str(tmp_path / "model.onnx")


def test_the_head_at_the_last_position_changes_no_logit(models):
    import onnxruntime
    path = lm_file(models, "onnx_fp32")
    cut = last_position_head(path)
    assert isinstance(cut, bytes)  # an fp32 export: its head is one MatMul
    assert last_position_head(lm_file(models, "int8_dynamic")) == lm_file(models, "int8_dynamic")  # left as it is
    full, last = onnxruntime.InferenceSession(path), onnxruntime.InferenceSession(cut)
    ids = np.array([[0, 5, 9, 14, 3], [0, 0, 7, 8, 2]], np.int64)
    mask = np.array([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], np.int64)
    feed = {"input_ids": ids, "attention_mask": mask, "position_ids": np.maximum(np.cumsum(mask, 1) - 1, 0),
            **Decoder(path, 0).empty_past(2)}
    a, b = full.run(None, feed), last.run(None, feed)
    assert b[0].shape == (2, 1, a[0].shape[2])
    np.testing.assert_array_equal(a[0][:, -1:], b[0])
    for x, y in zip(a[1:], b[1:]):
        np.testing.assert_array_equal(x, y)


def test_a_seeded_sample_does_not_depend_on_its_batch(models):
    _, tok = load_lm("onnx_fp32", models)
    seeded = request(tok, 9, "The film is", 10, temperature=1.0, top_p=0.9, seed=-7)
    others = [request(tok, i, p, 10, temperature=0.8, top_p=0.95) for i, p in enumerate(PROMPTS[:4])]
    alone = decode(Decoder(lm_file(models, "onnx_fp32"), tok.eos_token_id), [seeded], 1)[9]
    crowded = decode(Decoder(lm_file(models, "onnx_fp32"), tok.eos_token_id), [*others, seeded], 1)[9]
    assert alone == crowded and len(alone) >= 1
    assert seed_of(-7) == 2 ** 64 - 7 and seed_of(5) == 5 and seed_of(None) is None


def test_a_request_that_cannot_run_fails_alone(models):
    _, tok = load_lm("onnx_fp32", models)
    decoder = Decoder(lm_file(models, "onnx_fp32"), tok.eos_token_id)
    bad = {**request(tok, 1, "x", 4), "ids": [0, 10 ** 9]}  # a token id past the vocabulary: ORT's Gather fails
    good = [request(tok, i, p, 4, stream=True) for i, p in ((0, "To be"), (2, "A"))]  # streamed: events at once
    events, errors = admitted(decoder, [good[0], bad, good[1]])
    assert [e[0] for e in events] == [0, 2] and [e[0] for e in errors] == [1] and "Gather" in errors[0][1]
    assert decoder.active == 2


def test_the_inbox_reads_whole_lines_and_stops_at_end_of_file():
    read, write = os.pipe()
    inbox = Inbox(read)
    os.write(write, b'{"op": "add", "id": 1}\n{"op": "can')
    assert inbox(block=True) == [{"op": "add", "id": 1}] and inbox(block=False) == []
    os.write(write, b'cel", "id": 1}\n')
    assert inbox(block=True) == [{"op": "cancel", "id": 1}]
    os.close(write)
    assert inbox(block=True) == [{"op": "stop"}]
    os.close(read)


def test_the_loop_admits_cancels_and_stops(models):
    import queue
    _, tok = load_lm("onnx_fp32", models)
    inbox, sent = queue.Queue(), []
    for i in range(5):  # more than the 2 slots: the rest wait for a free one
        inbox.put({"op": "add", **request(tok, i, PROMPTS[i], 6)})
    inbox.put({"op": "cancel", "id": 4})
    inbox.put({"op": "add", **request(tok, 5, "To be", 3, stream=True)})

    def send(message):
        sent.append(message)
        if sum(done for m in sent for _, _, done in m["tokens"]) == 5:
            inbox.put({"op": "stop"})
    def receive(block: bool) -> list[dict]:
        messages = [inbox.get()] if block else []
        while not inbox.empty():
            messages.append(inbox.get_nowait())
        return messages
    loop(Decoder(lm_file(models, "onnx_fp32"), tok.eos_token_id), 2, receive, send)
    ended = [rid for m in sent for rid, _, done in m["tokens"] if done]
    assert sorted(ended) == [0, 1, 2, 3, 5]  # 4 was cancelled while it waited
    assert max(b for m in sent for b in m["batches"]) == 2
    streamed = [tokens for m in sent for rid, tokens, _ in m["tokens"] if rid == 5]
    assert all(len(t) == 1 for t in streamed) and 1 <= len(streamed) <= 3  # a token per step, as they come


# ---------------------------------------------------------------- in the server

def serve_settings(**overrides) -> P.ServeParams:
    values = dict(variant="onnx_fp32", ab=None, engine="continuous", max_batch_size=4, cache_size=0,
                  request_log=None, max_prompt_tokens=40, max_tokens_limit=16, default_max_tokens=8)
    return P.ServeParams.model_validate({**values, **overrides})


@contextlib.contextmanager
def continuous_server(models, **overrides):
    from lifecycle.serving.app import create_app
    from lifecycle.serving.engine import load_served
    served = load_served("onnx_fp32", models, decoded_elsewhere=True)  # as the CLI loads it for this engine
    assert served.lm is None and served.context == load_served("onnx_fp32", models).context
    app = create_app(serve_settings(**overrides), {"onnx_fp32": served})
    with running(app) as url:
        yield url, app


def test_a_decoder_that_dies_fails_what_it_held_and_starts_again(models):
    body = {"prompt": "To be", "max_tokens": 4, "temperature": 0}
    with continuous_server(models) as (url, app):
        first = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        assert first.status_code == 200
        pid = json.loads(httpx.get(f"{url}/readyz").text)["decoders"]["onnx_fp32"][0]
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 60
        while json.loads(httpx.get(f"{url}/readyz").text)["decoders"]["onnx_fp32"][0] in (pid, None):
            assert time.time() < deadline, "the decoder was not started again"
            time.sleep(0.2)
        again = httpx.post(f"{url}/v1/completions", json=body, timeout=30)
        assert again.status_code == 200 and again.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]


def test_a_timed_out_request_frees_its_slot(models):
    with continuous_server(models, request_timeout_s=0.001) as (url, _):
        reply = httpx.post(f"{url}/v1/completions", json={"prompt": "To be", "max_tokens": 16, "temperature": 0},
                           timeout=30)
        assert reply.status_code == 504
        assert json.loads(httpx.get(f"{url}/readyz").text)["decoding"] == {"onnx_fp32": 0}


def test_a_cancelled_row_frees_its_slot(models):
    _, tok = load_lm("onnx_fp32", models)
    decoder = Decoder(lm_file(models, "onnx_fp32"), tok.eos_token_id)
    decoder.admit([request(tok, 0, "To be", 16), request(tok, 1, "A", 16)])
    decoder.cancel(0)
    assert decoder.active == 1 and decoder.rows[0] is None and not decoder.mask[0].any()
    assert all(rid == 1 for rid, _, _ in decoder.step() + decoder.step())


@pytest.mark.parametrize("slots,processes,expected", [(16, 2, [8, 8]), (5, 2, [3, 2]), (1, 2, [1]), (4, 1, [4])])
def test_the_pool_shares_max_batch_size_among_its_processes(slots, processes, expected):
    from lifecycle.serving.continuous import DecoderPool
    pool = DecoderPool(None, None, slots, 1, None, processes)
    assert [p.slots for p in pool.processes] == expected
