"""Config sections of the data stages (curation, tokenizer, mixture and shards)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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


def _hubs() -> list[str]:
    return ["huggingface.co", "hf.co", "hf-mirror.com", "kaggle.com", "modelscope.cn",
            "paperswithcode.com", "zenodo.org", "opendatalab.com"]


def _licenses() -> list[str]:
    return ["MIT", "BSD-2-Clause", "BSD-3-Clause", "BSD-4-Clause-UC", "Apache-2.0", "PSF-2.0",
            "ISC", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "GFDL-1.3-or-later", "GPL-1.0-or-later",
            "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-or-later", "LGPL-2.1-or-later",
            "Linux-man-pages-copyleft", "LicenseRef-PublicDomain", "LicenseRef-Debian-FAQ"]


def _cutoffs() -> dict[str, str]:
    # The report's per-source cut-offs mapped onto our families (GitHub code Jun 2025, web
    # HTML Sep 2025, PDFs Dec 2025 for technical and math documents).
    return {"code": "2025-06-30", "general": "2025-09-30", "stem": "2025-12-31",
            "math": "2025-12-31", "multilingual": "2025-09-30"}


@dataclass(frozen=True)
class CurationConfig:
    """Notebook 01: the curation pipeline over the raw sample."""

    max_docs_per_source: int | None = spec(None, min=1, help="documents read per source file "
                                                            "(null = all)")
    shard_size: int = spec(200, min=1, help="documents per shard of the map phase")
    executor: Literal["serial", "local", "ray"] = "local"
    workers: int = spec(2, min=1, help="processes of the local pool or Ray")
    exclude_domains: list[str] = spec(factory=_hubs, help="ML dataset hubs and mirrors")
    exclude_paths: list[str] = spec(factory=lambda: [r"(^|/)datasets?/.*\.(jsonl?|parquet|arrow)$"],
                                    help="regexes on the path inside a source")
    licenses: list[str] = spec(factory=_licenses, help="SPDX license allow-list")
    allow_private: bool = spec(False, help="opt in to private sources")
    cutoffs: dict[str, str] = spec(factory=_cutoffs, help="knowledge cut-off per family")
    human_era_before: str = spec("2022-11-30", help="documents dated earlier are human-era")
    min_words: int = spec(20, min=0, help="quality: fewer words is too short")
    max_symbol_ratio: float = spec(0.35, min=0.0, max=1.0, help="quality threshold")
    max_dup_line_fraction: float = spec(0.5, min=0.0, max=1.0, help="quality threshold")
    minhash_perm: int = spec(128, min=8, help="MinHash permutations")
    shingle: int = spec(5, min=1, help="words per shingle")
    bands: int = spec(16, min=1, help="LSH bands (bands x rows <= minhash_perm)")
    rows: int = spec(8, min=1, help="LSH rows per band")
    near_dup_threshold: float = spec(0.7, min=0.0, max=1.0, help="estimated Jaccard to merge")
    decontam_ngram: int = spec(8, min=1, help="words per n-gram for decontamination")
    detector_steps: int = spec(300, min=1, help="training steps of each detector model")
    detector_d_model: int = spec(128, min=32, help="width of the detector's byte models")
    detector_seq_len: int = spec(256, min=64, help="bytes per window of the detector's byte "
                                                   "models (their training length)")
    detector_score_bytes: int = spec(512, min=64, help="bytes of each document scored, in "
                                                      "windows of detector_seq_len")
    detector_temperature: float = spec(0.7, min=0.0, help="sampling temperature of the "
                                                         "own-model text (deployed-style)")
    detector_top_p: float = spec(0.9, min=0.0, max=1.0, help="nucleus of the own-model text")
    detector_eval_docs: int = spec(60, min=4, help="held-out human documents in the evaluation")
    detector_score: Literal["binoculars", "fast_detect"] = "binoculars"
    detector_fpr: float = spec(0.01, min=0.0, max=0.5, help="false-positive rate of the filter")
    detector_min_auc: float = spec(0.8, min=0.0, max=1.0, help="the zero-shot detector removes "
                                   "documents only if its AUC reaches this, on own-model text "
                                   "and on the data/ai_text passages")
    ai_fpr: float = spec(0.005, min=0.0, max=0.5, help="false-positive rate of the supervised "
                         "AI-content detector, set on held-out human documents")
    ai_plant_share: float = spec(0.15, min=0.0, max=0.9, help="share of data/ai_text passages "
                                 "planted into the crawl (never train the detector)")
    ai_reference_share: float = spec(0.3, min=0.05, max=0.9, help="share of the sample's "
                                     "documents that train the n-gram feature models (never "
                                     "the human side of an evaluation)")
    ai_edit_share: float = spec(0.1, min=0.0, max=0.33, help="share of passages given each "
                                "edit (Markdown stripped, first sentence removed, joined)")
    ai_C: float = spec(0.1, min=1e-6, help="inverse regularisation of the logistic regression")
    ai_word_C: float = spec(30.0, min=1e-6, help="inverse regularisation of the word model")
    ai_byte_features: bool = spec(False, help="feed the byte models' features to the supervised "
                                  "detector (measured either way: docs/data.md)")
    ai_bootstrap: int = spec(500, min=10, help="bootstrap resamples of every interval")
    ai_prose_views: int = spec(4, min=0, help="pieces of running prose per document of the "
                               "kinds in ai_prose_view_kinds added to the detector's human "
                               "side (0 = none; never the corpus)")
    ai_prose_view_kinds: list[str] = spec(factory=lambda: ["wiki"],
                                          help="documents given prose views: wiki, man")
    ai_human_sources: list[str] = spec(factory=lambda: ["debian-history"],
                                       help="packages of the detector's own human prose "
                                       "(sources.DETECTOR_SOURCES) added to its human side; "
                                       "never the corpus")
    ai_masked_words: bool = spec(True, help="a second word model beside the word model, on "
                                 "topic-masked text (words outside the ai_masked_vocab most "
                                 "common English words replaced by _): how a text strings "
                                 "its words together")
    ai_masked_vocab: int = spec(100, min=1, max=150, help="words the topic-masked text keeps "
                                "(the most common English words, ai_detect.FUNCTION_WORDS)")
    ai_word_skip_genres: list[str] = spec(factory=lambda: ["multilingual"],
                                          help="human genres that never fit the word models "
                                          "(non-English text: its absence of English words "
                                          "would read as evidence of a machine)")

    def check(self) -> list[tuple[str, str]]:
        unknown = sorted(set(self.ai_prose_view_kinds) - {"wiki", "man"})
        if unknown:
            return [("ai_prose_view_kinds", f"unknown kinds {unknown}; allowed: wiki, man")]
        from mai_repro.data.sources import DETECTOR_SOURCES

        allowed = sorted(s.package for s in DETECTOR_SOURCES)
        unknown = sorted(set(self.ai_human_sources) - set(allowed))
        if unknown:
            return [("ai_human_sources", f"unknown sources {unknown}; allowed: "
                                         f"{', '.join(allowed)}")]
        if self.bands * self.rows > self.minhash_perm:
            return [("bands", f"bands x rows = {self.bands * self.rows} exceeds "
                              f"minhash_perm = {self.minhash_perm}")]
        return []
