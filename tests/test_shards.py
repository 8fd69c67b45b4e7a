"""Packed shards: the held-out split, packing arithmetic, dtypes, and the stage end to end."""

import json

import numpy as np
import pytest

import mai_repro.config
from mai_repro import artifacts
from mai_repro.data import shards as sh
from mai_repro.data import tokenizer as tk
from mai_repro.data.bytelevel import stdlib_sources
from mai_repro.data.corpus import iter_clean, write_clean
from mai_repro.data.loader import from_stage
from mai_repro.stages import read_metrics
from mai_repro.stages import tokenizer as tokenizer_stage

FAMS = ("code", "stem", "math")
SEED, FRACTION, SEQ = 0, 0.25, 32


def write_stdlib_corpus(dir_, max_bytes=1_500_000, doc_chars=6_000):
    """Real human-written text (CPython's standard library, PSF-2.0), the first ``doc_chars``
    of each module a document; families by position, a fixture layout."""
    for k, fam in enumerate(FAMS):
        recs = [{"id": name, "family": fam, "text": text[:doc_chars], "source": "cpython",
                 "license": "PSF-2.0"}
                for i, (name, text) in enumerate(stdlib_sources(max_bytes)) if i % 3 == k]
        write_clean(dir_, fam, recs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    clean = tmp_path_factory.mktemp("clean")
    write_stdlib_corpus(clean)
    tok, _ = tk.train_on_corpus(clean, FAMS, 400, 10**6, 2, SEED,
                                keep=lambda d: not sh.is_heldout(d["id"], SEED, FRACTION))
    out = clean / "shards"
    stats = sh.write_shards(clean, FAMS, tok, out, SEQ, FRACTION, SEED, vocab_size=400)
    return clean, tok, out, stats


def test_pack_hand_example():
    seqs = sh.pack(np.arange(11), 3)
    assert seqs.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    targets = seqs[:, 1:].ravel()
    assert sorted(targets) == list(range(1, 10))  # every token after the first once; 10 dropped
    assert sh.pack(np.arange(3), 3).shape == (0, 4)


def test_token_dtype():
    assert sh.token_dtype(1024) == np.uint16
    assert sh.token_dtype(65_536) == np.uint16
    assert sh.token_dtype(65_537) == np.uint32
    assert sh.token_dtype(200_019) == np.uint32


def test_heldout_split_is_deterministic_and_sized():
    ids = [f"doc-{i}" for i in range(20_000)]
    picked = [sh.is_heldout(i, 0, 0.05) for i in ids]
    assert picked == [sh.is_heldout(i, 0, 0.05) for i in ids]
    assert abs(np.mean(picked) - 0.05) < 0.006
    assert picked != [sh.is_heldout(i, 1, 0.05) for i in ids]
    assert not any(sh.is_heldout(i, 0, 0.0) for i in ids)


def test_heldout_documents_never_in_training_shards(built):
    clean, tok, out, stats = built
    train, held = sh.open_shards(out, "train"), sh.open_shards(out, "heldout")
    for fam in FAMS:
        all_ids = {d["id"] for d in iter_clean(clean, [fam])}
        assert held[fam].doc_ids, f"{fam}: the fixture should hold some documents out"
        # By id: a document is in exactly one split.
        assert not set(train[fam].doc_ids) & set(held[fam].doc_ids)
        assert set(train[fam].doc_ids) | set(held[fam].doc_ids) == all_ids
        # By boundaries: no training sequence touches a held-out document.
        touched = {i for s in range(len(train[fam].seqs)) for i in train[fam].docs_in(s)}
        assert touched <= set(train[fam].doc_ids)
        # By content: the training sequences decode to exactly the training documents.
        seqs = np.asarray(train[fam].seqs)
        stream = np.concatenate([seqs[:, :-1].ravel(), seqs[-1, -1:]]).astype(int).tolist()
        pieces = tok.decode(stream).split(tk.EOT)
        texts = {d["id"]: d["text"] for d in iter_clean(clean, [fam])}
        assert pieces[:-1] == [texts[i] for i in train[fam].doc_ids[:len(pieces) - 1]]
        held_texts = {texts[i] for i in held[fam].doc_ids}
        assert not held_texts & set(pieces)
        for i in held[fam].doc_ids:  # and no held-out token run appears in a training row
            probe = tok.encode(texts[i])[:SEQ]
            assert tok.decode(probe) not in tok.decode(stream)


def test_documents_end_with_eot_and_boundaries_are_right(built):
    clean, tok, out, stats = built
    train = sh.open_shards(out, "train")["code"]
    seqs = np.asarray(train.seqs)
    stream = np.concatenate([seqs[:, :-1].ravel(), seqs[-1, -1:]])
    starts = train.doc_starts[train.doc_starts < len(stream)]
    assert starts[0] == 0 and all(stream[s - 1] == tok.eot_id for s in starts[1:])
    assert stats["code"]["train"].tokens == (stats["code"]["train"].sequences * SEQ + 1
                                             + stats["code"]["train"].dropped_tail)


def test_shards_dtype_follows_the_vocab(built, tmp_path):
    clean, tok, out, _ = built
    assert sh.open_shards(out)["code"].seqs.dtype == np.uint16
    sh.write_shards(clean, ["math"], tok, tmp_path, SEQ, FRACTION, SEED, vocab_size=70_000)
    wide = sh.open_shards(tmp_path)["math"].seqs
    assert wide.dtype == np.uint32
    assert np.array_equal(wide, sh.open_shards(out)["math"].seqs)
    assert json.loads((tmp_path / "index.json").read_text())["dtype"] == "uint32"


def test_fertility_and_unique_tokens(built):
    *_, stats = built
    for fam in FAMS:
        s = stats[fam]["train"]
        assert 0.1 < s.fertility < 1.0  # merges compress; bytes never expand
    assert sh.unique_tokens(stats) == {f: stats[f]["train"].sequences * SEQ for f in FAMS}


def test_stage_end_to_end(tmp_path):
    cfg = mai_repro.config.load("smoke", {"tokenizer.train_bytes": 200_000,
                                          "model.vocab_size": 512, "pretrain.seq_len": 32,
                                          "mixture.heldout_fraction": 0.2})
    run = artifacts.Run(cfg, tmp_path)
    with run.stage("curation") as st:  # a stand-in for notebook 01's output
        write_stdlib_corpus(st.dir)
    result = tokenizer_stage.build(run)
    assert run.status("tokenizer") == "complete"
    m = read_metrics(run, "tokenizer")  # TokenizerMetrics, loaded strictly from the manifest
    assert m == result.metrics
    assert m.heldout_roundtrip["failed"] == 0 and m.heldout_roundtrip["checked"] > 0
    assert m.loader_share_max_abs_err < tokenizer_stage.SHARE_TOLERANCE
    assert m.dtype == "uint16" and m.vocab_size <= 512
    # Families the corpus lacks get no tokens; the planner says where their share went.
    assert m.planned_tokens == pytest.approx(cfg.pretrain.steps * cfg.pretrain.batch_size * 32)
    assert any("general" in w for w in m.mixture_warnings)
    assert result.plan["general"].training_tokens == 0
    assert tk.load(tmp_path / "tokenizer" / "tokenizer.json").vocab_size == m.vocab_size
    loader = from_stage(run.require("tokenizer"), batch_size=4, seed=0)
    assert set(loader.families) == set(FAMS)
    assert next(loader).shape == (4, 33)
    assert all(p.is_file() for p in result.figures.values())
