"""The serving API, driven by the official `openai` client against a server on a free local port."""
import contextlib
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from lifecycle.core import StageError
from lifecycle.net import free_port
from lifecycle.params import schema as P
from tests.conftest import run_stage, the_error, tiny_params, write_params

KEY = "test-key-123"
MODEL = "llm-lifecycle"


def export_onnx(project: Path) -> None:
    """models/compressed/{classifier,lm}/{onnx_fp32,int8_dynamic}/model.onnx as the compress stage lays them out."""
    from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSequenceClassification, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer

    for kind, cls, source in (("classifier", ORTModelForSequenceClassification, "finetuned"),
                              ("lm", ORTModelForCausalLM, "pretrained")):
        fp32 = project / "models/compressed" / kind / "onnx_fp32"
        cls.from_pretrained(project / "models" / source, export=True).save_pretrained(fp32)
        AutoTokenizer.from_pretrained(project / "models" / source).save_pretrained(fp32)
        int8 = fp32.parent / "int8_dynamic"
        ORTQuantizer.from_pretrained(fp32, file_name="model.onnx").quantize(
            save_dir=int8, quantization_config=AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False))
        for quantized in int8.glob("*_quantized.onnx"):
            quantized.rename(int8 / "model.onnx")
        AutoTokenizer.from_pretrained(fp32).save_pretrained(int8)


@pytest.fixture(scope="module")
def project(tiny_models, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("serve") / "project"
    shutil.copytree(tiny_models, directory)
    export_onnx(directory)
    return directory


def settings(project: Path, **overrides) -> P.ServeParams:
    values = dict(ab={"variants": ["int8_dynamic", "pytorch"], "split": 0.5}, max_batch_size=8, max_wait_ms=100.0,
                  max_prompt_tokens=40, max_tokens_limit=16, default_max_tokens=8, max_body_bytes=4096,
                  api_key_env="LLM_TEST_KEY", request_log=str(project / "logs/requests.jsonl"))
    return P.ServeParams.model_validate({**values, **overrides})


@pytest.fixture(scope="module")
def served(project):
    from lifecycle.serving.engine import load_served
    return {v: load_served(v, project / "models") for v in ("int8_dynamic", "pytorch")}


@contextlib.contextmanager
def running(app):
    """`app` served by a real uvicorn server in a thread on a free port; yields its base URL."""
    import uvicorn
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(project, served):
    from lifecycle.serving.app import create_app

    mp = pytest.MonkeyPatch()
    mp.setenv("LLM_TEST_KEY", KEY)
    with running(create_app(settings(project), served)) as url:
        yield url
    mp.undo()


@pytest.fixture
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def metric(server: str, name: str, **labels) -> float:
    """A Prometheus sample from /metrics, summed over the label sets that include `labels`."""
    total = 0.0
    for line in httpx.get(f"{server}/metrics").text.splitlines():
        if line.startswith("#"):
            continue
        sample, value = line.rsplit(" ", 1)
        sample_name, _, label_text = sample.partition("{")
        if sample_name == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


# ---------------------------------------------------------------- the openai client

def test_completion_through_openai_client(client):
    first = client.completions.create(model=MODEL, prompt="To be, or not to be", max_tokens=8, temperature=0)
    choice = first.choices[0]
    assert first.object == "text_completion" and isinstance(choice.text, str)
    assert choice.finish_reason in ("stop", "length")
    assert first.usage.prompt_tokens > 0 and 0 <= first.usage.completion_tokens <= 8


def test_pinned_variants_answer_and_agree_on_greedy_length(client):
    for variant in ("int8_dynamic", "pytorch"):
        out = client.completions.create(model=f"{MODEL}:{variant}", prompt="The history of", max_tokens=6,
                                        temperature=0)
        assert out.usage.completion_tokens <= 6 and out.choices[0].finish_reason in ("stop", "length")


def test_streamed_completion_matches_the_plain_one(client):
    args = dict(model=f"{MODEL}:int8_dynamic", prompt="KING HENRY:", max_tokens=10, temperature=0)
    plain = client.completions.create(**args).choices[0]
    chunks = list(client.completions.create(stream=True, **args))
    assert len(chunks) >= 2 and all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == plain.text
    assert chunks[-1].choices[0].finish_reason == plain.finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stream_ends_with_done(server):
    with httpx.stream("POST", f"{server}/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"prompt": "To be", "max_tokens": 4, "temperature": 0, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_model_listing(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, f"{MODEL}:int8_dynamic", f"{MODEL}:pytorch"]


def test_classify(server):
    response = httpx.post(f"{server}/v1/classify", headers={"Authorization": f"Bearer {KEY}"},
                          json={"input": ["A wonderful, moving film.", "Dull and lifeless."]})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert all(d["label"] in ("negative", "positive") and abs(sum(d["scores"].values()) - 1) < 1e-4 for d in data)


# ---------------------------------------------------------------- bad requests get 4xx, the server keeps serving

def test_bad_requests_get_the_right_4xx_and_the_server_keeps_serving(client, server):
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt="x", max_tokens=-5)
    assert err.value.status_code == 400 and err.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt="word " * 200, max_tokens=4)
    assert err.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="x", max_tokens=17)  # over max_tokens_limit
    with pytest.raises(openai.AuthenticationError) as err:
        openai.OpenAI(base_url=f"{server}/v1", api_key="wrong",
                      max_retries=0).completions.create(model=MODEL, prompt="x")
    assert err.value.status_code == 401
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x")
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    malformed = httpx.post(f"{server}/v1/completions", content=b'{"prompt": "x",', headers=auth)
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    assert set(malformed.json()["error"]) == {"message", "type", "param", "code"}
    too_big = httpx.post(f"{server}/v1/completions", content=json.dumps({"prompt": "x" * 5000}), headers=auth)
    assert too_big.status_code == 413
    missing = httpx.post(f"{server}/v1/completions", json={"max_tokens": 3}, headers=auth)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "prompt"
    assert httpx.get(f"{server}/healthz").status_code == 200
    assert httpx.get(f"{server}/readyz").json()["status"] == "ready"
    assert client.completions.create(model=MODEL, prompt="still there?", max_tokens=2).choices


# ---------------------------------------------------------------- per-request isolation: a bad request fails alone

AUTH = {"Authorization": f"Bearer {KEY}"}
OPENAI_ERROR = {"message", "type", "param", "code"}


def openai_error(response: httpx.Response, status: int) -> dict:
    """The `error` of a reply that must be `status` with OpenAI's error body."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == OPENAI_ERROR, body
    return body["error"]


def test_an_empty_text_fails_alone_and_its_batch_runs_without_it(server):
    valid = [{"input": f"Review {i}: a moving, funny and well acted film."} for i in range(30)]  # unique: no cache
    bad = [{"input": ""}, {"input": ["A fine film.", ""]}, {"input": ""}]
    bodies = valid[:10] + bad[:1] + valid[10:20] + bad[1:2] + valid[20:] + bad[2:]
    before = metric(server, "llm_batch_size_count", task="classify")
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda body: httpx.post(f"{server}/v1/classify", json=body, headers=AUTH,
                                                        timeout=60), bodies))
    innocent = [r for r, body in zip(replies, bodies) if body in valid]
    assert [r.status_code for r in innocent] == [200] * 30, [r.text for r in innocent if r.status_code != 200]
    assert all(r.json()["data"][0]["label"] in ("negative", "positive") for r in innocent)
    for reply in (r for r, body in zip(replies, bodies) if body in bad):
        error = openai_error(reply, 400)
        assert error["param"] == "input" and error["code"] == "invalid_value" and "empty" in error["message"]
    assert metric(server, "llm_batch_size_count", task="classify") - before < 30  # the valid ones did share batches


def test_an_out_of_range_seed_is_a_400_naming_seed(server):
    body = {"model": f"{MODEL}:int8_dynamic", "prompt": "To be", "max_tokens": 2, "temperature": 1.0}
    for seed in (2 ** 70, 2 ** 63, -2 ** 63 - 1):
        for stream in (False, True):
            reply = httpx.post(f"{server}/v1/completions", json={**body, "seed": seed, "stream": stream}, headers=AUTH)
            error = openai_error(reply, 400)
            assert error["param"] == "seed" and error["code"] == "invalid_value"
    for seed in (2 ** 63 - 1, -2 ** 63, 0):  # OpenAI's range is int64's
        assert httpx.post(f"{server}/v1/completions", json={**body, "seed": seed}, headers=AUTH).status_code == 200


@pytest.mark.parametrize("field,value", [
    ("max_tokens", 0), ("max_tokens", 17), ("max_tokens", 2 ** 70), ("temperature", -0.1), ("temperature", 2.01),
    ("top_p", 0), ("top_p", 1.5), ("n", 2), ("n", 0), ("seed", 2 ** 64), ("logprobs", 6), ("logprobs", -1),
    ("best_of", 21), ("presence_penalty", 2.5), ("frequency_penalty", -3), ("logit_bias", {"50": 101}),
])
def test_every_number_is_range_checked(server, field, value):
    reply = httpx.post(f"{server}/v1/completions", headers=AUTH,
                       json={"prompt": "To be", "max_tokens": 2, "temperature": 0, field: value})
    error = openai_error(reply, 400)
    assert error["param"].split(".")[0] == field and error["type"] == "invalid_request_error"


def test_no_route_and_wrong_method_answer_in_openai_shape(server):
    for method, path in (("GET", "/v1/no-such-thing"), ("POST", "/v1/chat/nothing"), ("GET", "/nowhere")):
        error = openai_error(httpx.request(method, f"{server}{path}", headers=AUTH), 404)
        assert error["type"] == "invalid_request_error" and path in error["message"]
    for method, path in (("GET", "/v1/completions"), ("DELETE", "/v1/models"), ("POST", "/healthz")):
        reply = httpx.request(method, f"{server}{path}", headers=AUTH)
        error = openai_error(reply, 405)
        assert error["type"] == "invalid_request_error" and method in error["message"] and reply.headers["allow"]


def test_decoding_by_the_rust_tokenizer_is_the_wrappers_decode(served):
    # Served.decoded skips transformers' wrapper: the same text for any ids, special ones and split UTF-8 included
    import random
    model = served["int8_dynamic"]
    tok, rng = model.lm_tokenizer, random.Random(0)
    rows = [tok("naïve café 🙂 東京 — x", add_special_tokens=False)["input_ids"][:k] for k in range(1, 12)]
    rows += [[rng.randrange(len(tok)) for _ in range(rng.randrange(1, 40))] + [model.eos] for _ in range(200)]
    for ids in rows:
        assert model.decoded(ids) == tok.decode(ids, skip_special_tokens=True)


def test_the_model_endpoints_answered_by_the_guard_are_still_documented(server):
    # the guard answers them without FastAPI's router (Server.direct); /openapi.json still describes them
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert set(paths["/v1/completions"]) == {"post"} and set(paths["/v1/classify"]) == {"post"}


@pytest.mark.parametrize("header,accepted", [
    (f"Bearer {KEY}", True), (f"bearer {KEY}", True), (f"BEARER {KEY}", True), (f"Bearer   {KEY}", True),
    (KEY, False), (None, False), ("Bearer", False), (f"Basic {KEY}", False),
    (f"Token {KEY}", False), ("Bearer wrong-key", False), (f"Bearer {KEY}x", False),
])
def test_authorization_as_openai_checks_it(server, header, accepted):
    headers = {} if header is None else {"Authorization": header}
    reply = httpx.get(f"{server}/v1/models", headers=headers)
    if accepted:
        assert reply.status_code == 200, reply.text
        return
    error = openai_error(reply, 401)
    assert error["type"] == "invalid_request_error" and reply.headers["www-authenticate"] == "Bearer"
    presented = header is not None and header.lower().startswith("bearer ") and header.strip().lower() != "bearer"
    if presented:  # a Bearer key, the wrong one
        assert error["code"] == "invalid_api_key" and error["message"].startswith("Incorrect API key provided")
    else:  # no key in Bearer auth: a bare key, another scheme, or nothing
        assert error["code"] is None and error["message"].startswith("You didn't provide an API key.")


def test_an_unforeseen_failure_in_a_batch_fails_only_its_culprit(project, served, monkeypatch):
    from lifecycle.serving.app import create_app
    from lifecycle.serving.batching import Job
    model = served["int8_dynamic"]
    prompts = [f"Scene {i}: enter the king" for i in range(10)]
    alone = model.generate([Job(("generate",), {"ids": model.prompt_ids(prompts[0]), "max_tokens": 6,
                                                "temperature": 0, "top_p": 1.0, "seed": None}, None)])[0]["text"]
    poison = model.lm_tokenizer(" POISON", add_special_tokens=False)["input_ids"]

    def poisoned(jobs, real=model.generate):  # a model call that fails whenever the poisoned prompt is in it
        if any(j.payload["ids"][-len(poison):] == poison for j in jobs):
            raise RuntimeError("a failure no check foresaw")
        return real(jobs)
    monkeypatch.setattr(model, "generate", poisoned)
    bodies = [{"prompt": p, "max_tokens": 6, "temperature": 0} for p in prompts]
    bodies.insert(5, {"prompt": "Scene 5: POISON", "max_tokens": 6, "temperature": 0})
    bodies.insert(0, {**bodies[0], "stream": True})
    app = create_app(settings(project, ab=None, variant="int8_dynamic", api_key_env=None, cache_size=0,
                              request_log=None, engine="batch", max_batch_size=len(bodies), max_wait_ms=3000.0),
                     {"int8_dynamic": model})
    with running(app) as url, ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda body: httpx.post(f"{url}/v1/completions", json=body, timeout=60), bodies))
        isolated = metric(url, "llm_failed_batches_total", task="generate", batched="true")
    assert isolated >= 1  # the culprit did share a model call, and that call failed
    for body, reply in zip(bodies, replies):
        if "POISON" in body["prompt"]:
            assert openai_error(reply, 500)["type"] == "server_error"
        elif body.get("stream"):  # it was in the failed call too: its rerun's answer follows
            events = [line for line in reply.text.splitlines() if line]
            assert reply.status_code == 200 and events[-1] == "data: [DONE]"
            assert not any('"error"' in e for e in events), events
            assert "".join(json.loads(e[6:])["choices"][0]["text"] for e in events[:-1]) == alone
        else:
            assert reply.status_code == 200, reply.text


# ---------------------------------------------------------------- batching, cache, filter, log

def test_concurrent_requests_are_batched(client, server):
    before_count = metric(server, "llm_batch_size_count", task="generate")
    before_sum = metric(server, "llm_batch_size_sum", task="generate")
    prompts = [f"Scene {i}: enter the king" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        outs = list(pool.map(lambda p: client.completions.create(model=f"{MODEL}:int8_dynamic", prompt=p,
                                                                  max_tokens=16, temperature=0), prompts))
    assert len(outs) == 12
    batches = metric(server, "llm_batch_size_count", task="generate") - before_count
    jobs = metric(server, "llm_batch_size_sum", task="generate") - before_sum
    # the histogram counts model calls and their rows (a continuous engine's decode steps, or micro-batches): the
    # calls held more than one request each, on average (16 tokens each: long enough that the 12 overlap; with 4,
    # a server quick enough could finish each before the next thread's request came)
    assert batches > 0 and jobs / batches > 1, (jobs, batches)


def test_greedy_repeat_is_served_from_the_cache(client, server):
    args = dict(model=f"{MODEL}:int8_dynamic", prompt="A cached prompt", max_tokens=5, temperature=0)
    first = client.completions.create(**args)
    hits = metric(server, "llm_cache_total", endpoint="completions", result="hit")
    second = client.completions.create(**args)
    assert metric(server, "llm_cache_total", endpoint="completions", result="hit") == hits + 1
    assert second.choices[0].text == first.choices[0].text


def test_request_log_is_scrubbed(client, project):
    client.completions.create(model=MODEL, prompt="Mail jane.doe@example.com, call 212-555-0143", max_tokens=2)
    lines = (project / "logs/requests.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert "jane.doe@example.com" not in lines[-1] and "212-555-0143" not in lines[-1]
    assert "<EMAIL>" in record["prompt"] and "<PHONE>" in record["prompt"]
    assert record["variant"] in ("int8_dynamic", "pytorch") and record["latency_ms"] > 0


def test_each_logged_request_names_the_model_that_served_it(project, served, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from lifecycle import variants
    from lifecycle.serving.app import create_app

    root = project / "models"
    expected = {(kind, v): {"variant": v, "sha256": variants.model_sha256(variants.variant_dir(kind, v, root))}
                for kind in ("classifier", "lm") for v in ("int8_dynamic", "pytorch")}
    monkeypatch.setattr(variants, "model_sha256", None)  # hashed once, when the variants were loaded: never again
    log = tmp_path / "log.jsonl"
    with TestClient(create_app(settings(project, api_key_env=None, request_log=str(log)), served)) as http:
        for user in ("ann", "bob", "cy", "dee"):  # routed by the A/B split
            assert http.post("/v1/classify", json={"input": ["Fine.", "Dull."], "user": user}).status_code == 200
            assert http.post("/v1/completions", json={"prompt": "To be", "max_tokens": 2, "temperature": 0,
                                                      "user": user}).status_code == 200
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["variant"] for r in records} == {"int8_dynamic", "pytorch"} and len(records) == 12
    for r in records:
        kind = "classifier" if r["endpoint"] == "classify" else "lm"
        assert r["model"] == expected[kind, r["variant"]], r
    assert len({m["sha256"] for m in expected.values()}) == 4


def test_output_filter_replaces_and_counts(project, served, monkeypatch):
    from fastapi.testclient import TestClient

    from lifecycle.serving.app import create_app

    body = {"model": f"{MODEL}:int8_dynamic", "prompt": "To be, or not to be", "max_tokens": 12, "temperature": 0}
    with TestClient(create_app(settings(project, api_key_env=None, request_log=None), served)) as plain:
        text = plain.post("/v1/completions", json=body).json()["choices"][0]["text"]
    word = text.split()[0]  # whatever the tiny model says first
    blocking = settings(project, api_key_env=None, request_log=None,
                        output_filter={"block_list": [word], "patterns": ["[0-9]+"], "replacement": "***"})
    with TestClient(create_app(blocking, served)) as filtered:
        out = filtered.post("/v1/completions", json=body).json()["choices"][0]["text"]
        counted = [line for line in filtered.get("/metrics").text.splitlines()
                   if line.startswith(f'llm_output_filtered_total{{rule="block:{word}"}}')]
    assert "***" in out and out.split().count(word) < text.split().count(word)
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1


def test_a_failing_model_call_fails_only_its_request(project, served, monkeypatch):
    from fastapi.testclient import TestClient

    from lifecycle.serving.app import create_app

    model = served["int8_dynamic"]
    calls = []

    def broken_once(jobs, real=model.generate):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise RuntimeError("onnxruntime exploded")
        return real(jobs)
    monkeypatch.setattr(model, "generate", broken_once)
    body = {"model": f"{MODEL}:int8_dynamic", "prompt": "To be", "max_tokens": 3, "temperature": 0}
    log = project / "logs/failing.jsonl"
    with TestClient(create_app(settings(project, api_key_env=None, request_log=str(log), engine="batch"),
                               served)) as http:
        failed = http.post("/v1/completions", json=body)
        assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
        assert http.post("/v1/completions", json=body).status_code == 200
        assert http.get("/readyz").status_code == 200
    assert [json.loads(line)["outcome"] for line in log.read_text().splitlines()] == ["error", "ok"]


def test_output_filter_whole_words_and_patterns():
    from lifecycle.serving.output import OutputFilter
    rules = OutputFilter(P.OutputFilter(block_list=["darn"], patterns=[r"\d{3}-\d{4}"]))
    text, hits = rules.apply("Darn it, darning is darn hard; call 555-0143.")
    assert text == "[filtered] it, darning is [filtered] hard; call [filtered]."
    assert hits == {"block:darn": 2, r"pattern:\d{3}-\d{4}": 1}


# ---------------------------------------------------------------- pure pieces and the command line

def test_ab_routing_follows_the_split_and_is_stable_per_user():
    from lifecycle.serving.routing import route
    ab = P.AbTest(variants=["int8_dynamic", "pytorch"], split=0.25)
    routed = [route(f"user-{i}", ab, "int8_dynamic") for i in range(4000)]
    assert 0.22 < routed.count("pytorch") / len(routed) < 0.28
    assert route("user-7", ab, "x") == route("user-7", ab, "x")
    assert route("anyone", None, "onnx_fp32") == "onnx_fp32"


def test_stream_pieces_keep_multibyte_characters_whole(served):
    from lifecycle.serving.streaming import token_pieces
    tokenizer = served["pytorch"].lm_tokenizer
    text = "naïve café 🙂 ok"
    pieces = token_pieces(text, tokenizer)
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces) and len(pieces) > 3


def test_cut_at_stop():
    from lifecycle.serving.streaming import cut_at_stop
    assert cut_at_stop("one. two. three", [". t", "x"]) == ("one", True)
    assert cut_at_stop("one", ["."]) == ("one", False)


def test_missing_variant_names_those_available(project):
    from lifecycle.variants import load_lm
    with pytest.raises(StageError) as err:
        load_lm("int8_static", project / "models")
    assert all(name in str(err.value) for name in ("int8_static", "int8_dynamic", "onnx_fp32"))


def test_bad_option_stops_the_server_with_one_line(tmp_path):
    write_params(tmp_path, tiny_params())
    assert the_error(run_stage("serve", tmp_path, "--port", "70000")) == \
        "error: command line: port = 70000: must be between 0 and 65535"


def test_unset_api_key_variable_is_an_error(project, served, monkeypatch):
    from lifecycle.serving.app import create_app
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(StageError, match="serve.api_key_env = 'NO_SUCH_KEY_VAR': the environment variable is unset"):
        create_app(settings(project, api_key_env="NO_SUCH_KEY_VAR"), served)


@pytest.mark.parametrize("edit,expected", [
    (lambda s: s["output_filter"].update(patterns=["(unclosed"]),
     "serve.output_filter.patterns[0] = '(unclosed': not a valid regular expression "
     "(missing ), unterminated subpattern at position 0)"),
    (lambda s: s.update(ab={"variants": ["pytorch", "pytorch"]}), "serve.ab: variants: A and B are both 'pytorch'"),
    (lambda s: s.update(default_max_tokens=100), "serve: default_max_tokens = 100 is above max_tokens_limit = 64"),
    (lambda s: s.update(variant="fp8"), "serve.variant = 'fp8': must be one of 'pytorch', 'onnx_fp32', "
                                        "'onnx_optimized', 'int8_dynamic', 'int8_static' or 'pruned'"),
], ids=["regex", "ab", "max_tokens", "variant"])
def test_bad_serve_params_are_one_line(edit, expected):
    from tests.conftest import default_params
    params = default_params()
    edit(params["serve"])
    assert P.validate(params)[1] == [f"params.yaml: {expected}"]


def test_serve_threads_cap_onnx_runtime(project):
    from lifecycle.serving.engine import load_served
    capped = load_served("int8_dynamic", project / "models", threads=1)
    for model in (capped.lm, capped.classifier):
        assert model.session.get_session_options().intra_op_num_threads == 1
    assert P.ServeParams().threads == 1


def test_length_groups_bound_the_padding():
    from lifecycle.serving.batching import length_groups
    assert length_groups([10, 8, 12, 4, 30, 11], 1.25) == [[3], [1, 0], [5, 2], [4]]
    assert length_groups([5, 5, 5], 1.0) == [[0, 1, 2]]
    assert length_groups([], 1.25) == []


def test_grouped_classification_equals_one_at_a_time(served):
    from lifecycle.serving.batching import Job
    model = served["int8_dynamic"]
    texts = ["great", "a dull, boring mess of a movie that never ends", "fine film", "terrible script and bad acting"]
    together = model.classify([Job(("classify",), {"text": t}, None) for t in texts])
    for text, row in zip(texts, together):
        alone = model.classify([Job(("classify",), {"text": text}, None)])[0]
        assert row["label"] == alone["label"]
        assert row["scores"] == pytest.approx(alone["scores"], abs=1e-4)



def test_live_stream_matches_the_model_with_and_without_a_stop(client, served):
    from lifecycle.serving.batching import Job
    from lifecycle.serving.streaming import cut_at_stop
    model = served["int8_dynamic"]
    prompt = "HAMLET: Who is there?"
    direct = model.generate([Job(("generate",), {"ids": model.prompt_ids(prompt), "max_tokens": 12, "temperature": 0,
                                                 "top_p": 1.0, "seed": None}, None)])[0]
    assert len(direct["text"]) > 6
    stop = direct["text"][3:5]
    for stops, finish in (([], "stop" if direct["eos"] else "length"), ([stop], "stop")):
        chunks = list(client.completions.create(model=f"{MODEL}:int8_dynamic", prompt=prompt, max_tokens=12,
                                                temperature=0, stop=stops or None, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == cut_at_stop(direct["text"], stops)[0]
        assert chunks[-1].choices[0].finish_reason == finish
        assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


class SlowLM:
    """Stands in for a language model that takes 50 ms a token, streaming like transformers' generate()."""

    def __init__(self, config, tokens: list[int]):
        self.config, self.tokens = config, tokens

    def generate(self, input_ids, max_new_tokens, streamer=None, **_):
        import torch
        streamer.put(input_ids)
        new = []
        for i in range(max_new_tokens):
            time.sleep(0.05)
            new.append(torch.full((input_ids.shape[0],), self.tokens[i % len(self.tokens)]))
            streamer.put(new[-1])
        streamer.end()
        return torch.cat([input_ids, torch.stack(new, dim=1)], dim=1)


def test_stream_sends_each_token_as_it_is_decoded(project, served, tmp_path):
    from lifecycle.serving.app import create_app
    from lifecycle.serving.engine import Served
    real = served["int8_dynamic"]
    letters = [real.lm_tokenizer.convert_tokens_to_ids(c) for c in "abcdefgh"]
    slow = Served("int8_dynamic", SlowLM(real.lm.config, letters), real.lm_tokenizer, real.classifier,
                  real.classifier_tokenizer)
    app = create_app(settings(project, ab=None, variant="int8_dynamic", api_key_env=None, cache_size=0,
                              request_log=str(tmp_path / "log.jsonl")), {"int8_dynamic": slow})
    with running(app) as url:
        start, arrivals = time.perf_counter(), []
        with httpx.stream("POST", f"{url}/v1/completions", timeout=30,
                          json={"prompt": "To be", "max_tokens": 16, "temperature": 0, "stream": True}) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append((time.perf_counter() - start, json.loads(line[6:])["choices"][0]["text"]))
    assert "".join(text for _, text in arrivals) == "abcdefgh" * 2
    assert arrivals[0][0] < 0.4 < 0.75 < arrivals[-1][0]  # 16 tokens take 0.8 s: the first came after ~1
