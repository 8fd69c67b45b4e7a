"""Token-level credit for worked completions (``grpo.credit``, rl/credit.py): a wrong answer's
negative advantage lands on the line where it departs from the program's solution."""

import dataclasses

import pytest
import torch

import mai_repro.config as C
from mai_repro.data import tokenizer as tk
from mai_repro.rl import climb, credit, rollout, tasks, worked
from mai_repro.rl.grpo import GRPOConfig, grpo_loss
from tests.test_rl_loop import tiny_model

BORROW = "Compute 95 - 48."
RIGHT = ("Subtract the digits column by column, from the right.\n"
         "Ones: 5 is less than 8, borrow 1: 15 - 8 = 7.\n"
         "Tens: 9 - 1 = 8 after the borrow; 8 - 4 = 4.\n"
         "So 95 - 48 = 47.\nAnswer: 47\n")
# the climb's commonest wrong borrow: right up to "5", then no borrow, then consistent
NO_BORROW = ("Subtract the digits column by column, from the right.\n"
             "Ones: 5 - 8 = 0.\nTens: 9 - 4 = 5.\nSo 95 - 48 = 50.\nAnswer: 50\n")


@pytest.fixture(scope="module")
def tok():
    texts = [w.text for w in worked.generate(300, difficulties=(0, 1))]
    return tk.train(texts * 2 + [RIGHT, NO_BORROW], vocab_size=400)


def task(q=BORROW, answer=47, kind="addsub"):
    return tasks.Task("x", kind, 1, f"{q} {tasks.INSTRUCTION}", answer, "worked")


def blamed(tok, text, mode, t=None):
    ids = tok.encode(text)
    w = credit.completion_weights(ids, t or task(), tok, mode)
    return "".join(tok.decode([i]) for i, x in zip(ids, w.tolist(), strict=True) if x > 0)


def test_the_reference_is_the_bootstraps_solution():
    assert "\n".join(credit.reference_lines(task())) == RIGHT.rstrip("\n")


def test_departure_spans():
    ref = RIGHT.split("\n")
    assert credit.departure(RIGHT, ref) is None
    assert credit.departure(RIGHT[:60], ref) is None  # right as far as it went
    lo, hi = credit.departure(NO_BORROW, ref)
    assert NO_BORROW[lo:hi] == "- 8 = 0.\n"  # from the first character that differs
    extra = RIGHT + "More.\n"  # a line after the answer line departs too
    lo, hi = credit.departure(extra, ref)
    assert extra[lo:hi] == "More.\n"


def test_a_wrong_completion_is_blamed_from_its_first_departure(tok):
    assert blamed(tok, NO_BORROW, "outcome") == NO_BORROW
    first = blamed(tok, NO_BORROW, "first_error")
    assert "- 8 = 0" in first and "Tens" not in first and "Ones" not in first
    rest = blamed(tok, NO_BORROW, "from_first_error")
    assert rest.startswith(first) and rest.endswith("Answer: 50\n") and "Ones" not in rest
    # stopped after right lines: the blame is on the last token (stopping there)
    cut = "Subtract the digits column by column, from the right.\n"
    ids = tok.encode(cut)
    w = credit.completion_weights(ids, task(), tok, "first_error")
    assert w.tolist() == [0.0] * (len(ids) - 1) + [1.0]


def test_token_advantages_move_only_the_negative_rows(tok):
    g = rollout.Group(task(), tok.encode(BORROW + "\n"))
    for text, ok in ((RIGHT, True), (NO_BORROW, False)):
        g.completions.append(tok.encode(text))
        g.texts.append(text)
        g.correct.append(ok)
    adv = torch.tensor([0.5, -0.5])
    n = [len(c) for c in g.completions]
    out = credit.token_advantages([g], adv, tok, "first_error")
    assert out.shape == (2, max(n))
    assert torch.all(out[0, :n[0]] == 0.5) and torch.all(out[0, n[0]:] == 0)
    blame = out[1, :n[1]]
    assert 0 < int((blame < 0).sum()) < n[1] // 3 and set(blame.tolist()) <= {0.0, -0.5}
    same = credit.token_advantages([g], adv, tok, "outcome")
    assert torch.all(same[1, :n[1]] == -0.5)
    with pytest.raises(ValueError, match="grpo.credit"):
        credit.token_advantages([g], adv, tok, "process")
    with pytest.raises(ValueError, match="3 advantages for 2"):
        credit.token_advantages([g], torch.zeros(3), tok, "first_error")


def test_a_task_without_a_program_solution_keeps_the_outcome(tok):
    """And so does an answer-line task."""
    t = task("Name a colour.", 0, kind="essay")
    assert blamed(tok, NO_BORROW, "first_error", t) == NO_BORROW
    one_line = dataclasses.replace(task(), fmt="answer_line")  # nothing to locate in a line
    assert credit.reference_lines(one_line) is None
    assert blamed(tok, NO_BORROW, "first_error", one_line) == NO_BORROW


def test_grpo_loss_takes_token_advantages():
    """(B, T) advantages equal to a row's (B,) advantage give the same loss and gradient;
    zeroing a token's advantage removes its gradient."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    actions = torch.tensor([[1, 2, 3], [0, 4, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    old = torch.log_softmax(logits.detach(), -1).gather(-1, actions[..., None])[..., 0]
    cfg = GRPOConfig(eps=0.2, r_min=0.0, r_max=10.0)
    adv = torch.tensor([0.7, -0.3])
    a = grpo_loss(logits, actions, old, adv, mask, cfg)
    (ga,) = torch.autograd.grad(a.loss, logits)
    tokens = adv[:, None].expand(2, 3).clone()
    b = grpo_loss(logits, actions, old, tokens, mask, cfg)
    (gb,) = torch.autograd.grad(b.loss, logits)
    assert torch.equal(a.loss, b.loss) and torch.equal(ga, gb)
    tokens[1, 0] = 0.0
    c = grpo_loss(logits, actions, old, tokens, mask, cfg)
    (gc,) = torch.autograd.grad(c.loss, logits)
    assert gc[1, 0].abs().sum() == 0 and gc[1, 1].abs().sum() > 0


def test_a_climb_with_first_error_credit_runs_and_differs(tok, monkeypatch):
    cfg = C.load("smoke", {"grpo": {"answer_format": "worked", "kinds": ["addsub"],
                                    "difficulties": [1], "n_train": 12, "n_eval": 3,
                                    "problems": 2, "draw": 3, "group": 4, "group_early": 2,
                                    "early_lo": 0.0, "keep_lo": 0.0, "early_hi": 1.0,
                                    "keep_hi": 1.0, "max_new_tokens": 16,
                                    "curriculum_stages": 1, "rollout_dtype": "float32"}})
    pool, held = climb.task_sets(cfg.grpo, 0)
    calls = []

    def every_other(completion, t, finished=True):  # a random model is never right
        calls.append(1)
        return len(calls) % 2 == 0

    def run(c):
        calls.clear()
        monkeypatch.setattr(tasks, "grade", every_other)
        return climb.climb(tiny_model(tok), tok, pool, held, c, steps=1, seed=0)

    seen = []

    def spy(groups, adv, tok, mode):  # a random completion departs at its first character
        # and has no newline, so every token is blamed: zero one to see the loss follow
        seen.append(mode)
        out = credit.token_advantages(groups, adv, tok, mode)
        out[adv < 0, 0] = 0.0
        return out

    monkeypatch.setattr(climb, "token_advantages", spy)
    out = run(cfg.grpo)
    assert seen == []  # outcome credit: the sequence advantages go to the learner as they are
    blame = run(dataclasses.replace(cfg.grpo, credit="first_error"))
    assert seen == ["first_error"]
    assert out.history[0]["reward"] == blame.history[0]["reward"]  # the same rollouts
    assert out.history[0]["loss"] != blame.history[0]["loss"]  # the learner got the tokens'
    with pytest.raises(ValueError, match="credit"):
        C.load("smoke", {"grpo": {"credit": "process"}})


def test_lines_credit_scores_each_line_against_the_group(tok):
    """``lines``: the lines both completions wrote alike carry nothing, the borrow line is +
    for the right completion and - for the wrong one from where it departs, and the wrong
    completion's lines after its departure carry nothing. Two wrong completions that part at
    a line still teach there (an all-wrong group is not silent)."""
    def group(*rows):
        g = rollout.Group(task(), tok.encode(BORROW + "\n"))
        for text, ok in rows:
            g.completions.append(tok.encode(text))
            g.texts.append(text)
            g.correct.append(ok)
        return g

    def carried(row, adv, g):
        ids = g.completions[row]
        return {tok.decode([i]): a for i, a in zip(ids, adv[row, :len(ids)].tolist(),
                                                    strict=True) if a != 0}

    g = group((RIGHT, True), (NO_BORROW, False))
    out = credit.token_advantages([g], torch.zeros(2), tok, "lines")
    right, wrong = carried(0, out, g), carried(1, out, g)
    # the first line and "Ones: 5" are shared: nothing; the right answer's later lines: +0.5
    assert "".join(right).startswith(" is less than") or "borrow" in "".join(right)
    assert all(a == 0.5 for a in right.values())
    assert all(a == -0.5 for a in wrong.values())
    assert "".join(wrong).strip().startswith("-") and "Tens" not in "".join(wrong)
    # two wrong completions parting at the tens line: the one right there is +, the other -
    tens_wrong = RIGHT.replace("8 - 4 = 4.", "8 - 4 = 3.").replace("47", "37")
    late = RIGHT.replace("Answer: 47", "Answer: 48")
    g = group((late, False), (tens_wrong, False))
    out = credit.token_advantages([g], torch.zeros(2), tok, "lines")
    assert out[0].max() > 0 and out[1].min() < 0
    assert out[0].min() == 0  # the lines only it reached have no one to be measured against
    assert out[:, : len(tok.encode("Subtract the digits column by column, from the right.\n"))
               ].abs().sum() == 0
    # a group whose completions are all alike carries nothing
    g = group((NO_BORROW, False), (NO_BORROW, False))
    assert credit.token_advantages([g], torch.zeros(2), tok, "lines").abs().sum() == 0


def test_program_traces_are_the_worked_solution_ending_like_a_sample(tok):
    """distill.program_traces (the supervised control of self-distillation): the program's
    worked lines after the prompt, then EOT; a verified answer; answer-line tasks left out."""
    from mai_repro.rl import distill

    t = task()
    one_line = dataclasses.replace(t, id="y", fmt="answer_line")
    [tr] = distill.program_traces(tok, [one_line, t])
    assert tr.task is t and tr.source == "program"
    assert tr.prompt == tuple(tok.encode(tasks.rl_prompt(t)))
    assert tr.completion[-1] == tok.eot_id
    text = tok.decode(list(tr.completion[:-1]))
    assert text == "\n".join(credit.reference_lines(t)) and text.startswith("Subtract")
    assert tasks.is_correct(text, t)
