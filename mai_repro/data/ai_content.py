"""Finding AI-generated text inside collected sources, in layers.

(a) **Marker rules**: the artifacts that assistant chat models leave behind (openers and
    sign-offs, refusals and disclaimers, "as an AI language model", knowledge-cut-off talk,
    placeholder brackets), each a named rule (:data:`MARKER_RULES`).
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

(d) **A supervised detector** in the style of Ghostbuster (mai_repro.data.ai_detect), trained
    on passages written by a real language model (data/ai_text) against human documents.

``python -m mai_repro.data.ai_content score --run-dir RUN FILE...`` scores files with the
layers a run's curation stage saved.

Thresholds are set on held-out human documents at a chosen false-positive rate, so the price
of the filter (human documents wrongly removed) is known and stated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


# Marker rules: the artifacts of assistant chat output that leak into crawled text. Each
# rule is a name and a case-insensitive pattern; ``where`` limits a rule to the text's first
# or last characters (openers and sign-offs live there; the same words mid-text are normal
# human prose). Kept specific so that human text rarely matches: the notebook and
# docs/data.md give each rule's false-positive rate on the human side of the sample, and
# tests/test_ai_content.py holds a planted example and a human near-miss for each.
@dataclass(frozen=True)
class MarkerRule:
    name: str
    pattern: str
    where: str = "anywhere"  # "anywhere", "start" (first 200 chars) or "end" (last 400)

    def search(self, text: str) -> re.Match | None:
        part = text.lstrip()[:200] if self.where == "start" else \
            text.rstrip()[-400:] if self.where == "end" else text
        return re.search(self.pattern, part, re.IGNORECASE | re.MULTILINE)


MARKER_RULES: tuple[MarkerRule, ...] = (
    MarkerRule("self_reference",
               r"\bas an ai(?: language)? model\b|\bas a large language model\b|"
               r"\bi(?:'m| am) (?:an ai|a large language model|a language model)\b|"
               r"\bas an ai (?:developed|created|trained) by\b"),
    MarkerRule("knowledge_cutoff",
               r"\bas of my (?:last |latest )?(?:knowledge|training)(?: data)? "
               r"(?:update|cut-?off)\b|\bmy (?:knowledge|training(?: data)?) cut-?off\b|"
               r"\bi (?:don't|do not) have (?:access to )?(?:real-time|current) "
               r"(?:information|data)\b"),
    MarkerRule("refusal",
               r"\bi(?:'m| am) (?:sorry|afraid), but i (?:can(?:no|')t|am (?:not able|unable))"
               r" (?:help|assist|provide|fulfil+|comply|create|generate)\b|"
               r"\bi can(?:no|')t (?:help|assist) with (?:that|this) request\b"),
    MarkerRule("no_feelings",
               r"\bi (?:don't|do not) have (?:personal )?(?:opinions|feelings|emotions|"
               r"beliefs|personal experiences)\b"),
    MarkerRule("assistant_opener",
               r"\A(?:certainly|sure|absolutely|of course|great question)[!,.]\s+"
               r"(?:here(?:'s| is| are)|i(?:'d| would) be (?:happy|glad)|let(?:'s| me))",
               where="start"),
    MarkerRule("assistant_signoff",
               r"\b(?:i hope this helps|hope this helps[!.,]|let me know if you(?: have| need|"
               r" want|'d like| would like)|feel free to (?:ask|reach out)|"
               r"happy to help (?:further|with)|is there anything else i can help)",
               where="end"),
    MarkerRule("placeholder",
               r"\[(?:your|insert|recipient(?:'s)?|company|client(?:'s)?) [a-z][^\]\n]{0,30}\]"),
    MarkerRule("disclaimer",
               r"\b(?:it(?:'s| is) (?:always )?(?:important|best|advisable|a good idea) to "
               r"consult (?:with )?(?:a|your) (?:qualified|licensed|medical|healthcare|"
               r"financial|legal) |this (?:is not|does not constitute) (?:medical|legal|"
               r"financial) advice\b)"),
    MarkerRule("regenerate", r"\bregenerate response\b"),
)
MARKERS: tuple[str, ...] = tuple(r.pattern for r in MARKER_RULES)


def marker_hits(text: str) -> list[str]:
    """The names of the marker rules that ``text`` matches."""
    return [r.name for r in MARKER_RULES if r.search(text)]


def find_marker(text: str) -> str | None:
    """``rule: matched words`` of the first marker rule that matches ``text``, or None."""
    for r in MARKER_RULES:
        m = r.search(text)
        if m:
            return f"{r.name}: {m.group(0)}"
    return None


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


# --------------------------------------------------------------------------------------------
# Command line: score your own text with the detector a run's curation stage saved
# (mai_repro.data.ai_byte_models.score_files).



def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m mai_repro.data.ai_content",
                                description="Score text files with a run's AI-content "
                                            "detector; one JSON line per file.")
    sub = p.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("score", help="score files with the detector of RUN's curation stage")
    sc.add_argument("--run-dir", required=True, help="a run directory (e.g. runs/laptop)")
    sc.add_argument("files", nargs="+", metavar="FILE")
    args = p.parse_args(argv)
    from mai_repro.data.ai_byte_models import score_files

    try:
        for record in score_files(args.run_dir, args.files):
            print(json.dumps(record))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
