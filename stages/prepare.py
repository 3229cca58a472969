"""prepare: normalise, filter, deduplicate (exact and MinHash near), scrub PII and split each corpus.

data/raw/{corpus}.jsonl -> data/prepared/{corpus}/{train,validation,test}.jsonl, with reports/data.json
counting documents and characters in and out of every step, per source.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from stages import params as P
from stages.core import atomic_path, read_jsonl, stable_fraction, write_json, write_jsonl

log = logging.getLogger("llm-lifecycle.prepare")
RAW, PREPARED, REPORT = Path("data/raw"), Path("data/prepared"), Path("reports/data.json")
CORPORA = ("pretrain", "finetune")
SPLITS = ("train", "validation", "test")


# ---------------------------------------------------------------- normalisation

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")          # any whitespace but newline
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize(text: str, form: str = "NFKC") -> str:
    """Unicode normal form, no control characters, single spaces, at most one blank line, no edge spaces."""
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", text).strip()


# ---------------------------------------------------------------- quality filters

_LETTER_RUNS = re.compile(r"[^\W\d_]+")
_WORD_WITHOUT_LETTER = re.compile(r"(?<!\S)(?:[\d_]|[^\w\s])+(?!\S)")
STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLETS = ("•", "-", "*", "●", "‣", "◦")


def _repeated_lines(lines: list[str]) -> tuple[int, int]:
    """(duplicate lines, characters in them): every occurrence after the first counts."""
    seen, count, chars = set(), 0, 0
    for line in lines:
        if line in seen:
            count, chars = count + 1, chars + len(line)
        seen.add(line)
    return count, chars


def _top_bigram_chars(words: list[str]) -> int:
    if len(words) < 2:
        return 0
    (bigram, n), = Counter(zip(words, words[1:])).most_common(1)
    return n * (len(bigram[0]) + len(bigram[1])) if n > 1 else 0


def quality_failure(text: str, f: P.Filters) -> str | None:
    """Name of the first filter the text fails, or None when it passes all (Gopher-style heuristics)."""
    chars = len(text)
    if chars < f.min_chars:
        return "min_chars"
    if chars > f.max_chars:
        return "max_chars"
    words = text.split()
    n = len(words)
    if n < f.min_words:
        return "min_words"
    if n > f.max_words:
        return "max_words"
    mean_length = sum(map(len, words)) / n if n else 0.0
    if mean_length < f.min_mean_word_length:
        return "min_mean_word_length"
    if mean_length > f.max_mean_word_length:
        return "max_mean_word_length"
    visible = chars - sum(text.count(c) for c in " \n")
    if visible and sum(map(len, _LETTER_RUNS.findall(text))) / visible < f.min_alpha_ratio:
        return "min_alpha_ratio"
    if n and 1 - len(_WORD_WITHOUT_LETTER.findall(text)) / n < f.min_alpha_word_ratio:
        return "min_alpha_word_ratio"
    if n and (text.count("#") + text.count("...") + text.count("…")) / n > f.max_symbol_word_ratio:
        return "max_symbol_word_ratio"
    lines = [line for line in text.split("\n") if line.strip()]
    if lines and sum(line.lstrip().startswith(_BULLETS) for line in lines) / len(lines) > f.max_bullet_line_ratio:
        return "max_bullet_line_ratio"
    if lines and sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines) > f.max_ellipsis_line_ratio:
        return "max_ellipsis_line_ratio"
    repeated, repeated_chars = _repeated_lines(lines)
    if lines and repeated / len(lines) > f.max_repeated_line_ratio:
        return "max_repeated_line_ratio"
    if chars and repeated_chars / chars > f.max_repeated_line_char_ratio:
        return "max_repeated_line_char_ratio"
    lower = [w.lower().strip(".,;:!?\"'()[]") for w in words]
    if chars and _top_bigram_chars(lower) / chars > f.max_top_bigram_char_ratio:
        return "max_top_bigram_char_ratio"
    if len(STOP_WORDS.intersection(lower)) < f.min_stop_words:
        return "min_stop_words"
    return None


FILTERS = tuple(P.Filters.model_fields)  # the order quality_failure checks them in


# ---------------------------------------------------------------- deduplication

def exact_key(text: str) -> str:
    """Texts equal up to case and whitespace share a key."""
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def shingles(text: str, size: int) -> set[bytes]:
    words = re.findall(r"\w+", text.lower())
    if len(words) <= size:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i:i + size]).encode("utf-8") for i in range(len(words) - size + 1)}


def near_duplicates(texts: list[str], threshold: float, num_perm: int, shingle_size: int, seed: int = 1) -> list[int]:
    """Indices of texts whose MinHash Jaccard with an earlier kept text reaches the threshold."""
    from datasketch import MinHash, MinHashLSH

    from xxhash import xxh32_intdigest  # 5x faster than datasketch's default sha1, as good for MinHash

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    template = MinHash(num_perm=num_perm, seed=seed)  # its permutations are drawn once, not once per document
    kept: dict[int, MinHash] = {}
    duplicates = []
    for i, text in enumerate(texts):
        signature = MinHash(num_perm=num_perm, seed=seed, hashfunc=xxh32_intdigest, permutations=template.permutations,
                            scheme=template.scheme)
        signature.update_batch(list(shingles(text, shingle_size)))
        # LSH returns candidates; confirm with the estimated Jaccard to drop banding false positives.
        if any(kept[j].jaccard(signature) >= threshold for j in lsh.query(signature)):
            duplicates.append(i)
            continue
        kept[i] = signature
        lsh.insert(i, signature)
    return duplicates


# ---------------------------------------------------------------- PII scrubbing

def luhn_valid(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = int(d)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    # 15 (Amex), 16 (most) or 19 digits; 14-digit runs are mostly timestamps.
    return "<CREDIT_CARD>" if len(digits) in (15, 16, 19) and luhn_valid(digits) else None


def _ipv6(match: re.Match) -> str | None:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return None
    return "<IP_ADDRESS>"


_PII = {  # kind -> (pattern, replacement or a function returning it / None to keep the match)
    "email": (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b"), "<EMAIL>"),
    "ip": (re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"),
           "<IP_ADDRESS>"),
    "ipv6": (re.compile(r"(?<![\w:])(?=[0-9A-Fa-f:]*[0-9A-Fa-f])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"),
             _ipv6),
    # Issuer prefixes 2-6, written as one run of digits or in groups of four (Amex 4-6-5); Luhn decides.
    "credit_card": (re.compile(r"(?<![\w-])[2-6]\d{3}(?:(?:[ -]?\d{4}){2}[ -]?\d{1,7}|[ -]?\d{6}[ -]?\d{5})(?![\w-])"),
                    _card),
    # North American numbers (area code and exchange start 2-9), or international ones written with '+'.
    "phone": (re.compile(r"(?<![\w+./-])(?:\+[1-9]\d{0,2}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{3,4}"
                         r"|(?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .-]?[2-9]\d{2}[ .-]\d{4})(?![\w-]|\.\d)"),
              "<PHONE>"),
}
# A cheap necessary condition per kind: most documents skip the costly pattern.
_PII_HINT = {"email": re.compile("@"), "ip": re.compile(r"\d\.\d"), "ipv6": re.compile(r"[0-9A-Fa-f]:[0-9A-Fa-f:]"),
             "credit_card": re.compile(r"\d{4}"), "phone": re.compile(r"\d{3}")}
_PII_SWITCH = {"email": "email", "ip": "ip", "ipv6": "ip", "credit_card": "credit_card", "phone": "phone"}


def scrub_pii(text: str, switches: P.Pii = P.Pii()) -> tuple[str, Counter]:
    """Replace emails, IP addresses, Luhn-valid card numbers and phone numbers with placeholders."""
    counts: Counter = Counter()
    for kind, (pattern, replacement) in _PII.items():
        switch = _PII_SWITCH[kind]
        if not getattr(switches, switch) or not _PII_HINT[kind].search(text):
            continue

        def substitute(match: re.Match, replacement=replacement, switch=switch) -> str:
            new = replacement(match) if callable(replacement) else replacement
            if new is None:
                return match.group()
            counts[switch] += 1
            return new
        text = pattern.sub(substitute, text)
    return text, counts


# ---------------------------------------------------------------- split

def split_of(text: str, validation: float, test: float) -> str:
    """Fixed by the text alone, so a document never changes split when others are added or removed."""
    x = stable_fraction(text, salt="split")
    return "test" if x < test else "validation" if x < test + validation else "train"


# ---------------------------------------------------------------- the pipeline

@dataclass
class Tally:
    """Documents and characters in and out of each step, per source (every source at every step)."""
    sources: list[str]
    steps: dict

    @classmethod
    def new(cls, docs: list[dict]) -> "Tally":
        sources = sorted({d["source"] for d in docs})
        return cls(sources, {s: {} for s in sources})

    def record(self, step: str, before: list[dict], after: list[dict]) -> None:
        for source in self.sources:
            b = [d for d in before if d["source"] == source]
            a = [d for d in after if d["source"] == source]
            self.steps[source][step] = {
                "documents_in": len(b), "documents_out": len(a),
                "characters_in": sum(len(d["text"]) for d in b), "characters_out": sum(len(d["text"]) for d in a)}


def prepare_corpus(docs: list[dict], filters: P.Filters, p: P.PrepareParams, seed: int) -> tuple[dict, dict]:
    """Returns ({split: docs}, report). Pure: the same input and params give the same output."""
    tally = Tally.new(docs)
    normalized = [dict(d, text=normalize(d["text"], p.normalization)) for d in docs]
    tally.record("normalize", docs, normalized)

    docs = normalized
    failures = [quality_failure(d["text"], filters) for d in docs]
    for name in FILTERS:
        kept = [(d, failure) for d, failure in zip(docs, failures) if failure != name]
        tally.record(f"filter_{name}", docs, [d for d, _ in kept])
        docs, failures = [d for d, _ in kept], [failure for _, failure in kept]

    if p.dedup.exact:
        seen, kept = set(), []
        for d in docs:
            key = exact_key(d["text"])
            if key not in seen:
                seen.add(key)
                kept.append(d)
        tally.record("dedup_exact", docs, kept)
        docs = kept
    if p.dedup.near.enabled:
        near = p.dedup.near
        dropped = set(near_duplicates([d["text"] for d in docs], near.threshold, near.num_perm, near.shingle_size, seed))
        kept = [d for i, d in enumerate(docs) if i not in dropped]
        tally.record("dedup_near", docs, kept)
        docs = kept

    pii: Counter = Counter()
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for d in docs:
        text, counts = scrub_pii(d["text"], p.pii)
        pii.update(counts)
        splits[split_of(d["text"], p.split.validation, p.split.test)].append(dict(d, text=text))
    report = {
        "documents_in": len(normalized), "documents_out": len(docs),
        "characters_in": sum(len(d["text"]) for d in normalized),
        "characters_out": sum(len(d["text"]) for ds in splits.values() for d in ds),
        "sources": tally.steps,
        "duplicates_removed": {kind: sum(s.get(f"dedup_{kind}", {}).get("documents_in", 0)
                                         - s.get(f"dedup_{kind}", {}).get("documents_out", 0)
                                         for s in tally.steps.values()) for kind in ("exact", "near")},
        "pii_replaced": {kind: pii.get(kind, 0) for kind in ("email", "phone", "ip", "credit_card")},
        "split": {s: {"documents": len(ds), "characters": sum(len(d["text"]) for d in ds)} for s, ds in splits.items()},
    }
    return splits, report


def length_histogram(splits: dict[str, list[dict]], edges: list[int]) -> list[dict]:
    """Documents per length bin (words); a last bin up to the longest document holds any beyond the edges."""
    lengths = [len(d["text"].split()) for docs in splits.values() for d in docs]
    edges = sorted(set(edges))
    if lengths and max(lengths) > edges[-1]:
        edges.append(max(lengths))
    counts = Counter(next(e for e in edges if n <= e) for n in lengths)
    return [{"max_words": e, "documents": counts.get(e, 0)} for e in edges]


def main() -> None:
    params = P.load()
    p = params.prepare
    report, outputs, lengths = {}, {}, {}
    for corpus in CORPORA:
        required = ("text", "source", "label") if corpus == "finetune" else ("text", "source")
        docs = read_jsonl(RAW / f"{corpus}.jsonl", required)
        log.info("%s: %d documents in", corpus, len(docs))
        outputs[corpus], report[corpus] = prepare_corpus(docs, p.filters[corpus], p, params.seed)
        lengths[corpus] = length_histogram(outputs[corpus], p.length_bins)
        log.info("%s: %s", corpus, {s: len(ds) for s, ds in outputs[corpus].items()})
    with atomic_path(PREPARED, directory=True) as tmp:
        for corpus, splits in outputs.items():
            (tmp / corpus).mkdir()
            for split, docs in splits.items():
                write_jsonl(tmp / corpus / f"{split}.jsonl", docs)
    for corpus, rows in lengths.items():
        write_json(f"reports/plots/lengths_{corpus}.json", rows)
    write_json(REPORT, report)


if __name__ == "__main__":
    from stages.core import run
    run(main)
