"""The table of attempts at the supervised AI-content detector's low-FPR end (issue 18).

Builds the items and features of curation's AI-content evaluation as the stage does (laptop
preset by default, seed 0: the same human documents, passages, edits and reference part; the
byte models are not trained, so their features are left out, as in the detector that acts),
then scores each attempt leave-one-genre-out on the same splits and prints one JSON line per
attempt: pooled ROC AUC, TPR at 1% and 0.1% FPR, the worst genre's AUC. Choices are judged
on these pooled out-of-fold numbers, never on one test fold.

    python benchmarks/ai_attempts.py [--preset laptop] [--cache runs/ai_attempts]
        [--views N] [--view-kinds wiki,man] [--human-sources PKG,...]
        [--genre-of FILE=GENRE,...] [NAME...]

The human side holds the sample's labelled documents plus the prose views of
``ai_detect.prose_views`` as the preset sets them (``curation.ai_prose_views``,
``ai_prose_view_kinds``; ``--views 0`` gives the human side before them). Each row also
gives the metrics against the sample's documents alone (``*_docs``: the views out of the
human side), so that added easy human items cannot buy the low-FPR end. The items are cached
per ``--cache`` folder: use one folder per human side.

Each base text model's fold scores (cross-fitted inside the training folds, as
``ai_detect.word_fold_scores``) are cached under ``--cache``, so attempts that only change
the final classifier take seconds. Not a test and not a speed benchmark: a research harness.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np

from mai_repro import config
from mai_repro.data import ai_content, ai_curation, ai_text
from mai_repro.data import ai_detect as ad
from mai_repro.data import ai_features as af

FUNCTION_WORDS = ad.FUNCTION_WORDS


def build_items(preset: str, cache: Path, views: int | None = None,
                kinds: tuple[str, ...] | None = None, human_sources: list[str] | None = None,
                genre_of: dict[str, str] | None = None) -> dict[str, Any]:
    """Items, fixed features and the reference texts, as curation's AI-content phase builds
    them (the byte models' training documents found as ``detector_phase`` picks them)."""
    from mai_repro.data.sources import default_data_dir
    from mai_repro.data.steps import Ledger, map_shards
    from mai_repro.eval.detector import DetectorSettings
    from mai_repro.stages import curation as stage

    full = config.load(preset, {})
    cfg, seed = full.curation, full.seed
    passages = ai_text.load_passages()
    train_passages, planted_passages = ai_text.split_planted(passages, cfg.ai_plant_share, seed)
    tmp = cache / "planted.warc.gz"
    planted = ai_curation.planted_documents(planted_passages, tmp, cfg.cutoffs["general"], seed)
    docs = stage.read_all(cfg, default_data_dir(), Ledger(), planted)
    planted_ids = {d.id for d in planted}
    sample_docs = [d for d in docs if d.id not in planted_ids]
    shards = [(docs[i:i + cfg.shard_size], cfg) for i in range(0, len(docs), cfg.shard_size)]
    kept = [d for k, _ in map_shards(stage.shard_job, shards, "serial", 1, False, "") for d in k]
    human = sorted((d for d in kept if ai_content.is_human_era(d.date, cfg.human_era_before)),
                   key=lambda d: stage._split(d.id, seed))
    prompt_len = DetectorSettings().prompt_len
    n_eval = min(cfg.detector_eval_docs, len(human) // 2)
    eval_ids = {d.id for d in [d for d in human
                               if len(d.text.encode("utf-8", "replace")) >= prompt_len][:n_eval]}
    train_ids = {d.id for d in human if d.id not in eval_ids}
    ref, labelled = ad.split_human(sample_docs, seed, cfg.ai_reference_share)
    ref += [d for d in labelled if d.id in train_ids]
    labelled = [d for d in labelled if d.id not in train_ids]
    pool = [d.text for d in ref if d.family == "general" and len(d.text.split()) >= 40]
    variants = ai_text.edited_variants(train_passages, pool, seed, cfg.ai_edit_share)
    views = cfg.ai_prose_views if views is None else views
    kinds = tuple(cfg.ai_prose_view_kinds) if kinds is None else kinds
    if human_sources is not None:
        cfg = dataclasses.replace(cfg, ai_human_sources=human_sources)
    extra = ad.human_items(stage.read_detector_human(cfg, default_data_dir()))
    extra = [dataclasses.replace(it, genre=(genre_of or {}).get(it.id.split("/")[1].split(
        ".tar.gz")[0].split("-")[0], it.genre)) for it in extra]
    items = ad.human_items(labelled) + ad.prose_views(labelled, views, kinds) + extra + \
        ad.machine_items(train_passages + variants)
    x, names = af.text_features([it.text for it in items], af.NgramModel([d.text for d in ref]))
    return {"items": items, "x": x, "names": names, "word_C": cfg.ai_word_C, "C": cfg.ai_C,
            "seed": seed, "masked": cfg.ai_masked_words, "masked_vocab": cfg.ai_masked_vocab,
            "skip": ",".join(cfg.ai_word_skip_genres)}


def char_counts(texts: list[str], max_chars: int = 2000):
    """Hashed character 3-5-grams within word boundaries (char_wb), first ``max_chars``."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 5), lowercase=False,
                            preprocessor=lambda t: t[:max_chars], n_features=2 ** 20,
                            alternate_sign=False, norm=None)
    return vec.transform(texts).tocsr()


def unigram_counts(texts: list[str]):
    """As ``ai_detect.word_counts`` without the word pairs."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(token_pattern=af.WORD_RE.pattern, lowercase=False,
                            preprocessor=lambda t: t[:af.MAX_CHARS].lower(),
                            n_features=ad.WORD_FEATURES, alternate_sign=False, norm=None)
    return vec.transform(texts).tocsr()


def function_word_rates(texts: list[str]) -> np.ndarray:
    index = {w: i for i, w in enumerate(FUNCTION_WORDS)}
    out = np.zeros((len(texts), len(FUNCTION_WORDS)))
    for row, t in enumerate(texts):
        ws = af.words_of(t)
        for w in ws:
            if w in index:
                out[row, index[w]] += 1
        out[row] /= max(1, len(ws))
    return out


class Harness:
    def __init__(self, data: dict[str, Any], cache: Path):
        self.items, self.cache = data["items"], cache
        self.y = np.array([it.label for it in self.items])
        self.groups = [it.group for it in self.items]
        self.genres = np.array([it.genre for it in self.items])
        self.texts = [it.text for it in self.items]
        cols = [i for i, n in enumerate(data["names"]) if n in af.STYLE_NAMES + af.NGRAM_NAMES]
        self.x = data["x"][:, cols]
        self.seed, self.word_C, self.C = data["seed"], data["word_C"], data.get("C", 1.0)
        # the stage's word models: which ones, and the human genres that never fit them
        self.masked, self.skip = data.get("masked", False), data.get("skip", "")
        vocab = data.get("masked_vocab", 150)
        self.masked_kind = "masked" if vocab == 150 else f"masked{vocab}"
        self.splits = ad.leave_one_out(self.items, ad.genre_key)
        self._counts: dict[str, Any] = {}

    def counts(self, kind: str):
        if kind not in self._counts:
            if kind == "words":
                self._counts[kind] = ad.word_counts(self.texts)
            elif kind.startswith("masked"):  # "masked<N>": N function words kept
                self._counts[kind] = ad.masked_word_counts(self.texts, int(kind[6:] or 150))
            elif kind == "unigrams":  # the word model's unigram columns only
                self._counts[kind] = unigram_counts(self.texts)
            else:
                self._counts[kind] = char_counts(self.texts)
        return self._counts[kind]

    def fold_scores(self, kind: str, C: float, min_class_df: int = 0, skip: str = ""
                    ) -> dict[str, ad.FoldWordScores]:
        """``skip``: comma-separated human genres that never fit a word model."""
        tag = (f"_df{min_class_df}" if min_class_df else "") + \
            (f"_skip-{skip.replace(',', '-')}" if skip else "")
        path = self.cache / f"folds_{kind}_{C:g}{tag}.pkl"
        if path.is_file():
            return pickle.loads(path.read_bytes())
        fit_rows = ~((self.y == 0) & np.isin(self.genres, skip.split(","))) if skip else None
        out = ad.word_fold_scores(self.splits, self.counts(kind), self.y, self.groups, C,
                                  seed=self.seed, n_jobs=2, min_class_df=min_class_df,
                                  fit_rows=fit_rows)
        path.write_bytes(pickle.dumps(out))
        return out

    def balanced_fold_scores(self, kind: str, C: float, power: float, skip: str = ""
                             ) -> dict[str, ad.FoldWordScores]:
        """As :meth:`fold_scores` with each word model fitted under sample weights 1 / n^power
        per (genre, label) cell of its training rows (each class summing to the same
        total): no human genre's register (the 935 documentation items) dominates what
        the word model calls human."""
        from mai_repro.data.ai_text import unit_hash

        path = self.cache / f"folds_{kind}_{C:g}_balanced{power:g}_skip-{skip}.pkl"
        if path.is_file():
            return pickle.loads(path.read_bytes())
        m, groups = self.counts(kind), np.array(self.groups)
        fit_ok = ~((self.y == 0) & np.isin(self.genres, skip.split(","))) if skip else \
            np.ones(len(self.y), bool)

        def fit(rows: np.ndarray) -> ad.WordModel:
            y = self.y[rows]
            _, inv, n = np.unique(np.char.add(self.genres[rows], y.astype(str)),
                                  return_inverse=True, return_counts=True)
            w = (1.0 / n[inv]) ** power
            for label in (0, 1):
                w[y == label] /= w[y == label].sum()
            return ad.WordModel(C).fit(m[rows], y, sample_weight=w * len(y) / 2)

        out = {}
        for sp in self.splits:
            tr, te = sp.train, sp.test
            part = np.array([int(unit_hash(g, self.seed + 3) * 3) for g in groups[tr]])
            inner = np.zeros(len(tr))
            for k in range(3):
                rows = tr[(part != k) & fit_ok[tr]]
                inner[part == k] = fit(rows).score(m[tr[part == k]])
            out[sp.name] = ad.FoldWordScores(inner, fit(tr[fit_ok[tr]]).score(m[te]))
        path.write_bytes(pickle.dumps(out))
        return out

    def stack(self, bases: list[tuple], x: np.ndarray | None = None,
              C: float = 1.0, final: str = "lr", class_weight: Any = "balanced",
              genre_balance: float = 0.0, fold_calibrate: float = 0.0,
              scaler: str = "standard", clip: float | None = None,
              bag_genres: bool = False, folds: list | None = None) -> np.ndarray:
        """Out-of-fold scores of a final classifier on the fixed features and the base text
        models' cross-fitted scores (``genre_balance`` p: sample weights 1 / n^p per
        (genre, label) cell, each class summing to the same total). ``scaler``: standard,
        robust or quantile (to a normal); ``clip`` q: each column of the test fold clipped
        to the training fold's [q, 1 - q] quantiles; ``bag_genres``: the mean of the final
        classifiers fitted each without one training genre (leave-one-genre-out inside the
        training fold); ``folds``: base fold scores given ready-made."""
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import QuantileTransformer, RobustScaler, StandardScaler

        x = self.x if x is None else x
        folds = [self.fold_scores(*b) for b in bases] + list(folds or [])
        out = np.full(len(self.y), np.nan)
        scalers = {"standard": StandardScaler, "robust": RobustScaler,
                   "quantile": lambda: QuantileTransformer(n_quantiles=200,
                                                           output_distribution="normal")}
        for sp in self.splits:
            tr, te = sp.train, sp.test
            a = np.column_stack([x[tr]] + [f[sp.name].train for f in folds])
            b = np.column_stack([x[te]] + [f[sp.name].test for f in folds])
            if clip is not None:
                lo, hi = np.quantile(a, clip, 0), np.quantile(a, 1 - clip, 0)
                a, b = np.clip(a, lo, hi), np.clip(b, lo, hi)
            if bag_genres:
                g = self.genres[tr]
                parts = []
                for left_out in sorted(set(g)):
                    keep = g != left_out
                    clf = make_pipeline(scalers[scaler](), LogisticRegression(
                        C=C, class_weight=class_weight, max_iter=5000))
                    parts.append(clf.fit(a[keep], self.y[tr][keep]).decision_function(b))
                out[te] = np.mean(parts, 0)
                continue
            if final == "hgb":
                clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                                     class_weight=class_weight, random_state=0)
                p = np.clip(clf.fit(a, self.y[tr]).predict_proba(b)[:, 1], 1e-12, 1 - 1e-12)
                out[te] = np.log(p / (1 - p))
                continue
            weights = None
            if genre_balance:
                cell = np.char.add(self.genres[tr], self.y[tr].astype(str))
                _, inv, n = np.unique(cell, return_inverse=True, return_counts=True)
                weights = (1.0 / n[inv]) ** genre_balance
                for label in (0, 1):
                    weights[self.y[tr] == label] /= weights[self.y[tr] == label].sum()
                weights *= len(tr)
                class_weight = None
            clf = make_pipeline(scalers[scaler](), LogisticRegression(
                C=C, class_weight=class_weight, max_iter=5000))
            clf.fit(a, self.y[tr], logisticregression__sample_weight=weights)
            out[te] = clf.decision_function(b)
            if fold_calibrate:  # each fold's model scored against its own training human
                # scores' (1 - fold_calibrate) quantile: its own threshold, from training data
                out[te] -= np.quantile(clf.decision_function(a[self.y[tr] == 0]),
                                       1 - fold_calibrate)
        return out

    def report(self, name: str, s: np.ndarray, started: float) -> dict[str, Any]:
        y = self.y
        m = ad.metrics(s[y == 0], s[y == 1])
        per = {g: ad.metrics(s[y == 0], s[(y == 1) & (self.genres == g)])["auc"]
               for g in sorted(set(self.genres[y == 1]))}
        worst = min(per, key=per.get)
        # The same on the sample's documents alone (prose views and the detector's own human
        # prose out of the human side), so that easy added human items cannot buy the
        # low-FPR end.
        docs = np.array([it.label == 0 and it.id == it.group and it.family != "detector"
                         for it in self.items])
        m_docs = ad.metrics(s[docs], s[y == 1])
        # TPR at 1% FPR of each writing round's passages (the letter in the passage id:
        # A-C the first 420, D the genres added on 2026-12-03), at the pooled threshold.
        rounds = np.array([it.group.split("-")[-2] if it.label == 1 else "" for it in self.items])
        by_round = {r: round(ad.tpr_at_fpr(s[y == 0], s[(y == 1) & (rounds == r)], 0.01), 4)
                    for r in sorted(set(rounds[y == 1]))}
        first = (y == 1) & np.isin(rounds, ["A", "B", "C"])
        row = {"attempt": name, **{k: round(v, 4) for k, v in m.items()},
               **{f"{k}_docs": round(v, 4) for k, v in m_docs.items()},
               "tpr_1pct_ABC": round(ad.tpr_at_fpr(s[y == 0], s[first], 0.01), 4),
               "tpr_1pct_by_round": by_round,
               "worst_genre": worst, "worst_genre_auc": round(per[worst], 4),
               "seconds": round(time.time() - started, 1)}
        print(json.dumps(row), flush=True)
        return row


# Words that language models use far more often than human writers did before 2022 (the
# "excess vocabulary" of model-assisted writing that Kobak et al. and Liang et al. measured in
# scientific abstracts), for the fifth round's lexicon feature.
EXCESS_WORDS = frozenset(
    "delve delves delving showcase showcases showcasing underscore underscores underscoring "
    "intricate intricacies notably pivotal crucial comprehensive enhance enhances enhancing "
    "enhanced robust seamless seamlessly leverage leverages leveraging facilitate facilitates "
    "facilitating foster fosters fostering streamline streamlines streamlined utilize "
    "utilizes utilizing additionally furthermore moreover overall ultimately essential vital "
    "realm tapestry landscape multifaceted nuanced nuance insights insight valuable "
    "meticulous meticulously commendable noteworthy garnered garner boasts boast "
    "unparalleled surpassing bolster bolsters navigate navigating ensuring ensure ensures "
    "various diverse dynamic innovative key significant significantly emphasize emphasizes "
    "emphasizing highlight highlights highlighting potential particularly offering offers "
    "provides providing".split())


def excess_word_rate(texts: list[str]) -> np.ndarray:
    return np.array([[sum(w in EXCESS_WORDS for w in ws) / max(1, len(ws))]
                     for ws in map(af.words_of, texts)])


def attempts(h: Harness) -> dict[str, Any]:
    w = ("words", h.word_C)
    used = [("words", h.word_C, 0, h.skip)] + \
        ([(h.masked_kind, h.word_C, 0, h.skip)] if h.masked else [])
    return {
        "used": lambda: h.stack(used, C=h.C),
        # fifth round (2026-12-03): the final classifier's inputs and the word models' weights
        "used_clip_0.01": lambda: h.stack(used, C=h.C, clip=0.01),
        "used_robust_scaler": lambda: h.stack(used, C=h.C, scaler="robust"),
        "used_quantile_scaler": lambda: h.stack(used, C=h.C, scaler="quantile"),
        "used_excess_words": lambda: h.stack(used, C=h.C, x=np.column_stack(
            [h.x, excess_word_rate(h.texts)])),
        "used_word_C_1_100": lambda: h.stack(
            used + [("words", 1.0, 0, h.skip), ("words", 100.0, 0, h.skip)], C=h.C),
        "used_bagged_genres": lambda: h.stack(used, C=h.C, bag_genres=True),
        **{f"used_balanced_words_{p:g}": (lambda p=p: h.stack([], C=h.C, folds=[
            h.balanced_fold_scores("words", h.word_C, p, h.skip)] + ([
                h.balanced_fold_scores(h.masked_kind, h.word_C, p, h.skip)] if h.masked
                else []))) for p in (0.5, 1.0)},
        "word_model_alone_all_fit": lambda: h.stack([w], C=h.C),  # the word model before
        **{f"used_masked_{n}": (lambda n=n: h.stack(
            [("words", h.word_C, 0, h.skip), (f"masked{n}", h.word_C, 0, h.skip)], C=h.C))
           for n in (25, 50, 75, 100)},
        "used_masked_C_3": lambda: h.stack(
            [("words", h.word_C, 0, h.skip), ("masked", 3.0, 0, h.skip)], C=h.C),
        "used_final_C_0.03": lambda: h.stack(used, C=0.03),
        "used_final_C_0.3": lambda: h.stack(used, C=0.3),
        "used_final_C_1": lambda: h.stack(used, C=1.0),
        "used_fold_calibrated_1pct": lambda: h.stack(used, C=h.C, fold_calibrate=0.01),
        "final_C_1": lambda: h.stack([w], C=1.0),
        "word_model_only": lambda: h.stack([w], x=np.zeros((len(h.y), 1))),
        "chars": lambda: h.stack([("chars", 10.0)]),
        "words_chars": lambda: h.stack([w, ("chars", 10.0)]),
        "function_words": lambda: h.stack([w], x=np.column_stack(
            [h.x, function_word_rates(h.texts)])),
        "final_C_0.1": lambda: h.stack([w], C=0.1),
        "final_C_10": lambda: h.stack([w], C=10.0),
        "final_C_0.03": lambda: h.stack([w], C=0.03),
        "final_C_0.01": lambda: h.stack([w], C=0.01),
        "human_weight_3": lambda: h.stack([w], class_weight={0: 3.0, 1: 1.0}),
        "genre_balanced_1": lambda: h.stack([w], genre_balance=1.0),
        "genre_balanced_0.5": lambda: h.stack([w], genre_balance=0.5),
        "word_C_100": lambda: h.stack([("words", 100.0)]),
        "word_C_100_final_C_0.1": lambda: h.stack([("words", 100.0)], C=0.1),
        "hgb_final_words_chars": lambda: h.stack([w, ("chars", 10.0)], final="hgb"),
        "unigrams": lambda: h.stack([("unigrams", h.word_C)]),
        "no_length": lambda: h.stack([w], x=h.x[:, 1:]),  # log_words, the first column, out
        "masked_only": lambda: h.stack([("masked", h.word_C)]),
        "words_masked": lambda: h.stack([w, ("masked", h.word_C)]),
        "words_masked_final_C_0.1": lambda: h.stack([w, ("masked", h.word_C)], C=0.1),
        **{f"shared_words_{k}": (lambda k=k: h.stack([("words", h.word_C, k)], C=h.C))
           for k in (1, 2, 3, 5, 10)},
        "words_english_prose": lambda: h.stack([("words", h.word_C, 0,
                                                  "source_code,multilingual")], C=h.C),
        "words_english_prose_final_C_1": lambda: h.stack(
            [("words", h.word_C, 0, "source_code,multilingual")], C=1.0),
        "fold_calibrated_1pct": lambda: h.stack([w], C=h.C, fold_calibrate=0.01),
        "fold_calibrated_0.5pct": lambda: h.stack([w], C=h.C, fold_calibrate=0.005),
        "fold_calibrated_5pct": lambda: h.stack([w], C=h.C, fold_calibrate=0.05),
        "words_masked_fold_calibrated_1pct": lambda: h.stack([w, ("masked", h.word_C)],
                                                             C=h.C, fold_calibrate=0.01),
        "words_masked_no_multilingual": lambda: h.stack(
            [("words", h.word_C, 0, "multilingual"), ("masked", h.word_C, 0, "multilingual")],
            C=h.C),
        "words_masked_english_prose": lambda: h.stack(
            [("words", h.word_C, 0, "source_code,multilingual"),
             ("masked", h.word_C, 0, "source_code,multilingual")], C=h.C),
        "words_no_multilingual": lambda: h.stack([("words", h.word_C, 0, "multilingual")],
                                                 C=h.C),
        "words_no_code": lambda: h.stack([("words", h.word_C, 0, "source_code")], C=h.C),
        "words_english_prose_masked": lambda: h.stack(
            [("words", h.word_C, 0, "source_code,multilingual"), ("masked", h.word_C)],
            C=h.C),
        **{f"shared_words_{k}_masked": (lambda k=k: h.stack(
            [("words", h.word_C, k), ("masked", h.word_C)], C=h.C)) for k in (2, 3, 5)},
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--cache", default="runs/ai_attempts")
    ap.add_argument("--views", type=int, default=None,
                    help="prose views per document on the human side (default: the preset's "
                         "curation.ai_prose_views)")
    ap.add_argument("--view-kinds", default="", help="comma-separated: wiki, man (default: the "
                    "preset's curation.ai_prose_view_kinds)")
    ap.add_argument("--human-sources", default=None, help="comma-separated packages of "
                    "sources.DETECTOR_SOURCES on the human side ('' for none; default: the "
                    "preset's curation.ai_human_sources)")
    ap.add_argument("--genre-of", default="", help="comma-separated FILE=GENRE: the genre of "
                    "a detector source's items, by the first word of its file name "
                    "(e.g. debian=reference)")
    ap.add_argument("names", nargs="*", help="attempts to run (default: all)")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data_file = cache / f"items_{args.preset}.pkl"
    if not data_file.is_file():
        kinds = tuple(args.view_kinds.split(",")) if args.view_kinds else None
        sources = None if args.human_sources is None else \
            [x for x in args.human_sources.split(",") if x]
        genre_of = dict(x.split("=") for x in args.genre_of.split(",") if x)
        data_file.write_bytes(pickle.dumps(build_items(args.preset, cache, args.views, kinds,
                                                       sources, genre_of)))
    harness = Harness(pickle.loads(data_file.read_bytes()), cache)
    table = attempts(harness)
    for name in args.names or list(table):
        started = time.time()
        harness.report(name, table[name](), started)
