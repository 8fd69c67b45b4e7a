"""Token shards: the clean corpus tokenized once, split, packed and stored as memmaps.

Per family, documents are split into *train* and *held-out* by hashing their id with the seed
(a document is wholly in one split). Each split's documents are tokenized once, each followed
by ``<|endoftext|>``, and concatenated into one token stream. The stream is cut into sequences
of ``seq_len + 1`` tokens with a stride of ``seq_len``: sequence ``i`` covers stream positions
``[i*seq_len, i*seq_len + seq_len + 1)``, so ``seq[:-1]`` are inputs, ``seq[1:]`` targets, and
every token after the first is a target exactly once (the stream's tail shorter than one
sequence is dropped and counted). On disk, under ``shards/<family>/``::

    train.npy          (n_seq, seq_len + 1) uint16 (uint32 when the vocabulary needs it)
    train_docs.npy     (n_docs,) int64: stream offset at which each document starts
    train_ids.json     the document ids, in stream order
    heldout.npy, heldout_docs.npy, heldout_ids.json   the same for held-out documents

The stage ``tokenizer`` (:func:`build`) trains the tokenizer, writes the shards, plans the
mixture over the unique training tokens, and checks the loader's sampled shares.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mai_repro import plots
from mai_repro.artifacts import Run
from mai_repro.data.config import FAMILIES
from mai_repro.data.corpus import iter_clean
from mai_repro.data.mixture import MixturePlan, plan_mixture
from mai_repro.data.tokenizer import BPETokenizer, doc_key, train_on_corpus

SPLITS = ("train", "heldout")
ENCODE_BATCH = 256  # documents per call into the (multi-threaded) tokenizer


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def is_heldout(doc_id: str, seed: int, fraction: float) -> bool:
    """Whether a document is held out: a seeded hash of its id, below ``fraction``."""
    return doc_key(doc_id, seed, "heldout") < fraction * 2.0**64


@dataclass
class SplitStats:
    docs: int = 0
    bytes: int = 0
    tokens: int = 0  # stream length: document tokens + one <|endoftext|> each
    sequences: int = 0
    dropped_tail: int = 0  # stream tokens after the last full sequence
    seq_len: int = 0

    @property
    def fertility(self) -> float:
        """Tokens per UTF-8 byte (the <|endoftext|> markers not counted)."""
        return (self.tokens - self.docs) / self.bytes if self.bytes else float("nan")


@dataclass
class FamilyShard:
    """One family's split on disk: sequences, where documents start, their ids."""

    seqs: np.ndarray  # (n_seq, seq_len + 1) memmap
    doc_starts: np.ndarray  # (n_docs,) stream offsets
    doc_ids: list[str]

    @property
    def seq_len(self) -> int:
        return self.seqs.shape[1] - 1

    def docs_in(self, i: int) -> list[str]:
        """Ids of the documents that sequence ``i`` touches."""
        lo, hi = i * self.seq_len, i * self.seq_len + self.seq_len + 1
        first = max(int(np.searchsorted(self.doc_starts, lo, side="right")) - 1, 0)
        last = int(np.searchsorted(self.doc_starts, hi, side="left"))
        return self.doc_ids[first:last]


def pack(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """(n_seq, seq_len + 1) windows of ``stream`` with stride ``seq_len`` (a read-only view)."""
    if len(stream) < seq_len + 1:
        return np.zeros((0, seq_len + 1), stream.dtype)
    return np.lib.stride_tricks.sliding_window_view(stream, seq_len + 1)[::seq_len]


def _tokenize(tok: BPETokenizer, docs: Iterable[dict[str, Any]], dtype: np.dtype,
              stats: SplitStats, ids: list[str], starts: list[int]) -> np.ndarray:
    """One split's token stream (held in memory: a family's stream is small at our scale)."""
    chunks: list[np.ndarray] = []

    def flush(batch: list[dict[str, Any]]) -> None:
        for doc, toks in zip(batch, tok.encode_batch([d["text"] for d in batch]), strict=True):
            starts.append(stats.tokens)
            ids.append(doc["id"])
            chunks.append(np.asarray(toks + [tok.eot_id], dtype=dtype))
            stats.docs += 1
            stats.bytes += len(doc["text"].encode("utf-8"))
            stats.tokens += len(toks) + 1

    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == ENCODE_BATCH:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype)


def _write_split(out: Path, split: str, stream: np.ndarray, seq_len: int, ids: list[str],
                 starts: list[int], stats: SplitStats) -> None:
    seqs = pack(stream, seq_len)
    stats.sequences, stats.seq_len = len(seqs), seq_len
    stats.dropped_tail = len(stream) - (len(seqs) * seq_len + 1) if len(seqs) else len(stream)
    mm = np.lib.format.open_memmap(out / f"{split}.npy", mode="w+", dtype=stream.dtype,
                                   shape=seqs.shape)
    mm[:] = seqs
    mm.flush()
    del mm
    np.save(out / f"{split}_docs.npy", np.asarray(starts, dtype=np.int64))
    (out / f"{split}_ids.json").write_text(json.dumps(ids))


def write_shards(clean_dir: Path | str, families: Sequence[str], tok: BPETokenizer,
                 out_dir: Path | str, seq_len: int, heldout_fraction: float, seed: int,
                 vocab_size: int) -> dict[str, dict[str, SplitStats]]:
    """Tokenize every clean document once and write each family's train and held-out split.

    Returns statistics per family and split; also written to ``out_dir/index.json``.
    """
    if tok.vocab_size > vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens, more than vocab_size "
                         f"{vocab_size}")
    out_dir = Path(out_dir)
    dtype = token_dtype(vocab_size)
    result: dict[str, dict[str, SplitStats]] = {}
    bar = tqdm(desc="tokenizing", unit="doc")
    for fam in families:
        fam_dir = out_dir / fam
        fam_dir.mkdir(parents=True, exist_ok=True)
        result[fam] = {}
        for split in SPLITS:
            want = split == "heldout"
            docs = (d for d in iter_clean(clean_dir, [fam])
                    if is_heldout(d["id"], seed, heldout_fraction) == want)
            stats, ids, starts = SplitStats(), [], []
            stream = _tokenize(tok, _counted(docs, bar), dtype, stats, ids, starts)
            _write_split(fam_dir, split, stream, seq_len, ids, starts, stats)
            result[fam][split] = stats
    bar.close()
    index = {"seq_len": seq_len, "dtype": dtype.name, "vocab_size": vocab_size,
             "families": {f: {s: vars(st) for s, st in v.items()} for f, v in result.items()}}
    (out_dir / "index.json").write_text(json.dumps(index, indent=2))
    return result


def _counted(docs: Iterable[dict[str, Any]], bar: Any) -> Iterator[dict[str, Any]]:
    for d in docs:
        bar.update(1)
        yield d


def open_shards(shard_dir: Path | str, split: str = "train") -> dict[str, FamilyShard]:
    """Every family's split, memory-mapped read-only."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    shard_dir = Path(shard_dir)
    index = json.loads((shard_dir / "index.json").read_text())
    out = {}
    for fam in index["families"]:
        d = shard_dir / fam
        out[fam] = FamilyShard(np.load(d / f"{split}.npy", mmap_mode="r"),
                               np.load(d / f"{split}_docs.npy"),
                               json.loads((d / f"{split}_ids.json").read_text()))
    return out


def unique_tokens(stats: Mapping[str, Mapping[str, SplitStats]]) -> dict[str, int]:
    """Target tokens per family in the training sequences: what the mixture planner repeats
    (one epoch of the loader over a family reads exactly these)."""
    return {f: s["train"].sequences * s["train"].seq_len for f, s in stats.items()}


# --- the stage --------------------------------------------------------------------------------

SHARE_TOLERANCE = 0.03  # sampled vs planned family share, absolute, at LOADER_CHECK_ROWS rows
LOADER_CHECK_ROWS = 4096


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
    metrics: dict[str, Any]

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
    with run.stage("tokenizer") as st:
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
        st.metrics.update({
            "vocab_size": tok.vocab_size, "dtype": token_dtype(cfg.model.vocab_size).name,
            "special_ids": tok.special_ids, "tokenizer_train_bytes": train_bytes,
            "fertility": {f: {s: _finite(v.fertility) for s, v in d.items()}
                          for f, d in stats.items()},
            "train_tokens": {f: d["train"].tokens for f, d in stats.items()},
            "heldout_tokens": {f: d["heldout"].tokens for f, d in stats.items()},
            "docs": {f: {s: v.docs for s, v in d.items()} for f, d in stats.items()},
            "budget_tokens": plan.budget, "planned_tokens": plan.planned_tokens,
            "epochs": {f.family: _finite(f.epochs) for f in plan.families},
            "mixture_warnings": plan.warnings,
            "loader_share_max_abs_err": max(abs(v["sampled"] - v["planned"])
                                            for v in loader_shares.values()),
            "heldout_roundtrip": roundtrip,
        })
        metrics = json.loads(json.dumps(st.metrics))
    return TokenizerResult(tok, stats, train_bytes, plan, vocab, loader_shares, roundtrip,
                           figures, metrics)


def roundtrip_heldout(clean_dir: Path | str, families: Sequence[str], tok: BPETokenizer,
                      seed: int, fraction: float) -> dict[str, int]:
    """decode(encode(text)) == text on every held-out document: documents checked, failed."""
    checked = failed = 0
    for doc in iter_clean(clean_dir, families):
        if is_heldout(doc["id"], seed, fraction):
            checked += 1
            failed += tok.decode(tok.encode(doc["text"])) != doc["text"]
    return {"checked": checked, "failed": failed}
