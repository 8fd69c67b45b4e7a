"""Mid-training with context extension (notebook 08; RECIPE.md section 4).

The pre-trained model continues on the same clean corpus, re-mixed the report's way (code 55%,
STEM/math 35%, background 10%), in stages whose context grows 4x each
(the report: 16K -> 64K -> 256K; the laptop preset: 256 -> 1024 -> 4096). Per stage:

* **data**: windows of the stage's length that start at documents at least as long as the
  pre-training context (``eval.longctx.doc_windows``), so the longer context holds long
  documents rather than unrelated neighbours; families mixed by :func:`mix_weights`;
* **procedural part** (``midtrain.procedural``): a share of the STEM/math part goes to worked
  arithmetic and algebra written by a program (``rl.worked``, never by a language model), the
  bootstrap a base never shown a reasoning trace needs before RL can climb; decontaminated
  against every RL held-out problem by identity, packed several per window after EOT tokens,
  labelled ``procedural`` in the stage's bill of materials (``bom.jsonl``). Pre-training never
  sees it;
* **batch**: ``tokens_per_step // context`` sequences, so every step sees the same tokens;
* **positions**: only the local sliding-window layers have RoPE, and the global layers have
  none (NoPE), so only the local layers' RoPE can be adjusted: ``base`` raises its base
  NTK-style (``base * s^(d / (d - 2))`` for a context ``s`` times the pre-training one),
  ``pi`` interpolates positions (``/ s``), ``none`` keeps it. A local layer never sees a
  distance beyond its window, so none of the three ever extrapolates: the comparison measures
  what the change costs, not what it rescues;
* **schedule**: a fresh AdamW, linear warm-up and cosine decay within the stage
  (``train.loop``).

Before mid-training and after each stage the model is scored on held-out text: loss by
position over windows of the final context, and a passkey probe over lengths up to it and
depths (``eval.longctx``). Each alternative of ``compare`` is trained the same way and scored
after its last stage. Local attention over long sequences runs block-wise
(``model.attention.local_attention``: memory in T x 2 x window, not T^2); peak memory of each
stage is recorded: the activations autograd saves in a step (any device) and, on CUDA, the
allocator's peak.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.ticker import NullFormatter

from mai_repro import plots, stats
from mai_repro.artifacts import Run, require
from mai_repro.config import MidtrainConfig, resolve_device
from mai_repro.data.config import FAMILIES
from mai_repro.data.loader import Loader, distant_repeats
from mai_repro.data.shards import FamilyShard, open_shards
from mai_repro.data.tokenizer import (
    SPECIALS,  # ids 0 .. len - 1: never a key or a marker
    BPETokenizer,
)
from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.eval import longctx
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer, with_config
from mai_repro.rl import worked
from mai_repro.schema import result_dict
from mai_repro.train.checkpoint import load_model_file, save_model_file
from mai_repro.train.config import OptimConfig
from mai_repro.train.loop import Schedule, lm_step, make_optimizer

STAGE = "midtraining"
# The report's three mid-training shares, mapped onto our families.
GROUPS = {"code": ("code",), "stem_math": ("stem", "math"), "background": ("general",
                                                                         "multilingual")}
PROCEDURAL = "procedural"  # the generated part of stem_math (rl.worked): not a corpus family


def mix_weights(m: MidtrainConfig, tokens: Mapping[str, int]) -> dict[str, float]:
    """Family weights: each group's share split over its families by their training tokens;
    with procedural text (a ``procedural`` entry in ``tokens``), ``m.procedural`` of the
    STEM/math share goes to it and the rest to the corpus's STEM and math."""
    out = {f: 0.0 for f in (*FAMILIES, PROCEDURAL)}
    proc = m.procedural if tokens.get(PROCEDURAL, 0) > 0 else 0.0
    for group, fams in GROUPS.items():
        have = {f: tokens.get(f, 0) for f in fams if tokens.get(f, 0) > 0}
        share = getattr(m, group)
        if group == "stem_math" and proc:
            out[PROCEDURAL] = share * (proc if have else 1.0)
            share -= out[PROCEDURAL]
        for f, n in have.items():
            out[f] = share * n / sum(have.values())
    total = sum(out.values())
    return {f: w / total for f, w in out.items()}


def stage_model_config(base: ModelConfig, positions: str, pre_len: int, context: int
                       ) -> ModelConfig:
    """The model config of a stage of ``context`` tokens after pre-training at ``pre_len``."""
    s = context / pre_len
    d = base.head_dim_
    cfg = dataclasses.replace(base, max_seq_len=max(base.max_seq_len, context))
    if positions == "base":
        return dataclasses.replace(cfg, rope_base=base.rope_base * s ** (d / (d - 2)))
    if positions == "pi":
        return dataclasses.replace(cfg, rope_scale=base.rope_scale * s)
    return cfg


@contextlib.contextmanager
def saved_activations(exclude: torch.nn.Module | None = None) -> Iterator[dict[str, float]]:
    """MiB of tensors autograd saves for the backward pass inside the block (each storage
    counted once, ``exclude``'s parameters not at all): the activation memory of a step,
    measured the same way on any device."""
    seen: set[int] = {p.data_ptr() for p in exclude.parameters()} if exclude else set()
    out = {"mib": 0.0}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            out["mib"] += t.untyped_storage().nbytes() / 2**20
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield out


@contextlib.contextmanager
def cuda_peak(device: str) -> Iterator[dict[str, float | None]]:
    """CUDA allocator peak of the block in MiB above its start (None off CUDA)."""
    out: dict[str, float | None] = {"mib": None}
    if not device.startswith("cuda"):
        yield out
        return
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    yield out
    torch.cuda.synchronize()
    out["mib"] = (torch.cuda.max_memory_allocated() - start) / 2**20


def attention_memory(cfg: ModelConfig, batch: int, length: int, device: str = "cpu"
                     ) -> dict[str, float]:
    """One local layer's attention at ``length`` tokens, forward and backward: saved
    activations (MiB) and seconds, with a dense T x T window mask vs block-wise."""
    from mai_repro.model.attention import attention_mask, local_attention

    g = torch.Generator().manual_seed(0)
    H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim_
    pos = torch.arange(length, device=device)
    out: dict[str, float] = {}
    for name in ("dense", "blocked"):
        q, k, v = (torch.randn(batch, h, length, D, generator=g).to(device).requires_grad_()
                   for h in (H, Hkv, Hkv))
        t = time.perf_counter()
        with saved_activations() as mem:
            if name == "dense":
                y = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=attention_mask(pos, pos, cfg.window), enable_gqa=True)
            else:
                y = local_attention(q, k, v, cfg.window)
        y.square().sum().backward()
        out[f"{name}_s"] = time.perf_counter() - t
        out[f"{name}_mib"] = mem["mib"]
    return out


# --------------------------------------------------------------------------------------------
# Data.

def training_windows(shards: Mapping[str, FamilyShard], context: int, min_doc: int
                     ) -> dict[str, np.ndarray]:
    """Per family, (N, context + 1) windows starting at documents >= ``min_doc`` tokens."""
    return {f: longctx.doc_windows(s, context, min_doc) for f, s in shards.items()}


def procedural_windows(m: MidtrainConfig, tok: BPETokenizer, heldout: list[str], seed: int
                       ) -> tuple[dict[int, np.ndarray], dict[str, Any]]:
    """Windows of worked solutions (``rl.worked``) for each stage's context, enough for the
    stage's share of its steps without repeating one, none touching a ``heldout`` question;
    and what was generated (for the bill of materials)."""
    keys = worked.heldout_keys(heldout)
    share = m.stem_math * m.procedural / (m.code + m.stem_math + m.background)
    need = {c: math.ceil(s * max(1, m.tokens_per_step // c) * share * 1.5) + 4
            for c, s in zip(m.contexts, m.steps, strict=True)}
    want = max(n * (c + 1) for c, n in need.items())  # tokens of the longest-context need
    n = 64
    while True:
        texts, removed = worked.generate_counted(n, difficulties=m.procedural_difficulties,
                                                 kinds=m.procedural_kinds,
                                                 seed=seed, exclude=keys)
        docs = tok.encode_batch([w.text for w in texts])
        windows = {c: worked.pack_windows(docs, c, tok.eot_id, k) for c, k in need.items()}
        if all(len(windows[c]) == k for c, k in need.items()):
            break
        n = max(2 * n, math.ceil(1.2 * n * want / max(1, sum(map(len, docs)))))
    info = {"texts": len(texts), "removed_heldout": removed, "heldout_problems": len(keys),
            "text_tokens": sum(map(len, docs)),
            "kinds": sorted({w.kind for w in texts}),
            "difficulties": sorted({w.difficulty for w in texts})}
    return windows, info


def bill_of_materials(weights: Mapping[str, float], records: list[dict],
                      proc_info: Mapping[str, Any] | None,
                      bootstrap: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per part of the mix: its group, source, whether procedural, its weight and the
    tokens the main run trained on it (all stages); and one row for the reasoning bootstrap
    (``reasoning_bootstrap``), procedural, when it ran."""
    group_of = {f: g for g, fams in GROUPS.items() for f in fams} | {PROCEDURAL: "stem_math"}
    rows = []
    for part, w in weights.items():
        tokens = sum(r["tokens_by_family"].get(part, 0) for r in records)
        if w <= 0 and not tokens:
            continue
        row = {"part": part, "group": group_of[part], "procedural": part == PROCEDURAL,
               "source": ("program: mai_repro.rl.worked (worked arithmetic and algebra, "
                          "decontaminated against the RL held-out problems)"
                          if part == PROCEDURAL else "corpus: the tokenizer stage's shards "
                                                     "(human-written, curated)"),
               "weight": w, "tokens": tokens,
               "windows": {str(r["context"]): r["windows"].get(part, 0) for r in records}}
        if part == PROCEDURAL and proc_info:
            row |= dict(proc_info)
        rows.append(row)
    if bootstrap:
        rows.append({"part": "bootstrap", "group": "stem_math", "procedural": True,
                     "source": "program: mai_repro.rl.worked (worked solutions alone, after the "
                               "last stage; decontaminated against the RL held-out problems)",
                     "weight": 0.0, "tokens": bootstrap["tokens"],
                     "windows": {str(bootstrap["context"]): bootstrap["windows"]},
                     **{f.name: bootstrap[f.name] for f in dataclasses.fields(WorkedTexts)}})
    return rows


def heldout_windows(shards: Mapping[str, FamilyShard], length: int, n: int
                    ) -> tuple[np.ndarray, int]:
    """Up to ``n`` held-out windows of ``length`` from documents as long as possible (taken
    round-robin over families); returns them and the shortest document length allowed."""
    min_doc = length
    while True:
        per = [longctx.doc_windows(s, length, min_doc) for s in shards.values()]
        rows = [w[i] for i in range(max((len(w) for w in per), default=0))
                for w in per if i < len(w)][:n]
        if len(rows) >= n or min_doc == 0:
            break
        min_doc //= 2
    if not rows:
        raise ValueError(f"no held-out text of {length} tokens")
    return np.stack(rows), min_doc


def probe_filler(shards: Mapping[str, FamilyShard], length: int, seed: int) -> np.ndarray:
    """Held-out text cut into rows of ``length`` tokens (all families, shuffled)."""
    rows = np.concatenate([longctx.stride_windows(s, length)[:, :length]
                           for s in shards.values()])
    if not len(rows):
        raise ValueError(f"no held-out text of {length} tokens for the passkey probe")
    return rows[np.random.default_rng([seed, 11]).permutation(len(rows))]


def probe_lengths(pre_len: int, contexts: list[int]) -> list[int]:
    """The pre-training length, a quarter of it (when long enough), and every stage's."""
    return sorted({*([pre_len // 4] if pre_len // 4 >= 32 else []), pre_len, *contexts})


# --------------------------------------------------------------------------------------------
# One mid-training run.

@dataclass
class Probe:
    """What every evaluation point is scored on (the same for every model)."""

    filler: np.ndarray
    lengths: list[int]
    depths: list[float]
    passkey: longctx.Passkey
    trials: int
    windows: np.ndarray  # held-out windows of the final context
    pre_len: int  # the pre-training context: the cut for the loss without long context
    seed: int

    def score(self, model: torch.nn.Module, device: str) -> dict[str, Any]:
        t = time.time()
        grid = longctx.retrieval_grid(model, self.filler, self.lengths, self.depths,
                                      self.passkey, self.trials, self.seed, device)
        full = longctx.loss_by_position(model, self.windows, device, per_window=True)
        cut = longctx.loss_by_position(model, self.windows, device, context=self.pre_len,
                                       per_window=True)
        return {"retrieval": grid.accuracy.tolist(), "retrieval_nats": grid.nats.tolist(),
                "retrieval_seq": grid.per_seq.tolist(),
                "loss_by_position": full.mean(0).tolist(), "loss_cut": cut.mean(0).tolist(),
                # per held-out window, the mean loss past the pre-training length
                "beyond_full": full[:, self.pre_len:].mean(1).tolist(),
                "beyond_cut": cut[:, self.pre_len:].mean(1).tolist(),
                "eval_s": time.time() - t}


def train_run(model: Transformer, positions: str, m: MidtrainConfig,
              windows: Mapping[int, Mapping[str, np.ndarray]], weights: Mapping[str, float],
              pre_len: int, seed: int, device: str, probe: Probe | None,
              progress: bool = True, desc: str = "", optim: OptimConfig | None = None
              ) -> tuple[Transformer, list[dict]]:
    """Train ``model`` through every stage with one position treatment; per stage, a record
    of its steps, throughput and peak memory, and (with a ``probe``) its evaluation."""
    from tqdm.auto import tqdm

    optim = optim or OptimConfig()  # AdamW, clip and final lr: the config's shared section
    base_cfg = model.cfg
    records = []
    for k, (context, steps) in enumerate(zip(m.contexts, m.steps, strict=True)):
        cfg = stage_model_config(base_cfg, positions, pre_len, context)
        model = with_config(model, cfg)
        batch = max(1, m.tokens_per_step // context)
        fams = {f: w for f, w in windows[context].items() if len(w) and weights.get(f, 0) > 0}
        stage_seed = seed + 101 * (k + 1)  # the stage's batches and their repeated passages
        loader = Loader(fams, {f: weights[f] for f in fams}, batch, seed=stage_seed)
        opt = make_optimizer(model, m.lr, optim)
        schedule = Schedule(m.lr, m.warmup_steps, steps, min_ratio=optim.min_lr_ratio)
        losses: list[float] = []
        bar = tqdm(range(steps), desc=f"{desc}stage {k + 1} ({context} tokens)",
                   disable=not progress, leave=False)
        t0, activations = time.time(), 0.0
        by_family: dict[str, int] = {}
        with cuda_peak(device) as peak:
            for step in bar:
                measure = saved_activations(model) if step == 0 else contextlib.nullcontext({})
                batch_ids, batch_fams, _ = loader.next_with_families()
                # passages repeated far apart in a share of the windows (m.repeat_share)
                batch_ids = distant_repeats(batch_ids, m.repeat_share, stage_seed, step)
                for f in batch_fams:  # tokens trained on, per part of the mix
                    by_family[f] = by_family.get(f, 0) + context
                with measure as act:  # activation memory of the stage's first step
                    loss, _ = lm_step(model, opt, batch_ids.to(device), lr=schedule(step),
                                      grad_clip=optim.grad_clip)
                activations = act.get("mib", activations)
                losses.append(loss)
                bar.set_postfix(loss=f"{loss:.3f}")
        wall = time.time() - t0
        rec = {"stage": k + 1, "context": context, "batch_size": batch, "steps": steps,
               "tokens": steps * batch * context, "rope_base": cfg.rope_base,
               "rope_scale": cfg.rope_scale, "loss": losses, "wall_s": wall,
               "tokens_per_s": steps * batch * context / wall, "activation_mib": activations,
               "cuda_peak_mib": peak["mib"],
               "windows": {f: len(w) for f, w in fams.items()}, "tokens_by_family": by_family}
        if probe is not None and (positions == m.positions or k == len(m.contexts) - 1):
            rec["eval"] = probe.score(model, device)
        records.append(rec)
    return model, records


def reasoning_bootstrap(model: Transformer, m: MidtrainConfig, tok: BPETokenizer,
                        heldout: list[str], seed: int, device: str,
                        optim: OptimConfig | None = None, progress: bool = True,
                        on_step: Callable[[int, float], None] | None = None
                        ) -> tuple[Transformer, dict[str, Any]]:
    """The report's reasoning bootstrap, last: ``m.bootstrap_steps`` steps of next-token loss
    on worked solutions alone (``rl.worked``: ``m.procedural_kinds`` at
    ``m.procedural_difficulties``; every text that poses or writes out a ``heldout`` question
    removed), packed into windows of ``m.bootstrap_context`` tokens, ``m.tokens_per_step`` a
    step, at ``m.bootstrap_lr`` (20 warm-up steps, cosine to a tenth); ``on_step(steps done,
    loss)`` after each step (benchmarks/worked_bootstrap.py evaluates there). Returns the
    model and the record of what it trained on (for the bill of materials and the metrics)."""
    optim = optim or OptimConfig()
    steps, context = m.bootstrap_steps, m.bootstrap_context
    batch = max(1, m.tokens_per_step // context)
    need = steps * batch
    keys = worked.heldout_keys(heldout)
    texts, removed = worked.generate_counted(min(3 * need, m.bootstrap_texts),
                                             difficulties=m.procedural_difficulties,
                                             kinds=m.procedural_kinds, seed=seed, exclude=keys)
    docs = tok.encode_batch([w.text for w in texts])
    windows = torch.from_numpy(worked.pack_windows(docs, context, tok.eot_id, need))
    if not len(windows):
        raise ValueError(f"the bootstrap's {len(texts)} worked solutions fill no window of "
                         f"{context} tokens")
    losses, wall = _bootstrap_steps(model, windows, m, batch, optim, "reasoning bootstrap",
                                    progress, on_step, device)
    record = {"steps": steps, "context": context, "batch_size": batch,
              "tokens": steps * batch * context, "lr": m.bootstrap_lr,
              "windows": len(windows), "epochs": need / len(windows), "texts": len(texts),
              "text_tokens": sum(map(len, docs)), "removed_heldout": removed,
              "heldout_problems": len(keys), "kinds": sorted({w.kind for w in texts}),
              "difficulties": sorted({w.difficulty for w in texts}), "loss": losses,
              "wall_s": wall}
    return model.eval(), record


def _bootstrap_steps(model: Transformer, windows: torch.Tensor, m: MidtrainConfig, batch: int,
                     optim: OptimConfig, desc: str, progress: bool,
                     on_step: Callable[[int, float], None] | None, device: str
                     ) -> tuple[list[float], float]:
    """``m.bootstrap_steps`` steps of next-token loss on ``windows`` in order (taken again in
    turn when the steps need more), ``batch`` a step, at ``m.bootstrap_lr`` (20 warm-up steps,
    cosine to a tenth): the bootstrap's schedule, shared by its compute-matched control.
    Returns the loss per step and the seconds taken."""
    from tqdm.auto import tqdm

    steps = m.bootstrap_steps
    opt = make_optimizer(model, m.bootstrap_lr, optim)
    schedule = Schedule(m.bootstrap_lr, min(20, steps // 2), steps, min_ratio=0.1)
    losses: list[float] = []
    t0 = time.time()
    for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        idx = torch.arange(step * batch, (step + 1) * batch) % len(windows)
        loss, _ = lm_step(model.train(), opt, windows[idx].to(device), lr=schedule(step),
                          grad_clip=optim.grad_clip)
        losses.append(loss)
        if on_step is not None:
            on_step(step + 1, loss)
    return losses, time.time() - t0


def bootstrap_control(model: Transformer, m: MidtrainConfig,
                      train: Mapping[str, FamilyShard], seed: int, device: str,
                      optim: OptimConfig | None = None, progress: bool = True
                      ) -> tuple[Transformer, dict[str, Any]]:
    """The reasoning bootstrap's compute-matched control (``midtrain.bootstrap_control``): the
    same steps, windows of ``m.bootstrap_context`` tokens, batch and learning-rate schedule,
    on the corpus's own STEM and math text (human-written, the pre-training shards' training
    split) in place of the worked solutions: the mid-trained model at the bootstrap's compute
    without the procedural family. Windows are consecutive in each family's stream, mixed in
    an order fixed by ``seed``. Returns the model and what it trained on."""
    optim = optim or OptimConfig()
    context = m.bootstrap_context
    batch = max(1, m.tokens_per_step // context)
    parts = {f: w for f in GROUPS["stem_math"] if f in train
             if len(w := longctx.stride_windows(train[f], context))}
    if not parts:
        raise ValueError(f"the bootstrap's control needs STEM or math text of at least "
                         f"{context + 1} tokens in the training shards; families here: "
                         f"{sorted(train)}")
    pool = np.concatenate(list(parts.values()))
    order = np.random.default_rng(seed).permutation(len(pool))
    windows = torch.from_numpy(pool[order].astype(np.int64))
    losses, wall = _bootstrap_steps(model, windows, m, batch, optim,
                                    "control: human STEM/math text", progress, None, device)
    need = m.bootstrap_steps * batch
    record = {"steps": m.bootstrap_steps, "context": context, "batch_size": batch,
              "tokens": need * context, "lr": m.bootstrap_lr, "windows": len(windows),
              "epochs": need / len(windows), "families": {f: len(w) for f, w in parts.items()},
              "loss": losses, "wall_s": wall}
    return model.eval(), record


# --------------------------------------------------------------------------------------------
# The stage.

@dataclass
class StageRecord:
    """One mid-training stage of one position treatment."""

    stage: int  # 1-based
    context: int
    batch_size: int
    steps: int
    tokens: int
    rope_base: float
    rope_scale: float
    wall_s: float
    tokens_per_s: float
    activation_mib: float | None  # saved activations of one step
    cuda_peak_mib: float | None  # None off CUDA
    windows: dict[str, int]  # training windows per family (and the procedural part)
    tokens_by_family: dict[str, int]  # tokens trained on per part of the mix
    final_loss: float  # mean of the stage's last 5 losses


@dataclass
class ModelSummary:
    """One evaluated model (pre-trained, after each stage, each alternative)."""

    model: str  # "pre-trained", "stage <k> (<context>)", "<alternative> (final)"
    retrieval_by_length: dict[str, float]  # passkey accuracy per probe length
    retrieval_final: float  # ... at the final context
    nats_by_length: dict[str, float]  # nats the planted key is worth, per probe length
    nats_final: float
    context_gain: float  # loss past pre_len with the context cut to pre_len minus full
    loss_within_pre: float
    loss_beyond_pre: float
    loss_last_quarter: float
    loss_mean: float


@dataclass
class Verdict:
    """One comparison of notebook 08 with its paired bootstrap interval (``mai_repro.stats``):
    ``a`` minus ``b`` on the same items."""

    claim: str
    measure: str  # what is compared, per item
    a: str
    b: str
    items: str  # what the bootstrap resamples
    mean: float
    lo: float
    hi: float
    n: int
    verdict: str  # held / not held / inconclusive (interval against 0)


@dataclass
class AttentionMemory:
    """One local layer at the final context, forward + backward: dense mask vs block-wise."""

    dense_s: float
    dense_mib: float | None
    blocked_s: float
    blocked_mib: float | None


@dataclass
class WorkedTexts:
    """The program-written worked solutions a procedural part was made of (``rl.worked``)."""

    texts: int  # worked solutions generated
    text_tokens: int
    removed_heldout: int  # texts dropped because they touch an RL held-out problem
    heldout_problems: int  # RL held-out problems (identities) decontaminated against
    kinds: list[str]
    difficulties: list[int]


@dataclass
class ProceduralPart(WorkedTexts):
    """The generated part of the STEM/math share, as trained by the main run."""

    share_of_stem_math: float  # midtrain.procedural
    share: float  # of the whole mix (its weight)
    tokens: int  # tokens of the main run trained on it (all stages)


@dataclass
class ReasoningBootstrap(WorkedTexts):
    """The reasoning bootstrap after the last stage (``midtrain.bootstrap_steps``): worked
    solutions alone, decontaminated against the RL held-out problems."""

    steps: int
    context: int
    batch_size: int
    tokens: int  # tokens trained on
    lr: float
    windows: int  # distinct windows (taken again in turn when the steps need more)
    epochs: float  # steps x batch / windows
    loss: list[float]  # per step
    wall_s: float


@dataclass
class BootstrapControl:
    """The reasoning bootstrap's compute-matched control (``midtrain.bootstrap_control``):
    the model before the bootstrap trained for the bootstrap's steps, context, batch and rate
    on the corpus's STEM and math text (human-written) instead of worked solutions."""

    steps: int
    context: int
    batch_size: int
    tokens: int  # tokens trained on: the bootstrap's
    lr: float
    windows: int  # distinct windows (taken again in turn when the steps need more)
    epochs: float
    families: dict[str, int]  # windows per family
    loss: list[float]  # per step
    wall_s: float


@dataclass
class MidtrainingMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. Position
    treatments, model labels and families are keys of the dict-valued metrics."""

    pre_len: int  # the pre-training context
    contexts: list[int]  # one per stage
    positions: str  # the position treatment of the main run
    compare: list[str]  # alternatives trained for comparison
    weights: dict[str, float]  # the mid-training mix, per family (and procedural)
    procedural: ProceduralPart
    min_doc: int
    eval_windows: int
    eval_min_doc: int
    probe_lengths: list[int]
    probe_depths: list[float]
    probe_vocab: int
    chance: float  # passkey accuracy by guessing
    stages: dict[str, list[StageRecord]]  # treatment -> its stages
    losses: dict[str, list[list[float]]]  # treatment -> stage -> training loss per step
    retrieval: dict[str, list[list[float]]]  # model -> length x depth passkey accuracy
    retrieval_nats: dict[str, list[list[float]]]  # model -> length x depth nats of the key
    summary: list[ModelSummary]
    retrieval_gain: float  # final stage - pre-trained, passkey accuracy at the final context
    nats_gain: float
    retrieval_seq: dict[str, list[list[list[float]]]]  # model -> length x depth x trial
    verdicts: list[Verdict]
    attention_memory: AttentionMemory
    eval_s: dict[str, float]  # model -> evaluation seconds
    wall_s: float
    bootstrap: ReasoningBootstrap | None = None  # None: midtrain.bootstrap_steps 0
    control: BootstrapControl | None = None  # None: midtrain.bootstrap_control off

    def by_model(self) -> dict[str, ModelSummary]:
        return {s.model: s for s in self.summary}

    @property
    def final_label(self) -> str:
        """The summary label of the main run's last stage."""
        return f"stage {len(self.contexts)} ({self.contexts[-1]})"


METRICS = MidtrainingMetrics


@dataclass
class MidtrainResult:
    metrics: MidtrainingMetrics
    figures: dict[str, Path]




def _summary(label: str, ev: Mapping[str, Any], lengths: list[int], pre_len: int,
             final: int) -> ModelSummary:
    grid, nats = np.asarray(ev["retrieval"]), np.asarray(ev["retrieval_nats"])
    curve, cut = np.asarray(ev["loss_by_position"]), np.asarray(ev["loss_cut"])
    return ModelSummary(
        model=label,
        retrieval_by_length=dict(zip(map(str, lengths), grid.mean(1).round(4).tolist(),
                                     strict=True)),
        retrieval_final=float(grid[-1].mean()),
        nats_by_length=dict(zip(map(str, lengths), nats.mean(1).round(4).tolist(),
                                strict=True)),
        nats_final=float(nats[-1].mean()),
        context_gain=float((cut - curve)[pre_len:].mean()),
        loss_within_pre=float(curve[pre_len // 2:pre_len].mean()),
        loss_beyond_pre=float(curve[pre_len:].mean()),
        loss_last_quarter=float(curve[3 * final // 4:].mean()),
        loss_mean=float(curve.mean()))


def verdicts(evals: Mapping[str, Mapping[str, Any]], lengths: list[int], pre_len: int,
             final_label: str, positions: str, compare: list[str], seed: int
             ) -> list[Verdict]:
    """The stage's comparisons, each a paired bootstrap over the items both arms share:
    passkey sequences (every depth and trial at one length) or held-out windows."""

    def passkey(label: str, length: int) -> np.ndarray:
        return np.asarray(evals[label]["retrieval_seq"])[lengths.index(length)].ravel()

    def beyond(label: str, key: str = "beyond_full") -> np.ndarray:
        return np.asarray(evals[label][key])

    def make(claim: str, measure: str, a: str, b: str, items: str, xa: np.ndarray,
             xb: np.ndarray) -> Verdict:
        iv = stats.paired_bootstrap(xa, xb, seed=seed)
        return Verdict(claim, measure, a, b, items, iv.mean, iv.lo, iv.hi, iv.n,
                       stats.verdict(iv))

    out = []
    long = 4 * pre_len if 4 * pre_len in lengths else lengths[-1]
    out.append(make(f"context extension raises passkey retrieval at {long} tokens "
                    f"({long // pre_len}x the pre-training length)",
                    f"passkey accuracy at {long}", final_label, "pre-trained",
                    "probe sequences", passkey(final_label, long), passkey("pre-trained", long)))
    out.append(make("the extended model uses the context past the pre-training length",
                    "loss past pre_len, context cut to pre_len minus full context",
                    final_label, f"{final_label}, cut", "held-out windows",
                    beyond(final_label, "beyond_cut"), beyond(final_label)))
    for alt in compare:
        alt_label = f"{alt} (final)"
        out.append(make(f"{positions} retrieves the passkey better than {alt} at {lengths[-1]}",
                        f"passkey accuracy at {lengths[-1]}", final_label, alt_label,
                        "probe sequences", passkey(final_label, lengths[-1]),
                        passkey(alt_label, lengths[-1])))
        out.append(make(f"{positions} predicts past the pre-training length better than {alt}",
                        "loss past pre_len (alternative minus main: > 0 = main better)",
                        alt_label, final_label, "held-out windows", beyond(alt_label),
                        beyond(final_label)))
    return out


def build(run: Run) -> MidtrainResult:
    """Stage 08: mid-training from the pre-trained model, evaluated before and after each
    stage; alternatives of the position treatment trained and scored for comparison."""
    cfg, m = run.cfg, run.cfg.midtrain
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    pre = require(run, "pretraining")
    tok = require(run, "tokenizer")
    t_start = time.time()
    with run.stage(STAGE) as st:
        st.add_input("pretrained_model", pre.path("model.pt"))
        pre_model = load_model_file(pre.path("model.pt"), device)
        pre_len = cfg.pretrain.seq_len
        train = open_shards(tok.path("shards"), "train")
        heldout = open_shards(tok.path("shards"), "heldout")
        min_doc = m.min_doc or pre_len
        windows = {c: training_windows(train, c, min_doc) for c in m.contexts}
        usable = [f for f in train if all(len(windows[c][f]) for c in m.contexts)]
        tokens = {f: len(train[f].seqs) * train[f].seq_len for f in usable}
        proc_info: dict[str, Any] = {}
        # the worked solutions (procedural part, bootstrap) and the RL held-out questions they
        # must not touch: read once for both
        uses_worked = m.procedural > 0 or m.bootstrap_steps > 0
        text_tok = load_tokenizer(tok.path("tokenizer.json")) if uses_worked else None
        rl_heldout = (worked.heldout_questions(cfg.grpo, cfg.distill, [cfg.seed])
                      if uses_worked else [])
        if m.procedural > 0:  # the procedural part: worked solutions, none an RL held-out one
            proc, proc_info = procedural_windows(m, text_tok, rl_heldout, cfg.seed)
            for c in m.contexts:
                windows[c][PROCEDURAL] = proc[c]
            tokens[PROCEDURAL] = proc_info["text_tokens"]
        weights = mix_weights(m, tokens)
        final = m.contexts[-1]
        lengths = probe_lengths(pre_len, list(m.contexts))
        stream_all = np.concatenate([longctx.stream(s) for s in heldout.values()])
        passkey = longctx.make_passkey(stream_all, m.key_len, seed=cfg.seed,
                                       exclude=range(len(SPECIALS)))
        eval_windows, eval_min_doc = heldout_windows(heldout, final, m.eval_seqs)
        probe = Probe(probe_filler(heldout, final, cfg.seed), lengths, list(m.probe_depths),
                      passkey, m.probe_trials, eval_windows, pre_len, cfg.seed)
        evals = {"pre-trained": probe.score(pre_model, device)}
        runs: dict[str, list[dict]] = {}
        model, runs[m.positions] = train_run(pre_model, m.positions, m, windows, weights,
                                             pre_len, cfg.seed, device, probe, desc="",
                                             optim=cfg.optim)
        boot: dict[str, Any] | None = None
        if m.bootstrap_steps > 0:  # last: worked solutions alone, none an RL held-out problem
            # the model never shown a worked solution: notebook 09's base without the family
            save_model_file(model.cfg, model.state_dict(), st.path("model_before_bootstrap.pt"))
            model, boot = reasoning_bootstrap(model, m, text_tok, rl_heldout, cfg.seed, device,
                                              optim=cfg.optim)
        save_model_file(model.cfg, model.state_dict(), st.path("model.pt"))
        control: dict[str, Any] | None = None
        if m.bootstrap_control:  # the same compute on human STEM/math text: 09's other base
            before = load_model_file(st.path("model_before_bootstrap.pt"), device)
            with torch.random.fork_rng(devices=[]):  # the runs after it draw as without it
                torch.manual_seed(cfg.seed)
                before, control = bootstrap_control(before, m, train, cfg.seed, device,
                                                    optim=cfg.optim)
            save_model_file(before.cfg, before.state_dict(), st.path("model_control.pt"))
            del before
        for k, rec in enumerate(runs[m.positions]):
            evals[f"stage {k + 1} ({rec['context']})"] = rec.pop("eval")
        for alt in m.compare:
            _, runs[alt] = train_run(pre_model, alt, m, windows, weights, pre_len, cfg.seed,
                                     device, probe, desc=f"{alt}: ", optim=cfg.optim)
            evals[f"{alt} (final)"] = runs[alt][-1].pop("eval")
        np.savez_compressed(st.path("loss_by_position.npz"),
                            **{k: np.asarray(v["loss_by_position"]) for k, v in evals.items()},
                            **{f"{k} (cut)": np.asarray(v["loss_cut"]) for k, v in evals.items()})
        bom = bill_of_materials(weights, runs[m.positions], proc_info, boot)
        st.path("bom.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bom))
        proc_tokens = sum(r["tokens_by_family"].get(PROCEDURAL, 0) for r in runs[m.positions])
        attn = attention_memory(pre_model.cfg, max(1, m.tokens_per_step // final), final,
                                device)
        summaries = [_summary(k, v, lengths, pre_len, final) for k, v in evals.items()]
        final_label = f"stage {len(m.contexts)} ({final})"
        by = {s.model: s for s in summaries}
        metrics = MidtrainingMetrics(
            pre_len=pre_len, contexts=list(m.contexts), positions=m.positions,
            compare=list(m.compare), weights=weights, min_doc=min_doc,
            procedural=ProceduralPart(
                share_of_stem_math=m.procedural, share=weights[PROCEDURAL],
                tokens=proc_tokens, texts=proc_info.get("texts", 0),
                text_tokens=proc_info.get("text_tokens", 0),
                removed_heldout=proc_info.get("removed_heldout", 0),
                heldout_problems=proc_info.get("heldout_problems", 0),
                kinds=proc_info.get("kinds", []), difficulties=proc_info.get("difficulties", [])),
            eval_windows=len(eval_windows), eval_min_doc=eval_min_doc,
            probe_lengths=lengths, probe_depths=list(m.probe_depths),
            probe_vocab=len(passkey.vocab), chance=1 / len(passkey.vocab),
            stages={name: [StageRecord(**{k: v for k, v in r.items() if k != "loss"},
                                       final_loss=float(np.mean(r["loss"][-5:])))
                           for r in recs]
                    for name, recs in runs.items()},
            losses={name: [r["loss"] for r in recs] for name, recs in runs.items()},
            retrieval={k: v["retrieval"] for k, v in evals.items()},
            retrieval_nats={k: v["retrieval_nats"] for k, v in evals.items()},
            summary=summaries,
            retrieval_gain=by[final_label].retrieval_final - by["pre-trained"].retrieval_final,
            nats_gain=by[final_label].nats_final - by["pre-trained"].nats_final,
            retrieval_seq={k: v["retrieval_seq"] for k, v in evals.items()},
            verdicts=verdicts(evals, lengths, pre_len, final_label, m.positions,
                              list(m.compare), cfg.seed),
            attention_memory=AttentionMemory(**attn),
            eval_s={k: v["eval_s"] for k, v in evals.items()},
            wall_s=time.time() - t_start,
            bootstrap=ReasoningBootstrap(**boot) if boot else None,
            control=BootstrapControl(**control) if control else None,
        )
        st.metrics.update(result_dict(metrics))
        figures = _figures(metrics, {k: (np.asarray(v["loss_by_position"]),
                                         np.asarray(v["loss_cut"]))
                                     for k, v in evals.items()}, st)
    return MidtrainResult(metrics, figures)


def _figures(metrics: MidtrainingMetrics, curves: Mapping[str, np.ndarray], st: Any
             ) -> dict[str, Path]:
    figs: dict[str, Path] = {}
    # 1. training loss per stage, every position treatment
    fig, ax = plots.new(width=7.5, height=3.6)
    for i, (name, losses) in enumerate(metrics.losses.items()):
        step0 = 0
        for k, stage_losses in enumerate(losses):
            xs = np.arange(step0, step0 + len(stage_losses))
            ax.plot(xs, stage_losses, color=plots.PALETTE[i], lw=1.2, ls="-" if k % 2 == 0
                    else "--", label=f"{name}: stage {k + 1} "
                                     f"({metrics.contexts[k]} tokens)")
            step0 += len(stage_losses)
        b = metrics.bootstrap
        if b is not None and name == metrics.positions:  # the main run's last phase
            ax.plot(np.arange(step0, step0 + len(b.loss)), b.loss, color=plots.PALETTE[i],
                    lw=1.2, ls=":", label=f"{name}: reasoning bootstrap (worked solutions, "
                                          f"{b.context} tokens)")
        ctl = metrics.control
        if ctl is not None and b is not None and name == metrics.positions:
            ax.plot(np.arange(step0, step0 + len(ctl.loss)), ctl.loss, color=plots.PALETTE[7],
                    lw=1.0, ls=":", label=f"control: the same steps on human STEM/math text "
                                          f"({ctl.context} tokens)")
    ax.set(xlabel="mid-training step", ylabel="training loss (nats/token)",
           title="Mid-training loss per stage (context grows 4x per stage)")
    ax.legend(fontsize=8)
    figs["curves"] = plots.save(fig, st.path("figures", "curves"))
    # 2. loss by position (log-spaced bins), and what the context beyond pre_len is worth
    fig, axes = plots.new(1, 2, width=5.2, height=4.0)
    pre_len = metrics.pre_len
    for i, (label, (curve, cut)) in enumerate(curves.items()):
        L = len(curve)
        edges = np.unique(np.geomspace(1, L, 28).astype(int))
        mids = np.sqrt(edges[:-1] * edges[1:])
        vals = [curve[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)]
        axes[0].plot(mids, vals, color=plots.PALETTE[i], lw=1.5, marker="o", ms=2.5,
                     label=label)
        far = edges[edges >= pre_len]
        gain = [(cut - curve)[a:b].mean() for a, b in zip(far[:-1], far[1:], strict=True)]
        axes[1].plot(np.sqrt(far[:-1] * far[1:]), gain, color=plots.PALETTE[i], lw=1.5,
                     marker="o", ms=2.5, label=label)
    for ax in axes:
        ax.axvline(pre_len, color=plots.REPORT, ls=":", lw=1)
        ax.set_xscale("log")
    axes[1].axhline(0, color="black", lw=0.8)
    axes[1].xaxis.set_minor_formatter(NullFormatter())  # log ticks 3x10^2 ... overlap
    axes[0].set(xlabel="token position", ylabel="held-out loss (nats/token)",
                title=f"Loss by position ({metrics.eval_windows} windows of "
                      f"{metrics.contexts[-1]} tokens)")
    axes[1].set(xlabel="token position", ylabel="loss with context cut to "
                                                f"{pre_len} minus full (nats)",
                title="What the context beyond the pre-training length is worth")
    axes[0].legend(fontsize=8)
    figs["loss_by_position"] = plots.save(fig, st.path("figures", "loss_by_position"))
    # 3. retrieval heatmaps: accuracy, and the nats the planted key is worth
    rows = [("retrieval", "passkey accuracy", "viridis", (0, 1)),
            ("retrieval_nats", "nats the key is worth", "RdBu", None)]
    n = len(metrics.retrieval)
    fig, axes = plots.new(2, n, width=3.2, height=3.0, squeeze=False)
    for r, (key, name, cmap, lim) in enumerate(rows):
        grids = getattr(metrics, key)
        top = max(1e-3, max(abs(v) for g in grids.values() for row in g for v in row))
        vmin, vmax = lim or (-top, top)
        for ax, (label, grid) in zip(axes[r], grids.items(), strict=True):
            g = np.asarray(grid)
            im = ax.imshow(g, vmin=vmin, vmax=vmax, cmap=cmap, origin="lower", aspect="auto")
            ax.set_xticks(range(len(metrics.probe_depths)),
                          [f"{d:.0%}" for d in metrics.probe_depths], fontsize=7)
            ax.set_yticks(range(len(metrics.probe_lengths)), metrics.probe_lengths,
                          fontsize=8)
            ax.set(title=label if r == 0 else "", xlabel="key depth" if r == 1 else "")
            ax.grid(False)
            for (a, b), v in np.ndenumerate(g):
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7)
        axes[r][0].set_ylabel(f"length\n({name})")
        fig.colorbar(im, ax=axes[r].tolist(), shrink=0.8)
    figs["retrieval"] = plots.save(fig, st.path("figures", "retrieval"))
    return figs
