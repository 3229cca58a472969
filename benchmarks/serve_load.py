"""Serving load test on loopback: 16 concurrent clients, a bounded number of requests, batching on vs off.

Starts `python -m lifecycle.serving` twice (max_batch_size = serve.max_batch_size, then 1; cache off so every request
runs the model) and sends each server the same workloads: greedy completions of `--max-tokens` tokens, long
ones of serve.max_tokens_limit tokens (prompts: lines of the pretraining validation split), classifications
(the fine-tuning test split) and the two alternating (mixed). Per workload: throughput, p50/p95 latency and
failures with and without batching, and their ratio -> reports/bench/serve.json. `--sample-log` keeps the batched
server's request log of the mixed workload (the monitor stage's default input, data/requests/sample.jsonl).

    python -m benchmarks.serve_load [--models-root models] [--variant int8_dynamic] [--sample-log PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lifecycle.core import StageError, run
from lifecycle.io import read_jsonl, write_json
from lifecycle.params import schema as P

OUT = Path("reports/bench/serve.json")
PROMPTS = Path("data/prepared/pretrain/validation.jsonl")
TEXTS = Path("data/prepared/finetune/test.jsonl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workloads(requests: int, prompt_words: int, max_tokens: int, long_tokens: int) -> dict[str, list[tuple[str, dict]]]:
    """Each workload's requests, drawn in file order (deterministic)."""
    prompts = [line.strip() for doc in read_jsonl(PROMPTS) for line in doc["text"].split("\n")
               if 1 <= len(line.split()) <= prompt_words]
    texts = [d["text"] for d in read_jsonl(TEXTS)]

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


def serve(port: int, batch: int, args, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # this checkout's stages
    cmd = [sys.executable, "-m", "lifecycle.serving", "--port", str(port), "--max-batch-size", str(batch),
           "--cache-size", "0", "--request-log", log_path, "--models-root", args.models_root]
    if args.variant:
        cmd += ["--variant", args.variant]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(process: subprocess.Popen, base_url: str, timeout: float = 120) -> None:
    import httpx
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise StageError(f"the server exited: {process.stderr.read().strip().splitlines()[-1:]}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise StageError(f"the server was not ready after {timeout} s")


def measure(batch: int, work: dict[str, list], args, log_path: str, keep_log: str | None) -> dict[str, dict]:
    """One server (`batch` = its max_batch_size), every workload in turn after a warm-up; `keep_log` receives the
    request log of the mixed workload."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = serve(port, batch, args, log_path)
    results = {}
    try:
        wait_ready(process, base_url)
        asyncio.run(load(base_url, work["mixed"][:args.clients], args.clients))  # warm-up
        for name, requests in work.items():
            Path(log_path).unlink(missing_ok=True)
            results[name] = asyncio.run(load(base_url, requests, args.clients))
            if name == "mixed" and keep_log:
                Path(keep_log).write_bytes(Path(log_path).read_bytes())
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="serving load test, batching on vs off")
    parser.add_argument("--models-root", default="models")
    parser.add_argument("--variant", help="default: serve.variant from params.yaml")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=256, help="requests per workload")
    parser.add_argument("--prompt-words", type=int, default=24,
                        help="prompts: validation lines of at most this many words")
    parser.add_argument("--max-tokens", type=int, help="tokens per completion (default: serve.default_max_tokens)")
    parser.add_argument("--sample-log", help="keep the batched server's request log of the mixed workload here")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = P.load().serve
    max_tokens = args.max_tokens or settings.default_max_tokens
    work = workloads(args.requests, args.prompt_words, max_tokens, settings.max_tokens_limit)
    descriptions = {"completions": f"greedy completions of {max_tokens} tokens",
                    "long_completions": f"greedy completions of {settings.max_tokens_limit} tokens "
                                        "(serve.max_tokens_limit)",
                    "classifications": "classifications of fine-tuning test texts",
                    "mixed": f"completions of {max_tokens} tokens alternating with classifications"}
    with tempfile.TemporaryDirectory() as tmp:
        keep = f"{tmp}/mixed.jsonl" if args.sample_log else None
        batched = measure(settings.max_batch_size, work, args, f"{tmp}/batched.jsonl", keep)
        unbatched = measure(1, work, args, f"{tmp}/unbatched.jsonl", None)
        if args.sample_log:
            Path(args.sample_log).parent.mkdir(parents=True, exist_ok=True)
            Path(args.sample_log).write_bytes(Path(keep).read_bytes())
    report = {
        "variant": args.variant or settings.variant, "clients": args.clients, "threads": settings.threads,
        "requests_per_workload": args.requests, "cache": "off",
        "prompts": f"validation lines of <= {args.prompt_words} words",
        "workloads": {name: {"description": descriptions[name],
                             "batching": {"max_batch_size": settings.max_batch_size,
                                          "max_wait_ms": settings.max_wait_ms, **batched[name]},
                             "no_batching": {"max_batch_size": 1, **unbatched[name]},
                             "throughput_ratio": round(batched[name]["requests_per_s"]
                                                       / unbatched[name]["requests_per_s"], 2)}
                      for name in work},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    write_json(OUT, report)
    for name, row in report["workloads"].items():
        on, off = row["batching"], row["no_batching"]
        print(f"{name:17s} batching {on['requests_per_s']:7.2f} req/s (p50 {on['latency_p50_ms']} ms, p95 "
              f"{on['latency_p95_ms']} ms), none {off['requests_per_s']:7.2f} req/s (p50 {off['latency_p50_ms']} ms, "
              f"p95 {off['latency_p95_ms']} ms): {row['throughput_ratio']}x; failed {on['failed']} + {off['failed']}")
    failed = [row[mode]["first_failures"] for row in report["workloads"].values()
              for mode in ("batching", "no_batching") if row[mode]["failed"]]
    if failed:
        raise StageError(f"failed requests: {failed[0]}")


if __name__ == "__main__":
    run(main)
