"""Stage ``wikipedia`` (notebook 02): raw wiki markup vs stripped text on the sample's dump pages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mai_repro.data.wiki import WikiMeasurement, measure, sample_pages
from mai_repro.schema import result_dict

STAGE = "wikipedia"


@dataclass
class WikipediaMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute."""

    pages: int  # article pages measured
    facts: int  # infobox facts found in them
    token_ratio: float  # tokens of raw markup / tokens of stripped text (the report: ~3x)
    bytes_ratio: float
    token_ratio_by_lang: dict[str, float]
    retention: dict[str, float]  # share of infobox facts recoverable, by representation: test


METRICS = WikipediaMetrics


@dataclass
class WikipediaResult:
    measurement: WikiMeasurement  # per page and per fact rows
    figures: dict[str, Path]
    metrics: WikipediaMetrics


def build(run) -> WikipediaResult:
    """Measure, save figures, write the stage manifest."""
    from mai_repro import plots
    from mai_repro.data.sources import SOURCES, default_data_dir, raw_path

    cfg = run.cfg.wiki
    data_dir = default_data_dir()
    with run.stage(STAGE) as st:
        for s in SOURCES:
            if s.fmt == "mediawiki":
                st.add_input(s.file, raw_path(data_dir, s))
        m = measure(sample_pages(data_dir, cfg.max_pages), cfg.bpe_vocab)
        fig, axes = plots.new(1, 2, width=5.2, height=4.0)
        ax = axes[0]
        for lang, colour in zip(sorted(m.token_ratio_by_lang), plots.PALETTE, strict=False):
            rows = [r for r in m.pages if r["lang"] == lang]
            ax.scatter([r["text_tokens"] for r in rows], [r["markup_tokens"] for r in rows],
                       s=12, alpha=0.7, color=colour, label=f"{lang} ({len(rows)} pages)")
        top = max(r["markup_tokens"] for r in m.pages)
        for k, style in ((1, ":"), (3, "--")):
            ax.plot([1, top], [k, k * top], style, color="grey", lw=1,
                    label="markup = text" if k == 1 else "markup = 3x text (report)")
        ax.set(xscale="log", yscale="log", xlabel="tokens of stripped text",
               ylabel="tokens of raw markup",
               title=f"Token cost: markup / text = {m.token_ratio:.2f}x")
        ax.legend(fontsize=8)
        names = list(m.retention)
        axes[1].barh(names, [m.retention[n] for n in names],
                     color=[plots.OURS if n.startswith("markup") else plots.PALETTE[1]
                            for n in names])
        axes[1].set(xlim=(0, 1), xlabel="share of infobox facts recoverable",
                    title=f"Infobox facts ({len(m.facts)} from "
                          f"{len({f['page'] for f in m.facts})} pages)")
        figures = {"wiki": plots.save(fig, st.path("figures", "markup_vs_text"))}
        metrics = WikipediaMetrics(
            pages=len(m.pages), facts=len(m.facts), token_ratio=m.token_ratio,
            bytes_ratio=m.bytes_ratio, token_ratio_by_lang=m.token_ratio_by_lang,
            retention=m.retention)
        st.metrics.update(result_dict(metrics))
    return WikipediaResult(m, figures, metrics)
