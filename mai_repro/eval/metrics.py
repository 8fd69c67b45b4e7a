"""Evaluation metrics shared by the notebooks: task accuracy, pass@k, answer entropy, held-out
NLL and bits per byte, and a table of them over a run's checkpoints.

Every function is pure (it reads a model and data, writes nothing) and leaves the model in the
train/eval mode it was given in, except :func:`sample_accuracy`, whose generator puts the model
in eval mode (as the RL climb's own evaluation does). ``docs/evaluation.md`` gives the formulas.

- :func:`pass_at_k`: the unbiased pass@k estimator of Chen et al. (2021);
- :func:`sample_accuracy`: the report's protocol, ``samples`` completions per problem at
  temperature 1, top-p 0.97, graded exactly (it lives in :mod:`mai_repro.rl.evaluate`, which
  the climb uses too, so both give the same accuracy);
- :func:`answer_entropy`: entropy of the first answer token after the RL prompt;
- :func:`family_nll`: held-out next-token NLL (nats/token) and bits per byte, per family;
- :func:`context_gain`: what the context beyond a cut (the pre-training length) is worth;
- :func:`checkpoints` and :func:`evaluate_checkpoints`: the model files of a run's stages
  (pre-training, mid-training, GRPO) and one row of all the above per model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mai_repro.eval.longctx import loss_by_position
from mai_repro.rl import tasks
from mai_repro.rl.evaluate import (  # noqa: F401 (re-exported: the evaluation module's API)
    TaskEval,
    answer_entropy,
    eval_mode,
    model_device,
    pass_at_k,
    sample_accuracy,
)
from mai_repro.rl.rollout import stop_ids
from mai_repro.train.checkpoint import load_model_file
from mai_repro.train.loop import split_output, token_nll

# The stages that write ``<run_dir>/<stage>/model.pt``, in the order the recipe runs them.
CHAIN: tuple[str, ...] = ("pretraining", "midtraining", "grpo")


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
    :func:`mai_repro.stages.pretraining.open_stage_shards`); the first ``max_windows`` of each are
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
    device = torch.device(device) if device is not None else model_device(model)
    nbytes = torch.from_numpy(token_byte_counts(tok)).to(device)
    out: dict[str, dict[str, float]] = {}
    with eval_mode(model):
        for family, seqs in heldout.items():
            seqs = np.asarray(seqs[:max_windows])
            if seqs.ndim != 2 or seqs.shape[0] == 0 or seqs.shape[1] < 2:
                continue
            nats, tokens, total_bytes = 0.0, 0, 0
            for lo in range(0, seqs.shape[0], micro):
                chunk = torch.from_numpy(seqs[lo:lo + micro].astype(np.int64)).to(device)
                targets = chunk[:, 1:]
                logits, _ = split_output(model(chunk[:, :-1]))
                loss = token_nll(logits, targets).reshape(-1)
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
    device = str(device) if device is not None else str(model_device(model))
    with eval_mode(model):
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
                         progress: bool = True, sampler: str = "vocabulary"
                         ) -> list[dict[str, Any]]:
    """One row per model file (label -> path, e.g. from :func:`checkpoints`):

    - ``label``, ``path``;
    - ``nll.<family>``, ``bpb.<family>`` (:func:`family_nll`) and ``nll``, ``bpb``: their
      unweighted mean over families;
    - ``accuracy``, ``solved_any``, ``length``, ``distinct``, ``pass@k`` for k = 1, 2, 4, 8,
      16 and ``samples``, those at most ``samples`` (:func:`sample_accuracy` at temperature
      1, top-p 0.97, ``samples`` per problem; ``sampler`` as :func:`sample_accuracy`'s:
      "nucleus" draws among the nucleus's tokens, the same distribution with less work);
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
                             ks=(1, 2, 4, 8, 16, samples), sampler=sampler)
        row.update(accuracy=ev.accuracy, solved_any=ev.solved_any, length=ev.length,
                   distinct=ev.distinct)
        row.update({f"pass@{k}": v for k, v in ev.pass_at.items()})
        row["entropy"] = answer_entropy(model, tok, problems)
        if long_windows is not None:
            row["context_gain"] = context_gain(model, long_windows, cut)["gain"]
        rows.append(row)
        del model
    return rows
