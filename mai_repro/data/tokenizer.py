"""A byte-level BPE tokenizer trained on the clean corpus (notebook 03).

Byte-level means every text is first mapped to its UTF-8 bytes, so nothing is out of
vocabulary and ``decode(encode(text)) == text`` for any string. The first ids are the special
tokens later stages need (document boundary, padding, RL markers), then the 256 bytes, then
the learned merges. Document text is encoded with special tokens treated as plain text: a
document that happens to contain the string ``<|endoftext|>`` cannot forge a boundary.

The training sample is spread evenly over families (each family gets an equal byte budget;
what a small family cannot fill goes to the others) and chosen deterministically by hashing
document ids with the seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mai_repro.data.corpus import iter_clean

EOT = "<|endoftext|>"  # document boundary
PAD = "<|pad|>"
PROMPT = "<|prompt|>"
ANSWER = "<|answer|>"
THINK = "<|think|>"
END_THINK = "<|end_think|>"
SPECIALS = (EOT, PAD, PROMPT, ANSWER, THINK, END_THINK)  # ids 0..5, in this order
N_BYTES = 256
MIN_VOCAB = N_BYTES + len(SPECIALS)


class BPETokenizer:
    """A trained byte-level BPE: encode/decode text, ids of the special tokens."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.tok.encode_special_tokens = True  # document text never yields special ids
        ids = {s: tok.token_to_id(s) for s in SPECIALS}
        missing = [s for s, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks the special tokens {missing}")
        self.special_ids: dict[str, int] = ids  # type: ignore[assignment]

    @property
    def eot_id(self) -> int:
        return self.special_ids[EOT]

    @property
    def pad_id(self) -> int:
        return self.special_ids[PAD]

    @property
    def prompt_id(self) -> int:
        return self.special_ids[PROMPT]

    @property
    def answer_id(self) -> int:
        return self.special_ids[ANSWER]

    @property
    def think_id(self) -> int:
        return self.special_ids[THINK]

    @property
    def end_think_id(self) -> int:
        return self.special_ids[END_THINK]

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-looking strings are encoded as ordinary bytes."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` (special tokens are written out as their strings)."""
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (a special token: its UTF-8 string)."""
        piece = self.tok.id_to_token(token_id)
        if piece in self.special_ids:
            return piece.encode()
        return bytes(_UNICODE_TO_BYTE[c] for c in piece)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(path))
        return path


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's printable-unicode stand-in for each byte, inverted (what ByteLevel uses)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_UNICODE_TO_BYTE = _byte_alphabet()


def load(path: Path | str) -> BPETokenizer:
    """A tokenizer saved with :meth:`BPETokenizer.save` (``tokenizer.json``)."""
    return BPETokenizer(Tokenizer.from_file(str(path)))


def train(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
    """Train a byte-level BPE of at most ``vocab_size`` tokens (specials and bytes included)."""
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least "
                         f"256 bytes + {len(SPECIALS)} special tokens = {MIN_VOCAB}")
    tok = Tokenizer(models.BPE())
    # digits one per token (as Llama and most modern tokenizers): a number is always spelled
    # the same way, digit by digit, so arithmetic has one consistent representation; then
    # GPT-2's byte-level split
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    seen = [0]

    def counted() -> Iterator[str]:
        for t in texts:
            seen[0] += 1
            yield t

    tok.train_from_iterator(counted(), trainer=trainer)
    if seen[0] == 0:
        raise ValueError("no text to train the tokenizer on: the corpus is empty")
    return BPETokenizer(tok)


def doc_key(doc_id: str, seed: int, salt: str) -> int:
    """A deterministic 64-bit hash of a document id (stable across runs and machines)."""
    digest = hashlib.blake2b(f"{salt}:{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def even_budgets(sizes: Mapping[str, int], total: int) -> dict[str, int]:
    """Split ``total`` bytes evenly over families; a family smaller than its share gives the
    rest to the others (water-filling). ``sizes`` are the bytes each family has."""
    out: dict[str, int] = {}
    left, open_ = total, sorted((k for k in sizes if sizes[k] > 0), key=lambda k: sizes[k])
    for i, fam in enumerate(open_):
        share = left // (len(open_) - i)
        out[fam] = min(sizes[fam], share)
        left -= out[fam]
    return {k: out.get(k, 0) for k in sizes}


def training_sample(clean_dir: Path | str, families: Sequence[str], train_bytes: int, seed: int,
                    keep: Callable[[dict[str, Any]], bool] = lambda doc: True
                    ) -> tuple[Callable[[], Iterator[str]], dict[str, int]]:
    """Choose the tokenizer's training text: at most ``train_bytes`` UTF-8 bytes, even over
    families, documents taken in a seeded hash order (the last one cut to fit).

    Returns a function that streams the chosen texts (a second pass over the corpus) and the
    bytes taken per family. ``keep`` filters documents (e.g. drops held-out ones).
    """
    docs: dict[str, list[tuple[int, str, int]]] = {f: [] for f in families}
    for doc in iter_clean(clean_dir, families):
        if keep(doc):
            n = len(doc["text"].encode("utf-8"))
            docs[doc["family"]].append((doc_key(doc["id"], seed, "tokenizer"), doc["id"], n))
    budgets = even_budgets({f: sum(d[2] for d in v) for f, v in docs.items()}, train_bytes)
    take: dict[tuple[str, str], int] = {}  # (family, id) -> bytes taken
    for fam, items in docs.items():
        left = budgets[fam]
        for _, doc_id, n in sorted(items):
            if left <= 0:
                break
            take[(fam, doc_id)] = min(n, left)
            left -= min(n, left)

    def texts() -> Iterator[str]:
        for doc in iter_clean(clean_dir, families):
            n = take.get((doc["family"], doc["id"]))
            if n is not None:
                raw = doc["text"].encode("utf-8")
                yield raw[:n].decode("utf-8", "ignore") if n < len(raw) else doc["text"]

    return texts, budgets


def train_on_corpus(clean_dir: Path | str, families: Sequence[str], vocab_size: int,
                    train_bytes: int, min_frequency: int, seed: int,
                    keep: Callable[[dict[str, Any]], bool] = lambda doc: True
                    ) -> tuple[BPETokenizer, dict[str, int]]:
    """Train on an even, deterministic sample of the clean corpus; returns the tokenizer and
    the training bytes per family."""
    if vocab_size < MIN_VOCAB:  # fail before reading the corpus
        train([], vocab_size)
    texts, budgets = training_sample(clean_dir, families, train_bytes, seed, keep)
    if sum(budgets.values()) == 0:
        raise ValueError(f"no clean documents of families {list(families)} under {clean_dir}: "
                         f"the corpus is empty (run the curation stage, notebook 01)")
    return train(texts(), vocab_size, min_frequency), budgets
