"""Per-document curation rules: source exclusion, cut-off dates, quality, PII.

Each function takes a :class:`~mai_repro.data.documents.Document` (and thresholds) and returns
the document, possibly changed, or a :class:`~mai_repro.data.steps.Removal` naming the rule.
They are wrapped into pipeline steps by mai_repro.stages.curation.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from urllib.parse import urlparse

from mai_repro.data.documents import Document
from mai_repro.data.steps import Removal

# ---------------------------------------------------------------------------- source exclusion


def domain_of(url: str | None) -> str:
    return (urlparse(url).hostname or "").lower() if url else ""


def excluded_source(doc: Document, domains: Sequence[str], path_patterns: Sequence[str],
                    licenses: Sequence[str], allow_private: bool = False) -> Document | Removal:
    """Dataset hubs and mirrors by domain, excluded paths, licenses outside the allow-list,
    and private sources unless opted in."""
    host = domain_of(doc.url)
    for d in domains:
        if host == d or host.endswith("." + d):
            return Removal("excluded_domain", host)
    for pattern in path_patterns:
        if re.search(pattern, doc.path):
            return Removal("excluded_path", pattern)
    if doc.license.startswith("private") and not allow_private:
        return Removal("private_source", doc.license)
    if not license_allowed(doc.license, licenses):
        return Removal("license_not_allowed", doc.license)
    return doc


def license_allowed(expression: str, allowed: Sequence[str]) -> bool:
    """An SPDX expression is allowed when every AND-part has an allowed OR-alternative."""
    allowed_set = set(allowed)
    for conjunct in re.split(r"\s+AND\s+", expression.strip("() ")):
        options = re.split(r"\s+OR\s+", conjunct.strip("() "))
        if not any(o.split(" WITH ")[0].strip("() ") in allowed_set for o in options):
            return False
    return bool(expression.strip())


# --------------------------------------------------------------------------------- cut-off dates


def after_cutoff(doc: Document, cutoffs: dict[str, str]) -> Document | Removal:
    """Documents dated after their family's knowledge cut-off (ISO dates compare as text)."""
    cutoff = cutoffs.get(doc.family)
    if cutoff and doc.date and doc.date[:10] > cutoff:
        return Removal("after_cutoff", f"{doc.date[:10]} > {cutoff}")
    return doc


# --------------------------------------------------------------------------------------- quality

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclasses.dataclass(frozen=True)
class QualityThresholds:
    min_words: int = 20
    max_words: int = 200_000
    max_symbol_ratio: float = 0.35  # non-alphanumeric, non-space characters / characters
    max_digit_ratio: float = 0.30
    max_dup_line_fraction: float = 0.5  # share of lines that repeat an earlier line
    max_top_word_fraction: float = 0.3  # the most frequent word's share of all words
    min_mean_word_len: float = 2.0
    max_mean_word_len: float = 15.0


def quality_stats(text: str) -> dict[str, float]:
    words = _WORD.findall(text)
    chars = max(1, sum(not c.isspace() for c in text))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    seen: set[str] = set()
    dups = 0
    for ln in lines:
        dups += ln in seen
        seen.add(ln)
    counts = Counter(w.lower() for w in words)
    return {
        "words": len(words),
        "symbol_ratio": sum(not c.isalnum() and not c.isspace() for c in text) / chars,
        "digit_ratio": sum(c.isdigit() for c in text) / chars,
        "dup_line_fraction": dups / max(1, len(lines)),
        "top_word_fraction": (counts.most_common(1)[0][1] / len(words)) if words else 1.0,
        "mean_word_len": (sum(map(len, words)) / len(words)) if words else 0.0,
    }


def low_quality(doc: Document, t: QualityThresholds) -> Document | Removal:
    """Gopher/C4-style heuristics; the first rule that fails names the removal."""
    s = quality_stats(doc.text)
    if s["words"] < t.min_words:
        return Removal("too_short", f"{s['words']} words")
    if s["words"] > t.max_words:
        return Removal("too_long", f"{s['words']} words")
    if s["symbol_ratio"] > t.max_symbol_ratio:
        return Removal("symbol_ratio", f"{s['symbol_ratio']:.2f}")
    if s["digit_ratio"] > t.max_digit_ratio:
        return Removal("digit_ratio", f"{s['digit_ratio']:.2f}")
    if s["dup_line_fraction"] > t.max_dup_line_fraction:
        return Removal("repeated_lines", f"{s['dup_line_fraction']:.2f}")
    if s["top_word_fraction"] > t.max_top_word_fraction:
        return Removal("repeated_word", f"{s['top_word_fraction']:.2f}")
    if not t.min_mean_word_len <= s["mean_word_len"] <= t.max_mean_word_len:
        return Removal("word_length", f"{s['mean_word_len']:.1f}")
    return doc


# ------------------------------------------------------------------------------------------ PII

PII_PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "ipv4": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "phone": re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{3}[ .-])"
                        r"\d{3}[ .-]\d{4}(?![\w.])"),
    "api_key": re.compile(r"\b(?:sk-[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{36}|AKIA[0-9A-Z]{16}|"
                          r"xox[abp]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35})\b"),
}
# Addresses that are documentation, not anyone's data (RFC 5737, RFC 2606, loopback).
PII_ALLOW = re.compile(r"^(?:127\.|0\.0\.0\.0|192\.0\.2\.|198\.51\.100\.|203\.0\.113\.|"
                       r"255\.255\.255\.)|@(?:example\.(?:com|org|net))$")


def scrub_pii(text: str) -> tuple[str, Counter]:
    """Replace PII with ``<KIND>`` placeholders; returns the text and counts per kind."""
    counts: Counter = Counter()

    def sub(kind: str):
        def repl(m: re.Match) -> str:
            if PII_ALLOW.search(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return f"<{kind.upper()}>"
        return repl

    for kind, pattern in PII_PATTERNS.items():
        text = pattern.sub(sub(kind), text)
    return text, counts


def pii_step(doc: Document) -> tuple[Document, Counter]:
    text, counts = scrub_pii(doc.text)
    return (dataclasses.replace(doc, text=text) if counts else doc), counts
