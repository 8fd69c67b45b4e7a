"""AI-content removal in curation: measure every layer on real model-written text, then act.

Called by the curation stage after the map phase (which already removed marker matches) and
after the zero-shot detector was trained (mai_repro.eval.detector). In order:

1. the human side: the sample's documents (all listed in data/MANIFEST), split by a hash of
   the id into a *reference* part (trains the word n-gram models, lends the human paragraphs
   of "joined" edits; the zero-shot byte models' training documents are added to it) and a
   *labelled* part, the only human text any evaluation or classifier sees;
2. the machine side: data/ai_text passages minus those planted into the crawl, plus their
   edited variants;
3. features once per text; leave-one-genre-out and leave-one-topic-group-out evaluation of
   the marker rules, the zero-shot scores and the supervised detector on the same splits;
4. the detector that acts: trained on the labelled human *fit* part and every training
   passage, its threshold set on the human *calibration* part at ``ai_fpr``, its false-positive
   rate measured on the human *test* part;
5. removals among the candidates (documents not proven human-era by date), each layer its own
   reason: ``ai_content:supervised``, ``ai_content:zero_shot`` (only if its AUC on real text
   reaches ``detector_min_auc``) and ``ai_content:known_passage`` (the guard: a near copy of
   any data/ai_text passage, whatever the detectors said).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mai_repro.data import ai_content as ai
from mai_repro.data import ai_detect as ad
from mai_repro.data import ai_features as af
from mai_repro.data import ai_text
from mai_repro.data.steps import Removal

LAYERS = ("markers", "binoculars", "fast_detect", "supervised", "combined")
# Feature sets tried for the supervised layer (the table of attempts in docs/data.md).
ATTEMPTS = (("style", ("style",), False), ("style + n-gram", ("style", "ngram"), False),
            ("style + n-gram + byte models", ("style", "ngram", "byte"), False),
            ("style + n-gram + word model", ("style", "ngram"), True),
            ("style + n-gram + byte models + word model", ("style", "ngram", "byte"), True))


@dataclass
class AiContentReport:
    summary: dict[str, dict[str, Any]]  # split kind -> layer -> metrics (with intervals)
    attempts: list[dict[str, Any]]
    marker_rules: list[dict[str, Any]]  # per rule: hits and rates on each side
    n_items: dict[str, int]
    threshold: float
    fpr_target: float
    calibration_fpr: float
    test_fpr: float  # on held-out human documents never used to fit or calibrate
    test_tpr: float  # passages of the held-out split above the threshold
    zero_shot_auc: float
    zero_shot_acts: bool
    flagged: dict[str, dict[str, int]]  # layer -> family -> candidates above the threshold
    removed: dict[str, dict[str, int]]
    scored: int
    roc: dict[str, tuple[np.ndarray, np.ndarray]]  # layer -> (fpr, tpr), leave-one-genre-out
    feature_names: list[str]
    coefficients: dict[str, float] = field(default_factory=dict)
    items: list[ad.Item] = field(default_factory=list)
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class PhaseTimes:
    """Wall and process-CPU seconds per named phase (``with times("features"): ...``), for
    finding where a stage's minutes go; written beside the manifest, never into metrics
    (they differ from run to run)."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = {"wall_s": round(time.perf_counter() - wall, 2),
                                  "cpu_s": round(time.process_time() - cpu, 2)}


def _feature_columns(names: list[str], kinds: tuple[str, ...]) -> list[int]:
    groups = {"style": af.STYLE_NAMES, "ngram": af.NGRAM_NAMES, "byte": af.BYTE_NAMES}
    wanted = {n for k in kinds for n in groups[k]}
    return [i for i, n in enumerate(names) if n in wanted]


def _roc_curve(human: np.ndarray, machine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    y = np.r_[np.zeros(len(human)), np.ones(len(machine))]
    fpr, tpr, _ = roc_curve(y, np.r_[human, machine])
    return fpr, tpr


def marker_table(human: list[ad.Item], machine: list[ad.Item]) -> list[dict[str, Any]]:
    """Each marker rule's hits on the human side (false positives) and the machine side."""
    hits_h = [set(ai.marker_hits(it.text)) for it in human]
    hits_m = [set(ai.marker_hits(it.text)) for it in machine]
    rows = []
    for r in ai.MARKER_RULES:
        nh = sum(r.name in h for h in hits_h)
        nm = sum(r.name in h for h in hits_m)
        rows.append({"rule": r.name, "human_hits": nh, "human_fpr": nh / max(1, len(human)),
                     "machine_hits": nm, "machine_tpr": nm / max(1, len(machine))})
    nh = sum(bool(h) for h in hits_h)
    nm = sum(bool(h) for h in hits_m)
    rows.append({"rule": "any", "human_hits": nh, "human_fpr": nh / max(1, len(human)),
                 "machine_hits": nm, "machine_tpr": nm / max(1, len(machine))})
    return rows


def ai_content_phase(sample_docs: list[Any], candidates: list[Any], byte_models: Any,
                     zero_shot: tuple[float, bool], exclude_ids: set[str],
                     train_passages: list[ai_text.Passage],
                     all_passages: list[ai_text.Passage], cfg: Any, seed: int,
                     out_dir: Path | None = None, progress: bool = True,
                     times: PhaseTimes | None = None, extra_human: Sequence[Any] = ()
                     ) -> tuple[dict[str, Removal], AiContentReport]:
    """Evaluate every layer, train and calibrate the acting detector, decide removals.

    ``sample_docs``: every document read from the sample (the human side; never planted
    records); ``candidates``: the documents the detectors may remove; ``zero_shot``: the
    zero-shot detector's (threshold on own-model text, whether it works there; the threshold
    is set again here, on human documents of every family); ``exclude_ids``: human documents
    that trained the byte models (never on the human side of an evaluation);
    ``extra_human``: the detector's own human prose (``sources.iter_detector_human``), items
    of its human side only, never candidates and never the corpus."""

    times = times if times is not None else PhaseTimes()
    ref, labelled = ad.split_human(sample_docs, seed, cfg.ai_reference_share)
    ref += [d for d in labelled if d.id in exclude_ids]
    labelled = [d for d in labelled if d.id not in exclude_ids]
    guard = ai_text.PassageGuard(all_passages)
    extra_human = list(extra_human)
    leaked = [d.id for d in labelled + extra_human if guard.match(d.text)]
    if leaked:
        raise AssertionError(f"data/ai_text passages on the human side: {leaked[:3]}")
    join_pool = [d.text for d in ref if d.family == "general" and len(d.text.split()) >= 40]
    variants = ai_text.edited_variants(train_passages, join_pool, seed, cfg.ai_edit_share)
    views = ad.prose_views(labelled, cfg.ai_prose_views, cfg.ai_prose_view_kinds)
    items = ad.human_items(labelled) + views + ad.human_items(extra_human) + \
        ad.machine_items(train_passages + variants)
    y = np.array([it.label for it in items])
    groups = [it.group for it in items]

    # Features, once per text (items, then candidates that are not items). The byte models'
    # features of the candidates are computed only if a layer that acts needs them.
    with times("ai: n-gram models"):
        ngram = af.NgramModel([d.text for d in ref])
    item_ids = {it.id: i for i, it in enumerate(items)}
    extra = [d for d in candidates if d.id not in item_ids]
    texts = [it.text for it in items] + [d.text for d in extra]
    with times("ai: style and n-gram features"):
        x_all, names = af.text_features(texts, ngram, None, progress)
    with times("ai: byte-model features"):
        byte_items = af.byte_features(byte_models, [it.text for it in items])
    x_all = np.concatenate([x_all, np.full((len(texts), len(af.BYTE_NAMES)), np.nan)], 1)
    x_all[: len(items), -len(af.BYTE_NAMES):] = byte_items
    names = names + list(af.BYTE_NAMES)
    x_full = x_all[: len(items)]
    used = _feature_columns(names, ("style", "ngram", "byte") if cfg.ai_byte_features
                            else ("style", "ngram"))
    x = x_full[:, used]
    with times("ai: word counts"):
        counts = ad.text_counts(texts, cfg.ai_masked_words, cfg.ai_masked_vocab)
    cand_counts_all = counts
    counts = counts[: len(items)]

    # Evaluation: every layer on the same splits.
    topic_groups = sorted({it.topic_group for it in items if it.label == 1})
    splits = {"genre": ad.leave_one_out(items, ad.genre_key),
              "topic_group": ad.leave_one_out(items, ad.topic_key(topic_groups, seed))}
    marker = np.array([bool(ai.marker_hits(it.text)) for it in items], float)
    make = lambda: ad.SupervisedDetector(C=cfg.ai_C, word_C=cfg.ai_word_C,  # noqa: E731
                                         seed=seed)
    # Human items of the genres in ai_word_skip_genres (non-English text) never fit a word
    # model; they are scored like every item.
    genres = np.array([it.genre for it in items])
    word_fit = ~((y == 0) & np.isin(genres, list(cfg.ai_word_skip_genres)))
    # The word model's fold scores once per split kind: shared by the supervised layer and
    # the attempts that use it.
    with times("ai: word models per fold"):
        word = {kind: ad.word_fold_scores(sp, counts, y, groups, cfg.ai_word_C, seed=seed,
                                         n_jobs=cfg.workers, fit_rows=word_fit)
                for kind, sp in splits.items()}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for kind, sp in splits.items():
        sup = ad.out_of_fold(sp, x, y, counts, groups, make, word[kind])
        scores[kind] = {"markers": marker,
                        "binoculars": x_full[:, names.index("binoculars")],
                        "fast_detect": x_full[:, names.index("fast_detect")],
                        "supervised": sup, "combined": sup + 1e3 * marker}
    with times("ai: bootstrap"):
        summary = {kind: ad.summarise(items, s, cfg.ai_bootstrap, seed,
                                      genre_intervals=("supervised", "binoculars")
                                      if kind == "genre" else ())
                   for kind, s in scores.items()}
    word_names = ["word_model"] + (["masked_word_model"] if cfg.ai_masked_words else [])
    attempts = []
    for label, kinds, words in ATTEMPTS:
        if cfg.ai_masked_words:
            label = label.replace("word model", "word model + masked word model")
        cols = _feature_columns(names, kinds)
        s = ad.out_of_fold(splits["genre"], x_full[:, cols], y, counts, groups,
                           lambda w=words: ad.SupervisedDetector(C=cfg.ai_C, seed=seed,
                                                                   word_C=cfg.ai_word_C,
                                                                   use_words=w),
                           word["genre"])
        worst = min(ad.metrics(s[y == 0], s[(y == 1) & (np.array([it.genre for it in items])
                                                          == g)])["auc"]
                    for g in {it.genre for it in items if it.label == 1})
        label += " (used)" if words and set(cols) == set(used) else ""
        attempts.append({"features": label,
                         "n_features": len(cols) + (len(word_names) if words else 0),
                         **ad.metrics(s[y == 0], s[y == 1]), "worst_genre_auc": worst})
    g = scores["genre"]
    roc = {layer: _roc_curve(g[layer][y == 0], g[layer][y == 1]) for layer in LAYERS}

    # The acting detector: fit / calibration / test parts of the labelled human documents.
    part = np.array([ai_text.unit_hash(gr, seed + 53) for gr in groups])
    calib = (y == 0) & (part >= 0.6) & (part < 0.8)
    test = (y == 0) & (part >= 0.8)
    machine_test = (y == 1) & (part >= 0.8)
    fit = ~calib & ~test & ~machine_test
    det = make().fit(x[fit], y[fit], counts[fit], np.array(groups)[fit], word_fit=word_fit[fit])
    s_items = det.score(x, counts)
    threshold = ai.threshold_at_fpr(s_items[calib], cfg.ai_fpr)
    # Refit on every training passage (the held-out ones only measured the TPR above).
    fit_all = ~calib & ~test
    tpr_test = float((s_items[machine_test] > threshold).mean()) if machine_test.any() else 0.0
    det = make().fit(x[fit_all], y[fit_all], counts[fit_all], np.array(groups)[fit_all],
                     word_fit=word_fit[fit_all])
    s_items = det.score(x, counts)
    threshold = ai.threshold_at_fpr(s_items[calib], cfg.ai_fpr)
    coef = dict(zip([*[names[i] for i in used], *word_names],
                    det.pipeline[-1].coef_.ravel().tolist(), strict=True))

    # Removals among the candidates.
    cand_rows = [item_ids.get(d.id) for d in candidates]
    extra_index = {d.id: len(items) + k for k, d in enumerate(extra)}
    rows = [r if r is not None else extra_index[d.id] for r, d in zip(cand_rows, candidates,
                                                                        strict=True)]
    zs_col = names.index(cfg.detector_score)
    zs_auc = summary["genre"][cfg.detector_score]["auc"][0]
    zs_acts = zero_shot[1] and zs_auc >= cfg.detector_min_auc
    # The zero-shot layer acts only if it also separates real model text (AUC at least
    # detector_min_auc), at a threshold set on the same human calibration part: its own
    # threshold came from human-era Wikipedia pages and flags other families far too often.
    zs_threshold = ai.threshold_at_fpr(x_full[calib, zs_col], cfg.ai_fpr)
    if (zs_acts or cfg.ai_byte_features) and extra:
        x_all[len(items):, -len(af.BYTE_NAMES):] = af.byte_features(byte_models,
                                                                    [d.text for d in extra])
    cand_x = x_all[rows]
    cand_counts = cand_counts_all[rows]
    sup_scores = det.score(cand_x[:, used], cand_counts) if candidates else np.zeros(0)
    zs_scores = cand_x[:, zs_col] if candidates else np.zeros(0)
    flagged: dict[str, Counter] = {k: Counter() for k in ("supervised", "zero_shot",
                                                          "known_passage")}
    removed: dict[str, Counter] = {k: Counter() for k in flagged}
    removals: dict[str, Removal] = {}
    for d, s_sup, s_zs in zip(candidates, sup_scores, zs_scores, strict=True):
        hits = []
        if s_sup > threshold:
            hits.append(("supervised", f"supervised {s_sup:.2f} > {threshold:.2f}"))
        if s_zs > zs_threshold:
            hits.append(("zero_shot", f"{cfg.detector_score} {s_zs:.3f} > {zs_threshold:.3f}"))
        copy = guard.match(d.text)
        if copy:
            hits.append(("known_passage", f"near copy of data/ai_text {copy}"))
        for layer, _ in hits:
            flagged[layer][d.family] += 1
        acting = [(k, v) for k, v in hits if k != "zero_shot" or zs_acts]
        if acting:
            layer, detail = acting[0]
            removed[layer][d.family] += 1
            removals[d.id] = Removal(f"ai_content:{layer}", detail)

    if out_dir is not None:
        ad.save(out_dir, det, ngram, {
            "threshold": threshold, "fpr": cfg.ai_fpr,
            "feature_names": [names[i] for i in used], "byte_features": cfg.ai_byte_features,
            "masked_vocab": cfg.ai_masked_vocab,
            "zero_shot": {"score": cfg.detector_score, "threshold": zs_threshold,
                          "acts": zs_acts, "auc_real_text": zs_auc},
            "markers": [r.name for r in ai.MARKER_RULES]})

    human_items = [it for it in items if it.label == 0]
    report = AiContentReport(
        summary, attempts, marker_table(human_items, [it for it in items if it.label == 1]),
        {"human": len(human_items), "machine": int(y.sum()),
         "passages": len(train_passages), "variants": len(variants), "prose_views": len(views),
         "extra_human": len(extra_human),
         "reference_docs": len(ref)},
        float(threshold), cfg.ai_fpr, float((s_items[calib] > threshold).mean()),
        float((s_items[test] > threshold).mean()), tpr_test, float(zs_auc), bool(zs_acts),
        {k: dict(v) for k, v in flagged.items()}, {k: dict(v) for k, v in removed.items()},
        len(candidates), roc, names, coef, items, scores)
    return removals, report


def planted_documents(passages: list[ai_text.Passage], path: Path, cutoff: str,
                      seed: int) -> list[Any]:
    """Planted passages as the crawl would deliver them: written as WARC records (some at
    Wikipedia URLs, some at blog and forum URLs, dated before and after ``cutoff``) to
    ``path`` and read back with the sample's WARC reader, as documents of the web family
    carrying the crawl's license. About a third are planted as an edited copy."""
    from mai_repro.data import readers
    from mai_repro.data.documents import Document, sha256
    from mai_repro.data.sources import WIKI_LICENSE

    # Some passages are planted in an edited form (as people post them); the guard and the
    # detector must find those too. No human text is joined here (that would put a sample
    # document into the planted crawl).
    edited = {p.base: p for p in ai_text.edited_variants(passages, [], seed + 5, 0.15)}
    posted = [edited.get(p.id, p) for p in passages]
    records = ai_text.plant_records(posted, cutoff, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    readers.write_warc(path, records)
    docs = []
    for item in readers.read_warc(path):
        assert isinstance(item, readers.RawItem)
        # Only what a crawl would know: URL, date, text; the passage id stays out.
        docs.append(Document(f"general/{path.name}:{item.path}", "general",
                             readers.decode(item.data), "mai-repro planted crawl", "1",
                             WIKI_LICENSE, item.path, item.date, item.url, sha256(item.data)))
    assert len(docs) == len(posted)
    return docs


@dataclass
class PlantedOutcome:
    """What curation did with the AI passages planted into the crawl."""

    planted: int  # records planted
    by_fate: dict[str, int]  # "kept" or "<step>/<reason>" -> records
    before_cutoff: int  # records dated before the cut-off: the AI-content layers' job
    removed_by_ai_layers: int  # ... removed by markers, supervised or zero-shot
    removed_share: float  # removed_by_ai_layers / before_cutoff
    kept: int  # records left in the clean corpus (must be 0)


@dataclass
class FamilyRemoval:
    """Human documents of one family that reached the AI-content layers, and those removed."""

    documents: int
    removed: int
    share: float


@dataclass
class PooledMetrics:
    """A layer's pooled metrics, each as [point, low, high] (95% bootstrap interval)."""

    auc: list[float]
    tpr_1pct: list[float]
    tpr_01pct: list[float]


@dataclass
class Attempt:
    """One row of the table of attempts (leave-one-genre-out, pooled)."""

    features: str
    n_features: int
    auc: float
    tpr_1pct: float
    tpr_01pct: float
    worst_genre_auc: float


@dataclass
class MarkerRuleRow:
    """One marker rule's hits on the human side (false positives) and on the passages."""

    rule: str
    human_hits: int
    human_fpr: float
    machine_hits: int
    machine_tpr: float


def planted_outcome(planted_ids: set[str], fates: list[Any]) -> PlantedOutcome:
    """What curation did with the planted records: by step and reason, and the share of the
    records dated before the cut-off that the AI-content layers removed (the guard aside)."""
    by = Counter()
    reached = removed_by_layers = 0
    for f in fates:
        if f.id not in planted_ids:
            continue
        by["kept" if f.kept else f"{f.step}/{f.reason}"] += 1
        if f.kept or f.reason != "after_cutoff":
            reached += 1
            if not f.kept and f.reason in ("ai_content:marker", "ai_content:supervised",
                                           "ai_content:zero_shot"):
                removed_by_layers += 1
    return PlantedOutcome(len(planted_ids), dict(sorted(by.items())), reached,
                          removed_by_layers, removed_by_layers / max(1, reached), by["kept"])


def human_removed_by_family(fates: list[Any], planted_ids: set[str]
                            ) -> dict[str, FamilyRemoval]:
    """Per family: human documents that reached the AI-content detector step, and those it
    removed (markers count too: they act on every document)."""
    reached: Counter = Counter()
    removed: Counter = Counter()
    for f in fates:
        if f.id in planted_ids:
            continue
        ai_step = not f.kept and (f.reason or "").startswith("ai_content:")
        later = f.kept or f.step in ("exact_dedup", "near_dedup", "decontamination")
        if ai_step or later:
            reached[f.family] += 1
        if ai_step:
            removed[f.family] += 1
    return {fam: FamilyRemoval(reached[fam], removed[fam], removed[fam] / max(1, reached[fam]))
            for fam in sorted(reached)}


def metrics(report: AiContentReport, planted: PlantedOutcome,
            human_removed: dict[str, FamilyRemoval]) -> dict[str, Any]:
    """The AI-content fields of the stage's metrics (``curation.CurationMetrics``, whose
    ``ai_*`` fields these are), typed."""
    def pooled(kind: str, layer: str) -> PooledMetrics:
        m = report.summary[kind][layer]
        return PooledMetrics(*(list(m[k]) for k in ("auc", "tpr_1pct", "tpr_01pct")))

    return {
        "ai_items": dict(report.n_items),
        "ai_logo_genre": {layer: pooled("genre", layer) for layer in LAYERS},
        "ai_logo_topic_group": {layer: pooled("topic_group", layer) for layer in LAYERS},
        "ai_per_genre_auc": {g: r["auc"][0] for g, r in
                             report.summary["genre"]["supervised"]["per_genre"].items()},
        "ai_per_genre_auc_zero_shot": {
            g: r["auc"][0] for g, r in
            report.summary["genre"]["binoculars"]["per_genre"].items()},
        "ai_attempts": [Attempt(**a) for a in report.attempts],
        "ai_marker_rules": [MarkerRuleRow(**r) for r in report.marker_rules],
        "ai_threshold": report.threshold, "ai_fpr_target": report.fpr_target,
        "ai_calibration_fpr": report.calibration_fpr, "ai_test_fpr": report.test_fpr,
        "ai_test_tpr": report.test_tpr,
        "ai_zero_shot_auc_real_text": report.zero_shot_auc,
        "ai_zero_shot_acts": report.zero_shot_acts,
        "ai_flagged": report.flagged, "ai_removed": report.removed,
        "ai_planted": planted, "ai_human_removed_by_family": human_removed,
    }


def roc_figure(report: AiContentReport, path: Any) -> Any:
    """ROC curves of every layer, leave-one-genre-out, on log-scaled false-positive rates."""
    import itertools

    from mai_repro import plots

    fig, ax = plots.new(width=5.4, height=4.2)
    for layer, colour in zip(LAYERS, itertools.cycle(plots.PALETTE)):
        fpr, tpr = report.roc[layer]
        auc = report.summary["genre"][layer]["auc"][0]
        ax.plot(np.maximum(fpr, 1e-4), tpr, color=colour, label=f"{layer} (AUC {auc:.3f})")
    for x in (0.001, 0.01):
        ax.axvline(x, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlim=(1e-4, 1), ylim=(0, 1.02),
           xlabel="false-positive rate (human documents flagged)",
           ylabel="detection rate (data/ai_text passages)",
           title="AI-content layers, leave-one-genre-out")
    ax.legend(fontsize=7, loc="lower right")
    return plots.save(fig, path)


def genre_table(report: AiContentReport, kind: str = "genre") -> list[dict[str, Any]]:
    """Per genre of model-written text: the supervised and the zero-shot layer side by side."""
    sup = report.summary[kind]["supervised"]["per_genre"]
    zs = report.summary[kind]["binoculars"]["per_genre"]
    mk = report.summary[kind]["markers"]["per_genre"]
    rows = []
    for g, r in sup.items():
        rows.append({"genre": g, "passages": r["n_machine"],
                     "human same genre": r["n_human_same_genre"],
                     "supervised AUC": r["auc"][0],
                     "AUC 95% CI": f"[{r['auc'][1]:.3f}, {r['auc'][2]:.3f}]",
                     "TPR @1% FPR": r["tpr_1pct"][0], "TPR @0.1% FPR": r["tpr_01pct"][0],
                     "AUC vs same-genre human": r.get("auc_same_genre", float("nan")),
                     "zero-shot AUC": zs[g]["auc"][0], "markers TPR": mk[g]["tpr_1pct"][0]})
    return rows
