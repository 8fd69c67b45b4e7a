"""The ``worked`` answer format of the RL tasks (issue 22): working lines before the answer
line, where a completion ends, how it is graded, and that length then matters."""

import dataclasses

import pytest
import torch

import mai_repro.config as C
from mai_repro.data import tokenizer as tk
from mai_repro.model.generation import generate
from mai_repro.rl import climb, rewards, rollout, tasks, worked
from tests.test_rl_loop import tiny_model


@pytest.fixture(scope="module")
def tok():
    texts = [w.text for w in worked.generate(300, difficulties=(0, 1))]
    return tk.train(texts * 2, vocab_size=400)


def task(answer=82, fmt="worked"):
    return tasks.Task("x", "arithmetic", 1, f"Compute 67 + 15. {tasks.INSTRUCTION}", answer, fmt)


def test_worked_prompt_and_grading():
    t = task()
    assert tasks.rl_prompt(t) == "Compute 67 + 15.\n"
    assert tasks.answer_prompt(t).endswith("\nAnswer:")
    good = "Ones: 7 + 5 = 12. Write 2, carry 1.\nTens: 6 + 1 + 1 = 8.\nAnswer: 82\n"
    assert tasks.grade(good, t) and tasks.grade("Answer: 82", t)
    assert not tasks.grade(good, t, finished=False)  # cut by the cap: "Answer: 8" of 82?
    assert not tasks.grade("Answer: 8", t) and not tasks.grade("67 + 15 = 82.", t)
    assert not tasks.grade("Answer: 82\nmore", t)  # the answer line must be the last line
    # the answer-line format is unchanged: its first line completes "Answer:"
    old = task(fmt="answer_line")
    assert tasks.rl_prompt(old).endswith("\nAnswer:") and tasks.grade(" 82", old)
    assert not tasks.grade(good, old)
    with pytest.raises(ValueError, match="answer format"):
        tasks.generate(2, fmt="essay")


def test_answer_line_done():
    assert not tasks.answer_line_done("7 + 5 = 12.\nAnswer: 12")  # the line is not finished
    assert tasks.answer_line_done("7 + 5 = 12.\nAnswer: 12\n")
    assert not tasks.answer_line_done("The Answer: is\n")  # it must start the line


def test_cut_worked_ends_after_the_answer_line_or_the_boundary(tok):
    stops = rollout.stop_ids(tok)
    ids = tok.encode("7 + 5 = 12.\nAnswer: 12\nCompute 1 + 1.\n")
    n, finished = rollout.cut_worked(ids, tok, stops)
    assert finished and tok.decode(ids[:n]).rstrip(" ") == "7 + 5 = 12.\nAnswer: 12\n"
    ids = tok.encode("7 + 5 = 12.\nAnswer: 12") + [tok.eot_id] + tok.encode("Compute")
    n, finished = rollout.cut_worked(ids, tok, stops)
    assert finished and ids[n - 1] == tok.eot_id
    # the learner sees the boundary token; the graded text leaves it out
    assert rollout.completion_text(ids[:n], tok) == "7 + 5 = 12.\nAnswer: 12"
    ids = tok.encode("7 + 5 = 12.\nAns")
    assert rollout.cut_worked(ids, tok, stops) == (len(ids), False)


def test_an_answer_ending_the_document_is_graded_without_the_boundary(tok):
    """``Answer: 7`` followed by the end-of-text token is an answer (the token used to be
    decoded into the graded text, so such completions were marked wrong)."""
    t = tasks.Task("x", "arithmetic", 0, "Compute 3 + 4.", 7)
    ids = tok.encode(" 7") + [tok.eot_id]
    n = rollout.cut_at_stop(ids, rollout.stop_ids(tok))
    assert n == len(ids) and tasks.grade(rollout.completion_text(ids[:n], tok), t)


def test_generation_stops_once_every_row_has_ended(tok):
    model = tiny_model(tok)
    prompt = torch.tensor([tok.encode("Compute 3 + 4.\n")])
    kw = dict(temperature=1.0, top_p=1.0, num_samples=3, return_nucleus=True,
              return_routing=True)
    full = generate(model, prompt, 12, generator=torch.Generator().manual_seed(0), **kw)
    calls = []

    def done(tokens):  # every row ends after 5 tokens
        calls.append(tokens.shape[1])
        return torch.full((tokens.shape[0],), tokens.shape[1] - prompt.shape[1] >= 5)

    short = generate(model, prompt, 12, generator=torch.Generator().manual_seed(0), done=done,
                     **kw)
    assert short.completion.shape[1] == 5 and calls[-1] == prompt.shape[1] + 5
    # the same tokens, log-probs, nucleus and routing as the first five of the full call
    assert torch.equal(short.completion, full.completion[:, :5])
    torch.testing.assert_close(short.logprobs, full.logprobs[:, :5])
    assert torch.equal(short.nucleus, full.nucleus[:, :5])
    L = prompt.shape[1] + 5
    assert all(torch.equal(a, b[:, :L]) for a, b in zip(short.routing, full.routing,
                                                        strict=True))


def test_worked_rows_done_tracks_each_row(tok):
    stops = rollout.stop_ids(tok)
    p = tok.encode("Q\n")
    done = rollout.worked_rows_done(tok, stops, len(p))
    rows = [p + tok.encode("Answer: 5\n"), p + tok.encode("3 + 2 = 5.\n"),
            p + tok.encode("x") + [tok.eot_id]]
    width = max(map(len, rows))
    state = None
    for t in range(len(p) + 1, width + 1):  # feed the rows token by token, as generate does
        batch = torch.tensor([(r + [tok.pad_id] * width)[:t] for r in rows])
        state = done(batch)
    assert state.tolist() == [True, False, True]


def test_worked_tasks_and_pool_selection_in_the_config():
    c = C.load("smoke", {"grpo": {"answer_format": "worked", "n_train": 6, "n_eval": 4,
                                  "difficulties": [1]}}).grpo
    pool, held = climb.task_sets(c, 0)
    assert {t.fmt for t in pool + held} == {"worked"}
    # the format changes the prompt, never the problems drawn
    plain = dataclasses.replace(c, answer_format="answer_line")
    assert [t.prompt for t in climb.task_sets(plain, 0)[0]] == [t.prompt for t in pool]
    with pytest.raises(ValueError, match="answer_format"):
        C.load("smoke", {"grpo": {"answer_format": "essay"}})


def test_pool_selection_keeps_the_edge_of_competence(tok, monkeypatch):
    """Problems always solved or never solved are dropped; the histogram counts every rate."""
    c = C.load("smoke", {"grpo": {"answer_format": "worked", "pool_samples": 4,
                                  "pool_lo": 0.25, "pool_hi": 0.75, "draw": 3}}).grpo
    pool = tasks.generate(6, kinds=("arithmetic",), difficulty=1, fmt="worked")
    right = {t.id: i % 5 for i, t in enumerate(pool)}  # 0, 1, 2, 3, 4, 0 of 4 correct

    def fake(model, tok_, problems, n, cap, **kw):
        out = []
        for p in problems:
            g = rollout.Group(p, [1])
            g.correct = [i < right[p.id] for i in range(n)]
            out.append(g)
        return out

    monkeypatch.setattr(climb, "sample_groups", fake)
    sel = climb.select_pool(tiny_model(tok), tok, pool, c, 0)
    assert [t.id for t in sel.kept] == [pool[i].id for i in (1, 2, 3)]
    assert sel.histogram == {"0/4": 2, "1/4": 1, "2/4": 1, "3/4": 1, "4/4": 1}
    right.update({t.id: 0 for t in pool})
    with pytest.raises(ValueError, match="out of the starting model's reach"):
        climb.select_pool(tiny_model(tok), tok, pool, c, 0)


def test_length_cap_and_penalty_act_on_worked_answers(tok):
    """With working lines the completions' lengths differ, so the pass-rate-scaled length
    penalty separates a long right answer from a short one, and the curriculum's cap grows
    from 16 tokens."""
    g = rollout.Group(task(12), tok.encode("Q\n"))
    short = "Answer: 12"
    long = "7 + 5 = 12.\n7 + 5 = 12.\nAnswer: 12"
    for text in (short, long):
        g.completions.append(tok.encode(text))
        g.texts.append(text)
        g.correct.append(True)
    g.completions.append(tok.encode("Answer: 13"))
    g.texts.append("Answer: 13")
    g.correct.append(False)
    R, parts = climb.score([g], cap=16, w=rewards.RewardWeights(w_lang=0.0, w_len=0.25))
    assert R[0] > R[1] > R[2]  # both right, the shorter one pays less; the wrong one least
    assert parts["len"] > 0
    assert [rewards.curriculum(s, 3, 16)[0] for s in range(3)] == [16, 32, 64]
    assert [rewards.curriculum(s, 3, 16)[1] for s in range(3)] == [0.25, 0.25, 0.0]


def test_a_worked_climb_samples_multi_token_answers_under_the_curriculum(tok):
    """A short climb on worked tasks: the cap starts at 16 and doubles, w_len is dropped in
    the last stage and responses are many tokens long (a random model's pass rate is 0, so its
    length penalty is 0: test_length_cap_and_penalty_act_on_worked_answers pays it)."""
    cfg = C.load("smoke", {"grpo": {"answer_format": "worked", "difficulties": [1],
                                    "n_train": 12, "n_eval": 3, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "early_lo": 0.0,
                                    "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                    "max_new_tokens": 16, "eval_samples": 2,
                                    "curriculum_stages": 2, "rollout_dtype": "float32"}})
    pool, held = climb.task_sets(cfg.grpo, 0)
    res = climb.climb(tiny_model(tok), tok, pool, held, cfg.grpo, steps=4, seed=0,
                      eval_every=4)
    assert [r["cap"] for r in res.history] == [16, 16, 32, 32]
    assert [r["w_len"] for r in res.history] == [0.25, 0.25, 0.0, 0.0]
    assert all(r["length"] > 1 for r in res.history)
