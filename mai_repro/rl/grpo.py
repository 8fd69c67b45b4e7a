"""The GRPO loss with the MAI-Thinking-1 report's stabilisers, in plain torch.

Per token t of a completion sampled by the inference policy pi_old:

    r_t = pi_theta(a_t) / pi_old(a_t)
    surrogate_t = min(r'_t A, clip(r'_t, 1 - eps, (1 - eps)^-1 + k) A),  r'_t = clip(r_t, r_min, r_max)

- **Group-relative advantages**: A = R - mean(R over the problem's group), optionally divided
  by the group's standard deviation (floored, so near-constant groups stay finite).
- **Adaptive entropy control**: no entropy bonus; the upper clip bound is widened by k, and k
  follows an integral controller toward a target entropy H*:
  ``k <- clip(k + delta * sign(H* - H), 0, k_max)``, once per optimizer step.
- **Outer ratio clip**: ``r'`` clips the ratio on *all* branches, so the unclipped branch of
  the PPO minimum (large r with a negative advantage) cannot blow up the gradient.
- **Top-p masking**: the learner sets logits outside the inference nucleus to -inf, so both
  sides normalise over the same support.
- The loss is token-level: summed over every completion token of the batch and divided by
  the number of tokens.
- **KL to a reference policy** (optional, off in the report's recipe): ``kl_coef`` times the
  token mean of Schulman's k3 estimator of KL(pi_theta || pi_ref) on the sampled tokens,
  ``exp(d) - d - 1`` with ``d = log pi_ref(a_t) - log pi_theta(a_t)`` (:func:`kl_k3`).
- **Entropy penalty** (optional, not in the report's recipe, whose controller only widens the
  clip): ``entropy_penalty`` times the token mean of the learner's (nucleus-masked) entropy,
  with its gradient: it sharpens the distribution the evaluation samples at temperature 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def group_advantages(rewards: torch.Tensor, group_size: int, scale_std: bool = False,
                     std_floor: float = 1e-6) -> torch.Tensor:
    """(N,) rewards laid out group by group -> (N,) advantages, finite for constant groups.

    A group whose spread is at the level of float rounding is constant: its advantages are
    exactly 0 (no signal), scaled or not. The level is relative to the rewards' scale: the
    mean of G float32 rewards r is off by up to about G * eps * |r|, which an absolute floor
    alone (``std_floor``) would blow up into advantages of order 1 for a constant 0.3 group.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    g = rewards.float().view(-1, group_size)
    adv = g - g.mean(dim=1, keepdim=True)
    std = g.std(dim=1, unbiased=False, keepdim=True)
    rounding = 4 * group_size * torch.finfo(g.dtype).eps * g.abs().amax(dim=1, keepdim=True)
    constant = std <= rounding
    if scale_std:
        adv = adv / std.clamp_min(std_floor)
    return adv.masked_fill(constant, 0.0).view(-1)


def weight_negatives(advantages: torch.Tensor, weight: float) -> torch.Tensor:
    """Negative advantages times ``weight`` (1: unchanged). A wrong worked answer is usually
    right but for one digit: its negative advantage pushes down every token after that
    digit too, the correct steps that carry the wrong digit forward included. A weight
    below 1 keeps the push toward the group's better answers and softens the push away
    from its worse ones (Zhu et al., 2025, weigh the two sides of the same split)."""
    if weight == 1.0:
        return advantages
    return torch.where(advantages < 0, advantages * weight, advantages)


def apply_nucleus(logits: torch.Tensor, nucleus: torch.Tensor | None) -> torch.Tensor:
    """Top-p masking: logits outside the inference nucleus become -inf."""
    if nucleus is None:
        return logits
    return logits.masked_fill(~nucleus, float("-inf"))


def action_logp(logits: torch.Tensor, actions: torch.Tensor,
                nucleus: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) log-probs of ``actions`` under ``logits`` (B, T, V), normalised over the nucleus
    when one is given (what the learner's side of the loss does)."""
    logp_all = F.log_softmax(apply_nucleus(logits.float(), nucleus), dim=-1)
    return logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(pi || pi_ref), per sampled token a ~ pi:
    ``exp(d) - d - 1`` with ``d = log pi_ref(a) - log pi(a)``. Non-negative, zero where the
    log-probs agree, and unbiased: E_pi[exp(d)] = 1 and E_pi[-d] = KL(pi || pi_ref)."""
    d = ref_logp - logp
    return torch.expm1(d) - d


@dataclass(frozen=True)
class GRPOConfig:
    eps: float = 0.2
    r_min: float = 0.0  # outer clip; 0 = no lower outer clip
    r_max: float = 4.0
    kl_coef: float = 0.0  # weight of the KL to the reference policy (needs ref_logp)
    entropy_penalty: float = 0.0  # weight of the token-mean entropy added to the loss
    # with top-p masking, the masked distribution computed over the nucleus's tokens only
    # (nucleus_logits): the same values and gradient up to the order of the sums
    nucleus_only: bool = False


@dataclass
class GRPOOutput:
    loss: torch.Tensor
    entropy: float  # mean token entropy of the learner's (masked) distribution
    clip_low_frac: float  # A < 0 and r < 1 - eps: clipped, no gradient
    clip_high_frac: float  # A > 0 and r > (1 - eps)^-1 + k: clipped, no gradient
    outer_clip_frac: float  # r outside [r_min, r_max]: no gradient on any branch
    ratio_mean: float
    ratio_min: float = 1.0
    ratio_max: float = 1.0
    neg_high_frac: float = 0.0  # A < 0 and r above the upper bound: PPO's unclipped branch
    nucleus_mass: float = 1.0  # learner's unmasked probability mass inside the nucleus
    logp: torch.Tensor | None = None  # (B, T) learner log-probs of the actions, detached
    #                                   (0 at the padding)
    n_tokens: int = 0
    kl: float | None = None  # token mean of the k3 KL estimate, when ref_logp is given
    # where the outer clip changes the gradient: A < 0 and r > r_max (PPO's unclipped branch
    # cut), or A > 0 and r < r_min; elsewhere outside [r_min, r_max] the inner clip has
    # already removed the gradient
    outer_bind_frac: float = 0.0


def nucleus_logits(logits: torch.Tensor, nucleus: torch.Tensor, sel: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (N, K), tokens (N, K)): the logits (B, T, V) of each selected position's
    nucleus tokens (``nucleus`` (B, T, V) bool, ``sel`` (B, T) bool; N = sel.sum(), K the
    largest nucleus), -inf where a row's nucleus is smaller than K.

    Top-p masking leaves the learner's distribution on the nucleus alone, usually a few
    tokens of a 4,096-token vocabulary: its log-softmax, entropy and their gradients need
    only these K columns, and the gradient reaches the (B, T, V) logits through one gather.
    The vocabulary-wide path sent every position through about a dozen (N, V) passes
    (masking, log-softmax, entropy and their backward), over half of a worked-format GRPO
    step on CPU (docs/performance.md)."""
    nuc = nucleus & sel.unsqueeze(-1)
    where = nuc.nonzero()  # (M, 3) rows in order: b, t, token
    flat = where[:, 0] * sel.shape[1] + where[:, 1]
    counts = torch.bincount(flat, minlength=sel.numel())
    K = max(int(counts.max()) if counts.numel() else 1, 1)
    starts = counts.cumsum(0) - counts
    col = torch.arange(flat.numel(), device=flat.device) - starts[flat]
    tokens = torch.zeros(*sel.shape, K, dtype=torch.long, device=logits.device)
    tokens[where[:, 0], where[:, 1], col] = where[:, 2]
    valid = torch.zeros(*sel.shape, K, dtype=torch.bool, device=logits.device)
    valid[where[:, 0], where[:, 1], col] = True
    values = logits.gather(-1, tokens)[sel].float().masked_fill(~valid[sel], float("-inf"))
    return values, tokens[sel]


def grpo_loss(logits: torch.Tensor, actions: torch.Tensor, old_logp: torch.Tensor,
              advantages: torch.Tensor, mask: torch.Tensor, cfg: GRPOConfig, k: float = 0.0,
              nucleus: torch.Tensor | None = None, ref_logp: torch.Tensor | None = None,
              top_p_mask: bool = True) -> GRPOOutput:
    """Token-level clipped policy-gradient loss.

    Shapes: logits (B, T, V) of the learner at the completion positions; actions, old_logp,
    mask (B, T); advantages (B,) per sequence or (B, T) per token; nucleus (B, T, V) bool or
    None. With ``top_p_mask=False`` (an ablation) the nucleus only feeds the
    ``nucleus_mass`` statistic.
    ``ref_logp`` (B, T): the reference policy's log-probs of the actions, normalised like the
    learner's (same temperature, same nucleus); with ``cfg.kl_coef`` > 0 the loss adds
    ``kl_coef`` times the token mean of :func:`kl_k3`, with the same mask and normaliser as
    the policy term. With ``cfg.entropy_penalty`` > 0 the loss adds that weight times the
    token mean of the learner's entropy (the ``entropy`` statistic, with its gradient).
    """
    # Only the completion tokens (``mask``) enter the vocabulary-sized work: the rows are
    # right-padded to the longest completion, which in the worked format is a third of the
    # positions. The gradient at the kept positions is the same, bit for bit, as when the
    # padding went through with weight 0 (tests/test_grpo.py); only the statistics' sums run
    # in another order.
    sel = mask.bool()
    B, T = sel.shape
    act = actions[sel].unsqueeze(-1)  # (N, 1)
    compact = cfg.nucleus_only and top_p_mask and nucleus is not None
    if compact:  # the nucleus's columns only; act becomes the sampled token's column
        masked, columns = nucleus_logits(logits, nucleus, sel)
        act = (columns == act).to(torch.uint8).argmax(-1, keepdim=True)
        raw = nuc = None
    else:
        raw = logits[sel].float()  # (N, V)
        nuc = None if nucleus is None else nucleus[sel]
        masked = apply_nucleus(raw, nuc if top_p_mask else None)
    # not train.loop.token_nll: the whole (nucleus-masked) distribution is needed for the
    # entropy; on the vocabulary-wide path the gathered log-probs equal -token_nll of the same
    # logits bit for bit
    logp_all = F.log_softmax(masked, dim=-1)
    logp = logp_all.gather(-1, act).squeeze(-1)  # (N,)
    n = mask.float().sum().clamp_min(1.0)
    ratio = torch.exp(logp - old_logp[sel])
    outer = ratio.clamp(cfg.r_min, cfg.r_max)
    lo, hi = 1.0 - cfg.eps, 1.0 / (1.0 - cfg.eps) + k
    A = advantages.float()  # (B,) per sequence or (B, T) per token (rl/credit.py)
    A = (A if A.dim() == 2 else A.unsqueeze(-1).expand(B, T))[sel]
    surrogate = torch.minimum(outer * A, outer.clamp(lo, hi) * A)
    loss = -surrogate.sum() / n
    kl = None
    if ref_logp is not None:
        kl = kl_k3(logp, ref_logp[sel]).sum() / n
        if cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * kl
    # p log p is 0 where p is 0: outside the nucleus log p is -inf, read as 0 so that neither
    # the value nor the gradient meets 0 * -inf; a graph only when the penalty needs one
    with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.entropy_penalty > 0):
        finite = logp_all.masked_fill(torch.isinf(logp_all), 0.0)
        entropy = -(logp_all.exp() * finite).sum(-1).sum() / n
    if cfg.entropy_penalty > 0:
        loss = loss + cfg.entropy_penalty * entropy
    with torch.no_grad():
        frac = lambda b: float(b.float().sum() / n)  # noqa: E731
        r = ratio.detach()
        mass = 1.0
        if nucleus is not None:
            # the nucleus's share of the unmasked distribution: exp(lse(nucleus) - lse(all))
            if top_p_mask:  # lse(nucleus) read off the sampled token (always in the nucleus)
                lse_nuc = masked.gather(-1, act).squeeze(-1) - logp
            else:
                lse_nuc = torch.logsumexp(raw.masked_fill(~nuc, float("-inf")), -1)
            lse_all = torch.logsumexp(logits.detach().float(), -1)[sel] if compact else \
                torch.logsumexp(raw, -1)
            mass = float((lse_nuc - lse_all).exp().sum() / n)
        logp_bt = torch.zeros(B, T, dtype=logp.dtype, device=logp.device)
        logp_bt[sel] = logp.detach()
    return GRPOOutput(loss, float(entropy.detach()), frac((ratio < lo) & (A < 0)),
                      frac((ratio > hi) & (A > 0)),
                      frac((ratio < cfg.r_min) | (ratio > cfg.r_max)),
                      float(r.sum() / n), float(r.min()) if r.numel() else 1.0,
                      float(r.max()) if r.numel() else 1.0,
                      frac((ratio > hi) & (A < 0)), mass, logp_bt, int(sel.sum()),
                      None if kl is None else float(kl.detach()),
                      frac(((ratio > cfg.r_max) & (A < 0)) | ((ratio < cfg.r_min) & (A > 0))))


@dataclass
class EntropyController:
    """k <- clip(k + delta * sign(H* - H), 0, k_max), once per optimizer step."""

    target: float
    delta: float = 0.01
    k_max: float = 1.0
    k: float = 0.0

    def update(self, entropy: float) -> float:
        diff = self.target - entropy
        step = self.delta * (1 if diff > 0 else -1 if diff < 0 else 0)
        self.k = min(max(self.k + step, 0.0), self.k_max)
        return self.k

    def state_dict(self) -> dict:
        return {"k": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.k = float(state["k"])
