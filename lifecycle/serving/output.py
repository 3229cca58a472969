"""What becomes of a model's answer before it is sent: the output filter, and the cache of deterministic answers."""
from __future__ import annotations

import collections
import re
import threading

from cachetools import LRUCache

from lifecycle.params.serve import OutputFilter as OutputFilterParams


class OutputFilter:
    """Block-list words (whole words, any case) and regular expressions replaced in generated text."""

    def __init__(self, settings: OutputFilterParams):
        self.rules = [(f"block:{w}", re.compile(rf"(?<!\w){re.escape(w)}(?!\w)", re.IGNORECASE))
                      for w in settings.block_list]
        self.rules += [(f"pattern:{p}", re.compile(p)) for p in settings.patterns]
        self.replacement = settings.replacement

    def apply(self, text: str) -> tuple[str, collections.Counter]:
        hits: collections.Counter = collections.Counter()
        for name, rule in self.rules:
            text, n = rule.subn(self.replacement, text)
            if n:
                hits[name] += n
        return text, hits


class ResultCache:
    """The answers of the last `size` keys (least recently used dropped first; size 0 keeps none), thread-safe."""

    def __init__(self, size: int):
        self.items = LRUCache(maxsize=size) if size > 0 else None
        self.lock = threading.Lock()

    def get(self, key: str):
        if self.items is None:
            return None
        with self.lock:
            return self.items.get(key)

    def put(self, key: str, value) -> None:
        if self.items is None:
            return
        with self.lock:
            self.items[key] = value
