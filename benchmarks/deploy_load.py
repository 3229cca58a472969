"""Fault tolerance of replicas behind the load balancer: `--clients` concurrent clients send completions alternating
with classifications through HAProxy (deploy/run_replicas.sh: serving containers on :8001.. and haproxy on :8000);
once the balancer has answered half of them, one replica's container is killed (podman kill, SIGKILL: requests in
flight on it die with it). The balancer retries them, and the connections the dead replica refuses, on the other
(deploy/haproxy.cfg: retries, retry-on, option redispatch).

Recorded in reports/bench/deploy.json: requests sent and failed (as the clients saw them: anything but a 200),
p50/p95 latency, each replica's answered responses and errors and the balancer's retries and redispatches (HAProxy's
stats CSV, before and after the load), how many requests the killed replica held when it died and how soon the
health check took it out. Then the official `openai` client asks the balancer for a completion and a classification.

    python -m benchmarks.deploy_load [--replicas 2] [--requests 2000] [--clients 16] [--keep]   (after make image)
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import io
import logging
import os
import platform
import subprocess
import time
from pathlib import Path

from benchmarks.serve_load import inputs, load, workloads
from lifecycle.core import StageError, run
from lifecycle.io import write_json
from lifecycle.params import schema as P

OUT = Path("reports/bench/deploy.json")
ROOT = Path(__file__).resolve().parents[1]
BALANCER = "http://127.0.0.1:8000"
STATS = "http://127.0.0.1:8404/stats;csv"
BACKEND = "replicas"  # deploy/haproxy.cfg's backend; its servers are replica1, replica2, ...


def parse_stats(text: str, backend: str = BACKEND) -> dict[str, dict[str, str]]:
    """HAProxy's stats CSV -> `backend`'s rows by server name (`BACKEND`: the backend's own totals)."""
    rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
    return {row["svname"]: row for row in rows if row["pxname"] == backend}


def counter(row: dict[str, str], key: str) -> int:
    return int(row.get(key) or 0)


def deltas(before: dict[str, dict], after: dict[str, dict]) -> dict[str, dict]:
    """Each server's counts over the load (after minus before), the backend's retries and redispatches among them."""
    keys = {"answered_2xx": "hrsp_2xx", "answered_5xx": "hrsp_5xx", "connection_errors": "econ",
            "response_errors": "eresp", "retries": "wretr", "redispatches": "wredis"}
    return {name: {k: counter(row, c) - counter(before.get(name, {}), c) for k, c in keys.items()}
            | {"status": row["status"]} for name, row in after.items()}


def stats() -> dict[str, dict[str, str]]:
    import httpx
    return parse_stats(httpx.get(STATS, timeout=5).text)


def podman(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CONTAINERS_CONF=os.environ.get("CONTAINERS_CONF", str(ROOT / "deploy/containers.conf")))
    return subprocess.run(["podman", "--runtime", "runc", *args], env=env, capture_output=True, text=True, check=True)


async def kill_halfway(start: dict, half: int, server: str, container: str) -> dict:
    """Waits until the balancer has answered `half` responses since `start`, kills `container` (`server` in the
    balancer), then waits until the health check marks it DOWN."""
    answered = lambda now: counter(now["BACKEND"], "hrsp_2xx") - counter(start["BACKEND"], "hrsp_2xx")  # noqa: E731
    began = time.perf_counter()
    while answered(now := await asyncio.to_thread(stats)) < half:
        await asyncio.sleep(0.1)
    in_flight = counter(now[server], "scur")
    await asyncio.to_thread(podman, "kill", container)
    killed = time.perf_counter()
    while not (await asyncio.to_thread(stats))[server]["status"].startswith("DOWN"):
        await asyncio.sleep(0.1)
    return {"replica": server, "container": container, "after_answered": answered(now),
            "at_s": round(killed - began, 2), "in_flight_on_it": in_flight,
            "marked_down_after_s": round(time.perf_counter() - killed, 2)}


async def load_with_kill(requests: list, clients: int, server: str, container: str) -> tuple[dict, dict]:
    start = await asyncio.to_thread(stats)
    result, killed = await asyncio.gather(load(BALANCER, requests, clients),
                                          kill_halfway(start, len(requests) // 2, server, container))
    return result, {**killed, "counts": deltas(start, await asyncio.to_thread(stats))}


def openai_check(base_url: str, text: str) -> dict:
    """A completion and a classification through the official openai client (classify is no OpenAI endpoint:
    the client's generic post)."""
    import openai
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(model="llm-lifecycle", prompt="The king", max_tokens=8, temperature=0)
    classified = client.post("/classify", body={"input": text}, cast_to=object)
    return {"openai_version": openai.__version__, "completion": completion.choices[0].text,
            "completion_tokens": completion.usage.completion_tokens, "classification": classified["data"][0]["label"]}


def replicas(command: str, count: int, variant: str) -> None:
    env = dict(os.environ, VARIANT=variant, SERVE_ARGS="--cache-size 0")  # cache off: every request runs a model
    done = subprocess.run([str(ROOT / "deploy/run_replicas.sh"), command, str(count)], env=env, text=True,
                          capture_output=True)
    if done.returncode:
        raise StageError(f"deploy/run_replicas.sh {command}: {(done.stderr.strip().splitlines() or ['failed'])[-1]}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="replicas behind HAProxy, one killed halfway through a load test")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--variant", help="default: serve.variant from params.yaml")
    parser.add_argument("--prompt-words", type=int, default=24)
    parser.add_argument("--keep", action="store_true", help="leave the surviving replicas and haproxy running")
    return parser.parse_args()


def report_of(args, settings: P.ServeParams, variant: str, result: dict, killed: dict, check: dict) -> dict:
    counts = killed.pop("counts")
    servers = {name: row for name, row in counts.items() if name != "BACKEND"}
    return {
        "setup": {"variant": variant, "image": os.environ.get("IMAGE", f"llm-lifecycle-serve:{variant}"),
                  "replicas": args.replicas,
                  "balancer": "HAProxy (deploy/haproxy.cfg): leastconn, GET /readyz every 1 s (down after 2 "
                              "failures), retries 3 with redispatch on connection failures, empty responses, "
                              "timeouts and 5xx",
                  "clients": args.clients, "cache": "off", "threads_per_replica": settings.threads,
                  "workload": f"completions of {settings.default_max_tokens} tokens alternating with "
                              "classifications"},
        "requests": result["requests"], "failed": result["failed"], "first_failures": result["first_failures"],
        "wall_s": result["wall_s"], "requests_per_s": result["requests_per_s"],
        "latency_p50_ms": result["latency_p50_ms"], "latency_p95_ms": result["latency_p95_ms"],
        "killed": killed,
        "replicas": servers,
        "balancer": {k: counts["BACKEND"][k] for k in ("answered_2xx", "answered_5xx", "retries", "redispatches")},
        "every_replica_served": all(row["answered_2xx"] > 0 for row in servers.values()),
        "openai_client": check,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }


def main() -> None:
    args = parse_args()
    for name in ("httpx", "httpx2"):  # the openai client logs every request
        logging.getLogger(name).setLevel(logging.WARNING)
    settings = P.load().serve
    variant = args.variant or settings.variant
    prompts, texts = inputs(args.prompt_words)
    requests = workloads(args.requests, prompts, texts, settings.default_max_tokens,
                         settings.max_tokens_limit)["mixed"]
    replicas("up", args.replicas, variant)
    try:
        asyncio.run(load(BALANCER, requests[:args.clients], args.clients))  # warm-up, every replica
        result, killed = asyncio.run(load_with_kill(requests, args.clients, "replica1", "llm-replica-1"))
        check = openai_check(BALANCER, texts[0])
    finally:
        if not args.keep:
            replicas("down", args.replicas, variant)
    report = report_of(args, settings, variant, result, killed, check)
    write_json(OUT, report)
    summarize(report)


def summarize(report: dict) -> None:
    """Prints the figures; a failed request or a replica that served nothing is an error (after the report)."""
    killed, setup = report["killed"], report["setup"]
    print(f"{report['requests']} requests from {setup['clients']} clients through {setup['replicas']}"
          f" replicas: {report['failed']} failed, {report['requests_per_s']} req/s, p50 {report['latency_p50_ms']} ms,"
          f" p95 {report['latency_p95_ms']} ms")
    print(f"killed {killed['container']} after {killed['after_answered']} answers ({killed['in_flight_on_it']} in "
          f"flight on it); marked down after {killed['marked_down_after_s']} s; balancer retries "
          f"{report['balancer']['retries']}, redispatches {report['balancer']['redispatches']}")
    for name, row in report["replicas"].items():
        print(f"  {name}: answered {row['answered_2xx']}, response errors {row['response_errors']}, "
              f"connection errors {row['connection_errors']}, now {row['status']}")
    print(f"openai client: completion {report['openai_client']['completion']!r}, "
          f"classification {report['openai_client']['classification']!r}")
    if report["failed"] or not report["every_replica_served"]:
        raise StageError(f"{report['failed']} failed requests ({report['first_failures'][:1]}); every replica "
                         f"served: {report['every_replica_served']}")


if __name__ == "__main__":
    run(main)
