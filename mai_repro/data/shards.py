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

from mai_repro.data.corpus import iter_clean
from mai_repro.data.tokenizer import BPETokenizer, doc_key

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


def roundtrip_heldout(clean_dir: Path | str, families: Sequence[str], tok: BPETokenizer,
                      seed: int, fraction: float) -> dict[str, int]:
    """decode(encode(text)) == text on every held-out document: documents checked, failed."""
    checked = failed = 0
    for doc in iter_clean(clean_dir, families):
        if is_heldout(doc["id"], seed, fraction):
            checked += 1
            failed += tok.decode(tok.encode(doc["text"])) != doc["text"]
    return {"checked": checked, "failed": failed}
