"""The supervised AI-text detector and its evaluation on real model-written text.

The data: the passages of data/ai_text (:mod:`mai_repro.data.ai_text`, the positive class)
and human documents of the raw sample (the negative class), each an :class:`Item` with its
genre, topic group and *group* (the passage an edited copy comes from, or the document), so
that no split puts a passage and its copy on both sides.

The detector (:class:`SupervisedDetector`): fixed features (:mod:`mai_repro.data.ai_features`)
plus one learned in each training fold, the score of a word model (:class:`WordModel`:
TF-IDF of hashed words and word pairs, logistic regression; cross-fitted, so training rows
are scored by word models that did not see them), scaled and fed to scikit-learn's logistic
regression.

The evaluation (:func:`cross_validate`, :func:`summarise`): leave-one-genre-out and
leave-one-topic-group-out, every item scored once by a model that never saw its genre (or
topic group); ROC AUC and TPR at 1% and 0.1% FPR with bootstrap intervals, per genre.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mai_repro.data import ai_content as ai
from mai_repro.data.ai_text import unit_hash


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    label: int  # 1 = machine-written (data/ai_text), 0 = human
    genre: str
    topic_group: str
    group: str  # items of one group always fall on the same side of a split
    edit: str = "none"
    family: str = ""  # the sample family of a human document ("" for passages)


# --------------------------------------------------------------------------------------------
# Human genres: what kind of text each source of the sample holds.

# The genre of each source of the detector's extra human prose (``sources.DETECTOR_SOURCES``):
# a history is encyclopedic prose, as the passages' encyclopedic articles are (so the
# encyclopedic fold holds it out with them). A source not listed: "reference", a genre no
# passage has.
DETECTOR_GENRES = {"debian-history": "encyclopedic"}


def human_genre(doc_id: str, source: str, path: str) -> str:
    """The genre of a human document of the sample, named like the passages' genres where
    the sample holds the same kind of text (human-only kinds keep their own name)."""
    p = path.lower()
    if doc_id.startswith("detector/"):  # the detector's own human prose (DETECTOR_SOURCES)
        return DETECTOR_GENRES.get(source, "reference")
    if source == "python3.11-doc":
        return "forum_reply" if "/faq/" in p else "news" if "/whatsnew/" in p else "howto"
    if source == "debian-faq":
        return "forum_reply"
    if source == "Brotli":
        return "essay_opinion" if "lcet10" in p else "fiction"
    if "lee_background" in doc_id:
        return "news"
    if doc_id.startswith("multilingual/"):
        return "multilingual"
    if doc_id.startswith("general/"):
        return "encyclopedic"
    if doc_id.startswith(("stem/", "math/")):
        return "documentation"
    return "source_code"


# --------------------------------------------------------------------------------------------
# The classifier.

WORD_FEATURES = 2 ** 18  # hashed word unigrams and bigrams


def word_counts(texts: Sequence[str]):
    """Hashed counts of lower-cased words and word pairs over each text's first
    ``MAX_CHARS`` characters: a sparse (N, WORD_FEATURES) matrix, no vocabulary to fit."""
    from sklearn.feature_extraction.text import HashingVectorizer

    from mai_repro.data.ai_features import MAX_CHARS, WORD_RE

    vec = HashingVectorizer(token_pattern=WORD_RE.pattern, lowercase=False, ngram_range=(1, 2),
                            preprocessor=lambda t: t[:MAX_CHARS].lower(),
                            n_features=WORD_FEATURES, alternate_sign=False, norm=None)
    return vec.transform(texts).tocsr()


# The 150 most frequent English words (function words and a few very common ones): what a
# topic-masked text keeps (:func:`masked_word_counts`).
FUNCTION_WORDS = (
    "the of and to a in that is was he for it with as his on be at by i this had not are but "
    "from or have an they which one you were her all she there would their we him been has "
    "when who will more no if out so said what up its about into than them can only other new "
    "some could time these two may then do first any my now such like our over man me even "
    "most made after also did many before must through back years where much your way well "
    "down should because each just those people how too little state good very make world "
    "still own see men work long get here between both life being under never day same "
    "another know while last might us great old year off come since against go came right "
    "used take three").split()


def masked_word_counts(texts: Sequence[str], vocab: int = 150):
    """Hashed word 1-3-grams of each text (first ``MAX_CHARS`` characters) with every word
    outside the ``vocab`` most frequent English words replaced by ``_`` (topic masking, as in
    Stamatatos' text distortion): how a text strings its words together, not what it is
    about."""
    from sklearn.feature_extraction.text import HashingVectorizer

    from mai_repro.data.ai_features import MAX_CHARS, WORD_RE

    keep = set(FUNCTION_WORDS[:vocab])

    def grams(t: str) -> list[str]:
        ws = [w if w in keep else "_" for w in WORD_RE.findall(t[:MAX_CHARS].lower())]
        return [" ".join(ws[i:i + n]) for n in (1, 2, 3) for i in range(len(ws) - n + 1)]

    vec = HashingVectorizer(analyzer=grams, n_features=WORD_FEATURES, alternate_sign=False,
                            norm=None)
    return vec.transform(texts).tocsr()


@dataclass(frozen=True)
class WordCounts:
    """The word models' inputs for a set of texts: hashed words and word pairs
    (:func:`word_counts`) and, when the masked word model is used, the topic-masked word
    1-3-grams (:func:`masked_word_counts`). Rows are selected as in a matrix."""

    words: Any
    masked: Any = None

    def __getitem__(self, rows: Any) -> WordCounts:
        return WordCounts(self.words[rows], None if self.masked is None else self.masked[rows])

    @property
    def shape(self) -> tuple[int, int]:
        return self.words.shape

    def matrices(self) -> list[Any]:
        return [self.words] + ([] if self.masked is None else [self.masked])


def text_counts(texts: Sequence[str], masked: bool = False, masked_vocab: int = 150
                ) -> WordCounts:
    return WordCounts(word_counts(texts),
                      masked_word_counts(texts, masked_vocab) if masked else None)


def _matrices(counts: Any) -> list[Any]:
    """The count matrices of a :class:`WordCounts` (or of one plain matrix)."""
    return counts.matrices() if isinstance(counts, WordCounts) else [counts]


@dataclass
class WordModel:
    """TF-IDF of hashed words and word pairs -> logistic regression: which words a text uses.
    The one learned feature of the supervised detector, as Ghostbuster's n-gram models are
    features of its final classifier."""

    C: float = 10.0
    # A word or word pair counts only if at least this many training texts of *each* class
    # use it (0: every one): a word that only the model-written side uses (a topic the
    # human side never wrote about) cannot become evidence of a machine.
    min_class_df: int = 0
    idf: np.ndarray | None = None
    coef: np.ndarray | None = None
    intercept: float = 0.0

    def _tfidf(self, counts):
        from sklearn.preprocessing import normalize

        x = counts.astype(np.float64).copy()
        x.data = 1.0 + np.log(x.data)  # sublinear term frequency
        return normalize(x.multiply(self.idf).tocsr())

    def fit(self, counts, y: np.ndarray, sample_weight: np.ndarray | None = None
            ) -> WordModel:
        """``sample_weight``: per-row weights that carry the class balance themselves (the
        classes are then not reweighted); by default the classes are balanced."""
        from sklearn.linear_model import LogisticRegression

        df = np.bincount(counts.indices, minlength=counts.shape[1])
        n = counts.shape[0]
        self.idf = np.log((1 + n) / (1 + df)) + 1.0
        if self.min_class_df:
            for label in (0, 1):
                part = counts[np.flatnonzero(y == label)]
                df_c = np.bincount(part.indices, minlength=counts.shape[1])
                self.idf[df_c < self.min_class_df] = 0.0  # a zero weight: the column is out
        # The dual problem: far fewer texts than hashed features, so liblinear's dual solver
        # reaches the same optimum about four times faster than the primal one. It visits
        # the texts in a random order: a fixed random_state keeps the stage deterministic.
        lr = LogisticRegression(C=self.C, solver="liblinear", dual=True, max_iter=1000,
                                class_weight="balanced" if sample_weight is None else None,
                                random_state=0
                                ).fit(self._tfidf(counts), y, sample_weight=sample_weight)
        self.coef, self.intercept = lr.coef_.ravel(), float(lr.intercept_[0])
        return self

    def score(self, counts) -> np.ndarray:
        return np.asarray(self._tfidf(counts) @ self.coef).ravel() + self.intercept


def cross_fitted_word_scores(counts, y: np.ndarray, groups: Sequence[str], word_C: float,
                             folds: int = 3, seed: int = 0, min_class_df: int = 0,
                             fit_rows: np.ndarray | None = None) -> np.ndarray:
    """Each row's word-model score from a word model fitted on the other ``folds - 1`` parts
    (parts by a hash of the group, so a passage and its copies share one); with
    ``fit_rows`` (a boolean mask), only those rows fit the word models (all are scored)."""
    fold = np.array([int(unit_hash(g, seed + 3) * folds) for g in groups])
    fit_rows = np.ones(len(y), bool) if fit_rows is None else np.asarray(fit_rows, bool)
    out = np.zeros(len(y))
    for k in range(folds):
        test = fold == k
        train = ~test & fit_rows
        if test.any() and len(set(y[train])) == 2:
            out[test] = WordModel(word_C, min_class_df).fit(counts[train], y[train]).score(
                counts[test])
    return out


@dataclass
class SupervisedDetector:
    """Fixed features + the in-fold word model's score -> StandardScaler -> LogisticRegression.

    The word model's score for the training rows is cross-fitted (each of ``folds`` parts
    scored by a word model trained on the others), so the final classifier learns how much
    to trust it from scores like those it will see on new text. ``fit`` and ``score`` take
    those scores ready-made when they were computed once for several detectors
    (:func:`word_fold_scores`)."""

    C: float = 1.0
    use_words: bool = True
    word_C: float = 10.0
    folds: int = 3
    seed: int = 0
    min_class_df: int = 0
    pipeline: Any = None
    words: WordModel | None = None
    masked: WordModel | None = None  # the topic-masked word model, when counts hold one

    def fit(self, x: np.ndarray, y: np.ndarray, counts=None, groups=None,
            word_scores: np.ndarray | None = None, word_fit: np.ndarray | None = None
            ) -> SupervisedDetector:
        """``counts``: a count matrix or :class:`WordCounts` (one word model per matrix);
        ``word_fit``: the rows that may fit the word models (all by default)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.use_words and word_scores is None:
            fit = np.ones(len(y), bool) if word_fit is None else np.asarray(word_fit, bool)
            models, cols = [], []
            for m in _matrices(counts):
                models.append(WordModel(self.word_C, self.min_class_df).fit(m[fit], y[fit]))
                cols.append(cross_fitted_word_scores(m, y, groups, self.word_C, self.folds,
                                                     self.seed, self.min_class_df, fit))
            self.words, self.masked = models[0], (models[1] if len(models) > 1 else None)
            word_scores = np.column_stack(cols) if len(cols) > 1 else cols[0]
        self.pipeline = make_pipeline(
            StandardScaler(), LogisticRegression(C=self.C, class_weight="balanced",
                                                 max_iter=5000))
        self.pipeline.fit(self._design(x, word_scores), y)
        return self

    def _design(self, x: np.ndarray, word_scores: np.ndarray | None) -> np.ndarray:
        return np.column_stack([x, word_scores]) if self.use_words else x

    def score(self, x: np.ndarray, counts=None, word_scores: np.ndarray | None = None
              ) -> np.ndarray:
        """The decision function: higher = more machine-like (log-odds of the classifier)."""
        if self.use_words and word_scores is None:
            mats = _matrices(counts)
            cols = [self.words.score(mats[0])] + \
                ([self.masked.score(mats[1])] if self.masked is not None else [])
            word_scores = np.column_stack(cols) if len(cols) > 1 else cols[0]
        return self.pipeline.decision_function(self._design(x, word_scores))


# --------------------------------------------------------------------------------------------
# Splits.

@dataclass(frozen=True)
class Split:
    name: str  # the held-out genre or topic group
    train: np.ndarray  # indices into the items
    test: np.ndarray


def leave_one_out(items: Sequence[Item], key: Callable[[Item], str]) -> list[Split]:
    """One split per value of ``key``: test = the items with that value, train = the rest.
    Raises if a group would fall on both sides (``key`` must be constant within a group)."""
    values = [key(it) for it in items]
    by_group: dict[str, set[str]] = {}
    for it, v in zip(items, values, strict=True):
        by_group.setdefault(it.group, set()).add(v)
    mixed = [g for g, vs in by_group.items() if len(vs) > 1]
    if mixed:
        raise ValueError(f"groups on both sides of a split: {mixed[:3]}")
    v_arr = np.array(values)
    return [Split(v, np.flatnonzero(v_arr != v), np.flatnonzero(v_arr == v))
            for v in sorted(set(values))]


def genre_key(it: Item) -> str:
    return it.genre


def topic_key(topic_groups: Sequence[str], seed: int = 0) -> Callable[[Item], str]:
    """Passages by their topic group; human documents (which have none) spread over the
    groups at random by document, so every fold tests some human text."""
    groups = sorted(topic_groups)

    def key(it: Item) -> str:
        if it.label == 1 or not groups:
            return it.topic_group
        return groups[int(unit_hash(it.group, seed + 17) * len(groups))]
    return key


# --------------------------------------------------------------------------------------------
# Metrics with bootstrap intervals.

def tpr_at_fpr(human: np.ndarray, machine: np.ndarray, fpr: float) -> float:
    """Share of machine scores above the threshold that flags at most ``fpr`` of human."""
    return float((np.asarray(machine) > ai.threshold_at_fpr(human, fpr)).mean())


def auc(human: np.ndarray, machine: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half), from average ranks."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[human, machine])
    nh, nm = len(human), len(machine)
    return float((ranks[nh:].sum() - nm * (nm + 1) / 2) / (nh * nm))


def metrics(human: np.ndarray, machine: np.ndarray) -> dict[str, float]:
    return {"auc": auc(human, machine),
            "tpr_1pct": tpr_at_fpr(human, machine, 0.01),
            "tpr_01pct": tpr_at_fpr(human, machine, 0.001)}


def _sorted_metrics(h_sorted: np.ndarray, machine: np.ndarray) -> dict[str, float]:
    """:func:`metrics` from human scores already sorted: the AUC by binary search (each
    machine score's rank among the human ones, ties half), the same numbers without a full
    ranking, for the thousands of bootstrap draws."""
    below = np.searchsorted(h_sorted, machine, "left")
    not_above = np.searchsorted(h_sorted, machine, "right")
    auc_ = float((below + not_above).sum() / (2.0 * len(h_sorted) * len(machine)))
    return {"auc": auc_,
            "tpr_1pct": tpr_at_fpr(h_sorted, machine, 0.01),
            "tpr_01pct": tpr_at_fpr(h_sorted, machine, 0.001)}


def bootstrap(human: np.ndarray, machine: np.ndarray, n: int = 500, seed: int = 0,
              level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """Each metric with its percentile interval: human and machine scores resampled
    separately (stratified), ``n`` times."""
    human, machine = np.asarray(human, float), np.asarray(machine, float)
    point = metrics(human, machine)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n):
        h = np.sort(rng.choice(human, len(human)))
        m = _sorted_metrics(h, rng.choice(machine, len(machine)))
        for k, v in m.items():
            draws[k].append(v)
    if n == 0:
        return {k: (v, float("nan"), float("nan")) for k, v in point.items()}
    a = (1 - level) / 2
    return {k: (point[k], float(np.quantile(draws[k], a)), float(np.quantile(draws[k], 1 - a)))
            for k in point}


# --------------------------------------------------------------------------------------------
# Cross-validation of every layer on the same splits.

@dataclass
class Evaluation:
    items: list[Item]
    splits: dict[str, list[Split]]  # "genre" / "topic_group" -> splits
    scores: dict[str, dict[str, np.ndarray]]  # split kind -> layer -> out-of-fold score
    feature_names: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FoldWordScores:
    """The word model's scores for one split: its training rows cross-fitted (as
    :class:`SupervisedDetector` computes them), its test rows from a word model fitted on
    all training rows."""

    train: np.ndarray
    test: np.ndarray


def word_fold_scores(splits: Sequence[Split], counts, y: np.ndarray, groups: Sequence[str],
                     word_C: float, folds: int = 3, seed: int = 0, n_jobs: int = 1,
                     min_class_df: int = 0, fit_rows: np.ndarray | None = None
                     ) -> dict[str, FoldWordScores]:
    """Per split, the word-model scores every detector evaluated on these splits needs (one
    column per count matrix of ``counts``, a :class:`WordCounts` or one matrix):
    computed once, they serve each layer and attempt that uses the word model (the word
    model's fits are most of the evaluation's time). ``fit_rows``: the items that may fit
    a word model (all by default; every item is scored)."""
    from joblib import Parallel, delayed

    g = np.array(groups)
    fit_rows = np.ones(len(y), bool) if fit_rows is None else np.asarray(fit_rows, bool)

    mats = _matrices(counts)

    def one(sp: Split) -> FoldWordScores:
        tr, te = sp.train, sp.test
        fit = tr[fit_rows[tr]]
        inner, outer = [], []
        for m in mats:  # one word model per count matrix (words; topic-masked words)
            inner.append(cross_fitted_word_scores(m[tr], y[tr], g[tr], word_C, folds, seed,
                                                  min_class_df, fit_rows[tr]))
            outer.append(WordModel(word_C, min_class_df).fit(m[fit], y[fit]).score(m[te]))
        if len(mats) == 1:
            return FoldWordScores(inner[0], outer[0])
        return FoldWordScores(np.column_stack(inner), np.column_stack(outer))

    todo = [sp for sp in splits if len(set(y[sp.train])) == 2]
    # Threads: liblinear releases the GIL, and the folds are independent (same numbers
    # whatever the number of jobs).
    done = Parallel(n_jobs=n_jobs, backend="threading")(delayed(one)(sp) for sp in todo)
    return {sp.name: r for sp, r in zip(todo, done, strict=True)}


def out_of_fold(splits: Sequence[Split], x: np.ndarray, y: np.ndarray, counts,
                groups: Sequence[str], make: Callable[[], SupervisedDetector],
                word_scores: dict[str, FoldWordScores] | None = None,
                word_fit: np.ndarray | None = None) -> np.ndarray:
    """Each item's score from the one model trained without its fold (with the word-model
    scores of :func:`word_fold_scores` when given: the same numbers, without refitting)."""
    out = np.full(len(y), np.nan)
    g = np.array(groups)
    for sp in splits:
        if len(set(y[sp.train])) < 2:
            continue
        assert not set(g[sp.train]) & set(g[sp.test]), "a group on both sides of a split"
        det = make()
        if word_scores is not None and det.use_words:
            w = word_scores[sp.name]
            det.fit(x[sp.train], y[sp.train], word_scores=w.train)
            out[sp.test] = det.score(x[sp.test], word_scores=w.test)
        else:
            det.fit(x[sp.train], y[sp.train], counts[sp.train], g[sp.train],
                    word_fit=None if word_fit is None else word_fit[sp.train])
            out[sp.test] = det.score(x[sp.test], counts[sp.test])
    return out


def summarise(items: Sequence[Item], scores: dict[str, np.ndarray], n_boot: int, seed: int,
              min_human: int = 20, genre_intervals: Sequence[str] = ()) -> dict[str, Any]:
    """Pooled metrics per layer with intervals, and per genre of machine text: against all
    human items, and against the human items of the same genre where there are enough.
    Per-genre intervals only for the layers in ``genre_intervals`` (the others: a point)."""
    y = np.array([it.label for it in items])
    genres = np.array([it.genre for it in items])
    out: dict[str, Any] = {}
    for layer, s in scores.items():
        ok = ~np.isnan(s)
        h, m = s[ok & (y == 0)], s[ok & (y == 1)]
        per_genre = {}
        for g in sorted(set(genres[y == 1])):
            mg = s[ok & (y == 1) & (genres == g)]
            hg = s[ok & (y == 0) & (genres == g)]
            boot = bootstrap(h, mg, n_boot if layer in genre_intervals else 0, seed)
            row = {"n_machine": len(mg), "n_human_same_genre": len(hg), **boot}
            if len(hg) >= min_human:
                row["auc_same_genre"] = metrics(hg, mg)["auc"]
            per_genre[g] = row
        out[layer] = {"n_human": len(h), "n_machine": len(m),
                      **bootstrap(h, m, n_boot, seed), "per_genre": per_genre}
    return out


# --------------------------------------------------------------------------------------------
# Saving and loading the detector that curation uses (for later stages and the CLI).

def save(path: Path, det: SupervisedDetector, ngram, meta: dict[str, Any]) -> None:
    """Everything to score a new text, as numpy arrays and JSON (no pickles)."""
    path.mkdir(parents=True, exist_ok=True)
    scaler, lr = det.pipeline[0], det.pipeline[-1]
    ng_vocab = sorted(ngram.vocab, key=ngram.vocab.get)
    np.savez_compressed(
        path / "supervised.npz", scale_mean=scaler.mean_, scale_std=scaler.scale_,
        coef=lr.coef_.ravel(), intercept=lr.intercept_, word_idf=det.words.idf,
        word_coef=det.words.coef, word_intercept=np.array([det.words.intercept]),
        **({} if det.masked is None else {
            "masked_idf": det.masked.idf, "masked_coef": det.masked.coef,
            "masked_intercept": np.array([det.masked.intercept])}),
        ngram_words=np.array(ng_vocab), uni=ngram.uni,
        bi_keys=ngram.bi_keys, bi_counts=ngram.bi_counts, tri_keys=ngram.tri_keys,
        tri_counts=ngram.tri_counts, ctx1_keys=ngram.ctx1_keys,
        ctx1_counts=ngram.ctx1_counts, ctx2_keys=ngram.ctx2_keys,
        ctx2_counts=ngram.ctx2_counts)
    (path / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))


@dataclass
class LoadedDetector:
    """The supervised layer as curation saved it: ``score(texts, byte_models)``."""

    z: dict[str, np.ndarray]
    meta: dict[str, Any]
    ngram: Any

    def score(self, texts: Sequence[str], byte_models) -> np.ndarray:
        from mai_repro.data import ai_features as af

        x, _ = af.text_features(texts, self.ngram,
                                byte_models if self.meta.get("byte_features") else None)
        words = WordModel(idf=self.z["word_idf"], coef=self.z["word_coef"],
                          intercept=float(self.z["word_intercept"][0]))
        cols = [words.score(word_counts(texts))]
        if "masked_coef" in self.z:
            masked = WordModel(idf=self.z["masked_idf"], coef=self.z["masked_coef"],
                               intercept=float(self.z["masked_intercept"][0]))
            cols.append(masked.score(masked_word_counts(texts,
                                                        self.meta.get("masked_vocab", 150))))
        design = np.column_stack([x, *cols])
        design = (design - self.z["scale_mean"]) / self.z["scale_std"]
        return design @ self.z["coef"] + float(self.z["intercept"][0])


def load(path: Path) -> LoadedDetector:
    from mai_repro.data.ai_features import NgramModel

    z = dict(np.load(path / "supervised.npz"))
    ngram = NgramModel.__new__(NgramModel)
    ngram.vocab = {str(w): i + 1 for i, w in enumerate(z["ngram_words"])}
    ngram.uni = z["uni"]
    ngram.uni_logp = np.log(ngram.uni / ngram.uni.sum())
    for k in ("bi", "tri", "ctx1", "ctx2"):
        setattr(ngram, f"{k}_keys", z[f"{k}_keys"])
        setattr(ngram, f"{k}_counts", z[f"{k}_counts"])
    return LoadedDetector(z, json.loads((path / "meta.json").read_text()), ngram)


# --------------------------------------------------------------------------------------------
# Building the items from the sample and data/ai_text.

def split_human(docs: Sequence[Any], seed: int, reference_share: float
                ) -> tuple[list[Any], list[Any]]:
    """(reference, labelled) human documents, by a hash of the id: the reference part trains
    the feature models (byte models, n-gram models) and lends the human paragraphs of the
    "joined" edits; only the labelled part is ever the human side of an evaluation."""
    ref = [d for d in docs if unit_hash(d.id, seed + 41) < reference_share]
    ref_ids = {d.id for d in ref}
    return ref, [d for d in docs if d.id not in ref_ids]


def human_items(docs: Sequence[Any]) -> list[Item]:
    """One item per document; the detector's own human prose (family ``detector``, plain
    text hard-wrapped and indented for a terminal) as running text, each paragraph's lines
    joined (:func:`unwrap`), as the passages and a web page's text are."""
    return [Item(d.id, unwrap(d.text) if d.family == "detector" else d.text, 0,
                 human_genre(d.id, d.source, d.path), "", d.id, "none", d.family)
            for d in docs if d.text.strip()]


def unwrap(text: str) -> str:
    """Paragraphs (split at blank lines) with their lines joined and spaces collapsed."""
    import re

    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n\n".join(p for p in paras if p)


def prose_views(docs: Sequence[Any], max_pieces: int = 4, kinds: Sequence[str] = ("wiki",),
                min_words: int = 150, max_words: int = 600) -> list[Item]:
    """Extra human items for the detector only, the running prose of documents that the
    sample holds as markup, as a reader (or a crawl of the rendered page) would see it:

    - ``wiki``: the English Wikipedia pages, markup stripped as the usual extractors do
      (``wiki.strip_markup``), redirects skipped; genre ``encyclopedic``;
    - ``man``: the Linux man pages (section 2 and 3), roff resolved (:func:`roff_prose`);
      genre ``documentation``.

    Each is cut into pieces of a few paragraphs (``readers.prose_chunks``), at most
    ``max_pieces`` per document, each piece in its document's group, so a document and its
    pieces never fall on both sides of a split. Without them the detector's human side has
    almost no plain formal prose (the pages are raw markup, the man pages roff). The corpus
    is not touched: these are views of documents already read."""
    from mai_repro.data import readers, wiki

    out = []
    for d in docs:
        if "wiki" in kinds and d.id.startswith("general/enwiki-") and \
                not wiki.is_redirect(d.text):
            prose, genre = wiki.strip_markup(d.text), "encyclopedic"
        elif "man" in kinds and d.id.startswith("stem/manpages-"):
            prose, genre = roff_prose(d.text), "documentation"
        else:
            continue
        pieces = [(k, t) for k, t in readers.prose_chunks(prose, min_words, max_words)
                  if min_words <= len(t.split()) <= max_words]
        for key, text in pieces[:max_pieces]:
            out.append(Item(f"{d.id}#{key}", text, 0, genre, "", d.id, "none", d.family))
    return out


_ROFF_ESCAPES = ((r"\\f[BIRP]", ""), (r"\\f\(\w\w", ""), (r"\\-", "-"), (r"\\&", ""),
                 (r"\\\(em", "\u2014"), (r"\\\(en", "\u2013"), (r"\\\((aq|cq)", "'"),
                 (r"\\\((dq|lq|rq)", '"'), (r"\\ ", " "), (r"\\e", "\\\\"), (r"\\\|", ""),
                 (r"\\\^", ""), (r"\\c$", ""))
_ROFF_FONTS = {"B", "I", "R", "SM", "SB", "BR", "RB", "IR", "RI", "BI", "IB"}


def roff_prose(text: str) -> str:
    """The running text of a man page's roff source, as ``man`` would show it, without its
    layout: comments, synopses and examples (``.nf``/``.EX`` blocks) dropped, font macros
    and escapes resolved, paragraphs (``.PP``, ``.TP``, ``.IP``, sections) separated by
    blank lines. Enough to read the prose, not a typesetter."""
    import re
    import shlex

    out: list[str] = []
    literal = False
    for line in text.splitlines():
        if line.startswith(('.\\"', '\'\\"', '.\\}')):
            continue
        if line.startswith((".nf", ".EX")):
            literal = True
            continue
        if line.startswith((".fi", ".EE")):
            literal = False
            continue
        if literal:
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line[1:].partition(" ")
            if macro in ("SH", "SS"):
                out += ["", rest.strip('"'), ""]
            elif macro in ("PP", "P", "LP", "TP", "IP", "HP", "sp", "TQ"):
                out.append("")
                if macro == "IP" and rest:
                    out.append(rest.split()[0].strip('"'))
            elif macro in _ROFF_FONTS:
                try:
                    args = shlex.split(rest.replace("\\", "\\\\"))
                except ValueError:
                    args = rest.split()
                out.append((" " if macro in ("B", "I", "SM", "SB") else "").join(args))
            continue
        out.append(line)
    prose = "\n".join(out)
    for pattern, repl in _ROFF_ESCAPES:
        prose = re.sub(pattern, repl, prose, flags=re.M)
    # Join the lines of each paragraph; paragraphs stay apart.
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", prose)]
    return "\n\n".join(p for p in paras if p)


def machine_items(passages: Sequence[Any]) -> list[Item]:
    return [Item(p.id, p.text, 1, p.genre, p.topic_group or "none", p.base or p.id, p.edit)
            for p in passages]
