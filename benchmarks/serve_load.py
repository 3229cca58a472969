"""Serving load test on loopback: 16 concurrent clients, a bounded number of requests, batching on vs off; then
per-request isolation under load: 64 clients, one request in ten invalid.

Starts `python -m lifecycle.serving` twice (max_batch_size = serve.max_batch_size, then 1; cache off so every request
runs the model) and sends each server the same workloads: greedy completions of `--max-tokens` tokens, long
ones of serve.max_tokens_limit tokens (prompts: lines of the pretraining validation split), classifications
(the fine-tuning test split) and the two alternating (mixed). Per workload: throughput, p50/p95 latency and
failures with and without batching, and their ratio -> reports/bench/serve.json. `--sample-log` keeps the batched
server's request log of the mixed workload (`make bench`: data/requests/sample.jsonl, the demo's sample); each
record names the model that served it, so monitor reads it only while that model is the one served.

The batched server then gets the isolation scenario (`isolation`): `--isolation-clients` concurrent clients each
send `--isolation-requests` mixed requests (greedy, sampled, seeded, streamed and multi-prompt completions, single
and listed classifications), one in ten of them invalid (an empty text, an out-of-range seed or other number, a
prompt over the limit, an unknown model, malformed JSON...). Every valid one must succeed and every invalid one get
a 4xx in OpenAI's error shape: the counts, the invalid ones' statuses and the latencies go to the report.

    python -m benchmarks.serve_load [--models-root models] [--variant int8_dynamic] [--sample-log PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lifecycle.core import StageError, run
from lifecycle.io import read_jsonl, write_json
from lifecycle.net import free_port, wait_up
from lifecycle.params import schema as P

OUT = Path("reports/bench/serve.json")
PROMPTS = Path("data/prepared/pretrain/validation")
TEXTS = Path("data/prepared/finetune/test")


def inputs(prompt_words: int) -> tuple[list[str], list[str]]:
    """(prompts: validation lines of 1..`prompt_words` words; texts to classify: the fine-tuning test split)."""
    prompts = [line.strip() for doc in read_jsonl(PROMPTS) for line in doc["text"].split("\n")
               if 1 <= len(line.split()) <= prompt_words]
    return prompts, [d["text"] for d in read_jsonl(TEXTS)]


def workloads(requests: int, prompts: list[str], texts: list[str], max_tokens: int,
              long_tokens: int) -> dict[str, list[tuple[str, dict]]]:
    """Each workload's requests, drawn in file order (deterministic)."""

    def completion(i: int, tokens: int):
        return "/v1/completions", {"prompt": prompts[i % len(prompts)], "max_tokens": tokens, "temperature": 0}

    def classification(i: int):
        return "/v1/classify", {"input": texts[i % len(texts)]}
    return {"completions": [completion(i, max_tokens) for i in range(requests)],
            "long_completions": [completion(i, long_tokens) for i in range(requests)],
            "classifications": [classification(i) for i in range(requests)],
            "mixed": [completion(i // 2, max_tokens) if i % 2 == 0 else classification(i // 2)
                      for i in range(requests)]}


async def load(base_url: str, requests: list[tuple[str, dict]], clients: int) -> dict:
    """`clients` concurrent connections (aiohttp: the lighter client leaves the server more of a shared CPU)
    sending `requests` in turn."""
    import aiohttp
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures: list[str] = []

    async def client(http: aiohttp.ClientSession):
        while not queue.empty():
            path, body = queue.get_nowait()
            start = time.perf_counter()
            try:
                async with http.post(path, json=body) as response:
                    text = await response.text()
                    if response.status != 200:
                        failures.append(f"{response.status} {text[:200]}")
            except (TimeoutError, aiohttp.ClientError) as err:
                failures.append(repr(err))
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession(base_url=base_url, timeout=aiohttp.ClientTimeout(total=120),
                                     connector=aiohttp.TCPConnector(limit=clients)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(requests), "failed": len(failures), "first_failures": failures[:3],
            "wall_s": round(wall, 3), "requests_per_s": round(len(requests) / wall, 2),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
            "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)}


# ---------------------------------------------------------------- isolation: valid and invalid requests mixed

INVALID_EVERY = 10  # one request in ten is invalid


def valid_request(i: int, prompts: list[str], texts: list[str], max_tokens: int) -> tuple[str, str, dict]:
    """The i-th valid request of the isolation scenario: (kind, path, body), kinds in turn."""
    prompt, text = prompts[i % len(prompts)], texts[i % len(texts)]
    completion = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    kinds = [("greedy", "/v1/completions", completion),
             ("sampled", "/v1/completions", {**completion, "temperature": 0.8, "top_p": 0.9}),
             ("seeded", "/v1/completions", {**completion, "temperature": 1.0, "seed": i}),
             ("streamed", "/v1/completions", {**completion, "stream": True}),
             ("prompts", "/v1/completions", {**completion, "prompt": [prompt, prompts[(i + 1) % len(prompts)]]}),
             ("classify", "/v1/classify", {"input": text}),
             ("classify_list", "/v1/classify", {"input": [text, texts[(i + 1) % len(texts)]]})]
    return kinds[i % len(kinds)]


def invalid_request(i: int, prompt: str, text: str, settings: P.ServeParams) -> tuple[str, str, dict | bytes]:
    """The i-th invalid request: (kind, path, body: JSON, or bytes sent as they are), kinds in turn."""
    completion = {"prompt": prompt, "max_tokens": settings.default_max_tokens, "temperature": 0}
    kinds = [("empty_text", "/v1/classify", {"input": ""}),
             ("empty_text_in_list", "/v1/classify", {"input": [text, ""]}),
             ("huge_seed", "/v1/completions", {**completion, "temperature": 1.0, "seed": 2 ** 70}),
             ("huge_seed_streamed", "/v1/completions", {**completion, "seed": 2 ** 70, "stream": True}),
             ("max_tokens_over_limit", "/v1/completions", {**completion, "max_tokens": settings.max_tokens_limit + 1}),
             ("temperature", "/v1/completions", {**completion, "temperature": 2.5}),
             ("top_p", "/v1/completions", {**completion, "temperature": 1.0, "top_p": 0}),
             ("n", "/v1/completions", {**completion, "n": 2}),
             ("presence_penalty", "/v1/completions", {**completion, "presence_penalty": 3}),
             ("prompt_too_long", "/v1/completions", {**completion, "prompt": "word " * 2 * settings.max_prompt_tokens}),
             ("unknown_model", "/v1/classify", {"model": "gpt-4", "input": text}),
             ("malformed_json", "/v1/completions", b'{"prompt": "To be", "max_tokens": '),
             ("no_prompt", "/v1/completions", {"max_tokens": 4})]
    return kinds[i % len(kinds)]


def isolation_requests(clients: int, per_client: int, prompts: list[str], texts: list[str],
                       settings: P.ServeParams, max_tokens: int) -> list[list[tuple[str, str, dict | bytes, bool]]]:
    """Each client's requests, (kind, path, body, valid): request g (over all clients) is invalid when g % 10 == 9."""
    schedule = []
    for c in range(clients):
        own = []
        for g in range(c * per_client, (c + 1) * per_client):
            if g % INVALID_EVERY == INVALID_EVERY - 1:
                own.append((*invalid_request(g // INVALID_EVERY, prompts[g % len(prompts)], texts[g % len(texts)],
                                             settings), False))
            else:
                own.append((*valid_request(g, prompts, texts, max_tokens), True))
        schedule.append(own)
    return schedule


def judged(status: int, text: str, stream: bool) -> tuple[bool, bool]:
    """(answered: a 200 with choices or data, or a stream ending in [DONE] without an error event; rejected: a 4xx
    in OpenAI's error shape)."""
    if status == 200 and stream:
        events = [line for line in text.splitlines() if line]
        return events[-1:] == ["data: [DONE]"] and not any(e.startswith('data: {"error"') for e in events), False
    try:
        if status == 200:
            return bool({"choices", "data"} & set(json.loads(text))), False
        error = json.loads(text)["error"]
        shaped = set(error) == {"message", "type", "param", "code"}
    except (ValueError, KeyError, TypeError):
        shaped = False
    return False, 400 <= status < 500 and shaped


async def isolation_load(base_url: str, schedule: list[list[tuple]]) -> dict:
    """Every client of `schedule` sending its requests in turn, all clients at once: counts of valid failures and
    of invalid requests answered with a 4xx in OpenAI's shape, each invalid kind's statuses, and the latencies."""
    import aiohttp
    latencies: dict[bool, list[float]] = {True: [], False: []}
    failures: list[str] = []
    statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    counts = collections.Counter()

    async def client(http: aiohttp.ClientSession, requests: list[tuple]):
        for kind, path, body, valid in requests:
            start = time.perf_counter()
            sent = {"data": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
                else {"json": body}
            try:
                async with http.post(path, **sent) as response:
                    status, text = response.status, await response.text()
            except (TimeoutError, aiohttp.ClientError) as err:
                status, text = 0, repr(err)
            latencies[valid].append(time.perf_counter() - start)
            answered, rejected = judged(status, text, isinstance(body, dict) and body.get("stream", False))
            counts[("valid" if valid else "invalid", answered if valid else rejected)] += 1
            if not valid:
                statuses[kind][str(status)] += 1
            if (valid and not answered) or (not valid and not rejected):
                failures.append(f"{kind}: {status} {text[:200]}")

    async with aiohttp.ClientSession(base_url=base_url, timeout=aiohttp.ClientTimeout(total=120),
                                     connector=aiohttp.TCPConnector(limit=len(schedule))) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http, requests) for requests in schedule))
        wall = time.perf_counter() - start
    every = sorted(latencies[True] + latencies[False])
    return {"clients": len(schedule), "requests_per_client": len(schedule[0]) if schedule else 0,
            "requests": len(every), "valid": counts["valid", True] + counts["valid", False],
            "valid_failed": counts["valid", False], "invalid": counts["invalid", True] + counts["invalid", False],
            "invalid_4xx": counts["invalid", True], "invalid_not_4xx": counts["invalid", False],
            "first_failures": failures[:3], "invalid_statuses": {k: dict(v) for k, v in sorted(statuses.items())},
            "wall_s": round(wall, 3), "requests_per_s": round(len(every) / wall, 2),
            "latency_p50_ms": percentile_ms(every, 0.5), "latency_p95_ms": percentile_ms(every, 0.95),
            "valid_latency_p95_ms": percentile_ms(sorted(latencies[True]), 0.95),
            "invalid_latency_p95_ms": percentile_ms(sorted(latencies[False]), 0.95)}


def percentile_ms(ordered: list[float], q: float) -> float | None:
    return round(1000 * ordered[int(q * (len(ordered) - 1))], 1) if ordered else None


# ---------------------------------------------------------------- the servers

@contextlib.contextmanager
def our_server(batch: int, args, log_path: str, engine: str | None = None) -> Iterator[str]:
    """`python -m lifecycle.serving` (max_batch_size `batch`, `engine` or serve.engine, cache off) on a free port,
    ready, until the block ends; yields its URL."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # this checkout's stages
    cmd = [sys.executable, "-m", "lifecycle.serving", "--port", str(port), "--max-batch-size", str(batch),
           "--cache-size", "0", "--request-log", log_path, "--models-root", args.models_root]
    cmd += ["--variant", args.variant] if args.variant else []
    cmd += ["--engine", engine] if engine else []
    # stderr to a file: a pipe that nobody reads fills up (64 KiB of logged errors) and then stops the server
    with open(f"{log_path}.stderr", "wb") as stderr:
        process = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        with open(f"{log_path}.stderr") as server_log:
            wait_up(process, f"http://127.0.0.1:{port}/readyz", server_log, "the server", timeout=120)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def measure(batch: int, work: dict[str, list], args, log_path: str, keep_log: str | None,
            isolation: list[list[tuple]] | None = None) -> dict[str, dict]:
    """One server (`batch` = its max_batch_size), every workload in turn after a warm-up; `keep_log` receives the
    request log of the mixed workload; then the `isolation` scenario, if any (its result under "isolation")."""
    results = {}
    with our_server(batch, args, log_path) as base_url:
        asyncio.run(load(base_url, work["mixed"][:args.clients], args.clients))  # warm-up
        for name, requests in work.items():
            Path(log_path).unlink(missing_ok=True)
            results[name] = asyncio.run(load(base_url, requests, args.clients))
            if name == "mixed" and keep_log:
                Path(keep_log).write_bytes(Path(log_path).read_bytes())
        if isolation:
            results["isolation"] = asyncio.run(isolation_load(base_url, isolation))
    return results


# ---------------------------------------------------------------- versus llama.cpp

COMPARED = ("completions", "long_completions")  # greedy completions of default_max_tokens and max_tokens_limit tokens
LLAMA_TYPE = "q8_0"
LLAMA = "llama.cpp"


def llama_gguf(gguf_dir: str) -> Path | None:
    """The q8_0 GGUF that `make gguf` wrote in `gguf_dir`, when llama.cpp's llama-server is built too; else None."""
    from lifecycle.gguf import BIN
    path = Path(gguf_dir) / f"model-{LLAMA_TYPE}.gguf"
    return path if path.is_file() and (BIN / "llama-server").is_file() else None


def lm_context(args, variant: str) -> int:
    from lifecycle.variants import variant_dir
    config = json.loads((variant_dir("lm", variant, Path(args.models_root)) / "config.json").read_text())
    return config.get("n_positions") or config["max_position_embeddings"]


def contenders(stack: contextlib.ExitStack, args, settings: P.ServeParams, gguf: Path | None, tmp: str) -> dict:
    """The servers compared, started and ready: ours with each engine (serve.engine first), and llama-server on
    the q8_0 GGUF of the same model once per `--llama-threads` (`--clients` slots: continuous batching)."""
    engines = [settings.engine, "batch" if settings.engine == "continuous" else "continuous"]
    urls = {f"ours ({e})": stack.enter_context(our_server(settings.max_batch_size, args, f"{tmp}/{e}.jsonl", e))
            for e in engines}
    if gguf is not None:
        from lifecycle.gguf import llama_server
        context = lm_context(args, args.variant or settings.variant)
        for threads in args.llama_threads:
            urls[f"{LLAMA} {LLAMA_TYPE} -t {threads}"] = stack.enter_context(
                llama_server(gguf, context, threads, slots=args.clients))
    return urls


def mean_of(runs: list[dict]) -> dict:
    """Repeated runs of one workload on one server: throughput and latencies averaged, failures summed."""
    def mean(key: str, digits: int) -> float:
        return round(statistics.fmean(r[key] for r in runs), digits)
    return {"runs": len(runs), "requests": runs[0]["requests"], "failed": sum(r["failed"] for r in runs),
            "first_failures": [f for r in runs for f in r["first_failures"]][:3],
            "requests_per_s": mean("requests_per_s", 2), "requests_per_s_each": [r["requests_per_s"] for r in runs],
            "latency_p50_ms": mean("latency_p50_ms", 1), "latency_p95_ms": mean("latency_p95_ms", 1)}


def comparison(work: dict[str, list], args, settings: P.ServeParams, tmp: str) -> dict:
    """Every contender on the compared workloads, in turn, `--rounds` times (a slow minute of a shared machine then
    falls on all of them), with the same requests (llama-server's prompt cache off, like ours)."""
    gguf = llama_gguf(args.gguf_dir)
    with contextlib.ExitStack() as stack:
        urls = contenders(stack, args, settings, gguf, tmp)
        bodies = {who: {name: [(path, {**body, "cache_prompt": False} if who.startswith(LLAMA) else body)
                               for path, body in work[name]] for name in COMPARED} for who in urls}
        for who, url in urls.items():
            asyncio.run(load(url, bodies[who]["completions"][:2 * args.clients], args.clients))  # warm-up
        runs: dict = {who: {name: [] for name in COMPARED} for who in urls}
        for _ in range(args.rounds):
            for name in COMPARED:
                for who, url in urls.items():
                    runs[who][name].append(asyncio.run(load(url, bodies[who][name], args.clients)))
    servers = {who: {name: mean_of(r) for name, r in rows.items()} for who, rows in runs.items()}
    report = {"engine": settings.engine, "variant": args.variant or settings.variant, "rounds": args.rounds,
              "gguf": str(gguf) if gguf else None, "servers": servers}
    if gguf is None:
        report["llama_cpp_skipped"] = (f"no {args.gguf_dir}/model-{LLAMA_TYPE}.gguf or no llama-server: "
                                       "make llama-cpp gguf")
    else:
        report["targets"] = verdict(servers, f"ours ({settings.engine})",
                                    served_perplexity_change(args.variant or settings.variant))
    return report


def served_perplexity_change(variant: str) -> float | None:
    """The served LM variant's perplexity change against fp32 PyTorch, as the compress stage measured it."""
    path = Path("reports/compress.json")
    row = json.loads(path.read_text()).get("lm", {}).get(variant, {}) if path.is_file() else {}
    return row.get("perplexity_change_pct")


def verdict(servers: dict[str, dict], ours: str, perplexity_change: float | None) -> dict:
    """The targets, from one run: our throughput against llama.cpp's best thread count per workload, the p95/p50
    ratio of the long completions, failures, and the served variant's perplexity change."""
    compared = {}
    for name in COMPARED:
        best = max((who for who in servers if who.startswith(LLAMA)), key=lambda w: servers[w][name]["requests_per_s"])
        mine, theirs = servers[ours][name]["requests_per_s"], servers[best][name]["requests_per_s"]
        compared[name] = {"ours_requests_per_s": mine, "llama_cpp": best, "llama_cpp_requests_per_s": theirs,
                          "ratio": round(mine / theirs, 2)}
    long = servers[ours]["long_completions"]
    tail = round(long["latency_p95_ms"] / long["latency_p50_ms"], 2)
    failed = sum(servers[ours][name]["failed"] for name in COMPARED)
    return {"throughput": compared, "long_p95_over_p50": tail, "failed": failed,
            "perplexity_change_pct": perplexity_change,
            "met": {"throughput_at_least_llama_cpp": all(c["ratio"] >= 1 for c in compared.values()),
                    "long_p95_within_1.2x_p50": tail <= 1.2, "no_failures": failed == 0,
                    "perplexity_within_2pct": perplexity_change is not None and abs(perplexity_change) <= 2}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="serving load test, batching on vs off; per-request isolation")
    parser.add_argument("--models-root", default="models")
    parser.add_argument("--variant", help="default: serve.variant from params.yaml")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=256, help="requests per workload")
    parser.add_argument("--prompt-words", type=int, default=24,
                        help="prompts: validation lines of at most this many words")
    parser.add_argument("--max-tokens", type=int, help="tokens per completion (default: serve.default_max_tokens)")
    parser.add_argument("--sample-log", help="keep the batched server's request log of the mixed workload here")
    parser.add_argument("--isolation-clients", type=int, default=64, help="isolation scenario: concurrent clients")
    parser.add_argument("--isolation-requests", type=int, default=20,
                        help="isolation scenario: requests per client (one in ten invalid; 0: skip the scenario)")
    parser.add_argument("--gguf-dir", default="models/gguf", help="where `make gguf` wrote model-q8_0.gguf")
    parser.add_argument("--llama-threads", type=int, nargs="+", default=[1, 2],
                        help="llama-server runs, one per thread count (the best one is compared)")
    parser.add_argument("--rounds", type=int, default=2, help="versus llama.cpp: runs of each workload per server")
    return parser.parse_args()


def report_of(args, settings: P.ServeParams, descriptions: dict[str, str], batched: dict, unbatched: dict,
              versus: dict) -> dict:
    return {
        "variant": args.variant or settings.variant, "engine": settings.engine, "clients": args.clients,
        "threads": settings.threads,
        "requests_per_workload": args.requests, "cache": "off",
        "prompts": f"validation lines of <= {args.prompt_words} words",
        "workloads": {name: {"description": descriptions[name],
                             "batching": {"max_batch_size": settings.max_batch_size,
                                          "max_wait_ms": settings.max_wait_ms, **batched[name]},
                             "no_batching": {"max_batch_size": 1, **unbatched[name]},
                             "throughput_ratio": round(batched[name]["requests_per_s"]
                                                       / unbatched[name]["requests_per_s"], 2)}
                      for name in descriptions},
        **({"isolation": {"description": "mixed completions and classifications, one in ten invalid: every valid "
                                         "one must succeed, every invalid one get a 4xx in OpenAI's error shape",
                          "max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms,
                          **batched["isolation"]}} if "isolation" in batched else {}),
        "versus_llama_cpp": versus,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


def main() -> None:
    args = parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = P.load().serve
    max_tokens = args.max_tokens or settings.default_max_tokens
    prompts, texts = inputs(args.prompt_words)
    work = workloads(args.requests, prompts, texts, max_tokens, settings.max_tokens_limit)
    isolation = isolation_requests(args.isolation_clients, args.isolation_requests, prompts, texts, settings,
                                   max_tokens) if args.isolation_requests else None
    descriptions = {"completions": f"greedy completions of {max_tokens} tokens",
                    "long_completions": f"greedy completions of {settings.max_tokens_limit} tokens "
                                        "(serve.max_tokens_limit)",
                    "classifications": "classifications of fine-tuning test texts",
                    "mixed": f"completions of {max_tokens} tokens alternating with classifications"}
    with tempfile.TemporaryDirectory() as tmp:
        keep = f"{tmp}/mixed.jsonl" if args.sample_log else None
        batched = measure(settings.max_batch_size, work, args, f"{tmp}/batched.jsonl", keep, isolation)
        unbatched = measure(1, work, args, f"{tmp}/unbatched.jsonl", None)
        versus = comparison(work, args, settings, tmp)
        if args.sample_log:
            Path(args.sample_log).parent.mkdir(parents=True, exist_ok=True)
            Path(args.sample_log).write_bytes(Path(keep).read_bytes())
    report = report_of(args, settings, descriptions, batched, unbatched, versus)
    write_json(OUT, report)
    summarize(report)


def summarize(report: dict) -> None:
    """Prints the figures; a failed valid request, or an invalid one not answered with a 4xx, is an error."""
    for name, row in report["workloads"].items():
        on, off = row["batching"], row["no_batching"]
        print(f"{name:17s} batching {on['requests_per_s']:7.2f} req/s (p50 {on['latency_p50_ms']} ms, p95 "
              f"{on['latency_p95_ms']} ms), none {off['requests_per_s']:7.2f} req/s (p50 {off['latency_p50_ms']} ms, "
              f"p95 {off['latency_p95_ms']} ms): {row['throughput_ratio']}x; failed {on['failed']} + {off['failed']}")
    failed = [row[mode]["first_failures"] for row in report["workloads"].values()
              for mode in ("batching", "no_batching") if row[mode]["failed"]]
    if iso := report.get("isolation"):
        print(f"isolation         {iso['clients']} clients x {iso['requests_per_client']}: "
              f"{iso['requests_per_s']:7.2f} req/s (p50 {iso['latency_p50_ms']} ms, p95 {iso['latency_p95_ms']} ms); "
              f"valid failed {iso['valid_failed']} of {iso['valid']}, "
              f"invalid 4xx {iso['invalid_4xx']} of {iso['invalid']}")
        if iso["valid_failed"] or iso["invalid_not_4xx"]:
            failed.append(iso["first_failures"])
    failed += summarize_versus(report["versus_llama_cpp"])
    if failed:
        raise StageError(f"failed requests: {failed[0]}")


def summarize_versus(versus: dict) -> list:
    """Prints every contender's figures and the targets; the failures of any of them."""
    for who, rows in versus["servers"].items():
        print(f"{who:24s} " + "; ".join(f"{name} {r['requests_per_s']:.2f} req/s (p50 {r['latency_p50_ms']} ms, p95 "
                                         f"{r['latency_p95_ms']} ms)" for name, r in rows.items()))
    if "llama_cpp_skipped" in versus:
        print(f"llama.cpp: skipped ({versus['llama_cpp_skipped']})")
    if targets := versus.get("targets"):
        print(f"targets: {json.dumps(targets['met'])}; ratios " +
              ", ".join(f"{k} {v['ratio']}x" for k, v in targets["throughput"].items()) +
              f"; long p95/p50 {targets['long_p95_over_p50']}; perplexity {targets['perplexity_change_pct']} %")
    return [r["first_failures"] for rows in versus["servers"].values() for r in rows.values() if r["failed"]]


if __name__ == "__main__":
    run(main)
