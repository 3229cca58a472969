"""serve: an OpenAI-compatible HTTP API over a model variant, with continuous batching of completions in decoder
processes (or dynamic micro-batching), an LRU cache, limits, an optional API key, an output filter, Prometheus
metrics and a PII-scrubbed request log.

    python -m lifecycle.serving [--variant onnx_optimized] [--engine continuous] [--port 8000] [--models-root models]
    python -m lifecycle.serving --model-ref compressed@prod      # a registry version, fetched to .registry/

Endpoints: POST /v1/completions (stream: server-sent events), GET /v1/models, POST /v1/classify,
GET /healthz, /readyz, /metrics. Not a DVC stage: it runs until stopped.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pydantic import ValidationError

from lifecycle.core import StageError
from lifecycle.params.base import error_lines, load
from lifecycle.params.serve import ServeParams
from lifecycle.serving.app import create_app
from lifecycle.serving.engine import load_served

log = logging.getLogger("llm-lifecycle.serve")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--variant", help="overrides serve.variant (and serve.ab)")
    parser.add_argument("--max-batch-size", type=int, help="overrides serve.max_batch_size (1: no batching)")
    parser.add_argument("--engine", choices=["continuous", "batch"], help="overrides serve.engine")
    parser.add_argument("--cache-size", type=int, help="overrides serve.cache_size")
    parser.add_argument("--request-log", help="overrides serve.request_log")
    parser.add_argument("--models-root", default="models",
                        help="directory holding finetuned/, pretrained/, compressed/")
    parser.add_argument("--model-ref", help="serve a registry version instead of --models-root: compressed@prod, "
                        "compressed@v1.0.0, compressed#staging (python -m lifecycle.registry)")
    parser.add_argument("--registry-repo", default=".", help="git repository holding the registry tags (.)")
    parser.add_argument("--registry-remote", help="DVC remote to fetch from (the repository's default)")
    parser.add_argument("--registry-cache", default=".registry", help="fetched versions, one folder each")
    return parser.parse_args(argv)


def models_root(args: argparse.Namespace) -> tuple[Path, dict | None]:
    """The models root to serve from, and the registry version it holds: --model-ref's, else the REGISTRY.json of
    a --models-root that `python -m lifecycle.registry fetch` wrote (an image needs no git or DVC to name it),
    else None."""
    if not args.model_ref:
        root = Path(args.models_root)
        marker = root / "REGISTRY.json"  # lifecycle.registry.REGISTRY_FILE, without importing DVC
        fetched = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else None
        return root, {k: fetched.get(k) for k in ("name", "version", "stage", "commit")} if fetched else None
    from lifecycle.registry import cached
    root, version = cached(args.model_ref, args.registry_cache, args.registry_repo, args.registry_remote)
    log.info("registry: %s is %s %s (commit %s), in %s", args.model_ref, version["name"], version["version"],
             version["commit"][:8], root)
    return root, {k: version[k] for k in ("name", "version", "stage", "commit")}


def settings_from(params: ServeParams, args: argparse.Namespace) -> ServeParams:
    """serve params with command-line overrides, validated like params.yaml."""
    overrides = {k: v for k, v in {"host": args.host, "port": args.port, "variant": args.variant,
                                   "max_batch_size": args.max_batch_size, "cache_size": args.cache_size,
                                   "request_log": args.request_log, "engine": args.engine}.items() if v is not None}
    if args.variant:
        overrides["ab"] = None
    try:
        return ServeParams.model_validate({**params.model_dump(), **overrides})
    except ValidationError as err:
        raise StageError(error_lines(err, "command line", ServeParams)[0]) from None


def main(argv=None) -> None:
    import uvicorn
    args = parse_args(argv)
    settings = settings_from(load(serve=ServeParams).serve, args)
    variants = settings.ab.variants if settings.ab else [settings.variant]
    if settings.threads:
        import torch
        torch.set_num_threads(settings.threads)  # a PyTorch variant gets the same cap as ONNX Runtime's
    root, registry = models_root(args)
    served = {v: load_served(v, root, settings.threads, decoded_elsewhere=settings.engine == "continuous")
              for v in variants}
    for model in served.values():
        model.registry = registry
    app = create_app(settings, served)
    log.info("serving %s on http://%s:%d (%s batching, batch <= %d)", ", ".join(variants), settings.host,
             settings.port, settings.engine, settings.max_batch_size)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=5)
