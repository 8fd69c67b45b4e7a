"""Finding AI-generated text inside collected sources, in three layers.

(a) **Marker rules**: phrases that assistant chat models leave behind ("As an AI language
    model", "I hope this helps!", "As of my last knowledge update").
(b) **Date provenance**: a document created before public chat assistants (by default
    2022-11-30) is human-era and needs no statistical test.
(c) **A zero-shot statistical detector** scored with two small language models that the
    project trains itself on human-era text (no third-party weights):
    - *Binoculars* (Hans et al., 2024): the text's log-perplexity under the performer divided
      by the cross-perplexity between observer and performer, i.e. how surprising the text is
      relative to how surprising a model's own continuations are. Machine text scores low.
    - *Fast-DetectGPT* (Bao et al., 2024), analytic form: how far the text's log-likelihood
      under the scoring model lies above what samples from the reference model would get,
      in standard deviations. Machine text scores high.
    Both are returned so that *higher means more likely machine-written*.

Thresholds are set on held-out human documents at a chosen false-positive rate, so the price
of the filter (human documents wrongly removed) is known and stated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Phrases typical of assistant chat output. Case-insensitive; kept specific so that human
# text quoting one phrase in passing is rare (the notebook reports what they catch).
MARKERS: tuple[str, ...] = (
    r"\bas an ai(?: language)? model\b",
    r"\bas a large language model\b",
    r"\bi(?:'m| am) an ai (?:assistant|language model)\b",
    r"\bas of my (?:last )?(?:knowledge|training) (?:update|cut-?off)\b",
    r"\bmy (?:knowledge|training data) cut-?off\b",
    r"\bi (?:don't|do not) have (?:personal )?(?:opinions|feelings|emotions|beliefs)\b",
    r"\bi hope this helps!",
    r"\bcertainly! here(?:'s| is)\b",
    r"\bregenerate response\b",
    r"\bi cannot (?:browse|access) the internet\b",
    r"\bas an ai developed by\b",
)
MARKER_RE = re.compile("|".join(MARKERS), re.IGNORECASE)


def find_marker(text: str) -> str | None:
    """The first assistant-boilerplate phrase in ``text``, or None."""
    m = MARKER_RE.search(text)
    return m.group(0) if m else None


def is_human_era(date: str | None, before: str) -> bool:
    """True when the document's date (ISO ``YYYY-MM-DD...``) is known and earlier than
    ``before``; an unknown date is never assumed human-era."""
    return bool(date) and str(date)[:10] < before


# --------------------------------------------------------------------------------------------
# Scores from logits. logits_*: (B, T, V) predicting ids[:, 1:] from ids[:, :-1].
#
# Both scores are ratios of sums over the scored positions, so a long document scored in
# several windows is scored exactly like one long window: add the windows' ``token_sums``,
# then call ``scores_from_sums``.

SUMS = ("nll", "xent", "var", "n")  # the columns of token_sums


def token_sums(observer_logits: torch.Tensor, performer_logits: torch.Tensor,
               targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 4) sums over the masked positions, with p = observer and log q = performer:

    - ``nll``:  -log q(x_t), the performer's loss on the text;
    - ``xent``: -sum_v p(v) log q(v), the cross-entropy between the two models (= -mu_t, the
      mean of log q(x) for x drawn from p);
    - ``var``:  the variance of log q(x) for x drawn from p;
    - ``n``:    the number of positions.
    """
    q_logp = F.log_softmax(performer_logits.float(), dim=-1)
    p = F.softmax(observer_logits.float(), dim=-1)
    nll = -q_logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mu = (p * q_logp).sum(-1)
    var = ((p * q_logp.square()).sum(-1) - mu.square()).clamp_min(0.0)
    m = mask.float()
    return torch.stack([(nll * m).sum(-1), (-mu * m).sum(-1), (var * m).sum(-1), m.sum(-1)], -1)


def scores_from_sums(sums: torch.Tensor | np.ndarray, method: str) -> np.ndarray:
    """Per-sequence score (higher = more machine-like) from summed ``token_sums``.

    - ``binoculars``: minus (mean NLL / mean cross-entropy) = -sum nll / sum xent;
    - ``fast_detect``: (sum log q(x_t) - sum mu_t) / sqrt(sum var_t) = (xent - nll) / sqrt(var).
    """
    s = np.asarray(sums, dtype=np.float64).reshape(-1, len(SUMS))
    nll, xent, var = s[:, 0], s[:, 1], s[:, 2]
    if method == "binoculars":
        return -nll / np.maximum(xent, 1e-6)
    if method == "fast_detect":
        return (xent - nll) / np.sqrt(np.maximum(var, 1e-6))
    raise ValueError(f"unknown score {method!r}; allowed: {', '.join(METHODS)}")


METHODS = ("binoculars", "fast_detect")


def binoculars_score(observer_logits: torch.Tensor, performer_logits: torch.Tensor,
                     targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Negative Binoculars ratio per sequence (higher = more machine-like).

    B = log PPL_performer(x) / X-PPL(observer, performer), with
    X-PPL = mean_t sum_v p_observer(v) * (-log p_performer(v)).
    """
    sums = token_sums(observer_logits, performer_logits, targets, mask)
    return torch.from_numpy(scores_from_sums(sums, "binoculars")).float()


def fast_detect_score(reference_logits: torch.Tensor, scoring_logits: torch.Tensor,
                      targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Analytic Fast-DetectGPT sampling discrepancy per sequence (higher = more machine-like).

    (sum_t log q(x_t) - sum_t mu_t) / sqrt(sum_t var_t), with mu_t and var_t the mean and
    variance of log q(x) for x drawn from the reference model's distribution p_t.
    """
    sums = token_sums(reference_logits, scoring_logits, targets, mask)
    return torch.from_numpy(scores_from_sums(sums, "fast_detect")).float()


# --------------------------------------------------------------------------------------------
# Evaluation: ROC with human text as the negative class.

@dataclass(frozen=True)
class Roc:
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    n_human: int
    n_machine: int

    def tpr_at(self, fpr: float) -> float:
        """Detection rate at a false-positive rate of at most ``fpr``."""
        ok = self.fpr <= fpr + 1e-12
        return float(self.tpr[ok].max()) if ok.any() else 0.0


def roc(human_scores: np.ndarray, machine_scores: np.ndarray) -> Roc:
    """ROC curve and AUC (ties counted half) for "machine" = positive, higher score = machine."""
    h = np.asarray(human_scores, dtype=float)
    a = np.asarray(machine_scores, dtype=float)
    if len(h) == 0 or len(a) == 0:
        raise ValueError("need at least one human and one machine score")
    thresholds = np.unique(np.concatenate([h, a]))[::-1]
    fpr = np.concatenate([[0.0], [(h >= t).mean() for t in thresholds]])
    tpr = np.concatenate([[0.0], [(a >= t).mean() for t in thresholds]])
    # AUC = P(machine score > human score) + 0.5 P(equal): the Mann-Whitney statistic.
    greater = (a[:, None] > h[None, :]).mean()
    equal = (a[:, None] == h[None, :]).mean()
    return Roc(fpr, tpr, float(greater + 0.5 * equal), len(h), len(a))


def threshold_at_fpr(human_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold flagging at most ``fpr`` of the human documents (score > t)."""
    h = np.sort(np.asarray(human_scores, dtype=float))
    if len(h) == 0:
        raise ValueError("no human scores to calibrate on")
    k = int(np.floor(fpr * len(h)))  # documents allowed above the threshold
    return float(h[len(h) - k - 1]) if k < len(h) else float(h[0] - 1.0)
