"""Config sections of the data stages (curation, tokenizer, mixture and shards)."""

from __future__ import annotations

from dataclasses import dataclass

from mai_repro.schema import spec

FAMILIES = ("code", "stem", "math", "general", "multilingual")


def _report_shares() -> dict[str, float]:
    # The report's composition mapped onto our families (books, PDFs and web -> general).
    return {"code": 54.6, "stem": 15.8, "math": 5.4, "general": 22.7, "multilingual": 1.6}


@dataclass(frozen=True)
class TokenizerConfig:
    """Byte-level BPE trained on the clean corpus; its size is ``model.vocab_size``."""

    train_bytes: int = spec(20_000_000, min=1_000, help="at most this many bytes of the clean "
                                                        "corpus train the tokenizer")
    min_frequency: int = spec(2, min=1, help="merges need at least this many occurrences")


@dataclass(frozen=True)
class MixtureConfig:
    """Target shares per family, repetition caps, held-out split (notebook 03)."""

    shares: dict[str, float] = spec(factory=_report_shares,
                                    help="target share per family (normalised)")
    max_epochs: float = spec(8.0, min=0.0, help="no family is repeated more often than this")
    heldout_fraction: float = spec(0.05, min=0.0, max=0.5, help="documents per family kept "
                                                                "out of training")

    def check(self) -> list[tuple[str, str]]:
        unknown = sorted(set(self.shares) - set(FAMILIES))
        if unknown:
            return [("shares", f"unknown families {unknown}; allowed: {', '.join(FAMILIES)}")]
        if any(v < 0 for v in self.shares.values()) or sum(self.shares.values()) <= 0:
            return [("shares", "shares must be >= 0 and not all zero")]
        return []


@dataclass(frozen=True)
class WikiConfig:
    """Notebook 02: raw wiki markup vs stripped text."""

    max_pages: int | None = spec(None, min=1, help="articles per language (null = all)")
    bpe_vocab: int = spec(8192, min=300, help="vocabulary of the BPE that counts tokens")
