"""The model-written passages (data/ai_text), marker rules, splits, thresholds, and the rule
that no passage (or near copy) ever reaches a corpus, a shard or the human side."""

import numpy as np
import pytest

from mai_repro.data import ai_content as ai
from mai_repro.data import ai_detect as ad
from mai_repro.data import ai_features as af
from mai_repro.data import ai_text

PASSAGES = ai_text.load_passages()


# --------------------------------------------------------------------------------------------
# The corpus of passages.

def test_passage_corpus_is_labelled_and_sized():
    assert len(PASSAGES) >= 400
    assert len({p.genre for p in PASSAGES}) >= 10
    assert len({p.id for p in PASSAGES}) == len(PASSAGES)
    for p in PASSAGES:
        assert p.topic and p.topic_group and p.date and p.made_by, p.id
    words = np.array([p.words for p in PASSAGES])
    assert (words >= 120).mean() > 0.95 and (words <= 700).mean() > 0.95


# --------------------------------------------------------------------------------------------
# Marker rules: each on a planted example and on a human near-miss.

RULE_CASES = {
    "self_reference": ("As an AI language model, I cannot taste food, but here is a recipe.",
                       "As an AI researcher, I built a language model of German."),
    "knowledge_cutoff": ("As of my last knowledge update in 2023, the bridge was closed.",
                         "As of my last visit in 2019, the bridge was closed."),
    "refusal": ("I'm sorry, but I can't help with creating malware.",
                "I'm sorry, but the library can't open on Sundays."),
    "no_feelings": ("I don't have personal opinions, but many critics liked it.",
                    "I don't have personal copies of the book, but the library does."),
    "assistant_opener": ("Certainly! Here's a summary of the French Revolution.",
                         "The revolution certainly changed France. Here is why."),
    "assistant_signoff": ("Use a torque wrench.\n\nLet me know if you have any other questions!",
                          "Let me know if you have any other questions, he said, and left. "
                          + "The meeting went on for an hour after that, with minutes taken "
                          "by the secretary and read back at the end. " * 6),
    "placeholder": ("Dear [Your Name],\nThank you for your order.",
                    "Usage: cp [OPTION]... SOURCE DEST"),
    "disclaimer": ("It's always important to consult a qualified professional before you act.",
                   "It is important to consult the manual before you act."),
    "regenerate": ("The answer is 42.\nRegenerate response", "Forests regenerate after fire."),
}


def test_every_rule_has_a_case():
    assert set(RULE_CASES) == {r.name for r in ai.MARKER_RULES}


@pytest.mark.parametrize("rule", sorted(RULE_CASES))
def test_marker_rule_on_planted_example_and_human_near_miss(rule):
    planted, near_miss = RULE_CASES[rule]
    assert rule in ai.marker_hits(planted)
    assert rule not in ai.marker_hits(near_miss)


# --------------------------------------------------------------------------------------------
# Edits and the guard.

def test_edits():
    md = "# Title\n\nSome **bold** and `code`.\n\n- one\n- two\n\n1. first"
    assert ai_text.strip_markdown(md) == "Title\n\nSome bold and code.\n\none\ntwo\n\nfirst"
    assert ai_text.drop_first_sentence("Sure thing. The rest stays.") == "The rest stays."
    joined = ai_text.join_with_human("Model text here.", "Human words " * 30, 0)
    assert "Model text here." in joined and "Human words" in joined


def test_guard_finds_passages_and_edited_copies_but_not_human_text():
    from mai_repro.data.documents import Document
    from mai_repro.data.sources import iter_sample

    passages = PASSAGES[:60]
    guard = ai_text.PassageGuard(passages)
    human = [d for d in iter_sample(families=("general",)) if isinstance(d, Document)][:300]
    variants = ai_text.edited_variants(passages, [d.text for d in human], seed=0, share=0.33)
    assert {v.edit for v in variants} == set(ai_text.EDITS)
    for p in passages + variants:
        assert guard.match(p.text) == p.base, p.id
    embedded = human[0].text + "\n\n" + passages[0].text + "\n\n" + human[1].text
    assert guard.match(embedded) == passages[0].id
    assert not [d.id for d in human if guard.match(d.text)]


# --------------------------------------------------------------------------------------------
# Splits and thresholds.

def _items():
    human = [ad.Item(f"h{i}", "human text", 0, g, "", f"h{i}") for i, g in
             enumerate(["news", "fiction", "documentation", "howto"] * 30)]
    passages = PASSAGES[:120]
    variants = ai_text.edited_variants(passages, ["A human paragraph of enough words. " * 5],
                                       seed=0, share=0.3)
    return human + ad.machine_items(passages + variants)


@pytest.mark.parametrize("kind", ["genre", "topic_group"])
def test_splits_never_share_a_passage(kind):
    items = _items()
    topics = sorted({it.topic_group for it in items if it.label == 1})
    key = ad.genre_key if kind == "genre" else ad.topic_key(topics)
    splits = ad.leave_one_out(items, key)
    tested = np.concatenate([sp.test for sp in splits])
    assert sorted(tested.tolist()) == list(range(len(items)))  # each item tested once
    for sp in splits:
        train_groups = {items[i].group for i in sp.train}
        test_groups = {items[i].group for i in sp.test}
        assert not train_groups & test_groups, sp.name
        assert {key(items[i]) for i in sp.test} == {sp.name}


def test_split_refuses_a_group_on_both_sides():
    items = [ad.Item("a", "", 1, "news", "t", "g"), ad.Item("a~x", "", 1, "fiction", "t", "g")]
    with pytest.raises(ValueError):
        ad.leave_one_out(items, ad.genre_key)


ROFF = """.\\" SPDX-License-Identifier: GPL-2.0-or-later
.TH demo 2 2001-01-01 "Linux"
.SH NAME
demo \\- show a call
.SH SYNOPSIS
.nf
.B #include <demo.h>
.BI "int demo(int " fd );
.fi
.SH DESCRIPTION
The call
.BR demo ()
reads a \\fIvalue\\fP from
.IR fd .
.PP
It returns zero\\(emor an error.
.EX
int x = demo(0);
.EE
"""


def test_roff_prose_keeps_the_running_text_only():
    assert ad.roff_prose(ROFF) == ("NAME\n\ndemo - show a call\n\nSYNOPSIS\n\nDESCRIPTION\n\n"
                                   "The call demo() reads a value from fd.\n\n"
                                   "It returns zero\u2014or an error.")


def test_prose_views_follow_their_document():
    from mai_repro.data.documents import Document

    para = "The town lies on the river and was founded in the twelfth century by monks. " * 6
    page = "'''Town''' is a [[town]].\n\n" + "\n\n".join([para] * 12)
    wiki_id, man_id = "general/enwiki-x.xml.bz2:Town", "stem/manpages-dev-6.03.tar.gz:demo.2.gz"
    docs = [Document(wiki_id, "general", page, "gensim", "1", "CC", "Town"),
            Document("general/enwiki-x.xml.bz2:Old", "general", "#REDIRECT [[Town]]", "gensim",
                     "1", "CC", "Old"),
            Document(man_id, "stem", ROFF.replace("It returns", para * 3 + "It returns"),
                     "manpages-dev", "6.03", "GPL", "demo.2.gz"),
            Document("general/lee_background.cor:line 1", "general", para * 3, "gensim", "1",
                     "unknown", "line 1")]
    views = ad.prose_views(docs, max_pieces=3, kinds=("wiki", "man"))
    assert [v.group for v in views] == [wiki_id] * 3 + [man_id]
    assert {v.genre for v in views} == {"encyclopedic", "documentation"}
    assert all(v.label == 0 and 150 <= len(v.text.split()) <= 600 for v in views)
    assert "[[" not in views[0].text and ".BR" not in views[-1].text
    assert {v.group for v in ad.prose_views(docs, max_pieces=3, kinds=("wiki",))} == {wiki_id}
    assert ad.prose_views(docs, max_pieces=0, kinds=("wiki", "man")) == []
    # A document and its views fall on the same side of every split.
    items = ad.human_items(docs) + views + ad.machine_items(PASSAGES[:24])
    for sp in ad.leave_one_out(items, ad.genre_key):
        assert not {items[i].group for i in sp.train} & {items[i].group for i in sp.test}


def test_detector_human_prose_items():
    """The detector's own human prose: running text (lines joined), a genre per source, its
    own group, on the human side."""
    from mai_repro.data.documents import Document

    text = "    Debian 3.0 (woody) was released July 19th, 2002 for the\n    Intel i386.\n\n" \
           "    Before the next release the DebConf\n    meeting continued.\n"
    docs = [Document("detector/debian-history-2.28.tar.gz:h.txt.gz#p0000", "detector", text,
                     "debian-history", "2.28", "GPL-2.0-or-later", "h.txt.gz#p0000"),
            Document("detector/other.tar.gz:d.txt#p0000", "detector",
                     "LIGHTHOUSE, n.  A tall building on the seashore in which the\n"
                     "government maintains a lamp.", "other", "1", "LicenseRef-PublicDomain",
                     "d.txt#p0000")]
    items = ad.human_items(docs)
    assert items[0].text == ("Debian 3.0 (woody) was released July 19th, 2002 for the Intel "
                             "i386.\n\nBefore the next release the DebConf meeting continued.")
    assert [it.genre for it in items] == ["encyclopedic", "reference"]
    assert [it.group for it in items] == [d.id for d in docs]
    assert all(it.label == 0 and it.family == "detector" for it in items)


def test_human_sources_are_checked():
    from mai_repro import config
    from mai_repro.schema import ConfigError

    with pytest.raises(ConfigError, match="ai_human_sources"):
        config.load("smoke", {"curation.ai_human_sources": ["wikipedia"]})


def test_threshold_gives_the_stated_fpr_on_held_out_human_text():
    rng = np.random.default_rng(0)
    human = rng.normal(size=40_000)
    calib, held_out = human[:20_000], human[20_000:]
    for fpr in (0.01, 0.005, 0.001):
        t = ai.threshold_at_fpr(calib, fpr)
        assert (calib > t).mean() <= fpr
        realised = (held_out > t).mean()
        sd = np.sqrt(fpr * (1 - fpr) / len(held_out))
        assert abs(realised - fpr) < 4 * sd + 1e-4, (fpr, realised)


def test_metrics_by_hand():
    human = np.arange(1000, dtype=float)
    machine = np.array([999.5, 995.0, 10.0, 2000.0])
    m = ad.metrics(human, machine)
    assert m["tpr_1pct"] == 0.75  # 10 human scores above 989: 999.5, 995 and 2000 beat it
    assert m["tpr_01pct"] == 0.5  # 1 human score above 998: only 999.5 and 2000 beat it
    ci = ad.bootstrap(human, machine, n=50)
    assert ci["auc"][1] <= ci["auc"][0] <= ci["auc"][2]


@pytest.mark.parametrize("masked, skip", [(False, False), (True, True)])
def test_shared_word_fold_scores_give_the_same_out_of_fold_scores(masked, skip):
    """The word model's fold scores computed once (ai_detect.word_fold_scores) and reused by
    every detector on the same splits give exactly the scores of refitting per detector
    (bit for bit: the word model's solver is seeded, the stage deterministic); with the
    topic-masked word model beside it and with rows that never fit a word model too."""
    rng = np.random.default_rng(0)
    human = [" ".join(rng.choice(["the", "river", "ran", "cold", "we", "saw", "a", "boat"],
                                 40)) for _ in range(60)]
    items = [ad.Item(f"h{i}", t, 0, ["news", "fiction", "howto"][i % 3], "", f"h{i}")
             for i, t in enumerate(human)] + ad.machine_items(
        [p for p in PASSAGES if p.genre in ("news", "fiction", "howto")][:45])
    y = np.array([it.label for it in items])
    groups = [it.group for it in items]
    x = rng.normal(size=(len(items), 3))
    texts = [it.text for it in items]
    counts = ad.text_counts(texts, masked) if masked else ad.word_counts(texts)
    fit = (np.arange(len(items)) % 5 != 0) | (y == 1) if skip else None
    splits = ad.leave_one_out(items, ad.genre_key)
    make = lambda: ad.SupervisedDetector(word_C=3.0, seed=1)  # noqa: E731
    shared = ad.word_fold_scores(splits, counts, y, groups, 3.0, seed=1, fit_rows=fit)
    assert shared["news"].test.shape[1:] == ((2,) if masked else ())
    direct = ad.out_of_fold(splits, x, y, counts, groups, make, word_fit=fit)
    assert np.array_equal(ad.out_of_fold(splits, x, y, counts, groups, make, shared), direct)
    assert not np.isnan(direct).any()


def test_rows_outside_word_fit_never_fit_a_word_model():
    """Human items of ai_word_skip_genres (non-English text) are scored but never fit the
    word models: rewriting them leaves the word models as they were, and changes their own
    word-model scores."""
    rng = np.random.default_rng(1)
    vocab = ["the", "river", "ran", "cold", "we", "saw", "a", "boat"]
    human = [" ".join(rng.choice(vocab, 40)) for _ in range(40)]
    items = [ad.Item(f"h{i}", t, 0, ["news", "multilingual"][i % 2], "", f"h{i}")
             for i, t in enumerate(human)] + ad.machine_items(
        [p for p in PASSAGES if p.genre == "news"][:20])
    y = np.array([it.label for it in items])
    skip = np.array([it.label == 0 and it.genre == "multilingual" for it in items])
    x = rng.normal(size=(len(items), 2))
    groups = [it.group for it in items]

    def word_models(texts, fit):
        counts = ad.text_counts(texts, masked=True)
        det = ad.SupervisedDetector(word_C=3.0, seed=1).fit(x, y, counts, groups,
                                                             word_fit=fit)
        return det, counts

    texts = [it.text for it in items]
    other = [("Der Fluss war kalt und wir sahen ein Boot. " * 8) if s else t
             for t, s in zip(texts, skip, strict=True)]
    (a, ca), (b, cb) = word_models(texts, ~skip), word_models(other, ~skip)
    for m in ("words", "masked"):
        assert np.array_equal(getattr(a, m).coef, getattr(b, m).coef)
        assert np.array_equal(getattr(a, m).idf, getattr(b, m).idf)
    assert not np.allclose(a.words.score(ca.words)[skip], b.words.score(cb.words)[skip])
    c, _ = word_models(other, None)  # without the mask, the same rewrite moves the model
    assert not np.array_equal(a.words.coef, c.words.coef)


# --------------------------------------------------------------------------------------------
# The supervised detector, saved and loaded.

@pytest.mark.parametrize("masked", [False, True])
def test_saved_detector_scores_like_the_trained_one(tmp_path, masked):
    from mai_repro.eval import detector as det

    s = det.DetectorSettings(seq_len=32, prompt_len=8, score_bytes=64, d_model=32)
    models = det.DetectorModels(det.build_model(det.byte_model_config(s), 0),
                                det.build_model(det.byte_model_config(s), 1), s)
    human = ["The cat sat on the mat, and then it slept until noon. " * (3 + i % 4)
             for i in range(20)]
    machine = [p.text for p in PASSAGES[:20]]
    texts = human + machine
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    ngram = af.NgramModel(human[:5])
    x, _ = af.text_features(texts, ngram, models)
    counts = ad.text_counts(texts, masked, masked_vocab=60)
    model = ad.SupervisedDetector().fit(x, y, counts, [str(i) for i in range(40)])
    assert (model.masked is not None) == masked
    ad.save(tmp_path, model, ngram, {"threshold": 0.0, "byte_features": True,
                                     "masked_vocab": 60})
    loaded = ad.load(tmp_path)
    new = [p.text for p in PASSAGES[20:25]] + ["A plain human sentence about rivers. " * 9]
    x_new, _ = af.text_features(new, ngram, models)
    expected = model.score(x_new, ad.text_counts(new, masked, masked_vocab=60))
    assert np.allclose(loaded.score(new, models), expected, atol=1e-6)


# --------------------------------------------------------------------------------------------
# End to end: curation removes the planted passages; no passage reaches the corpus or shards.

def test_no_passage_reaches_the_clean_corpus_or_the_shards(tmp_path):
    import json

    import mai_repro.config
    from mai_repro import artifacts
    from mai_repro.data.corpus import iter_clean
    from mai_repro.stages import curation
    from mai_repro.stages import tokenizer as tokenizer_stage

    cfg = mai_repro.config.load("smoke", {
        "curation.max_docs_per_source": 12, "curation.detector_steps": 3,
        "curation.detector_d_model": 32, "curation.detector_seq_len": 64,
        "curation.detector_score_bytes": 64, "curation.detector_eval_docs": 8,
        "curation.ai_bootstrap": 10, "curation.ai_plant_share": 0.3,
        "tokenizer.train_bytes": 100_000, "model.vocab_size": 400, "pretrain.seq_len": 32})
    run = artifacts.Run(cfg, tmp_path)
    result = curation.build(run, progress=False)
    guard = ai_text.PassageGuard(PASSAGES)
    planted = result.metrics.ai_planted
    assert planted.planted > 50 and planted.kept == 0
    reasons = {f.reason for f in result.ledger.fates if "planted" in f.id and not f.kept}
    assert reasons <= {"after_cutoff", "ai_content:marker", "ai_content:supervised",
                       "ai_content:zero_shot", "ai_content:known_passage"}
    clean = list(iter_clean(tmp_path / "curation",
                            sorted(result.metrics.clean_docs_by_family)))
    assert clean and not [d["id"] for d in clean if guard.match(d["text"])]
    assert not [d for d in clean if "planted" in d["id"]]
    # the human side of the evaluation holds no passage either
    assert not [it.id for it in result.ai.items if it.label == 0 and guard.match(it.text)]
    # the detector's own human prose is on its human side, never in the corpus
    assert {it.id.split("/")[0] for it in result.ai.items if it.family == "detector"} == \
        ({"detector"} if cfg.curation.ai_human_sources else set())
    assert not [d for d in clean if d["id"].startswith("detector/")]
    tokenizer_stage.build(run)
    clean_ids = {d["id"] for d in clean}
    ids_files = list((tmp_path / "tokenizer" / "shards").glob("*/*_ids.json"))
    assert ids_files
    for ids_file in ids_files:
        assert set(json.loads(ids_file.read_text())) <= clean_ids


def test_prose_view_kinds_are_checked():
    from mai_repro import config
    from mai_repro.schema import ConfigError

    with pytest.raises(ConfigError, match="ai_prose_view_kinds"):
        config.load("smoke", {"curation.ai_prose_view_kinds": ["news"]})
