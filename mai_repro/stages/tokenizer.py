"""Stage ``tokenizer`` (notebook 03): BPE on the clean corpus, the mixture plan, packed shards and the loader check."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mai_repro import plots
from mai_repro.artifacts import Run
from mai_repro.data.config import FAMILIES
from mai_repro.data.mixture import MixturePlan, plan_mixture
from mai_repro.data.shards import (
    SPLITS,
    FamilyShard,
    SplitStats,
    is_heldout,
    open_shards,
    roundtrip_heldout,
    token_dtype,
    unique_tokens,
    write_shards,
)
from mai_repro.data.tokenizer import BPETokenizer, train_on_corpus
from mai_repro.schema import result_dict

# --- the stage --------------------------------------------------------------------------------

SHARE_TOLERANCE = 0.03  # sampled vs planned family share, absolute, at LOADER_CHECK_ROWS rows
LOADER_CHECK_ROWS = 4096
STAGE = "tokenizer"


@dataclass
class TokenizerMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. Families are
    keys of the dict-valued metrics."""

    vocab_size: int
    dtype: str  # numpy dtype of the shards' token ids
    special_ids: dict[str, int]  # special token -> id
    tokenizer_train_bytes: dict[str, int]  # per family
    fertility: dict[str, dict[str, float | None]]  # family -> split -> tokens per byte
    train_tokens: dict[str, int]
    heldout_tokens: dict[str, int]
    docs: dict[str, dict[str, int]]  # family -> split -> documents
    budget_tokens: float  # steps x batch x seq_len of pre-training
    planned_tokens: float  # what the mixture plan spends of it
    epochs: dict[str, float | None]  # per family
    mixture_warnings: list[str]
    loader_share_max_abs_err: float  # largest |sampled - planned| family share of the loader
    heldout_roundtrip: dict[str, int]  # held-out documents checked / failed


METRICS = TokenizerMetrics


@dataclass
class TokenizerResult:
    """What notebook 03 shows: the tokenizer, the shards, the plan and their checks."""

    tokenizer: BPETokenizer
    stats: dict[str, dict[str, SplitStats]]
    train_bytes: dict[str, int]  # tokenizer-training bytes per family
    plan: MixturePlan
    vocab: dict[str, Any]
    loader_shares: dict[str, dict[str, float]]  # family -> planned, sampled
    roundtrip: dict[str, int]  # held-out documents checked and failed
    figures: dict[str, Path]
    metrics: TokenizerMetrics

    def composition(self) -> list[dict[str, Any]]:
        """Our corpus in the report's table format (tokens, not trillions)."""
        return [{"family": r["family"], "unique tokens": r["unique"],
                 "training tokens": r["training"], "share": r["share"], "epochs": r["epochs"]}
                for r in self.plan.table()]


def vocab_stats(tok: BPETokenizer, shards: Mapping[str, FamilyShard]) -> dict[str, Any]:
    """Byte length of each learned token, and which family uses each merge the most."""
    first = len(tok.special_ids) + 256
    learned = np.arange(first, tok.vocab_size)
    lengths = np.array([len(tok.token_bytes(int(i))) for i in learned])
    freq = {}
    for fam, sh in shards.items():
        counts = np.bincount(np.asarray(sh.seqs[:, 1:]).ravel(), minlength=tok.vocab_size)
        freq[fam] = counts / max(counts.sum(), 1)
    fams = list(freq)
    table = np.stack([freq[f][learned] for f in fams]) if fams else np.zeros((0, len(learned)))
    used = table.sum(0) > 0 if fams else np.zeros(len(learned), bool)
    top = table.argmax(0) if fams else np.zeros(len(learned), int)
    dominant = {f: float(np.mean(used & (top == k))) for k, f in enumerate(fams)}
    dominant["unused"] = float(np.mean(~used))
    return {"learned": len(learned), "lengths": lengths.tolist(),
            "mean_length": float(lengths.mean()) if len(lengths) else 0.0,
            "dominant_family": dominant}


def check_loader(shards: Mapping[str, FamilyShard], weights: Mapping[str, float], seed: int,
                 rows: int = LOADER_CHECK_ROWS, batch_size: int = 64
                 ) -> dict[str, dict[str, float]]:
    """Sampled family shares of ``rows`` loader rows next to the planned weights."""
    from mai_repro.data.loader import Loader

    loader = Loader({f: s.seqs for f, s in shards.items()}, weights, batch_size, seed)
    counts = dict.fromkeys(shards, 0)
    for _ in range(-(-rows // batch_size)):
        for f in loader.next_with_families()[1]:
            counts[f] += 1
    n = sum(counts.values())
    return {f: {"planned": float(weights.get(f, 0.0)), "sampled": counts[f] / n}
            for f in shards}


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _figure_fertility(stats: Mapping[str, Mapping[str, SplitStats]], path: Path) -> Path:
    fams = list(stats)
    x = np.arange(len(fams))
    fig, ax = plots.new(width=7.0, height=3.6)
    for k, split in enumerate(SPLITS):
        vals = [stats[f][split].fertility for f in fams]
        bars = ax.bar(x + (k - 0.5) * 0.4, vals, 0.4, label=split, color=plots.PALETTE[k])
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.axhline(1.0, color=plots.REPORT, ls="--", lw=1, label="raw bytes (1 token per byte)")
    ax.set_xticks(x, fams)
    ax.set_ylabel("tokens per UTF-8 byte")
    ax.set_title("Fertility of our BPE per family (lower = more bytes per token)")
    ax.legend(fontsize=8)
    return plots.save(fig, path)


def _figure_vocab(vocab: Mapping[str, Any], path: Path) -> Path:
    fig, (ax1, ax2) = plots.new(1, 2, width=4.6, height=3.4)
    lengths = np.array(vocab["lengths"])
    if len(lengths):
        ax1.hist(lengths, bins=np.arange(1, lengths.max() + 2) - 0.5, color=plots.OURS)
    ax1.set_xlabel("bytes per learned token")
    ax1.set_ylabel("tokens")
    ax1.set_title(f"{vocab['learned']} merges, mean {vocab['mean_length']:.2f} bytes")
    dom = vocab["dominant_family"]
    ax2.bar(list(dom), [100 * v for v in dom.values()], color=plots.PALETTE[: len(dom)])
    ax2.set_ylabel("% of learned tokens")
    ax2.set_title("Family that uses each merge most")
    ax2.tick_params(axis="x", rotation=30)
    return plots.save(fig, path)


def build(run: Run) -> TokenizerResult:
    """Stage ``tokenizer``: train the BPE, write shards, plan the mixture, check the loader."""
    cfg = run.cfg
    clean = run.require("curation").dir
    seed, frac = cfg.seed, cfg.mixture.heldout_fraction
    with run.stage(STAGE) as st:
        st.add_input("clean", clean / "clean")
        tok, train_bytes = train_on_corpus(
            clean, FAMILIES, cfg.model.vocab_size, cfg.tokenizer.train_bytes,
            cfg.tokenizer.min_frequency, seed,
            keep=lambda d: not is_heldout(d["id"], seed, frac))
        tok.save(st.path("tokenizer.json"))
        stats = write_shards(clean, FAMILIES, tok, st.path("shards"), cfg.pretrain.seq_len,
                             frac, seed, cfg.model.vocab_size)
        p = cfg.pretrain
        shares = {f: float(cfg.mixture.shares.get(f, 0.0)) for f in FAMILIES}
        plan = plan_mixture(unique_tokens(stats), shares, p.steps * p.batch_size * p.seq_len,
                            cfg.mixture.max_epochs)
        for w in plan.warnings:
            print("mixture warning:", w)
        if not plan.planned_tokens > 0:
            raise ValueError(f"the mixture plan gives no family any tokens (max_epochs "
                             f"{cfg.mixture.max_epochs}, unique {unique_tokens(stats)})")
        weights = {f.family: f.training_tokens / plan.planned_tokens for f in plan.families}
        (st.path("plan.json")).write_text(json.dumps({
            "budget": plan.budget, "weights": weights, "warnings": plan.warnings,
            "table": [{k: _finite(v) if isinstance(v, float) else v for k, v in r.items()}
                      for r in plan.table()]}, indent=2))
        train_shards = open_shards(st.path("shards"), "train")
        loader_shares = check_loader(train_shards, weights, seed)
        roundtrip = roundtrip_heldout(clean, FAMILIES, tok, seed, frac)
        vocab = vocab_stats(tok, train_shards)
        figures = {"fertility": _figure_fertility(stats, st.path("figures", "fertility")),
                   "vocab": _figure_vocab(vocab, st.path("figures", "vocab"))}
        metrics = TokenizerMetrics(
            vocab_size=tok.vocab_size, dtype=token_dtype(cfg.model.vocab_size).name,
            special_ids=dict(tok.special_ids), tokenizer_train_bytes=dict(train_bytes),
            fertility={f: {s: _finite(v.fertility) for s, v in d.items()}
                       for f, d in stats.items()},
            train_tokens={f: d["train"].tokens for f, d in stats.items()},
            heldout_tokens={f: d["heldout"].tokens for f, d in stats.items()},
            docs={f: {s: v.docs for s, v in d.items()} for f, d in stats.items()},
            budget_tokens=plan.budget, planned_tokens=plan.planned_tokens,
            epochs={f.family: _finite(f.epochs) for f in plan.families},
            mixture_warnings=list(plan.warnings),
            loader_share_max_abs_err=max(abs(v["sampled"] - v["planned"])
                                         for v in loader_shares.values()),
            heldout_roundtrip=dict(roundtrip),
        )
        st.metrics.update(result_dict(metrics))
    return TokenizerResult(tok, stats, train_bytes, plan, vocab, loader_shares, roundtrip,
                           figures, metrics)


