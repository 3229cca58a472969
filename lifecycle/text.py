"""Text cleaning and quality filters: Unicode normalisation and Gopher-style heuristics (Rae et al. 2021)."""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

from lifecycle.params.prepare import Filters

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
