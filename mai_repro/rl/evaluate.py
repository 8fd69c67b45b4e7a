"""Sampled evaluation on RL tasks: pass@k, accuracy over samples, answer entropy.

Used by the climb itself (held-out accuracy as it goes) and by the evaluation module
(``mai_repro.eval.metrics`` re-exports these). :func:`sample_accuracy` is the report's protocol:
``samples`` completions per problem at temperature 1, top-p 0.97, graded exactly.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mai_repro import stats
from mai_repro.rl import tasks
from mai_repro.rl.rollout import sample_groups
from mai_repro.train.loop import split_output

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


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def sample_accuracy(model: torch.nn.Module, tok, problems: Sequence[tasks.Task], *,
                    samples: int = 4, max_new_tokens: int, temperature: float = 1.0,
                    top_p: float = 0.97, seed: int = 0, stops: set[int] | None = None,
                    ks: Sequence[int] = (1, 2, 4), sampler: str = "vocabulary") -> TaskEval:
    """Accuracy of ``samples`` completions per problem of :func:`mai_repro.rl.tasks.rl_prompt`,
    each graded by :func:`mai_repro.rl.tasks.grade` (the report's protocol: temperature 1,
    top-p 0.97, the accuracy averaged over the samples).

    The random numbers are those of the RL climb's held-out evaluation
    (:func:`mai_repro.rl.climb.evaluate`): a generator on the model's device seeded with
    ``seed + 99`` and one :func:`mai_repro.rl.rollout.sample_groups` call, so the same model,
    problems and seed give the same completions, hence the same numbers. ``stops`` are the
    tokens that end a completion (default :func:`mai_repro.rl.rollout.stop_ids`; pass them when
    calling often, computing them reads the whole vocabulary). pass@k is reported for each k
    of ``ks`` that is at most ``samples``. ``sampler``: see
    :func:`mai_repro.model.generation.generate`.
    """
    if not problems:
        raise ValueError("sample_accuracy: no problems given")
    if samples < 1:
        raise ValueError(f"sample_accuracy: samples must be at least 1, got {samples}")
    g = torch.Generator(device=model_device(model)).manual_seed(seed + 99)
    groups = sample_groups(model, tok, list(problems), samples, max_new_tokens,
                           temperature=temperature, top_p=top_p, generator=g, stops=stops,
                           keep_extras=False, sampler=sampler)
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
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
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
    :func:`mai_repro.rl.tasks.answer_prompt` (which ends with ``Answer:``), softmax(logits / T)
    over the whole vocabulary (no top-p), and H = -sum_v p_v log p_v. Low entropy: the model
    commits to an answer; 0 means one token gets all the mass. One forward pass per batch of
    prompts of equal length, no sampling.
    """
    if not problems:
        raise ValueError("answer_entropy: no problems given")
    if temperature <= 0:
        raise ValueError(f"answer_entropy: temperature must be > 0, got {temperature}")
    device = model_device(model)
    by_len: dict[int, list[list[int]]] = defaultdict(list)
    for t in problems:
        ids = tok.encode(tasks.answer_prompt(t))
        by_len[len(ids)].append(ids)
    total = 0.0
    with eval_mode(model):
        for _, prompts in sorted(by_len.items()):
            x = torch.tensor(prompts, dtype=torch.long, device=device)
            logits, _ = split_output(model(x))
            logp = (logits[:, -1].float() / temperature).log_softmax(-1)
            total += float(-(logp.exp() * logp).sum(-1).sum())
    return total / len(problems)


def paired_accuracy(a: Sequence[int], b: Sequence[int], samples: int, *, test: str,
                    seed: int) -> stats.Decision:
    """Held-out accuracy of model a minus model b from their per-problem counts of samples right
    (``evaluate``'s ``correct``) on the same problems: a paired bootstrap over the problems,
    held against 0 (:func:`mai_repro.stats.decide`)."""
    if len(a) != len(b):
        raise ValueError(f"paired accuracy needs the same problems, got {len(a)} and "
                         f"{len(b)} counts")
    return stats.decide(np.asarray(a, dtype=float) / samples,
                        np.asarray(b, dtype=float) / samples, test=test,
                        items="held-out problems", scale="share", seed=seed)
