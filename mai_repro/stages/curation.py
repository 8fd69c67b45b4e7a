"""Stage ``curation`` (notebook 01): from the raw sample to a clean corpus, nothing lost silently.

Read every source (unreadable inputs recorded), then:

map phase, over shards through the executor (process pool, Ray or in-process):
  1. ``source``      dataset-hub domains, excluded paths, license allow-list, private sources
  2. ``cutoff``      the family's knowledge cut-off date
  3. ``ai_markers``  marker rules of assistant output (reason ``ai_content:marker``)
  4. ``quality``     Gopher/C4-style heuristics
  5. ``pii``         emails, IP addresses, phone numbers, API keys scrubbed (counted, not removed)
global phase, in this process:
  6. ``ai_detector`` documents not proven human-era by date: the supervised detector, the
                     zero-shot one (if it works on real text) and the data/ai_text guard
                     (mai_repro.data.ai_curation; reasons ``ai_content:<layer>``)
  7. ``exact_dedup`` and 8. ``near_dedup`` (MinHash LSH)
  9. ``decontamination`` against the RL task sets

Outputs under ``<run_dir>/curation/``: the clean corpus (``clean/<family>.jsonl.gz``), the
bill of materials (``bom.jsonl.gz``), ``ATTRIBUTION.md``, every input's fate
(``ledger.jsonl.gz``), per-step statistics and figures, and the manifest.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mai_repro import plots
from mai_repro.artifacts import Run
from mai_repro.data import ai_content, ai_curation, corpus, dedup, filters
from mai_repro.data.config import CurationConfig
from mai_repro.data.decontam import Decontaminator
from mai_repro.data.documents import Document, Unreadable
from mai_repro.data.integrity import SampleManifest
from mai_repro.data.sources import (
    DETECTOR_SOURCES,
    SOURCES,
    default_data_dir,
    iter_detector_human,
    manifest_ids,
    raw_path,
    read_source,
    source_id,
)
from mai_repro.data.steps import (
    Ledger,
    Removal,
    Step,
    apply_removals,
    finish,
    map_shards,
    run_steps,
)
from mai_repro.schema import result_dict

MAP_STEPS = ("source", "cutoff", "ai_markers", "quality", "pii")
GLOBAL_STEPS = ("ai_detector", "exact_dedup", "near_dedup", "decontamination")


def _marker(doc: Document) -> Document | Removal:
    phrase = ai_content.find_marker(doc.text)
    return Removal("ai_content:marker", phrase) if phrase else doc


def map_steps(cfg: CurationConfig) -> list[Step]:
    quality = filters.QualityThresholds(min_words=cfg.min_words,
                                        max_symbol_ratio=cfg.max_symbol_ratio,
                                        max_dup_line_fraction=cfg.max_dup_line_fraction)
    return [
        Step("source", functools.partial(filters.excluded_source, domains=cfg.exclude_domains,
                                         path_patterns=cfg.exclude_paths,
                                         licenses=cfg.licenses,
                                         allow_private=cfg.allow_private)),
        Step("cutoff", functools.partial(filters.after_cutoff, cutoffs=cfg.cutoffs)),
        Step("ai_markers", _marker),
        Step("quality", functools.partial(filters.low_quality, t=quality)),
        Step("pii", filters.pii_step),
    ]


def shard_job(args: tuple[list[Document], CurationConfig]) -> tuple[list[Document], Ledger]:
    """The map phase on one shard (a module-level function: picklable for any executor)."""
    docs, cfg = args
    return run_steps(docs, map_steps(cfg))


def read_all(cfg: CurationConfig, data_dir, ledger: Ledger,
             extra: list[Document] | None = None) -> list[Document]:
    """Every document of the sample (at most max_docs_per_source per source file), each raw
    file and document verified against data/MANIFEST (SampleIntegrityError if it differs),
    then ``extra`` (the planted crawl records); unreadable inputs get their fate in the
    ledger."""
    docs = []
    manifest = SampleManifest.read(data_dir)  # each file and document checked against it
    for source in SOURCES:
        manifest.verify_file(source_id(source), raw_path(data_dir, source))
        items = read_source(source, data_dir, manifest)
        if cfg.max_docs_per_source:
            items = itertools.islice(items, cfg.max_docs_per_source)
        for item in items:
            if isinstance(item, Unreadable):
                ledger.stat("read").docs_in += item.count
                ledger.stat("read").removed["unreadable"] += item.count
                ledger.record_removed(item.id, item.family, 0, "read", "unreadable", item.reason,
                                      count=item.count)
            else:
                docs.append(item)
    docs += extra or []
    read = ledger.stat("read")
    read.docs_in += len(docs)
    read.docs_out += len(docs)
    read.bytes_in = read.bytes_out = sum(d.nbytes for d in docs)
    return docs


def read_detector_human(cfg: CurationConfig, data_dir) -> list[Document]:
    """The documents of the detector's own human prose that ``cfg.ai_human_sources`` names
    (at most max_docs_per_source per source), verified against data/MANIFEST: items of the
    AI-content detector's human side, never documents of the corpus."""
    out: list[Document] = []
    for name in sorted(cfg.ai_human_sources):
        docs = iter_detector_human(data_dir, (name,))
        if cfg.max_docs_per_source:
            docs = itertools.islice(docs, cfg.max_docs_per_source)
        out += docs
    return out


def _split(doc_id: str, seed: int) -> float:
    """A deterministic number in [0, 1) per document, for held-out splits."""
    return int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:8], 16) / 2 ** 32


@dataclass
class DetectorReport:
    evaluation: Any  # detector.DetectorEvaluation
    n_train_docs: int
    n_calibration_docs: int  # held-out human documents that set the threshold
    n_test_docs: int  # held-out human documents that measure the detector
    scored: int
    flagged: dict[str, int]  # family -> documents above the threshold
    removed: dict[str, int]
    calibrated_families: list[str]
    losses: dict[str, list[float]]
    acts: bool  # the AUC on own-model text reached detector_min_auc (see ai_curation too)
    models: Any = None  # detector.DetectorModels (saved as detector.pt for later stages)
    train_ids: set[str] = field(default_factory=set)  # documents that trained the models


def detector_phase(docs: list[Document], cfg: CurationConfig, seed: int, progress: bool
                   ) -> DetectorReport:
    """Train the zero-shot detector's byte models on human-era documents and evaluate them
    against own-model text (removals are decided in ai_curation, with the other layers)."""
    from mai_repro.eval import detector

    human = [d for d in docs if ai_content.is_human_era(d.date, cfg.human_era_before)]
    if len(human) < 8:
        raise ValueError(f"only {len(human)} human-era documents: too few to train and "
                         f"calibrate the detector (raise max_docs_per_source)")
    human.sort(key=lambda d: _split(d.id, seed))
    s = detector.DetectorSettings(seq_len=cfg.detector_seq_len, d_model=cfg.detector_d_model,
                                  steps=cfg.detector_steps, score_bytes=cfg.detector_score_bytes,
                                  temperature=cfg.detector_temperature,
                                  top_p=cfg.detector_top_p, score=cfg.detector_score,
                                  fpr=cfg.detector_fpr, seed=seed)
    # Held out: documents long enough to give the own-model text its prompt. Half of them set
    # the threshold (calibration), the other half measure the detector (test).
    n_eval = min(cfg.detector_eval_docs, len(human) // 2)
    eval_docs = [d for d in human if len(d.text.encode("utf-8", "replace")) >= s.prompt_len]
    eval_docs = eval_docs[:n_eval]
    eval_ids = {d.id for d in eval_docs}
    train_docs = [d for d in human if d.id not in eval_ids]
    calib_docs, test_docs = eval_docs[0::2], eval_docs[1::2]
    models = detector.train_models([d.text for d in train_docs], s, progress)
    evaluation = detector.evaluate(models, [d.text for d in calib_docs],
                                   [d.text for d in test_docs], [d.text for d in train_docs],
                                   progress)
    # Where it may act: families whose threshold was set on enough held-out documents, and
    # only if the evaluation shows it works (ai_curation also asks for real model text).
    per_family = Counter(d.family for d in calib_docs)
    calibrated = sorted(f for f, n in per_family.items() if n >= 10)
    acts = evaluation.auc >= cfg.detector_min_auc
    return DetectorReport(evaluation, len(train_docs), len(calib_docs), len(test_docs), 0, {},
                          {}, calibrated, models.losses, acts, models,
                          {d.id for d in train_docs})


def dedup_phase(docs: list[Document], cfg: CurationConfig, ledger: Ledger
                ) -> list[Document]:
    exact = dedup.exact_duplicates([d.text for d in docs])
    docs = apply_removals(docs, {docs[i].id: Removal("exact_duplicate", docs[j].id)
                                 for i, j in exact.items()}, "exact_dedup", ledger)
    hasher = dedup.MinHasher(cfg.minhash_perm, cfg.shingle)
    sigs = [hasher.signature(d.text) for d in docs]
    near = dedup.near_duplicates(sigs, cfg.bands, cfg.rows, cfg.near_dup_threshold)
    return apply_removals(docs, {docs[i].id: Removal("near_duplicate", docs[j].id)
                                 for i, j in near.items()}, "near_dedup", ledger)


def attribution(docs: list[Document]) -> str:
    """What the licenses of the clean corpus ask for, with the works that need it."""
    by_license: dict[str, list[Document]] = defaultdict(list)
    for d in docs:
        by_license[d.license].append(d)
    lines = ["# Attribution for the clean corpus", "",
             "Every document keeps its license. Grouped by license, with what it requires.", ""]
    needs = {"CC-BY-SA": "attribution to the authors (via the page URL and its history) and "
                         "share-alike for adaptations",
             "GFDL": "the license notice and a link to the history",
             "GPL": "the copyright and license notices (kept in each file's header)",
             "Linux-man-pages": "the copyright and license notices (kept in each page)"}
    for lic in sorted(by_license):
        ds = by_license[lic]
        rule = "; ".join(v for k, v in needs.items() if k in lic) or \
            "keep the copyright and license notices"
        lines += [f"## {lic} ({len(ds)} documents)", "", f"Requires: {rule}.", ""]
        for src, group in itertools.groupby(sorted(ds, key=lambda d: d.source),
                                            key=lambda d: d.source):
            group = list(group)
            urls = [d.url for d in group if d.url][:5]
            lines.append(f"- {src} {group[0].version}: {len(group)} documents"
                         + (f", e.g. {', '.join(urls)}" if urls else ""))
        lines.append("")
    return "\n".join(lines)


@dataclass
class Decoding:
    """How one set of own-model text was sampled (the zero-shot detector's evaluation)."""

    model: str
    temperature: float
    top_p: float


@dataclass
class CurationMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute
    (``stages.read_metrics``). ``detector_*``: the zero-shot detector against own-model text;
    ``ai_*``: every AI-content layer against the data/ai_text passages (issue 18)."""

    inputs: int
    kept: int
    removed: dict[str, int]  # "<step>/<reason>" -> documents
    pii: dict[str, int]  # kind -> strings scrubbed
    clean_docs_by_family: dict[str, int]
    clean_bytes_by_family: dict[str, int]
    detector_method: str  # binoculars or fast_detect
    detector_auc: dict[str, dict[str, float]]  # method -> own-model text set -> AUC
    detector_headline_auc: float
    detector_tpr_at_1pct: dict[str, float]
    detector_tpr_at_5pct: dict[str, float]
    detector_threshold: float
    detector_test_fpr_at_threshold: float
    detector_detected_at_threshold: dict[str, float]
    detector_decoding: dict[str, Decoding]
    detector_flagged: dict[str, int]  # family -> candidates above the zero-shot threshold
    detector_removed: dict[str, int]
    detector_scored: int
    detector_calibration_docs: int
    detector_test_docs: int
    detector_acts: bool
    ai_items: dict[str, int]  # human, machine, passages, variants, reference_docs
    ai_logo_genre: dict[str, ai_curation.PooledMetrics]  # layer -> leave-one-genre-out
    ai_logo_topic_group: dict[str, ai_curation.PooledMetrics]
    ai_per_genre_auc: dict[str, float]  # supervised, leave-one-genre-out
    ai_per_genre_auc_zero_shot: dict[str, float]
    ai_attempts: list[ai_curation.Attempt]
    ai_marker_rules: list[ai_curation.MarkerRuleRow]
    ai_threshold: float  # the acting detector's, set on the calibration part at ai_fpr
    ai_fpr_target: float
    ai_calibration_fpr: float
    ai_test_fpr: float
    ai_test_tpr: float
    ai_zero_shot_auc_real_text: float
    ai_zero_shot_acts: bool
    ai_flagged: dict[str, dict[str, int]]  # layer -> family -> candidates
    ai_removed: dict[str, dict[str, int]]
    ai_planted: ai_curation.PlantedOutcome
    ai_human_removed_by_family: dict[str, ai_curation.FamilyRemoval]


METRICS = CurationMetrics


@dataclass
class CurationResult:
    ledger: Ledger
    clean: list[Document]
    detector: DetectorReport
    figures: dict[str, Any]
    metrics: CurationMetrics
    ai: Any = None  # ai_curation.AiContentReport
    planted_ids: list[str] = field(default_factory=list)  # the AI passages planted in the crawl

    def step_table(self) -> list[dict[str, Any]]:
        order = ["read", *MAP_STEPS, *GLOBAL_STEPS]
        return [self.ledger.stats[s].as_dict() for s in order if s in self.ledger.stats]


def _figures(result_ledger: Ledger, clean: list[Document], det: DetectorReport, st) -> dict:
    order = ["read", *MAP_STEPS, *GLOBAL_STEPS]
    stats = [result_ledger.stats[s] for s in order if s in result_ledger.stats]
    fig, axes = plots.new(1, 2, width=5.6, height=3.8)
    x = np.arange(len(stats))
    axes[0].bar(x, [s.docs_out for s in stats], color=plots.OURS)
    axes[0].set(xticks=x, title="documents after each step", ylabel="documents")
    axes[0].set_xticklabels([s.name for s in stats], rotation=45, ha="right")
    axes[1].bar(x, [s.bytes_out / 1e6 for s in stats], color=plots.PALETTE[2])
    axes[1].set(xticks=x, title="text after each step", ylabel="MB of UTF-8 text")
    axes[1].set_xticklabels([s.name for s in stats], rotation=45, ha="right")
    steps_fig = plots.save(fig, st.path("figures", "steps"))

    ev = det.evaluation
    fig, ax = plots.new(width=5.0, height=4.2)
    for method, style in zip(ai_content.METHODS, ("-", "--"), strict=True):
        for src, colour in zip(ev.sources, itertools.cycle(plots.PALETTE), strict=False):
            if method != ev.method and src != ev.headline:
                continue  # the other score only for the headline set: the curves coincide
            roc = ev.rocs[method][src]
            ax.plot(roc.fpr, roc.tpr, style, color=colour,
                    label=f"{method} vs {src} (AUC {roc.auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.axvline(0.01, color="grey", lw=0.8)
    ax.set(xlabel="false-positive rate (human documents flagged)",
           ylabel="detection rate (own-model text flagged)", title="AI-text detector ROC")
    ax.legend(fontsize=7, loc="lower right")
    roc_fig = plots.save(fig, st.path("figures", "detector_roc"))

    fams = sorted({d.family for d in clean})
    fig, ax = plots.new(width=6.0, height=3.4)
    lic = sorted({d.license for d in clean})
    bottom = np.zeros(len(fams))
    for li, colour in zip(lic, itertools.cycle(plots.PALETTE)):
        vals = np.array([sum(d.nbytes for d in clean if d.family == f and d.license == li)
                         for f in fams]) / 1e6
        ax.bar(fams, vals, bottom=bottom, color=colour, label=li[:28])
        bottom += vals
    ax.set(ylabel="MB of clean text", title="The clean corpus by family and license")
    ax.legend(fontsize=6, ncol=2, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    corpus_fig = plots.save(fig, st.path("figures", "clean_corpus"))
    return {"steps": steps_fig, "roc": roc_fig, "corpus": corpus_fig}


def build(run: Run, progress: bool = True) -> CurationResult:
    cfg = run.cfg.curation
    data_dir = default_data_dir()
    with run.stage("curation") as st:
        st.add_input("MANIFEST", data_dir / "MANIFEST")
        for s in SOURCES:
            st.add_input(s.file, raw_path(data_dir, s))
        for s in DETECTOR_SOURCES:
            if s.package in cfg.ai_human_sources:
                st.add_input(s.file, raw_path(data_dir, s))
        for manifest in sorted((data_dir / "ai_text").glob("*.jsonl")):
            st.add_input(f"ai_text/{manifest.name}", manifest)
        # AI-content removal, issue 18: plant data/ai_text passages into the crawl, train and
        # measure the layers (mai_repro.data.ai_curation), remove with one reason per layer.
        from mai_repro.data import ai_text
        from mai_repro.eval import detector

        passages = ai_text.load_passages()
        train_passages, planted_passages = ai_text.split_planted(passages, cfg.ai_plant_share,
                                                                 run.cfg.seed)
        planted = ai_curation.planted_documents(planted_passages, st.path("planted.warc.gz"),
                                                cfg.cutoffs["general"], run.cfg.seed)
        ledger = Ledger()
        times = ai_curation.PhaseTimes()  # where the minutes go: curation/timings.json
        with times("read"):
            docs = read_all(cfg, data_dir, ledger, planted)
        planted_ids = {d.id for d in planted}
        sample_docs = [d for d in docs if d.id not in planted_ids]
        shards = [(list(b), cfg) for b in
                  (docs[i:i + cfg.shard_size] for i in range(0, len(docs), cfg.shard_size))]
        kept: list[Document] = []
        with times("map phase"):
            for shard_kept, shard_ledger in map_shards(shard_job, shards, cfg.executor,
                                                       cfg.workers, progress,
                                                       "curation shards"):
                kept += shard_kept
                ledger.merge(shard_ledger)
        with times("zero-shot detector (train 3 byte models, evaluate)"):
            det = detector_phase(kept, cfg, run.cfg.seed, progress)
        detector.save_models(det.models, det.evaluation.threshold, st.path("detector.pt"))
        candidates = [d for d in kept if not ai_content.is_human_era(d.date,
                                                                     cfg.human_era_before)]
        with times("ai-content layers (all)"):
            # The detector's own human prose (data/raw/detector/): its human side only.
            extra_human = read_detector_human(cfg, data_dir)
            removals, ai_report = ai_curation.ai_content_phase(
                sample_docs, candidates, det.models, (det.evaluation.threshold, det.acts),
                det.train_ids, train_passages, passages, cfg, run.cfg.seed,
                st.path("ai_detector"), progress, times, extra_human)
        det.scored, det.flagged, det.removed = (ai_report.scored, ai_report.flagged["zero_shot"],
                                                ai_report.removed["zero_shot"])
        kept = apply_removals(kept, removals, "ai_detector", ledger)
        with times("dedup"):
            kept = dedup_phase(kept, cfg, ledger)
        from mai_repro.rl.tasks import decontamination_texts

        guard = Decontaminator(decontamination_texts(), n=cfg.decontam_ngram)
        kept = apply_removals(kept, {d.id: Removal("task_overlap") for d in kept
                                     if guard.match(d.text)}, "decontamination", ledger)
        finish(kept, ledger)
        ledger.check(manifest_ids(data_dir, cfg.max_docs_per_source)  # a lost document fails
                     + sorted(planted_ids))
        ai_metrics = ai_curation.metrics(
            ai_report, ai_curation.planted_outcome(planted_ids, ledger.fates),
            ai_curation.human_removed_by_family(ledger.fates, planted_ids))

        for family in sorted({d.family for d in kept} | set(cfg.cutoffs)):
            corpus.write_clean(st.dir, family, (
                {"id": d.id, "family": d.family, "text": d.text, "source": d.source,
                 "license": d.license, "path": d.path, "date": d.date, "url": d.url}
                for d in kept if d.family == family))
        steps_passed = ["read", *MAP_STEPS, *GLOBAL_STEPS]
        corpus.write_jsonl_gz(st.path("bom.jsonl.gz"), (
            {"id": d.id, "family": d.family, "source": d.source, "version": d.version,
             "license": d.license, "path": d.path, "url": d.url, "date": d.date,
             "raw_sha256": d.sha256, "clean_bytes": d.nbytes, "steps_passed": steps_passed}
            for d in kept))
        corpus.write_jsonl_gz(st.path("ledger.jsonl.gz"), (asdict(f) for f in ledger.fates))
        st.path("ATTRIBUTION.md").write_text(attribution(kept))
        figures = _figures(ledger, kept, det, st)
        figures["ai_roc"] = ai_curation.roc_figure(ai_report, st.path("figures", "ai_roc"))

        ev = det.evaluation
        main = ev.rocs[ev.method]
        metrics = CurationMetrics(
            inputs=ledger.n_inputs, kept=ledger.n_kept,
            removed={f"{s}/{r}": n for (s, r), n in sorted(ledger.removals().items())},
            pii=dict(ledger.stats["pii"].counters),
            clean_docs_by_family=dict(Counter(d.family for d in kept)),
            clean_bytes_by_family={f: sum(d.nbytes for d in kept if d.family == f)
                                   for f in sorted({d.family for d in kept})},
            detector_method=ev.method,
            detector_auc={m: {src: r.auc for src, r in rocs.items()}
                          for m, rocs in ev.rocs.items()},
            detector_headline_auc=ev.auc,
            detector_tpr_at_1pct={src: r.tpr_at(0.01) for src, r in main.items()},
            detector_tpr_at_5pct={src: r.tpr_at(0.05) for src, r in main.items()},
            detector_threshold=ev.threshold,
            detector_test_fpr_at_threshold=ev.test_fpr,
            detector_detected_at_threshold=ev.detected,
            detector_decoding={src: Decoding(m, t, p) for src, (m, t, p) in ev.sources.items()},
            detector_flagged=det.flagged, detector_removed=det.removed,
            detector_scored=det.scored, detector_calibration_docs=det.n_calibration_docs,
            detector_test_docs=det.n_test_docs, detector_acts=det.acts,
            **ai_metrics)
        st.metrics.update(result_dict(metrics))
        st.path("timings.json").write_text(json.dumps(times.seconds, indent=1))
    return CurationResult(ledger, kept, det, figures, metrics, ai_report, sorted(planted_ids))
