"""Sampling with a KV cache: temperature, top-p, per-token log-probs, nucleus masks, routing.

The RL learner needs three things from inference besides the tokens: the log-prob of each
sampled token under the distribution it was drawn from (the old policy of the GRPO ratio),
the nucleus each token was drawn from (top-p masking on the learner side), and the experts
each token was routed to (routing replay). ``generate`` returns all three on request.

Prompts in one call share a length (RL samples a group of completions per prompt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mai_repro.model.attention import KVCache

_NUCLEUS_FIRST = 64  # candidates looked at before a full sort (nucleus_mask)


def _nucleus_sorted(probs: torch.Tensor, top_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, keep): the tokens of each row by falling probability (the top 64 only when
    every row's nucleus lies among them, else the whole vocabulary sorted) and which of them
    are in the row's nucleus, the smallest set whose mass reaches ``top_p`` (the top token is
    always kept). The one definition of the nucleus, shared by the mask and the sampler."""
    # The nucleus is usually a few tokens: look among the top 64 first, and sort the whole
    # vocabulary only when some row's top 64 hold less than top_p (same nucleus either way;
    # sorting 4,096 entries per row was a third of a worked-format rollout's time).
    found = False
    if _NUCLEUS_FIRST < probs.shape[-1]:
        sorted_p, order = probs.topk(_NUCLEUS_FIRST, dim=-1)
        cum = sorted_p.cumsum(-1)
        found = bool((cum[..., -1] >= top_p).all())
    if not found:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        cum = sorted_p.cumsum(-1)
    keep = (cum - sorted_p) < top_p  # mass strictly above each token
    keep[..., 0] = True
    return order, keep


def nucleus_mask(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """(..., V) bool: the smallest set of highest-probability tokens whose mass reaches
    ``top_p`` (the top token is always kept). One implementation, shared with the learner."""
    if top_p >= 1.0:
        return torch.ones_like(logits, dtype=torch.bool)
    order, keep = _nucleus_sorted(logits.float().softmax(-1), top_p)
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, keep)


def sampling_logprobs(logits: torch.Tensor, temperature: float, top_p: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of the distribution actually sampled from, nucleus mask)."""
    scaled = logits.float() / max(temperature, 1e-8)
    mask = nucleus_mask(scaled, top_p)
    return scaled.masked_fill(~mask, float("-inf")).log_softmax(-1), mask


SAMPLERS = ("vocabulary", "nucleus")


def draw_within_nucleus(logits: torch.Tensor, temperature: float, top_p: float,
                        generator: torch.Generator | None, with_mask: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(tokens (B,), their log-probs (B,), nucleus mask (B, V) or None): one token per row of
    ``logits`` (B, V) from the same distribution as ``sampling_logprobs`` gives, drawn among
    the nucleus's candidates only.

    ``torch.multinomial`` over the whole masked vocabulary draws a random number for each of
    its 4,096 entries and was over a third of a worked-format rollout's time on CPU
    (docs/performance.md); here each row draws one uniform number and takes the first
    candidate whose cumulative probability passes it (inverse-CDF sampling over the few
    nucleus tokens, in order of falling probability). Same distribution, other random
    numbers: hence a sampler of its own (``generate(sampler="nucleus")``), so that runs
    recorded with the vocabulary-wide draw keep their numbers."""
    scaled = logits.float() / max(temperature, 1e-8)
    if top_p < 1.0:
        order, keep = _nucleus_sorted(scaled.softmax(-1), top_p)
    else:  # no nucleus: every token is a candidate
        order = scaled.argsort(-1, descending=True)
        keep = torch.ones_like(order, dtype=torch.bool)
    logq = scaled.gather(-1, order).masked_fill(~keep, float("-inf")).log_softmax(-1)
    cum = logq.exp().cumsum(-1)
    u = torch.rand(cum.shape[0], 1, generator=generator, device=cum.device) * cum[:, -1:]
    # the first kept candidate whose cumulative probability exceeds u (never past the last
    # kept one: cum is flat after it, and u < its value)
    j = (cum <= u).sum(-1, keepdim=True).clamp_(max=keep.sum(-1, keepdim=True) - 1)
    nxt = order.gather(-1, j).squeeze(-1)
    mask = torch.zeros_like(scaled, dtype=torch.bool).scatter(-1, order, keep) \
        if with_mask else None
    return nxt, logq.gather(-1, j).squeeze(-1), mask


@dataclass
class Generation:
    tokens: torch.Tensor  # (B, T0 + n) prompt and completion
    logprobs: torch.Tensor  # (B, n) of each sampled token
    nucleus: torch.Tensor | None = None  # (B, n, V) bool
    routing: list[torch.Tensor] = field(default_factory=list)  # per MoE layer (B, T0 + n, k)
    prompt_len: int = 0

    @property
    def completion(self) -> torch.Tensor:
        return self.tokens[:, self.prompt_len:]


def _repeat_rows(cache: KVCache, n: int) -> None:
    """Each row of the cache repeated ``n`` times in place (row i -> rows i*n .. i*n + n-1)."""
    for layer in cache.layers:
        layer.repeat_rows(n)


@torch.no_grad()
def generate(model: torch.nn.Module, prompt: torch.Tensor, max_new_tokens: int,
             temperature: float = 1.0, top_p: float = 1.0,
             generator: torch.Generator | None = None, use_cache: bool = True,
             return_nucleus: bool = False, return_routing: bool = False,
             num_samples: int = 1,
             done: Callable[[torch.Tensor], torch.Tensor] | None = None,
             sampler: str = "vocabulary") -> Generation:
    """Sample ``max_new_tokens`` after ``prompt`` (B, T0); temperature 0 is greedy.

    ``num_samples`` completions per prompt (rows ``i * num_samples ...`` belong to prompt i):
    the prompt goes through the model once and its cache is shared (RL's groups). With
    ``use_cache=False`` every step recomputes the whole sequence: the reference the cached
    path is tested against. ``done(tokens)``, called after each sampled token with the (B,
    T0 + t) tokens so far, says which rows have ended; sampling stops once all have (fewer
    than ``max_new_tokens`` columns come back, and the generator has drawn fewer numbers).
    ``sampler``: "vocabulary" draws with ``torch.multinomial`` over the whole masked
    vocabulary; "nucleus" draws among the nucleus's tokens (:func:`draw_within_nucleus`):
    the same distribution, other random numbers, several times less work per token.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, not {sampler!r}")
    model.eval()
    n = num_samples
    device = prompt.device
    cache = KVCache(model.cfg, prompt.shape[0], device, next(model.parameters()).dtype) \
        if use_cache else None
    out = model(prompt if use_cache or n == 1 else prompt.repeat_interleave(n, 0), cache=cache)
    prompt = prompt.repeat_interleave(n, dim=0)
    B, T0 = prompt.shape
    tokens = prompt
    routing = [r for r in out.routing]
    logits = out.logits[:, -1]
    if use_cache and n > 1:
        _repeat_rows(cache, n)
        routing = [r.repeat_interleave(n, dim=0) for r in routing]
        logits = logits.repeat_interleave(n, dim=0)
    logps, masks = [], []
    for step in range(max_new_tokens):
        if temperature == 0:
            logp, mask = logits.float().log_softmax(-1), None
            nxt = logits.argmax(-1)
            logps.append(logp.gather(-1, nxt[:, None]).squeeze(-1))
        elif sampler == "nucleus":
            nxt, lp, mask = draw_within_nucleus(logits, temperature, top_p, generator,
                                                with_mask=return_nucleus)
            logps.append(lp)
        else:
            logp, mask = sampling_logprobs(logits, temperature, top_p)
            nxt = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            logps.append(logp.gather(-1, nxt[:, None]).squeeze(-1))
        if return_nucleus:
            masks.append(mask if mask is not None else
                         torch.nn.functional.one_hot(nxt, logits.size(-1)).bool())
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if step == max_new_tokens - 1 or (done is not None and bool(done(tokens).all())):
            break
        out = model(nxt[:, None], cache=cache) if use_cache else model(tokens)
        logits = out.logits[:, -1]
        if return_routing:
            routing = [torch.cat([r, o[:, -1:]], dim=1) for r, o in zip(routing, out.routing,
                                                                        strict=True)]
    if return_routing and max_new_tokens > 0 and model.moe_layers:
        # the last sampled token has not been through the model yet: route it now
        last = model(tokens[:, -1:], cache=cache) if use_cache else model(tokens)
        routing = [torch.cat([r, o[:, -1:]], dim=1) for r, o in zip(routing, last.routing,
                                                                    strict=True)]
    return Generation(tokens, torch.stack(logps, 1) if logps else tokens.new_zeros(B, 0).float(),
                      torch.stack(masks, 1) if return_nucleus and masks else None,
                      routing if return_routing else [], T0)
