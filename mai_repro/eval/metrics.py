"""Evaluation metrics shared by the notebooks: task accuracy, pass@k, answer entropy, held-out
NLL and bits per byte, and a table of them over a run's checkpoints.

Every function is pure (it reads a model and data, writes nothing) and leaves the model in the
train/eval mode it was given in, except :func:`sample_accuracy`, whose generator puts the model
in eval mode (as the RL climb's own evaluation does). ``docs/evaluation.md`` gives the formulas.

- :func:`pass_at_k`: the unbiased pass@k estimator of Chen et al. (2021);
- :func:`sample_accuracy`: the report's protocol, ``samples`` completions per problem at
  temperature 1, top-p 0.97, graded exactly; the same random numbers as the climb's
  :func:`mai_repro.rl.climb.evaluate`, so both give the same accuracy;
- :func:`answer_entropy`: entropy of the first answer token after the RL prompt;
- :func:`family_nll`: held-out next-token NLL (nats/token) and bits per byte, per family;
- :func:`context_gain`: what the context beyond a cut (the pre-training length) is worth;
- :func:`checkpoints` and :func:`evaluate_checkpoints`: the model files of a run's stages
  (pre-training, mid-training, GRPO) and one row of all the above per model.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mai_repro.eval.longctx import loss_by_position
from mai_repro.rl import tasks
from mai_repro.rl.rollout import sample_groups, stop_ids
from mai_repro.train.checkpoint import load_model_file
from mai_repro.train.loop import split_output

# The stages that write ``<run_dir>/<stage>/model.pt``, in the order the recipe runs them.
CHAIN: tuple[str, ...] = ("pretraining", "midtraining", "grpo")


# -- pass@k -----------------------------------------------------------------------------------

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct.

    pass@k = 1 - C(n - c, k) / C(n, k): the probability that ``k`` samples drawn without
    replacement from the ``n`` hold at least one correct one (Chen et al. 2021, "Evaluating
    Large Language Models Trained on Code"). Computed as the product
    1 - prod_{i = n-c+1}^{n} (1 - k / i), which never forms the large binomials.

    >>> pass_at_k(4, 1, 2)
    0.5
    """
    for name, v in (("n", n), ("c", c), ("k", k)):
        if v < 0:
            raise ValueError(f"pass_at_k: {name} must be >= 0, got {v}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be at least 1, got {k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} is more than the n={n} samples drawn")
    if c > n:
        raise ValueError(f"pass_at_k: c={c} correct is more than the n={n} samples drawn")
    if n - c < k:  # every draw of k samples holds a correct one
        return 1.0
    miss = 1.0  # C(n-c, k) / C(n, k)
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


# -- sampled task accuracy --------------------------------------------------------------------

@dataclass
class TaskEval:
    """Sampled accuracy on a set of problems (see :func:`sample_accuracy`)."""

    accuracy: float  # fraction of all samples that are correct
    solved_any: float  # fraction of problems with at least one correct sample
    length: float  # mean completion length in tokens (stop token included)
    pass_at: dict[int, float]  # k -> mean over problems of pass_at_k(samples, correct, k)
    correct: list[int]  # correct samples per problem, in the order of the problems
    n_problems: int
    samples: int  # samples per problem
    distinct: float  # mean over problems of (distinct completion texts) / samples
    texts: list[list[str]] = field(default_factory=list, repr=False)  # completions per problem

    def summary(self) -> dict[str, Any]:
        """Plain numbers for a manifest or a table (pass@k keyed by ``str(k)``)."""
        return {"accuracy": float(self.accuracy), "solved_any": float(self.solved_any),
                "length": float(self.length), "distinct": float(self.distinct),
                "pass_at": {str(k): float(v) for k, v in self.pass_at.items()},
                "n_problems": int(self.n_problems), "samples": int(self.samples)}


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample_accuracy(model: torch.nn.Module, tok, problems: Sequence[tasks.Task], *,
                    samples: int = 4, max_new_tokens: int, temperature: float = 1.0,
                    top_p: float = 0.97, seed: int = 0, stops: set[int] | None = None,
                    ks: Sequence[int] = (1, 2, 4)) -> TaskEval:
    """Accuracy of ``samples`` completions per problem of :func:`mai_repro.rl.tasks.rl_prompt`,
    each graded by :func:`mai_repro.rl.tasks.grade` (the report's protocol: temperature 1,
    top-p 0.97, the accuracy averaged over the samples).

    The random numbers are those of the RL climb's held-out evaluation
    (:func:`mai_repro.rl.climb.evaluate`): a generator on the model's device seeded with
    ``seed + 99`` and one :func:`mai_repro.rl.rollout.sample_groups` call, so the same model,
    problems and seed give the same completions, hence the same numbers. ``stops`` are the
    tokens that end a completion (default :func:`mai_repro.rl.rollout.stop_ids`; pass them when
    calling often, computing them reads the whole vocabulary). pass@k is reported for each k
    of ``ks`` that is at most ``samples``.
    """
    if not problems:
        raise ValueError("sample_accuracy: no problems given")
    if samples < 1:
        raise ValueError(f"sample_accuracy: samples must be at least 1, got {samples}")
    g = torch.Generator(device=_device(model)).manual_seed(seed + 99)
    groups = sample_groups(model, tok, list(problems), samples, max_new_tokens,
                           temperature=temperature, top_p=top_p, generator=g, stops=stops,
                           keep_extras=False)
    outcomes = [ok for gr in groups for ok in gr.correct]
    lengths = [len(x) for gr in groups for x in gr.completions]
    correct = [int(sum(gr.correct)) for gr in groups]
    pass_at = {int(k): float(np.mean([pass_at_k(len(gr), c, int(k))
                                      for gr, c in zip(groups, correct, strict=True)]))
               for k in sorted(set(ks)) if 1 <= k <= samples}
    return TaskEval(accuracy=float(np.mean(outcomes)),
                    solved_any=float(np.mean([any(gr.correct) for gr in groups])),
                    length=float(np.mean(lengths)), pass_at=pass_at, correct=correct,
                    n_problems=len(groups), samples=samples,
                    distinct=float(np.mean([len(set(gr.texts)) / len(gr.texts)
                                            for gr in groups])),
                    texts=[list(gr.texts) for gr in groups])


# -- answer entropy ---------------------------------------------------------------------------

@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then the mode the model had."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def answer_entropy(model: torch.nn.Module, tok, problems: Sequence[tasks.Task], *,
                   temperature: float = 1.0) -> float:
    """Mean over problems of the entropy (nats) of the first answer token.

    For each problem, the model's next-token distribution right after
    :func:`mai_repro.rl.tasks.rl_prompt` (which ends with ``Answer:``), softmax(logits / T)
    over the whole vocabulary (no top-p), and H = -sum_v p_v log p_v. Low entropy: the model
    commits to an answer; 0 means one token gets all the mass. One forward pass per batch of
    prompts of equal length, no sampling.
    """
    if not problems:
        raise ValueError("answer_entropy: no problems given")
    if temperature <= 0:
        raise ValueError(f"answer_entropy: temperature must be > 0, got {temperature}")
    device = _device(model)
    by_len: dict[int, list[list[int]]] = defaultdict(list)
    for t in problems:
        ids = tok.encode(tasks.rl_prompt(t))
        by_len[len(ids)].append(ids)
    total = 0.0
    with _eval_mode(model):
        for _, prompts in sorted(by_len.items()):
            x = torch.tensor(prompts, dtype=torch.long, device=device)
            logits, _ = split_output(model(x))
            logp = (logits[:, -1].float() / temperature).log_softmax(-1)
            total += float(-(logp.exp() * logp).sum(-1).sum())
    return total / len(problems)


# -- held-out NLL and bits per byte -----------------------------------------------------------

def token_byte_counts(tok) -> np.ndarray:
    """UTF-8 bytes each token id stands for (``tok.token_bytes``), the end-of-text token 0."""
    counts = np.array([len(tok.token_bytes(i)) for i in range(tok.vocab_size)], dtype=np.int64)
    counts[tok.eot_id] = 0
    return counts


@torch.no_grad()
def family_nll(model: torch.nn.Module, heldout: Mapping[str, np.ndarray], tok, *,
               max_windows: int = 8, micro: int = 4,
               device: str | torch.device | None = None) -> dict[str, dict[str, float]]:
    """Held-out next-token NLL and bits per byte of each family.

    ``heldout`` maps a family to its (n, seq_len + 1) windows (the held-out arrays of
    :func:`mai_repro.train.pretrain.open_stage_shards`); the first ``max_windows`` of each are
    read, ``micro`` windows per forward pass, inputs ``[:, :-1]`` and targets ``[:, 1:]``.
    A target counts when it stands for at least one byte (:func:`token_byte_counts`: the
    end-of-text token counts 0 bytes, so its loss is left out of both sums, as in nanochat):

        nll = sum of nats / tokens,      bpb = sum of nats / (ln 2 * bytes)

    over the counted targets. Bits per byte do not depend on the tokenizer, so they compare
    models with different vocabularies. Returns ``{family: {"nll", "bpb", "tokens",
    "bytes"}}``; families without windows are skipped.
    """
    if max_windows < 1 or micro < 1:
        raise ValueError(f"family_nll: max_windows and micro must be >= 1, got "
                         f"{max_windows} and {micro}")
    device = torch.device(device) if device is not None else _device(model)
    nbytes = torch.from_numpy(token_byte_counts(tok)).to(device)
    out: dict[str, dict[str, float]] = {}
    with _eval_mode(model):
        for family, seqs in heldout.items():
            seqs = np.asarray(seqs[:max_windows])
            if seqs.ndim != 2 or seqs.shape[0] == 0 or seqs.shape[1] < 2:
                continue
            nats, tokens, total_bytes = 0.0, 0, 0
            for lo in range(0, seqs.shape[0], micro):
                chunk = torch.from_numpy(seqs[lo:lo + micro].astype(np.int64)).to(device)
                targets = chunk[:, 1:]
                logits, _ = split_output(model(chunk[:, :-1]))
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                       targets.reshape(-1), reduction="none")
                b = nbytes[targets.reshape(-1)]
                counted = b > 0
                nats += float(loss[counted].sum())
                tokens += int(counted.sum())
                total_bytes += int(b.sum())
            if tokens == 0:
                continue
            out[family] = {"nll": nats / tokens, "bpb": nats / (math.log(2) * total_bytes),
                           "tokens": float(tokens), "bytes": float(total_bytes)}
    if not out:
        raise ValueError(f"family_nll: no held-out windows with a counted token in any of the "
                         f"families {sorted(heldout)}")
    return out


# -- long context -----------------------------------------------------------------------------

def context_gain(model: torch.nn.Module, windows: np.ndarray, cut: int, *,
                 device: str | torch.device | None = None) -> dict[str, float]:
    """What the context beyond ``cut`` tokens is worth (notebook 08's measure): the mean loss
    at positions >= ``cut`` of (N, length + 1) windows scored whole, and scored in independent
    pieces of ``cut`` tokens (the longer context cut away); ``gain`` = cut - whole, in nats
    per token (> 0: the model uses the long context)."""
    length = windows.shape[1] - 1
    if not 0 < cut < length or length % cut:
        raise ValueError(f"context_gain: cut {cut} must be below and divide the window length "
                         f"{length}")
    device = str(device) if device is not None else str(_device(model))
    with _eval_mode(model):
        whole = loss_by_position(model, windows, device)[cut:].mean()
        short = loss_by_position(model, windows, device, context=cut)[cut:].mean()
    return {"loss_whole": float(whole), "loss_cut": float(short), "gain": float(short - whole)}


# -- a run's checkpoints ----------------------------------------------------------------------

def checkpoints(run_dir: Path | str, extra: Mapping[str, Path | str] | None = None
                ) -> dict[str, Path]:
    """Label -> model file of each :data:`CHAIN` stage of ``run_dir`` that is complete
    (``<run_dir>/<stage>/manifest.json`` and ``model.pt`` exist), in chain order, then the
    ``extra`` entries (e.g. an ablation's model). Incomplete stages are skipped silently; an
    extra label that repeats a stage's is an error."""
    run_dir = Path(run_dir)
    out: dict[str, Path] = {}
    for stage in CHAIN:
        d = run_dir / stage
        if (d / "manifest.json").is_file() and (d / "model.pt").is_file():
            out[stage] = d / "model.pt"
    for label, path in (extra or {}).items():
        if label in out:
            raise ValueError(f"checkpoints: extra label {label!r} is already a stage of "
                             f"{run_dir}")
        out[label] = Path(path)
    return out


def evaluate_checkpoints(paths: Mapping[str, Path | str], tok, *,
                         heldout: Mapping[str, np.ndarray], problems: Sequence[tasks.Task],
                         samples: int = 4, max_new_tokens: int, seed: int = 0,
                         max_windows: int = 8, device: str = "cpu",
                         long_windows: np.ndarray | None = None, cut: int = 0,
                         progress: bool = True) -> list[dict[str, Any]]:
    """One row per model file (label -> path, e.g. from :func:`checkpoints`):

    - ``label``, ``path``;
    - ``nll.<family>``, ``bpb.<family>`` (:func:`family_nll`) and ``nll``, ``bpb``: their
      unweighted mean over families;
    - ``accuracy``, ``solved_any``, ``length``, ``distinct``, ``pass@k`` for k = 1, 2, 4, 8,
      16 and ``samples``, those at most ``samples`` (:func:`sample_accuracy` at temperature
      1, top-p 0.97, ``samples`` per problem);
    - ``entropy``: :func:`answer_entropy` at temperature 1;
    - with ``long_windows`` (N, length + 1) and ``cut``: ``context_gain``, the nats per token
      the context beyond ``cut`` tokens is worth (:func:`context_gain`).

    Every model sees the same held-out windows, problems and random numbers. Each model is
    loaded with :func:`mai_repro.train.checkpoint.load_model_file` and dropped after its row.
    """
    from tqdm.auto import tqdm

    stops = stop_ids(tok)  # once: it reads the whole vocabulary
    rows = []
    for label, path in tqdm(list(paths.items()), desc="checkpoints", disable=not progress,
                            leave=False):
        model = load_model_file(path, device)
        row: dict[str, Any] = {"label": label, "path": str(path)}
        fam = family_nll(model, heldout, tok, max_windows=max_windows)
        for f, m in fam.items():
            row[f"nll.{f}"] = m["nll"]
            row[f"bpb.{f}"] = m["bpb"]
        row["nll"] = float(np.mean([m["nll"] for m in fam.values()]))
        row["bpb"] = float(np.mean([m["bpb"] for m in fam.values()]))
        ev = sample_accuracy(model, tok, problems, samples=samples,
                             max_new_tokens=max_new_tokens, seed=seed, stops=stops,
                             ks=(1, 2, 4, 8, 16, samples))
        row.update(accuracy=ev.accuracy, solved_any=ev.solved_any, length=ev.length,
                   distinct=ev.distinct)
        row.update({f"pass@{k}": v for k, v in ev.pass_at.items()})
        row["entropy"] = answer_entropy(model, tok, problems)
        if long_windows is not None:
            row["context_gain"] = context_gain(model, long_windows, cut)["gain"]
        rows.append(row)
        del model
    return rows
