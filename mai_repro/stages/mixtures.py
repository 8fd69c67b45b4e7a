"""Stage ``mixtures`` (notebook 06): a data-mixture search at two or more scales.

The MAI-Thinking-1 report trained 183 models over 61 mixtures and scored each by a weighted
held-out NLL (0.5 code + 0.175 STEM + 0.175 math + 0.1 general + 0.05 multilingual). Its
finding: the ranking of mixtures is not invariant with scale (a STEM-heavy mix won small, a
code-heavy mix won at scale; the curves crossed). Here:

- ``n_mixtures`` mixtures over our five families: anchors first (the report's shares, a
  STEM-heavy mix, a uniform mix), then Dirichlet draws; every weight at least ``min_weight``;
- each trained at every scale of ``mixsearch.widths`` x ``depths`` (the ladder's rung models,
  same tokens-per-parameter rule) through :func:`mai_repro.stages.ladder.train_run`, plus the
  report mixture again with another seed per scale: the seed noise of the objective;
- rank agreement of each scale with the largest (Kendall, Spearman with bootstrap intervals,
  top-1 agreement, pairwise flips), the best small-scale vs the best large-scale mixture
  across scales (do the curves cross?), and a RegMix-style regression fitted at the smallest
  scale, judged on how well it ranks the mixtures at the largest.

The mixture best at the largest scale is the stage's ``chosen_mixture``
(:func:`chosen_mixture`), handed on for pre-training; notebook 07 does not read it yet and
trains on the tokenizer stage's planned mixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mai_repro import plots
from mai_repro.artifacts import Run, require
from mai_repro.config import resolve_device
from mai_repro.data.config import FAMILIES
from mai_repro.schema import load_result, result_dict
from mai_repro.stages.ladder import run_tokens, rung_model, start_method, sweep_job
from mai_repro.train.scaling import RankAgreement, fit_mixture_regression, rank_agreement
from mai_repro.train.sweep import run_sweep

STAGE = "mixtures"


def anchors(report_shares: dict[str, float]) -> dict[str, dict[str, float]]:
    """Named mixtures every search includes: the report's (code-heavy), STEM-heavy, uniform."""
    stem_heavy = {"code": 0.1, "stem": 0.45, "math": 0.25, "general": 0.15,
                  "multilingual": 0.05}
    return {"report": _normalise(report_shares), "stem_heavy": stem_heavy,
            "uniform": {f: 1 / len(FAMILIES) for f in FAMILIES}}


def _normalise(w: dict[str, float]) -> dict[str, float]:
    total = sum(w.get(f, 0.0) for f in FAMILIES)
    return {f: w.get(f, 0.0) / total for f in FAMILIES}


def make_mixtures(n: int, report_shares: dict[str, float], seed: int, concentration: float,
                  min_weight: float) -> dict[str, dict[str, float]]:
    """``n`` named mixtures: the anchors, then seeded Dirichlet draws; each weight >= floor."""
    out = dict(list(anchors(report_shares).items())[:n])
    rng = np.random.default_rng([seed, 606])
    while len(out) < n:
        out[f"mix{len(out):02d}"] = dict(zip(FAMILIES, rng.dirichlet(
            np.full(len(FAMILIES), concentration)).tolist(), strict=True))
    floor = min(min_weight, 1.0 / len(FAMILIES))
    return {name: {f: float(floor + (1 - len(FAMILIES) * floor) * w[f]) for f in FAMILIES}
            for name, w in out.items()}


@dataclass
class MixtureResult:
    mixtures: dict[str, dict[str, float]]
    scales: list[dict[str, Any]]  # width, depth, tokens, compute per scale
    objective: np.ndarray  # (scales, mixtures)
    noise: list[float]  # |objective(report, seed) - objective(report, seed + 1)| per scale
    agreement: list[RankAgreement]  # scale s vs the largest, for s < largest
    regression_vs_large: RankAgreement
    regression_vs_small: RankAgreement
    best_small: str
    best_large: str
    chosen: dict[str, float]
    runs: dict[str, Any]
    figures: dict[str, Path]
    metrics: MixturesMetrics

    def table(self) -> list[dict[str, Any]]:
        names = list(self.mixtures)
        ranks = [np.argsort(np.argsort(o)) + 1 for o in self.objective]
        rows = []
        for j, name in enumerate(names):
            row: dict[str, Any] = {"mixture": name}
            row.update({f: self.mixtures[name][f] for f in FAMILIES})
            for s in range(len(self.scales)):
                row[f"NLL s{s}"] = self.objective[s, j]
                row[f"rank s{s}"] = int(ranks[s][j])
            rows.append(row)
        return sorted(rows, key=lambda r: r[f"rank s{len(self.scales) - 1}"])


@dataclass
class Agreement:
    """Rank agreement of two orderings of the mixtures (95% bootstrap intervals)."""

    kendall_tau: float
    kendall_ci: list[float]
    spearman_rho: float
    spearman_ci: list[float]
    top1_agree: bool
    pairwise_flips: float  # share of pairs ordered differently
    n: int  # mixtures


@dataclass
class Scale:
    width: int
    depth: int
    tokens: int
    compute: float  # training FLOPs per run
    params_nonembedding: int


@dataclass
class MixturesMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. Mixture and
    family names are keys of the dict-valued metrics; ``s0`` is the smallest scale."""

    chosen_mixture: dict[str, float]  # family -> weight: what notebook 07 pre-trains on
    chosen_name: str
    best_small: str
    best_large: str
    best_crossed: bool
    mixtures: dict[str, dict[str, float]]  # mixture -> family -> weight
    scales: list[Scale]
    objective: dict[str, dict[str, float]]  # "s<scale>" -> mixture -> weighted held-out NLL
    seed_noise: list[float]  # per scale
    noise_threshold: list[float]  # twice the seed noise
    agreement_vs_largest: list[Agreement]  # scale s vs the largest, for s < largest
    kendall_tau: float  # smallest vs largest scale (agreement_vs_largest[0])
    kendall_ci: list[float]
    spearman_rho: float
    spearman_ci: list[float]
    top1_agree: bool
    pairwise_flips: float
    flips_beyond_noise: int
    pairs_beyond_noise: int
    rank_noninvariance: bool  # the best changes, or a pair flips beyond the noise
    regression_vs_largest: Agreement  # the RegMix-style prediction vs the largest scale
    regression_vs_smallest: Agreement
    regression_prediction: list[float]  # per mixture
    run_seconds: float


METRICS = MixturesMetrics


def _agreement(a: RankAgreement) -> Agreement:
    return Agreement(a.kendall_tau, list(a.kendall_ci), a.spearman_rho, list(a.spearman_ci),
                     a.top1_agree, a.pairwise_flips, a.n)


def flips_beyond_noise(small: np.ndarray, large: np.ndarray, noise_small: float,
                       noise_large: float) -> tuple[int, int]:
    """(pairs ordered differently at the two scales with both gaps above the seed noise,
    pairs whose gaps exceed the noise at both scales)."""
    i, j = np.triu_indices(len(small), k=1)
    ds, dl = small[i] - small[j], large[i] - large[j]
    clear = (np.abs(ds) > noise_small) & (np.abs(dl) > noise_large)
    return int(np.sum(clear & (np.sign(ds) != np.sign(dl)))), int(np.sum(clear))


def _figures(res: MixtureResult, st: Any) -> dict[str, Path]:
    names = list(res.mixtures)
    small, large = res.objective[0], res.objective[-1]
    figs = {}
    fig, axes = plots.new(1, 2, width=4.8, height=4.0)
    ax = axes[0]
    ax.scatter(small, large, color=plots.OURS, s=22)
    for name in (res.best_small, res.best_large, "report", "stem_heavy"):
        if name in names:
            j = names.index(name)
            ax.annotate(name, (small[j], large[j]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    a = res.agreement[0]
    ax.set(xlabel=f"objective at the smallest scale (width {res.scales[0]['width']})",
           ylabel=f"objective at the largest scale (width {res.scales[-1]['width']})",
           title=f"mixtures at two scales: Kendall tau {a.kendall_tau:.2f} "
                 f"[{a.kendall_ci[0]:.2f}, {a.kendall_ci[1]:.2f}]")
    ax = axes[1]
    rs, rl = np.argsort(np.argsort(small)) + 1, np.argsort(np.argsort(large)) + 1
    ax.scatter(rs, rl, color=plots.OURS, s=22)
    ax.plot([1, len(names)], [1, len(names)], color="grey", lw=1, ls="--",
            label="same rank at both scales")
    ax.set(xlabel="rank at the smallest scale (1 = best)", ylabel="rank at the largest scale",
           title=f"rank vs rank: {a.pairwise_flips:.0%} of pairs flip")
    ax.legend(fontsize=8)
    figs["rank_scatter"] = plots.save(fig, st.path("figures", "rank_vs_rank"))

    fig, axes = plots.new(1, 2, width=4.8, height=4.0)
    ax = axes[0]
    compute = [s["compute"] for s in res.scales]
    for j in range(len(names)):
        ax.plot(compute, res.objective[:, j], color="grey", alpha=0.3, lw=0.8)
    highlight = [(res.best_small, plots.PALETTE[1], "best at the smallest scale"),
                 (res.best_large, plots.OURS, "best at the largest scale")]
    for name in ("report", "stem_heavy"):
        if name in names and name not in (res.best_small, res.best_large):
            highlight.append((name, plots.PALETTE[2 if name == "report" else 4], name))
    for name, colour, label in highlight:
        j = names.index(name)
        ax.plot(compute, res.objective[:, j], marker="o", color=colour, lw=2,
                label=f"{name}: {label}" if name != label else name)
    ax.set(xscale="log", xlabel="training compute per run (FLOPs)",
           ylabel="weighted held-out NLL", title="do the best mixtures' curves cross?")
    ax.legend(fontsize=7)
    ax = axes[1]
    pred = res.metrics.regression_prediction
    ax.scatter(pred, large, color=plots.OURS, s=22)
    r = res.regression_vs_large
    ax.set(xlabel="RegMix-style prediction (fitted at the smallest scale)",
           ylabel="objective at the largest scale",
           title=f"regression vs large scale: Spearman {r.spearman_rho:.2f}")
    figs["crossing"] = plots.save(fig, st.path("figures", "crossing_and_regression"))
    return figs


def build(run: Run) -> MixtureResult:
    """Stage ``mixtures``: train every mixture at every scale, compare the rankings."""
    cfg, mc = run.cfg, run.cfg.mixsearch
    tok = require(run, "tokenizer")
    device = resolve_device(cfg.device)
    mixtures = make_mixtures(mc.n_mixtures, cfg.mixture.shares, cfg.seed, mc.concentration,
                             mc.min_weight)
    names = list(mixtures)
    with run.stage(STAGE) as st:
        st.inputs["tokenizer"] = tok.manifest["config_hash"]
        jobs, scales = [], []
        for s, (w, d) in enumerate(zip(mc.widths, mc.depths, strict=True)):
            mcfg = rung_model(cfg.model, w, d, mc.head_dim, mc.seq_len)
            tokens = run_tokens(mcfg, mc)
            scales.append({"width": w, "depth": d, "tokens": tokens})
            for name in names:
                jobs.append(sweep_job(f"s{s}-{name}", mcfg, mixtures[name], tokens, mc,
                                      cfg.seed, tok.path("shards"), mc.objective, device,
                                      cfg.optim))
            jobs.append(sweep_job(f"s{s}-{names[0]}-reseed", mcfg, mixtures[names[0]], tokens,
                                  mc, cfg.seed + 1, tok.path("shards"), mc.objective, device,
                                  cfg.optim))
        results = dict(zip([j.key for j in jobs],
                           run_sweep(jobs, st.path("runs"), mc.workers, desc="mixture runs",
                                     start_method=start_method(device)), strict=True))
        n_s = len(scales)
        obj = np.array([[results[f"s{s}-{n}"]["objective"] for n in names] for s in range(n_s)])
        noise = [abs(results[f"s{s}-{names[0]}-reseed"]["objective"] - obj[s, 0])
                 for s in range(n_s)]
        for s in range(n_s):
            scales[s]["compute"] = results[f"s{s}-{names[0]}"]["compute"]
            scales[s]["params_nonembedding"] = results[f"s{s}-{names[0]}"]["params_nonembedding"]
        agreement = [rank_agreement(obj[s], obj[-1], n_boot=mc.n_boot, seed=cfg.seed)
                     for s in range(n_s - 1)]
        W = np.array([[mixtures[n][f] for f in FAMILIES] for n in names])
        reg = fit_mixture_regression(W, obj[0], FAMILIES, ridge=mc.ridge)
        pred = reg.predict(W)
        reg_large = rank_agreement(pred, obj[-1], n_boot=mc.n_boot, seed=cfg.seed)
        reg_small = rank_agreement(pred, obj[0], n_boot=mc.n_boot, seed=cfg.seed)
        best_small, best_large = names[int(obj[0].argmin())], names[int(obj[-1].argmin())]
        chosen = dict(mixtures[best_large])
        # a gap counts when it exceeds twice the seed difference measured at that scale
        clear_flips, clear_pairs = flips_beyond_noise(obj[0], obj[-1], 2 * noise[0],
                                                      2 * noise[-1])
        a = agreement[0]
        metrics = MixturesMetrics(
            chosen_mixture=chosen, chosen_name=best_large,
            best_small=best_small, best_large=best_large,
            best_crossed=best_small != best_large,
            mixtures=mixtures, scales=[Scale(**x) for x in scales],
            objective={f"s{s}": dict(zip(names, obj[s].tolist(), strict=True))
                       for s in range(n_s)},
            seed_noise=noise, noise_threshold=[2 * x for x in noise],
            agreement_vs_largest=[_agreement(x) for x in agreement],
            kendall_tau=a.kendall_tau, kendall_ci=list(a.kendall_ci),
            spearman_rho=a.spearman_rho, spearman_ci=list(a.spearman_ci),
            top1_agree=a.top1_agree, pairwise_flips=a.pairwise_flips,
            flips_beyond_noise=clear_flips, pairs_beyond_noise=clear_pairs,
            rank_noninvariance=(not a.top1_agree) or clear_flips > 0,
            regression_vs_largest=_agreement(reg_large),
            regression_vs_smallest=_agreement(reg_small),
            regression_prediction=pred.tolist(),
            run_seconds=sum(r["seconds"] for r in results.values()),
        )
        st.metrics.update(result_dict(metrics))
        result = MixtureResult(mixtures, scales, obj, noise, agreement, reg_large, reg_small,
                               best_small, best_large, chosen, results, {}, metrics)
        result.figures = _figures(result, st)
    return result


def chosen_mixture(run: Run) -> dict[str, float]:
    """The mixture that notebook 07 pre-trains on: the best at the largest scale of stage 06."""
    weights = load_result(MixturesMetrics, require(run, STAGE).metrics).chosen_mixture
    return {f: float(weights[f]) for f in FAMILIES}


__all__ = ["anchors", "build", "chosen_mixture", "flips_beyond_noise", "make_mixtures",
           "MixtureResult"]
