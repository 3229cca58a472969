"""Serving load test on loopback: 16 concurrent clients, a bounded number of requests, batching on vs off.

Starts `python -m stages.serve` twice (max_batch_size = serve.max_batch_size, then 1; cache off so every request
runs the model), sends the same requests to each (greedy completions of lines of the pretraining
validation split and classifications of the fine-tuning test split, alternately) and reports throughput,
p50/p95 latency and failures -> reports/bench/serve.json. `--sample-log` keeps the batched run's request log
(the monitor stage's default input, data/requests/sample.jsonl).

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

from stages import params as P
from stages.core import StageError, read_jsonl, run, write_json

OUT = Path("reports/bench/serve.json")
PROMPTS = Path("data/prepared/pretrain/validation.jsonl")
TEXTS = Path("data/prepared/finetune/test.jsonl")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workload(requests: int, prompt_words: int, max_tokens: int) -> list[tuple[str, dict]]:
    """Alternating completions and classifications, drawn in file order (deterministic)."""
    prompts = [line.strip() for doc in read_jsonl(PROMPTS) for line in doc["text"].split("\n")
               if 1 <= len(line.split()) <= prompt_words]
    texts = [d["text"] for d in read_jsonl(TEXTS)]
    out = []
    for i in range(requests):
        if i % 2 == 0:
            out.append(("/v1/completions", {"prompt": prompts[(i // 2) % len(prompts)], "max_tokens": max_tokens,
                                            "temperature": 0}))
        else:
            out.append(("/v1/classify", {"input": texts[(i // 2) % len(texts)]}))
    return out


async def load(base_url: str, requests: list[tuple[str, dict]], clients: int) -> dict:
    import httpx
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    latencies: list[float] = []
    failures: list[str] = []

    async def client(http: httpx.AsyncClient):
        while not queue.empty():
            path, body = queue.get_nowait()
            start = time.perf_counter()
            try:
                response = await http.post(path, json=body)
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as err:
                failures.append(repr(err))
            latencies.append(time.perf_counter() - start)

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    latencies.sort()
    return {"requests": len(requests), "failed": len(failures), "first_failures": failures[:3],
            "wall_s": round(wall, 3), "requests_per_s": round(len(requests) / wall, 2),
            "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
            "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1)}


def serve(port: int, batch: int, args, log_path: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path.cwd()))
    cmd = [sys.executable, "-m", "stages.serve", "--port", str(port), "--max-batch-size", str(batch),
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


def measure(batch: int, requests: list, args, log_path: str) -> dict:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    process = serve(port, batch, args, log_path)
    try:
        wait_ready(process, base_url)
        asyncio.run(load(base_url, requests[:args.clients], args.clients))  # warm-up
        Path(log_path).unlink(missing_ok=True)
        return asyncio.run(load(base_url, requests, args.clients))
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description="serving load test, batching on vs off")
    parser.add_argument("--models-root", default="models")
    parser.add_argument("--variant", help="default: serve.variant from params.yaml")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--prompt-words", type=int, default=24, help="prompts: validation lines of at most this many words")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--sample-log", help="keep the batched run's request log here")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = P.load().serve
    requests = workload(args.requests, args.prompt_words, args.max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        batched = measure(settings.max_batch_size, requests, args, f"{tmp}/batched.jsonl")
        unbatched = measure(1, requests, args, f"{tmp}/unbatched.jsonl")
        if args.sample_log:
            Path(args.sample_log).parent.mkdir(parents=True, exist_ok=True)
            Path(args.sample_log).write_bytes(Path(f"{tmp}/batched.jsonl").read_bytes())
    report = {
        "variant": args.variant or settings.variant, "clients": args.clients,
        "workload": f"{args.requests} requests: greedy completions (prompts: lines of <= {args.prompt_words} words, "
                    f"{args.max_tokens} tokens) alternating with classifications; cache off",
        "batching": {"max_batch_size": settings.max_batch_size, "max_wait_ms": settings.max_wait_ms, **batched},
        "no_batching": {"max_batch_size": 1, **unbatched},
        "throughput_ratio": round(batched["requests_per_s"] / unbatched["requests_per_s"], 2),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    write_json(OUT, report)
    print(f"batching {batched['requests_per_s']} req/s (p50 {batched['latency_p50_ms']} ms, p95 {batched['latency_p95_ms']} ms), "
          f"none {unbatched['requests_per_s']} req/s (p50 {unbatched['latency_p50_ms']} ms, p95 {unbatched['latency_p95_ms']} ms): "
          f"{report['throughput_ratio']}x; failed {batched['failed']} + {unbatched['failed']}")
    if batched["failed"] or unbatched["failed"]:
        raise StageError(f"failed requests: {batched['first_failures'] or unbatched['first_failures']}")


if __name__ == "__main__":
    run(main)
