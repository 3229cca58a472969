"""gguf: the pretrained LM as GGUF files for llama.cpp (f32, q8_0, q4_K_M, ...), scored like every other variant.

    python -m lifecycle.gguf export MODEL_DIR OUT_DIR [--types f32 q8_0 q4_K_M] [--report reports/bench/gguf.json]

llama.cpp's own converter (convert_hf_to_gguf.py of the llama.cpp that `make llama-cpp` builds in .llama.cpp) writes
OUT_DIR/model-f32.gguf, with our tokenizer's pre-tokenizer named `gpt-2` (its hash is unknown to the converter, its
regex is GPT-2's) and `add_bos_token` set (llama.cpp then starts every text with <|endoftext|>, as our server does);
llama-quantize makes every other type from it. Each type is scored on the pretraining test split: perplexity by
llama-perplexity, bits per byte from it (`bits_per_byte`), and agreement: greedy continuations by llama-server
against the PyTorch model's. The PyTorch model is scored by the same protocol (`perplexity_pieces`), so the f32
file must match it. The report is written by this command only, not by a DVC stage: `dvc repro` needs no llama.cpp.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from lifecycle.core import StageError
from lifecycle.io import atomic_path, write_json
from lifecycle.net import free_port, wait_up

log = logging.getLogger("llm-lifecycle.gguf")
LLAMA_CPP = Path(".llama.cpp")
SOURCE, BIN = LLAMA_CPP / "src", LLAMA_CPP / "build/bin"
# The converter writes f32 (the reference and llama-quantize's source); the others are llama-quantize types.
TYPES = ("f32", "f16", "bf16", "q8_0", "q6_K", "q5_K_M", "q4_K_M", "q4_0")
GPT2_PRE = "gpt-2"
TEST_SPLIT = Path("data/prepared/pretrain/test")
FINAL_PPL = re.compile(r"Final estimate: PPL = ([0-9.]+)")
RUNNING_PPL = re.compile(r"\[(\d+)\]([0-9.]+),")


# ---------------------------------------------------------------- inputs

def check_types(types: list[str]) -> list[str]:
    """The GGUF types to make, f32 first (the reference every other is quantized from and compared with)."""
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        raise StageError(f"--types: {unknown[0]!r} is not a GGUF type made here (choose from {', '.join(TYPES)})")
    repeated = sorted({t for t in types if types.count(t) > 1})
    if repeated:
        raise StageError(f"--types: {repeated[0]!r} is given twice")
    if "f32" not in types:
        raise StageError("--types: must include f32 (every other type is quantized from it and compared with it)")
    return ["f32", *(t for t in types if t != "f32")]


def binary(name: str, bin_dir: Path | None = None) -> Path:
    """A llama.cpp program, or one line saying how to build it."""
    path = (bin_dir or BIN) / name
    if not path.is_file():
        raise StageError(f"llama.cpp is not built: no {path} (run `make llama-cpp` first)")
    return path


def check_model(model_dir: Path) -> None:
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (model_dir / name).is_file():
            raise StageError(f"MODEL_DIR {str(model_dir)!r}: no {name} (give a PyTorch LM directory such as "
                             "models/pretrained)")


# ---------------------------------------------------------------- conversion

def gpt2_pre_tokenizer(tokenizer_json: dict) -> bool:
    """Whether a tokenizer.json splits text exactly as GPT-2 does: byte-level BPE with GPT-2's regex, no
    normalizer, no prefix space. llama.cpp's `gpt-2` pre-tokenizer then tokenizes it identically."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    return (tokenizer_json.get("model", {}).get("type") == "BPE" and tokenizer_json.get("normalizer") is None
            and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"))


def with_our_tokenizer(model_class: type, tokenizer_json: dict) -> type:
    """`model_class` (a converter model class) that names a GPT-2-like pre-tokenizer `gpt-2` when the converter's
    hash table does not know it, and asks llama.cpp to prepend BOS (<|endoftext|>) as our server does."""
    class OurTokenizer(model_class):
        model_arch = getattr(model_class, "model_arch", None)  # the converter wants it in each class's own body

        def get_vocab_base_pre(self, tokenizer) -> str:
            try:
                return super().get_vocab_base_pre(tokenizer)
            except NotImplementedError:
                if gpt2_pre_tokenizer(tokenizer_json):
                    log.info("the converter's warning above is expected: GPT-2's byte-level regex, named %s", GPT2_PRE)
                    return GPT2_PRE
                raise StageError("llama.cpp's converter does not know this tokenizer's pre-tokenizer, and it is not "
                                 "GPT-2's byte-level regex (tokenizer.json: pre_tokenizer)") from None

        def set_vocab(self):
            if gpt2_pre_tokenizer(tokenizer_json) and not (Path(self.dir_model) / "tokenizer.model").is_file():
                self._set_vocab_gpt2()  # byte-level BPE: llama.cpp's gpt2 vocab (the llama class tries SentencePiece)
            else:
                super().set_vocab()
            self.gguf_writer.add_add_bos_token(True)

    OurTokenizer.__name__ = OurTokenizer.__qualname__ = model_class.__name__
    return OurTokenizer


def convert(model_dir: Path, out: Path, source: Path | None = None) -> None:
    """MODEL_DIR -> an f32 GGUF file at `out`, by llama.cpp's converter run in this process."""
    source = source or SOURCE
    if not (source / "convert_hf_to_gguf.py").is_file():
        raise StageError(f"llama.cpp's converter is not there: no {source}/convert_hf_to_gguf.py "
                         "(run `make llama-cpp` first)")
    for path in (source / "gguf-py", source):  # the converter and the gguf package of the same llama.cpp commit
        if str(path.resolve()) not in sys.path:
            sys.path.insert(0, str(path.resolve()))
    import convert_hf_to_gguf as converter

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    find_class = converter.get_model_class
    converter.get_model_class = lambda *a, **k: with_our_tokenizer(find_class(*a, **k), tokenizer_json)
    argv = sys.argv
    with atomic_path(out) as tmp:
        sys.argv = ["convert_hf_to_gguf.py", str(model_dir), "--outfile", str(tmp), "--outtype", "f32"]
        try:
            converter.main()
        except SystemExit as err:
            raise StageError(f"llama.cpp's converter failed on {model_dir} (exit {err.code}; its log is above)") \
                from None
        finally:
            sys.argv, converter.get_model_class = argv, find_class


def tool(command: list, what: str) -> str:
    """Run a llama.cpp program; its output, or one line with the last line it printed."""
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise StageError(f"{what} failed (exit {done.returncode}): {last}")
    return done.stdout + done.stderr


def export(model_dir: Path, out_dir: Path, types: list[str]) -> dict[str, Path]:
    """type -> GGUF file in OUT_DIR: f32 by the converter, the others by llama-quantize from it."""
    check_model(model_dir)
    types = check_types(types)
    quantize = binary("llama-quantize") if len(types) > 1 else None
    files = {t: out_dir / f"model-{t}.gguf" for t in types}
    t0 = time.perf_counter()
    convert(model_dir, files["f32"])
    log.info("converted %s -> %s in %.1f s", model_dir, files["f32"], time.perf_counter() - t0)
    for kind in types[1:]:
        with atomic_path(files[kind]) as tmp:
            tool([quantize, files["f32"], tmp, kind], f"llama-quantize {kind}")  # it reads the type case-blind
        log.info("quantized %s (%.2f MB)", files[kind], files[kind].stat().st_size / 1e6)
    return files


# ---------------------------------------------------------------- perplexity and bits per byte

def bits_per_byte(perplexity: float, tokens: int, n_bytes: int) -> float:
    """Bits per byte from a per-token perplexity: ln(ppl) is the mean NLL per token in nats, so the text costs
    tokens * ln(ppl) / ln 2 bits over its n_bytes UTF-8 bytes. llama-perplexity scores an evenly spread share of the
    tokens (the second half of every window); their mean stands for all `tokens` of the text."""
    if perplexity < 1 or tokens < 1 or n_bytes < 1:
        raise ValueError(f"bits_per_byte needs perplexity >= 1 and positive counts, not {perplexity}, {tokens}, "
                         f"{n_bytes}")
    from lifecycle.pretraining import bits_per_byte as from_loss
    return from_loss(math.log(perplexity), tokens, n_bytes)


def perplexity_pieces(ids: list[int], context: int, bos: int) -> list[tuple[list[int], list[int]]]:
    """llama-perplexity's protocol as (input, labels) pieces for lifecycle.scoring: the text's tokens after BOS cut
    into whole windows of `context` (the tail dropped), each starting with BOS, only its second half scored."""
    tokens, first = [bos, *ids], context // 2
    pieces = []
    for start in range(0, len(tokens) - context + 1, context):
        window = [bos, *tokens[start + 1:start + context]]
        pieces.append((window, [-100] * (first + 1) + window[first + 1:]))
    return pieces


def llama_perplexity(gguf: Path, text_file: Path, context: int, threads: int, chunks: int, tries: int = 3) -> float:
    """llama-perplexity's figure over `chunks` windows; run again when its last log lines were lost (its logger
    thread is not flushed at exit: llama.cpp issue 22142), so that a figure short of the last window is never read."""
    command = [binary("llama-perplexity"), "-m", gguf, "-f", text_file, "-c", context, "-b", context, "-t", threads]
    for attempt in range(tries):
        out = tool(command, f"llama-perplexity on {gguf.name}")
        try:
            return parse_perplexity(out, gguf.name, chunks)
        except StageError:
            if attempt == tries - 1:
                raise
            log.info("llama-perplexity on %s: its output was cut short; running it again", gguf.name)


def parse_perplexity(out: str, name: str, chunks: int) -> float:
    """The final perplexity llama-perplexity prints; else its running figure after window `chunks` (`[n]ppl,`),
    the same number to the digit."""
    found = FINAL_PPL.search(out) or next((m for m in RUNNING_PPL.finditer(out) if int(m.group(1)) == chunks), None)
    if not found:
        last = (out.strip() or "no output").splitlines()[-1]
        raise StageError(f"llama-perplexity on {name}: no perplexity over {chunks} windows in its output (last "
                         f"line: {last})")
    return float(found.group(found.lastindex))


def pytorch_perplexity(model, ids: list[int], context: int, bos: int) -> float:
    from lifecycle.scoring import token_log_likelihoods
    log_likelihoods, counts = token_log_likelihoods(model, perplexity_pieces(ids, context, bos))
    return math.exp(-log_likelihoods.sum() / counts.sum())


# ---------------------------------------------------------------- agreement (llama-server against PyTorch)

def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def llama_server(gguf: Path, context: int, threads: int, slots: int = 1, timeout: float = 120) -> Iterator[str]:
    """A llama-server on `gguf` on a free local port, until the block ends; yields its URL. `slots` requests run
    at once (continuous batching), each with `context` tokens (llama-server splits -c among its slots)."""
    port = free_port()
    command = [binary("llama-server"), "-m", gguf, "-c", context * slots, "-np", slots, "-t", threads,
               "--host", "127.0.0.1", "--port", port, "--no-webui"]
    with tempfile.TemporaryFile("w+") as server_log:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen([str(c) for c in command], stdout=subprocess.DEVNULL, stderr=server_log)
        try:
            wait_up(process, f"http://127.0.0.1:{port}/health", server_log, f"llama-server on {gguf.name}", timeout)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def server_continuations(url: str, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """Greedy continuations (token ids) of each prompt; llama.cpp tokenizes the prompt itself, BOS first."""
    return [post(f"{url}/completion", {"prompt": p, "n_predict": new_tokens, "temperature": 0, "top_k": 1,
                                       "return_tokens": True, "cache_prompt": False})["tokens"] for p in prompts]


def pytorch_continuations(model, tokenizer, prompts: list[str], new_tokens: int) -> list[list[int]]:
    """Greedy continuations as our server makes them: <|endoftext|> then the prompt's tokens."""
    import torch
    out = []
    for prompt in prompts:
        ids = torch.tensor([[tokenizer.eos_token_id, *tokenizer(prompt, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                       max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id)
        new = generated[0, ids.shape[1]:].tolist()
        out.append(new[:-1] if new[-1:] == [tokenizer.eos_token_id] else new)  # llama-server leaves out the EOS
    return out


def agreement(continuations: list[list[int]], reference: list[list[int]]) -> dict:
    """Share of prompts whose continuation is identical, and share of tokens generated before the first difference
    (an EOS that ends one continuation counts as a token the other must produce too)."""
    if len(continuations) != len(reference) or not reference:
        raise ValueError(f"agreement needs as many continuations as references, not {len(continuations)} and "
                         f"{len(reference)}")
    same, matched, total = 0, 0, 0
    for a, b in zip(continuations, reference):
        prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        same += a == b
        matched, total = matched + prefix, total + max(len(a), len(b), 1)
    return {"identical": same / len(reference), "token_prefix": matched / total}


# ---------------------------------------------------------------- the report

def scored_documents(split: Path, documents: int, document_chars: int) -> list[str]:
    """The first `documents` test documents, each cut to `document_chars`, as the compress stage scores them
    (llama-perplexity reads them as one file, a blank line between documents)."""
    from lifecycle.examples import ids_and_texts
    texts = ids_and_texts(split)[1][:documents]
    if not texts:
        raise StageError(f"{split}: no documents to score")
    return [t[:document_chars] for t in texts]


def score_type(gguf: Path, text: str, text_file: Path, ids: list[int], prompts: list[str], args) -> dict:
    """Size, perplexity, bits per byte and greedy continuations of one GGUF file."""
    ppl = llama_perplexity(gguf, text_file, args.context, args.threads, (len(ids) + 1) // args.context)
    with llama_server(gguf, args.context, args.threads) as url:
        continuations = server_continuations(url, prompts, args.new_tokens)
        tokens = post(f"{url}/tokenize", {"content": text, "add_special": False})["tokens"]
    return {"size_mb": round(gguf.stat().st_size / 1e6, 3), "perplexity": round(ppl, 4),
            "bits_per_byte": round(bits_per_byte(ppl, len(ids), len(text.encode("utf-8"))), 5),
            "tokenization_identical": tokens == ids, "continuations": continuations}


def reference_scores(model_dir: Path, documents: list[str], prompts: list[str], args) -> tuple[list[int], dict, list]:
    """The PyTorch model on the same text by the same protocol (and by our own per-document sliding window, the
    compress stage's figure), and its greedy continuations."""
    from transformers import AutoModelForCausalLM

    from lifecycle.scoring import language_model_metrics
    from lifecycle.tokens import load_tokenizer
    tokenizer, text = load_tokenizer(model_dir), "\n\n".join(documents)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 2 * args.context:
        raise StageError(f"the test text has {len(ids)} tokens: llama-perplexity needs at least {2 * args.context} "
                         "(raise --documents or --document-chars)")
    ppl = pytorch_perplexity(model, ids, args.context, tokenizer.eos_token_id)
    figures = {"perplexity": round(ppl, 4),
               "bits_per_byte": round(bits_per_byte(ppl, len(ids), len(text.encode("utf-8"))), 5),
               "sliding_window": {k: v for k, v in language_model_metrics(model, tokenizer, documents, None, 32,
                                  "pytorch").items() if k in ("perplexity", "bits_per_byte")}}
    return ids, figures, pytorch_continuations(model, tokenizer, prompts, args.new_tokens)


def report(model_dir: Path, files: dict[str, Path], args) -> dict:
    documents = scored_documents(args.split, args.documents, args.document_chars)
    text, prompts = "\n\n".join(documents), [d[:args.prompt_chars] for d in documents[:args.prompts]]
    ids, pytorch, reference = reference_scores(model_dir, documents, prompts, args)
    types = {}
    with atomic_path(args.out_dir / "test.txt") as text_file:
        text_file.write_text(text, encoding="utf-8")
        for kind, gguf in files.items():
            types[kind] = score_type(gguf, text, text_file, ids, prompts, args)
            log.info("%s: %s", kind, {k: v for k, v in types[kind].items() if k != "continuations"})
    f32 = types["f32"]["perplexity"]
    for figures in types.values():
        figures["perplexity_vs_f32_pct"] = round(100 * (figures["perplexity"] / f32 - 1), 3)
        figures["agreement"] = agreement(figures.pop("continuations"), reference)
    return {"model": str(model_dir), "files": {k: str(v) for k, v in files.items()},
            "text": {"split": str(args.split), "documents": args.documents, "document_chars": args.document_chars,
                     "tokens": len(ids), "bytes": len(text.encode("utf-8"))},
            "protocol": f"llama-perplexity: windows of {args.context} tokens, BOS first, second half scored; "
                        "bits per byte = tokens * ln(ppl) / ln 2 / bytes; agreement: greedy continuations of "
                        f"{len(prompts)} prompts ({args.new_tokens} tokens) vs PyTorch generate",
            "pytorch": pytorch, "f32_vs_pytorch_pct": round(100 * (f32 / pytorch["perplexity"] - 1), 4),
            "types": types}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lifecycle.gguf", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("export", help="convert, quantize and score: GGUF files in OUT_DIR, a JSON report")
    p.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a PyTorch LM directory (models/pretrained)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="where model-<type>.gguf are written")
    p.add_argument("--types", nargs="+", default=["f32", "q8_0", "q4_K_M"], help=f"of {', '.join(TYPES)}")
    p.add_argument("--report", type=Path, default=Path("reports/bench/gguf.json"), help="the JSON report")
    p.add_argument("--split", type=Path, default=TEST_SPLIT, help="the text scored (pretraining test split)")
    p.add_argument("--documents", type=int, default=16, help="test documents scored (compress.evaluation: 16)")
    p.add_argument("--document-chars", type=int, default=2000, help="characters kept of each (2000, as compress)")
    p.add_argument("--context", type=int, default=128, help="window of llama-perplexity and llama-server (128)")
    p.add_argument("--prompts", type=int, default=16, help="prompts of the agreement check (16)")
    p.add_argument("--prompt-chars", type=int, default=80, help="characters of each prompt (80)")
    p.add_argument("--new-tokens", type=int, default=32, help="greedy tokens generated per prompt (32)")
    p.add_argument("--threads", type=int, default=1,
                   help="llama.cpp threads (1: on this busy 2-core machine 2 threads spin-wait, 400 ms a token)")
    args = parser.parse_args(argv)
    for name in ("documents", "document_chars", "context", "prompts", "prompt_chars", "new_tokens", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.types = check_types(args.types)  # bad arguments and a missing build fail before any work
    check_model(args.model_dir)
    for name in ("llama-quantize", "llama-perplexity", "llama-server"):
        binary(name)
    config = json.loads((args.model_dir / "config.json").read_text(encoding="utf-8"))
    n_positions = config.get("max_position_embeddings") or config.get("n_positions")
    if n_positions and args.context > n_positions:
        raise StageError(f"--context {args.context}: the model has only {n_positions} positions")
    files = export(args.model_dir, args.out_dir, args.types)
    write_json(args.report, report(args.model_dir, files, args))
    log.info("wrote %s", args.report)


if __name__ == "__main__":
    from lifecycle.core import run
    run(main)
