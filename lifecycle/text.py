"""Text cleaning and quality filters: Unicode normalisation and Gopher-style heuristics (Rae et al. 2021)."""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from itertools import accumulate

from lifecycle.params.prepare import Filters

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n ][^\S\n]*| [^\S\n]+")  # whitespace but newline, other than one plain space
_BLANK_LINES = re.compile(r"\n{3,}")
_LINE_EDGES = re.compile(r" ?\n ?")


def normalize(text: str, form: str = "NFKC") -> str:
    """Unicode normal form, no control characters, single spaces, at most one blank line, no edge spaces."""
    if form != "none" and not text.isascii():  # ASCII is already in every normal form
        text = unicodedata.normalize(form, text)
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _LINE_EDGES.sub("\n", _SPACES.sub(" ", text))  # a line's edges hold at most one space after _SPACES
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


def quality_failure(text: str, f: Filters) -> str | None:
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


FILTERS = tuple(Filters.model_fields)  # the order quality_failure checks them in


# ---------------------------------------------------------------- documents cut to a size

# Where a long text may be cut, best first: blank lines (paragraphs), line ends, any whitespace.
_CUTS = (re.compile(r"(\n[^\S\n]*\n\s*)"), re.compile(r"(\n\s*)"), re.compile(r"(\s+)"))


def chunk_text(text: str, limit: int, level: int = 0) -> list[str]:
    """Pieces of at most `limit` characters, each about the same size, packing whole paragraphs; a paragraph too
    long is cut at line ends, a line at whitespace, and only a word longer than `limit` mid-word. Joined with the
    whitespace at the cuts, the pieces give back `text` (stripped)."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    if level == len(_CUTS):
        return [text[i:i + limit] for i in range(0, len(text), limit)]
    parts = _CUTS[level].split(text)  # part, separator, part, ...
    ends = [len(text) - before for before in accumulate((len(p) for p in parts), initial=0)]  # part i to the end

    def aim(i: int) -> float:  # a piece starting at part i: equal pieces of what is left
        return ends[i] / -(-ends[i] // limit)

    pieces, current, target = [], "", 0.0
    for i in range(0, len(parts), 2):
        part, gap = parts[i], parts[i - 1] if i else ""
        if len(part) > limit:
            pieces += ([current] if current else []) + chunk_text(part, limit, level + 1)
            current = ""
        elif not current:
            current, target = part, aim(i)
        elif len(current) + len(gap) + len(part) > limit or len(current) + len(gap) + len(part) / 2 > target:
            pieces.append(current)
            current, target = part, aim(i)
        else:
            current += gap + part
    return pieces + ([current] if current else [])


def paragraphs(text: str, limit: int) -> list[str]:
    """Each blank-line-separated paragraph, one longer than `limit` cut as chunk_text cuts it."""
    return [piece for paragraph in _CUTS[0].split(text)[::2] for piece in chunk_text(paragraph, limit)]


def split_document(text: str, mode: str, limit: int) -> list[str]:
    """A document as read (`none`), cut into paragraphs, or into chunks of about `limit` characters."""
    if mode == "paragraphs":
        return paragraphs(text, limit)
    if mode == "chunks" and len(text) > limit:
        return chunk_text(text, limit)
    return [text]
