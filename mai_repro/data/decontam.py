"""Decontamination: drop documents that share long n-grams with evaluation or task texts.

Word n-grams after normalisation (lower case, punctuation split off), kept as strings (not
Python's per-process salted ``hash``, so any worker process agrees) in a set; a
document is contaminated when any of its n-grams is in the set. Texts shorter than ``n`` words
contribute their whole normalised form, so short task prompts are matched exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[str]:
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


class Decontaminator:
    """Holds the n-grams of the protected texts; ``match(text)`` says whether text overlaps."""

    def __init__(self, protected: Iterable[str], n: int = 8):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = n
        self.grams: set[str] = set()
        self.short: set[str] = set()
        lengths = set()
        for text in protected:
            toks = words(text)
            (self.short if len(toks) < n else self.grams).update(ngrams(toks, n))
            if 0 < len(toks) < n:
                lengths.add(len(toks))
        self.short_lengths = sorted(lengths)

    def match(self, text: str) -> bool:
        toks = words(text)
        if self.grams and len(toks) >= self.n and ngrams(toks, self.n) & self.grams:
            return True
        for k in self.short_lengths:  # short protected texts: any window of their length
            if len(toks) >= k and ngrams(toks, k) & self.short:
                return True
        return False
