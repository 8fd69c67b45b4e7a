"""The decomposed reward and the problem-sampling rules of the RL climb.

R = R_task + w_lang * R_lang - w_len * R_len

- R_task: the binary task outcome (1 correct, 0 not);
- R_lang: minus the share of letters outside the target script (reasoning in another
  language costs up to 1);
- R_len: the completion's length as a share of the cap, times the problem's pass rate:
  easy problems (high pass rate) pay for length, hard ones may explore at little cost.
  w_len (0.25 in the report) is dropped in the last curriculum stage.

Every filter (early exit, pass-rate window) uses the binary task outcome only, never R.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass


def script_of(ch: str) -> str | None:
    """The script of a letter by its Unicode name (LATIN, CYRILLIC, GREEK, CJK...), else None."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ")[0] if name else None


def language_reward(text: str, target_script: str = "LATIN") -> float:
    """-(share of letters outside the target script); 0 for text with no letters."""
    scripts = [s for s in map(script_of, text) if s is not None]
    if not scripts:
        return 0.0
    return -sum(s != target_script for s in scripts) / len(scripts)


def length_penalty(n_tokens: int, cap: int, pass_rate: float) -> float:
    if cap <= 0:
        raise ValueError(f"cap must be positive, got {cap}")
    return pass_rate * min(1.0, n_tokens / cap)


@dataclass(frozen=True)
class RewardWeights:
    w_lang: float = 0.1
    w_len: float = 0.25


def total_reward(correct: bool, text: str, n_tokens: int, cap: int, pass_rate: float,
                 w: RewardWeights, target_script: str = "LATIN") -> tuple[float, dict]:
    """R and its parts."""
    parts = {"task": float(correct), "lang": language_reward(text, target_script),
             "len": length_penalty(n_tokens, cap, pass_rate)}
    return parts["task"] + w.w_lang * parts["lang"] - w.w_len * parts["len"], parts


def early_exit_keep(outcomes: list[bool], lo: float = 0.05, hi: float = 0.8) -> bool:
    """After the first G_early rollouts: keep drawing only if the pass rate is in [lo, hi]."""
    rate = sum(outcomes) / len(outcomes)
    return lo <= rate <= hi


def pass_rate_keep(outcomes: list[bool], lo: float = 0.1, hi: float = 0.8) -> bool:
    """The regular filter: groups that are all right or all wrong teach nothing."""
    rate = sum(outcomes) / len(outcomes)
    return lo <= rate <= hi


def curriculum(stage: int, n_stages: int, base_cap: int, w_len: float = 0.25
               ) -> tuple[int, float]:
    """(rollout length cap, w_len) of a stage: the cap doubles each stage; w_len is dropped in
    the last one."""
    if not 0 <= stage < n_stages:
        raise ValueError(f"stage must be in [0, {n_stages}), got {stage}")
    return base_cap * 2 ** stage, (0.0 if stage == n_stages - 1 else w_len)


def is_stale(rollout_version: int, learner_version: int, max_staleness: int = 8) -> bool:
    """Rollouts generated more than ``max_staleness`` weight updates ago are dropped."""
    return learner_version - rollout_version > max_staleness
