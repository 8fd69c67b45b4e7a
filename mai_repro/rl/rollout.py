"""Rollouts: groups of completions sampled by the KV-cached generator, graded and laid out
for the learner.

A rollout records, besides its tokens, what the learner needs to reproduce the inference
side exactly: the log-prob of each sampled token under the distribution it was drawn from
(temperature and top-p applied; pi_old of the GRPO ratio), the nucleus it was drawn from
(top-p masking) and the experts each token was routed to (routing replay).

The answer formats (:mod:`mai_repro.rl.tasks`): with ``answer_line`` the prompt ends with
``Answer:``, so the completion's first line completes the answer line ``Answer: <integer>``; a
completion ends at its first newline (or the document boundary token), or at the length cap.
With ``worked`` the completion may write lines of working first; it ends at the newline after
its answer line or at the document boundary (:func:`cut_worked`), and the generator stops as
soon as every row has ended. Either way the graded text leaves the boundary token out
(:func:`mai_repro.rl.tasks.grade`), while the learner sees it: ending is an action too.

Prompts in one generator call must share a length (no padding inside the model), so
problems are bucketed by prompt length and each bucket is sampled in one call; a prompt goes
through the model once for its whole group (the generator shares its cache).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch

from mai_repro.model.generation import generate
from mai_repro.rl import tasks


@dataclass
class Group:
    """The completions of one problem (rows of the same prompt)."""

    task: tasks.Task
    prompt: list[int]
    completions: list[list[int]] = field(default_factory=list)  # cut at the stop token
    logprobs: list[torch.Tensor] = field(default_factory=list)  # (n_i,) inference log-probs
    nucleus: list[torch.Tensor | None] = field(default_factory=list)  # (n_i, V) bool
    routing: list[list[torch.Tensor]] = field(default_factory=list)  # per MoE layer (T_i, k)
    texts: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    version: int = 0  # inference weights the group was sampled with

    @property
    def pass_rate(self) -> float:
        return sum(self.correct) / max(1, len(self.correct))

    def __len__(self) -> int:
        return len(self.completions)


def stop_ids(tok) -> set[int]:
    """Tokens that end a completion: any token whose text holds a newline, and EOT."""
    out = {tok.eot_id}
    for i in range(tok.vocab_size):
        if b"\n" in tok.token_bytes(i):
            out.add(i)
    return out


def cut_at_stop(ids: list[int], stops: set[int]) -> int:
    """Length of the completion: up to and including the first stop token, else all."""
    for j, t in enumerate(ids):
        if t in stops:
            return j + 1
    return len(ids)


def _worked_ends(ids: list[int], tok, stops: set[int]) -> bool:
    """Whether a ``worked`` completion ends with its last token: the document boundary, or a
    newline token that completes an answer line."""
    last = ids[-1]
    return last == tok.eot_id or (last in stops and tasks.answer_line_done(tok.decode(ids)))


def cut_worked(ids: list[int], tok, stops: set[int]) -> tuple[int, bool]:
    """(length, ended by itself) of a ``worked`` completion: up to and including its first
    ending token (:func:`_worked_ends`); else all of it (cut by the length cap)."""
    for j in range(len(ids)):
        if _worked_ends(ids[: j + 1], tok, stops):
            return j + 1, True
    return len(ids), False


def completion_text(ids: list[int], tok) -> str:
    """The graded text of a cut completion: its tokens without the document boundary."""
    return tok.decode(ids[:-1] if ids and ids[-1] == tok.eot_id else ids)


def worked_rows_done(tok, stops: set[int], prompt_len: int):
    """For :func:`mai_repro.model.generation.generate`'s ``done``: which rows of ``tokens``
    (prompt and completion so far, one call per sampled token) have ended as
    :func:`cut_worked` would cut them. Only the newest token of an unfinished row is read."""
    finished: torch.Tensor | None = None

    def done(tokens: torch.Tensor) -> torch.Tensor:
        nonlocal finished
        if finished is None:
            finished = torch.zeros(tokens.shape[0], dtype=torch.bool)
        for r in (~finished).nonzero().flatten().tolist():
            finished[r] = _worked_ends(tokens[r, prompt_len:].tolist(), tok, stops)
        return finished
    return done


@torch.no_grad()
def sample_groups(model: torch.nn.Module, tok, problems: list[tasks.Task], n: int,
                  max_new_tokens: int, *, temperature: float = 1.0, top_p: float = 0.97,
                  generator: torch.Generator | None = None, stops: set[int] | None = None,
                  groups: list[Group] | None = None, keep_extras: bool = True,
                  version: int = 0, sampler: str = "vocabulary") -> list[Group]:
    """``n`` more completions for each problem (appended to ``groups`` when given).

    With ``keep_extras`` the nucleus masks and routing are kept for the learner; evaluation
    passes False and keeps only what grading needs. ``sampler``: see
    :func:`mai_repro.model.generation.generate`.
    """
    device = next(model.parameters()).device
    stops = stops if stops is not None else stop_ids(tok)
    if groups is None:
        groups = [Group(t, tok.encode(tasks.rl_prompt(t)), version=version) for t in problems]
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_len[len(g.prompt)].append(i)
    for length, idx in sorted(by_len.items()):
        prompt = torch.tensor([groups[i].prompt for i in idx], dtype=torch.long,
                              device=device)
        worked = all(groups[i].task.fmt == "worked" for i in idx)
        # worked completions end at different lengths: stop once every row has ended (the
        # answer-line climb keeps its fixed-length calls, hence its recorded random numbers)
        gen = generate(model, prompt, max_new_tokens, temperature=temperature, top_p=top_p,
                       generator=generator, return_nucleus=keep_extras,
                       return_routing=keep_extras, num_samples=n,
                       done=worked_rows_done(tok, stops, length) if worked else None,
                       sampler=sampler)
        comp = gen.completion.cpu()
        for row in range(comp.shape[0]):
            g = groups[idx[row // n]]
            ids = comp[row].tolist()
            if g.task.fmt == "worked":
                m, finished = cut_worked(ids, tok, stops)
            else:
                m, finished = cut_at_stop(ids, stops), True
            text = completion_text(ids[:m], tok)
            g.completions.append(ids[:m])
            g.logprobs.append(gen.logprobs[row, :m].float().cpu())
            g.texts.append(text)
            g.correct.append(tasks.grade(text, g.task, finished))
            if keep_extras:
                g.nucleus.append(gen.nucleus[row, :m].cpu() if gen.nucleus is not None
                                 else None)
                g.routing.append([r[row, :length + m].cpu() for r in gen.routing])
    return groups


@dataclass
class LearnerBatch:
    """Rollouts laid out for one learner forward: right-padded, completion tokens masked in.

    ``inputs`` (B, L) are fed to the model; the completion's token j of row i is predicted at
    position ``start[i] + j``; ``actions``, ``old_logp``, ``mask`` and ``nucleus`` are
    (B, n) / (B, n, V) over completion positions.
    """

    inputs: torch.Tensor
    start: torch.Tensor  # (B,) position predicting the first completion token
    actions: torch.Tensor
    old_logp: torch.Tensor
    mask: torch.Tensor
    nucleus: torch.Tensor | None
    routing: list[torch.Tensor] | None  # per MoE layer (B, L, k)
    advantages: torch.Tensor  # (B,), or (B, n) per token (rl/credit.py)
    group_of: torch.Tensor  # (B,) index of the row's group
    version: int = 0

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def rows(self, sel: slice) -> LearnerBatch:
        """A micro-batch of rows (for gradient accumulation)."""
        return LearnerBatch(self.inputs[sel], self.start[sel], self.actions[sel],
                            self.old_logp[sel], self.mask[sel],
                            None if self.nucleus is None else self.nucleus[sel],
                            None if self.routing is None else [r[sel] for r in self.routing],
                            self.advantages[sel], self.group_of[sel], self.version)


def learner_batch(groups: list[Group], advantages: torch.Tensor, vocab_size: int,
                  pad_id: int = 0) -> LearnerBatch:
    """Lay out every completion of ``groups`` (advantages in the same order) for the learner."""
    rows = [(gi, j) for gi, g in enumerate(groups) for j in range(len(g))]
    if len(rows) != advantages.shape[0]:
        raise ValueError(f"{advantages.shape[0]} advantages for {len(rows)} completions")
    seqs = [groups[gi].prompt + groups[gi].completions[j] for gi, j in rows]
    L = max(len(s) for s in seqs) - 1
    n = max(max(1, len(groups[gi].completions[j])) for gi, j in rows)
    B = len(rows)
    inputs = torch.full((B, L), pad_id, dtype=torch.long)
    actions = torch.zeros(B, n, dtype=torch.long)
    old = torch.zeros(B, n)
    mask = torch.zeros(B, n, dtype=torch.bool)
    have_nucleus = all(x is not None for g in groups for x in g.nucleus) and \
        all(len(g.nucleus) == len(g) for g in groups)
    nucleus = torch.ones(B, n, vocab_size, dtype=torch.bool) if have_nucleus else None
    have_routing = all(len(g.routing) == len(g) and g.routing and g.routing[0] for g in groups)
    routing = None
    if have_routing:
        n_layers = len(groups[0].routing[0])
        k = groups[0].routing[0][0].shape[-1]
        # padded positions replay distinct experts 0..k-1: they are masked out anyway
        routing = [torch.arange(k).expand(B, L, k).clone() for _ in range(n_layers)]
    start = torch.zeros(B, dtype=torch.long)
    for b, ((gi, j), s) in enumerate(zip(rows, seqs, strict=True)):
        g = groups[gi]
        c = g.completions[j]
        inputs[b, :len(s) - 1] = torch.tensor(s[:-1])
        start[b] = len(g.prompt) - 1
        actions[b, :len(c)] = torch.tensor(c, dtype=torch.long)
        old[b, :len(c)] = g.logprobs[j]
        mask[b, :len(c)] = True
        if nucleus is not None:
            nucleus[b, :len(c)] = g.nucleus[j]
        if routing is not None:
            for layer, r in enumerate(g.routing[j]):
                t = min(len(s) - 1, r.shape[0])
                routing[layer][b, :t] = r[:t]
    group_of = torch.tensor([gi for gi, _ in rows])
    return LearnerBatch(inputs, start, actions, old, mask, nucleus, routing,
                        advantages.float(), group_of, min((g.version for g in groups),
                                                          default=0))


def completion_logits(model: torch.nn.Module, batch: LearnerBatch, replay: bool = True,
                      head_at_completions: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The learner's logits (B, n, V) at the completion positions, and the MoE aux loss.
    ``head_at_completions``: the model's head runs at those positions only (the same logits
    bit for bit, but the gradient's sums in another order: ``grpo.vocab_work`` needed)."""
    n = batch.actions.shape[1]
    pos = (batch.start[:, None] + torch.arange(n)[None, :]).clamp_max(batch.inputs.shape[1] - 1)
    routing = batch.routing if replay else None
    if head_at_completions:
        out = model(batch.inputs, routing=routing, at=pos.to(batch.inputs.device))
        return out.logits, out.aux_loss
    out = model(batch.inputs, routing=routing)
    V = out.logits.shape[-1]
    logits = out.logits.gather(1, pos.to(out.logits.device)[..., None].expand(-1, -1, V))
    return logits, out.aux_loss
