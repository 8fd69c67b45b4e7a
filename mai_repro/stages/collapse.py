"""Model collapse under recursive training: why the report trains on no synthetic data.

Generation 0 is trained on human text from the clean corpus. Generation ``n + 1`` is trained,
from scratch and with the same recipe, on a dataset built from text sampled from generation
``n`` (Shumailov et al., Nature 2024; Gerstgrasser et al., 2024), under three regimes:

- ``replace``: only the previous generation's samples;
- ``keep_real``: the previous generation's samples with a share (10%) of the real data;
- ``accumulate``: the real data plus every earlier generation's samples.

Each dataset but the growing ``accumulate`` one has the size of the real one. Per generation
we measure perplexity on held-out human text and its per-sequence spread (the tails of the
human distribution), and on each generation's own samples the tails (share of rare tokens,
vocabulary coverage), diversity (distinct n-grams) and the share that notebook 01's
AI-content detector flags.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mai_repro import plots
from mai_repro.artifacts import Run, StageError, require
from mai_repro.config import resolve_device
from mai_repro.data.shards import open_shards
from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.eval import detector
from mai_repro.model.config import ModelConfig
from mai_repro.model.generation import generate
from mai_repro.model.transformer import Transformer
from mai_repro.schema import result_dict
from mai_repro.train.loop import split_output, token_nll, train_lm

STAGE = "collapse"
REGIMES = ("replace", "keep_real", "accumulate")


def training_set(regime: str, real: np.ndarray, samples: Sequence[np.ndarray],
                 real_fraction: float, seed: int) -> np.ndarray:
    """The rows generation ``len(samples)`` trains on; ``samples[i]`` came from generation i."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {REGIMES}, got {regime!r}")
    if not samples:
        return real
    if regime == "replace":
        return samples[-1]
    if regime == "accumulate":
        return np.concatenate([real, *samples])
    rng = np.random.default_rng([seed, len(samples)])
    n_real = round(real_fraction * len(real))
    keep = rng.choice(len(real), n_real, replace=False)
    fresh = rng.choice(len(samples[-1]), len(real) - n_real, replace=False)
    return np.concatenate([real[np.sort(keep)], samples[-1][np.sort(fresh)]])


def batches(rows: np.ndarray, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled batches over ``rows`` (epoch after epoch)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(rows))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            yield torch.from_numpy(np.asarray(rows[order[i:i + batch_size]], dtype=np.int64))


@torch.no_grad()
def sequence_nll(model: torch.nn.Module, rows: np.ndarray, device: str,
                 batch_size: int = 32) -> np.ndarray:
    """Mean next-token loss of each row (nats per token)."""
    model.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        x = torch.from_numpy(np.asarray(rows[i:i + batch_size], dtype=np.int64)).to(device)
        logits, _ = split_output(model(x[:, :-1]))
        loss = token_nll(logits, x[:, 1:])
        out.append(loss.mean(1).cpu().numpy())
    return np.concatenate(out)


@torch.no_grad()
def sample_rows(model: torch.nn.Module, n: int, seq_len: int, start_id: int, temperature: float,
                seed: int, device: str, batch_size: int = 128) -> np.ndarray:
    """``n`` rows of ``seq_len + 1`` tokens: a document start, then pure ancestral sampling."""
    g = torch.Generator(device=device).manual_seed(seed)
    rows = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        prompt = torch.full((b, 1), start_id, dtype=torch.long, device=device)
        rows.append(generate(model, prompt, seq_len, temperature=temperature,
                             generator=g).tokens.cpu().numpy())
    return np.concatenate(rows)


def distinct_n(rows: np.ndarray, n: int) -> float:
    """Unique n-grams / all n-grams over the rows (n-grams never cross rows)."""
    grams: set[tuple[int, ...]] = set()
    total = 0
    for r in rows:
        r = r.tolist()
        total += max(len(r) - n + 1, 0)
        grams.update(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
    return len(grams) / max(total, 1)


@dataclass
class TailStats:
    rare_share: float  # share of tokens that are rare in the human training corpus
    coverage: float  # distinct tokens / distinct tokens in the real dataset of the same size
    distinct2: float
    distinct3: float


def tail_stats(rows: np.ndarray, rare: np.ndarray, real_distinct: int) -> TailStats:
    body = rows[:, 1:]  # the document-start token is the prompt, not text
    return TailStats(float(rare[body].mean()), len(np.unique(body)) / real_distinct,
                     distinct_n(body, 2), distinct_n(body, 3))


@dataclass
class CollapseMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. Regimes
    (replace, keep_real, accumulate) key the ``*_last`` dicts: the last generation's values."""

    generations: int
    seq_len: int
    n_seqs: int
    ppl_gen0: float  # held-out human-text perplexity of generation 0 (trained on real data)
    ppl_last: dict[str, float]
    nll_p99_gen0: float  # the worst 1% of human sequences, nats per token
    nll_p99_last: dict[str, float]
    rare_share_real: float  # share of rare tokens in the human data
    rare_share_gen0: float  # ... in generation 0's samples
    rare_share_last: dict[str, float]
    coverage_gen0: float
    coverage_last: dict[str, float]
    distinct3_real: float
    distinct3_last: dict[str, float]
    detector_flagged_real: float  # share flagged by notebook 01's detector
    detector_flagged_gen0: float
    detector_flagged_last: dict[str, float]


METRICS = CollapseMetrics


@dataclass
class CollapseResult:
    records: list[dict[str, Any]]  # one per (regime, generation)
    real: dict[str, Any]  # the same statistics of the real dataset
    figures: dict[str, Any]
    metrics: CollapseMetrics
    samples: dict[str, str]  # decoded text of the last generation's first sample, per regime


def _real_rows(stage_dir: Any, split: str, n: int, seq_len: int, seed: int,
               weights: dict[str, float] | None = None) -> np.ndarray:
    """``n`` rows of ``seq_len + 1`` tokens drawn from the families by the plan's weights."""
    shards = {f: s.seqs for f, s in open_shards(stage_dir / "shards", split).items()
              if len(s.seqs)}
    fams = sorted(shards)
    w = np.array([(weights or {}).get(f, 1.0) for f in fams], dtype=np.float64)
    rng = np.random.default_rng([seed, 7])
    picks = rng.choice(len(fams), n, p=w / w.sum())
    out = []
    for f, count in Counter(picks.tolist()).items():
        seqs = shards[fams[f]]
        idx = np.sort(rng.choice(len(seqs), min(count, len(seqs)), replace=False))
        out.append(np.asarray(seqs[idx])[:, : seq_len + 1])
    rows = np.concatenate(out).astype(np.int64)
    return rows[rng.permutation(len(rows))]


def _detector_file(run: Run) -> Any:
    """Notebook 01's saved detector; a curation stage from before it was saved is rebuilt
    (small presets) or named (large ones)."""
    path = require(run, "curation").path("detector.pt")
    if not path.is_file():
        if not run.cfg.auto_rebuild:
            raise StageError(f"{path} is missing: re-run notebooks/01_curation.ipynb")
        from mai_repro.stages import curation

        curation.build(run)
    return path


def collapse_model(model: ModelConfig, c: Any, seq_len: int) -> ModelConfig:
    """The preset's model, resized by ``collapse.d_model`` / ``collapse.n_layers`` when set
    (13 trainings must fit the notebook's budget): FFN 3x, experts 1x, latent 1/2 the width."""
    changes: dict[str, Any] = {"max_seq_len": max(model.max_seq_len, seq_len + 1)}
    if c.d_model:
        changes.update(d_model=c.d_model, d_ff=3 * c.d_model, d_expert=c.d_model,
                       d_latent=c.d_model // 2 if model.d_latent else None)
    if c.n_layers:
        changes["n_layers"] = c.n_layers
    return dataclasses.replace(model, **changes)


def build(run: Run) -> CollapseResult:
    """Stage 11: generations under three regimes, measured."""
    import json

    from tqdm.auto import tqdm

    cfg, c = run.cfg, run.cfg.collapse
    device = resolve_device(cfg.device)
    tok_stage = require(run, "tokenizer")
    detector_models, threshold = detector.load_models(_detector_file(run))
    tok = load_tokenizer(tok_stage.path("tokenizer.json"))
    plan = json.loads(tok_stage.path("plan.json").read_text())
    shard_len = next(iter(open_shards(tok_stage.path("shards"), "train").values())).seqs.shape[1]
    seq_len = min(c.seq_len, shard_len - 1)
    mcfg = collapse_model(cfg.model, c, seq_len)
    with run.stage(STAGE) as st:
        st.add_input("shards", tok_stage.path("shards"))
        real = _real_rows(tok_stage.dir, "train", c.n_seqs, seq_len, cfg.seed, plan["weights"])
        heldout = _real_rows(tok_stage.dir, "heldout", c.eval_seqs, seq_len, cfg.seed + 1,
                             plan["weights"])
        counts = np.bincount(np.concatenate(
            [np.asarray(s.seqs).ravel() for s in
             open_shards(tok_stage.path("shards"), "train").values()]),
            minlength=mcfg.vocab_size)
        freq = counts / counts.sum()
        rare = (freq < c.rare_below) & (counts > 0)  # seen in the human corpus, but seldom
        real_distinct = len(np.unique(real[:, 1:]))
        real_stats = dataclasses.asdict(tail_stats(real, rare, real_distinct))

        def detect(rows: np.ndarray) -> dict[str, float]:
            """Notebook 01's detector on the decoded text of the first rows."""
            texts = [tok.decode(r[1:].tolist()) for r in rows[: c.detector_seqs]]
            scores = detector_models.score(texts)
            return {"detector_score": float(np.median(scores)),
                    "detector_flagged": float((scores > threshold).mean())}

        real_stats.update(detect(real))

        def train(rows: np.ndarray, gen: int) -> Transformer:
            torch.manual_seed(cfg.seed + gen)
            model = Transformer(mcfg)
            train_lm(model, batches(rows, c.batch_size, cfg.seed + gen), steps=c.steps,
                     lr=c.lr, warmup=max(1, c.steps // 10), optim=cfg.optim, device=device,
                     progress=False)
            return model.eval()

        records: list[dict[str, Any]] = []
        samples_text: dict[str, str] = {}
        bar = tqdm(total=1 + len(REGIMES) * c.generations, desc="generations", leave=False)

        def measure(model: Transformer, regime: str, gen: int, data_rows: int
                    ) -> np.ndarray:
            nll = sequence_nll(model, heldout, device)
            rows = sample_rows(model, c.n_seqs, seq_len, tok.eot_id, c.temperature,
                               cfg.seed * 1000 + gen, device)
            stats = tail_stats(rows, rare, real_distinct)
            records.append({"regime": regime, "generation": gen, "train_rows": data_rows,
                            "heldout_ppl": float(math.exp(nll.mean())),
                            "heldout_nll": float(nll.mean()),
                            "nll_p50": float(np.quantile(nll, 0.5)),
                            "nll_p90": float(np.quantile(nll, 0.9)),
                            "nll_p99": float(np.quantile(nll, 0.99)),
                            "per_seq_nll": nll.tolist(), **dataclasses.asdict(stats),
                            **detect(rows)})
            bar.update(1)
            return rows

        gen0 = train(real, 0)
        first = measure(gen0, "all", 0, len(real))
        for regime in REGIMES:
            samples = [first]
            for gen in range(1, c.generations + 1):
                data = training_set(regime, real, samples, c.real_fraction, cfg.seed)
                model = train(data, gen)
                samples.append(measure(model, regime, gen, len(data)))
            samples_text[regime] = tok.decode(samples[-1][0, 1:].tolist())
        bar.close()
        samples_text["human"] = tok.decode(real[0, 1:].tolist())
        figures = _figures(records, real_stats, st)
        last = {r["regime"]: r for r in records if r["generation"] == c.generations}
        g0 = records[0]
        metrics = CollapseMetrics(
            generations=c.generations, seq_len=seq_len, n_seqs=c.n_seqs,
            ppl_gen0=g0["heldout_ppl"],
            ppl_last={k: v["heldout_ppl"] for k, v in last.items()},
            nll_p99_gen0=g0["nll_p99"],
            nll_p99_last={k: v["nll_p99"] for k, v in last.items()},
            rare_share_real=real_stats["rare_share"], rare_share_gen0=g0["rare_share"],
            rare_share_last={k: v["rare_share"] for k, v in last.items()},
            coverage_gen0=g0["coverage"],
            coverage_last={k: v["coverage"] for k, v in last.items()},
            distinct3_real=real_stats["distinct3"],
            distinct3_last={k: v["distinct3"] for k, v in last.items()},
            detector_flagged_real=real_stats["detector_flagged"],
            detector_flagged_gen0=g0["detector_flagged"],
            detector_flagged_last={k: v["detector_flagged"] for k, v in last.items()},
        )
        st.metrics.update(result_dict(metrics))
    return CollapseResult(records, real_stats, figures, metrics, samples_text)


def _series(records: list[dict], regime: str, key: str) -> tuple[list[int], list[float]]:
    rows = [records[0]] + [r for r in records if r["regime"] == regime]
    return [r["generation"] for r in rows], [r[key] for r in rows]


def _figures(records: list[dict], real: dict, st) -> dict[str, Any]:
    colours = dict(zip(REGIMES, plots.PALETTE, strict=False))
    fig, axes = plots.new(1, 5, width=3.4, height=3.2)
    panels = [("heldout_ppl", "perplexity on held-out human text", None),
              ("rare_share", "share of rare tokens in samples", "rare_share"),
              ("coverage", "vocabulary coverage of samples", None),
              ("distinct3", "distinct 3-grams in samples", "distinct3"),
              ("detector_flagged", "flagged by notebook 01's detector", "detector_flagged")]
    for ax, (key, title, ref) in zip(axes, panels, strict=True):
        for regime in REGIMES:
            x, y = _series(records, regime, key)
            ax.plot(x, y, marker="o", ms=3, label=regime, color=colours[regime])
        if ref is not None:
            ax.axhline(real[ref], color="0.4", ls="--", lw=1, label="human data")
        elif key == "coverage":
            ax.axhline(1.0, color="0.4", ls="--", lw=1, label="human data")
        ax.set(title=title, xlabel="generation")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    curves = plots.save(fig, st.path("figures", "generations"))

    fig, ax = plots.new(width=6.4, height=3.4)
    g0 = np.asarray(records[0]["per_seq_nll"])
    bins = np.linspace(g0.min() * 0.9, max(max(r["per_seq_nll"]) for r in records) * 1.02, 40)
    ax.hist(g0, bins=bins, histtype="step", color="k", lw=1.5, label="generation 0")
    last_gen = max(r["generation"] for r in records)
    for regime in REGIMES:
        r = next(r for r in records if r["regime"] == regime and r["generation"] == last_gen)
        ax.hist(r["per_seq_nll"], bins=bins, histtype="step", color=colours[regime],
                label=f"{regime}, generation {last_gen}")
    ax.set(title="per-sequence loss on held-out human text", xlabel="nats per token",
           ylabel="sequences")
    ax.legend(fontsize=8)
    hist = plots.save(fig, st.path("figures", "heldout_spread"))
    return {"generations": curves, "spread": hist}
