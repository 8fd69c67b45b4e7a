"""mai_repro.eval.metrics: pass@k, sampled accuracy (same numbers as the climb's evaluation),
answer entropy, held-out NLL and bits per byte, a run's checkpoints. Values worked by hand."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import mai_repro.config as C
from mai_repro.data import tokenizer as tk
from mai_repro.eval import metrics as M
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.rl import climb, tasks
from mai_repro.train.checkpoint import save_model_file

# -- helpers (the approach of tests/test_rl_loop.py) ------------------------------------------


@pytest.fixture(scope="module")
def tok():
    texts = [t.prompt + "\nAnswer: " + str(t.answer) + "\n" for t in tasks.generate(200)]
    return tk.train(texts + ["def f(x):\n    return x + 1\n"] * 20, vocab_size=400)


def tiny_model(tok, seed=0):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(
        vocab_size=tok.vocab_size, n_layers=2, d_model=32, n_heads=2, n_kv_heads=1,
        attn_period=2, window=16, max_seq_len=128, d_ff=64, n_experts=4, top_k=2, d_expert=32,
        d_latent=16, ffn_layout="all_moe"))
    with torch.no_grad():  # non-zero attention output and a lively router
        for block in model.blocks:
            block.attn.o.weight.normal_(0, 0.2)
            block.ffn.router.weight.normal_(0, 1.0)
    return model


class FixedLogits(nn.Module):
    """Every position gets the same logits; returns a tuple (logits, aux) or an object with
    ``.logits``, the two forms ``split_output`` reads."""

    def __init__(self, logits, as_tuple=True):
        super().__init__()
        self.register_buffer("row", torch.as_tensor(logits, dtype=torch.float32))
        self.dummy = nn.Parameter(torch.zeros(1))  # a device to read
        self.as_tuple = as_tuple

    def forward(self, idx):
        logits = self.row.expand(*idx.shape, -1)
        return (logits, torch.zeros(())) if self.as_tuple else SimpleNamespace(logits=logits)


# Five tokens: 0 is end-of-text; the others stand for 1, 2, 3 and 2 bytes.
STUB_BYTES = {0: b"<|endoftext|>", 1: b"a", 2: b"bc", 3: b"def", 4: "\u00e9".encode()}


def stub_tok():
    return SimpleNamespace(vocab_size=5, eot_id=0, token_bytes=lambda i: STUB_BYTES[i],
                           encode=lambda text: [1 + ord(ch) % 4 for ch in text])


# -- pass@k ------------------------------------------------------------------------------------

def test_pass_at_k_by_hand():
    assert M.pass_at_k(4, 0, 1) == 0.0 and M.pass_at_k(4, 0, 4) == 0.0
    assert M.pass_at_k(4, 4, 1) == 1.0 and M.pass_at_k(4, 4, 4) == 1.0
    assert M.pass_at_k(4, 1, 1) == pytest.approx(0.25)  # 1 - 3/4
    assert M.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert M.pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert M.pass_at_k(4, 3, 2) == 1.0  # only one wrong sample: any pair holds a right one
    for n, c, k in [(10, 3, 1), (10, 3, 4), (20, 1, 7), (7, 5, 2)]:  # the binomial formula
        assert M.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    assert M.pass_at_k(200, 1, 100) == pytest.approx(0.5)  # large n: no overflow


@pytest.mark.parametrize("n,c,k,msg", [(4, 1, 5, "more than the n=4"), (4, 5, 1, "c=5"),
                                       (-1, 0, 1, "n must be >= 0"),
                                       (4, -1, 1, "c must be >= 0"),
                                       (4, 1, -2, "k must be >= 0"), (4, 1, 0, "at least 1")])
def test_pass_at_k_rejects_bad_input(n, c, k, msg):
    with pytest.raises(ValueError, match=msg):
        M.pass_at_k(n, c, k)


# -- held-out NLL and bits per byte ------------------------------------------------------------

WINDOWS = np.array([[1, 2, 0, 3, 4],  # targets 2, 0, 3, 4: counted 2, 3, 4 -> 7 bytes
                    [3, 3, 1, 0, 2]], dtype=np.uint16)  # targets 3, 1, 0, 2 -> 6 bytes


@pytest.mark.parametrize("as_tuple", [True, False])
def test_family_nll_uniform_logits(as_tuple):
    V = 5
    model = FixedLogits(torch.zeros(V), as_tuple=as_tuple)
    heldout = {"code": WINDOWS, "empty": np.zeros((0, 5), np.uint16)}
    out = M.family_nll(model, heldout, stub_tok(), micro=1)
    assert set(out) == {"code"}  # a family with no windows is skipped
    r = out["code"]
    assert r["tokens"] == 6 and r["bytes"] == 13  # the two end-of-text targets left out
    assert r["nll"] == pytest.approx(math.log(V))
    assert r["bpb"] == pytest.approx(6 * math.log(V) / (math.log(2) * 13))
    first = M.family_nll(model, heldout, stub_tok(), max_windows=1)["code"]
    assert (first["tokens"], first["bytes"]) == (3, 7)
    assert first["bpb"] == pytest.approx(3 * math.log(V) / (math.log(2) * 7))


def test_family_nll_leaves_out_the_end_of_text_loss():
    # p(eot) = 1/2, every other token 1/8: counted targets cost ln 8 each; with the two eot
    # targets (ln 2 each) in the mean the NLL would be (6 ln 8 + 2 ln 2) / 8 instead
    model = FixedLogits(torch.tensor([0.5, 0.125, 0.125, 0.125, 0.125]).log())
    r = M.family_nll(model, {"code": WINDOWS}, stub_tok(), micro=3)["code"]
    assert r["nll"] == pytest.approx(math.log(8))
    assert r["bpb"] == pytest.approx(6 * 3 / 13)  # 6 tokens of 3 bits over 13 bytes


def test_family_nll_without_windows_is_an_error():
    with pytest.raises(ValueError, match="no held-out windows"):
        M.family_nll(FixedLogits(torch.zeros(5)), {"code": np.zeros((0, 5), np.uint16)},
                     stub_tok())


def test_token_byte_counts_of_the_real_tokenizer(tok):
    counts = M.token_byte_counts(tok)
    assert counts[tok.eot_id] == 0 and (np.delete(counts, tok.eot_id) >= 1).all()
    ids = tok.encode("Compute 12 + 7.")
    assert counts[ids].sum() == len(b"Compute 12 + 7.")


# -- answer entropy ----------------------------------------------------------------------------

# two difficulties, so that prompts differ in length (digits are one token each: within one
# difficulty every prompt of a kind has the same number of tokens)
PROBLEMS = (tasks.generate(3, kinds=("arithmetic",), difficulty=0, seed=3, split="eval")
            + tasks.generate(3, kinds=("arithmetic",), difficulty=1, seed=3, split="eval"))


def test_answer_entropy_by_hand():
    assert M.answer_entropy(FixedLogits(torch.zeros(5)), stub_tok(), PROBLEMS) == \
        pytest.approx(math.log(5))
    p = torch.tensor([0.5, 0.125, 0.125, 0.125, 0.125])
    model = FixedLogits(p.log())
    assert M.answer_entropy(model, stub_tok(), PROBLEMS) == pytest.approx(2 * math.log(2))
    q = p.sqrt() / p.sqrt().sum()  # temperature 2: p ** (1/2), normalised
    assert M.answer_entropy(model, stub_tok(), PROBLEMS, temperature=2.0) == \
        pytest.approx(float(-(q * q.log()).sum()))


def test_answer_entropy_batches_like_one_at_a_time(tok):
    model = tiny_model(tok).train()
    lengths = {len(tok.encode(tasks.rl_prompt(t))) for t in PROBLEMS}
    assert 1 < len(lengths) < len(PROBLEMS)  # several batches, some of several prompts
    batched = M.answer_entropy(model, tok, PROBLEMS)
    single = np.mean([M.answer_entropy(model, tok, [t]) for t in PROBLEMS])
    assert batched == pytest.approx(single, rel=1e-5)
    assert 0 < batched <= math.log(tok.vocab_size)
    assert model.training  # the mode it was given in


# -- sampled accuracy --------------------------------------------------------------------------

def parity_grade(text, task, finished=True):
    """A stand-in grader whose outcome depends on the sampled text, so that a random model gets
    some samples right and the comparison below depends on the random numbers drawn."""
    return sum(text.encode()) % 2 == 0


def test_sample_accuracy_equals_the_climb_evaluation(tok, monkeypatch):
    monkeypatch.setattr(tasks, "grade", parity_grade)
    model = tiny_model(tok)
    c = C.GRPOStageConfig(eval_samples=4)
    ref = climb.evaluate(model, tok, PROBLEMS, c, 6, 5, M.stop_ids(tok))
    ev = M.sample_accuracy(model, tok, PROBLEMS, samples=4, max_new_tokens=6, seed=5)
    assert 0 < ref["accuracy"] < 1  # the parity grader makes the comparison count
    assert ev.accuracy == ref["accuracy"]
    assert ev.solved_any == ref["solved_any"] and ev.length == ref["length"]
    assert ev.n_problems == 6 and ev.samples == 4 and len(ev.correct) == 6
    assert ev.accuracy == pytest.approx(sum(ev.correct) / 24)
    assert ev.pass_at[1] == pytest.approx(ev.accuracy)  # pass@1 = mean of c / n
    assert ev.pass_at[2] == pytest.approx(np.mean([1 - math.comb(4 - k, 2) / 6
                                                   for k in ev.correct]))
    assert ev.pass_at[4] == pytest.approx(ev.solved_any)  # pass@n = solved at least once
    assert ev.pass_at[1] <= ev.pass_at[2] <= ev.pass_at[4]
    assert ev.distinct == pytest.approx(np.mean([len(set(t)) / 4 for t in ev.texts]))
    assert 0 < ev.distinct <= 1
    s = ev.summary()
    assert s["pass_at"] == {"1": ev.pass_at[1], "2": ev.pass_at[2], "4": ev.pass_at[4]}
    assert all(type(v) is float for k, v in s.items() if k not in ("pass_at", "n_problems",
                                                                     "samples"))
    # another seed draws other completions
    other = M.sample_accuracy(model, tok, PROBLEMS, samples=4, max_new_tokens=6, seed=6)
    assert other.texts != ev.texts
    # greedy decoding: the four samples of a problem are one text
    greedy = M.sample_accuracy(model, tok, PROBLEMS, samples=4, max_new_tokens=3,
                               temperature=0.0)
    assert greedy.distinct == pytest.approx(0.25)
    assert all(c in (0, 4) for c in greedy.correct)


def test_sample_accuracy_keeps_only_ks_up_to_samples(tok):
    ev = M.sample_accuracy(tiny_model(tok), tok, PROBLEMS[:2], samples=2, max_new_tokens=2,
                           ks=(1, 2, 4))
    assert sorted(ev.pass_at) == [1, 2]
    with pytest.raises(ValueError, match="no problems"):
        M.sample_accuracy(tiny_model(tok), tok, [], max_new_tokens=2)


# -- a run's checkpoints -----------------------------------------------------------------------

def test_checkpoints_lists_complete_stages_in_chain_order(tmp_path):
    for stage, files in [("grpo", ("manifest.json", "model.pt")),
                         ("midtraining", ("model.pt",)),  # no manifest: incomplete
                         ("pretraining", ("manifest.json", "model.pt")),
                         ("tokenizer", ("manifest.json",))]:
        (tmp_path / stage).mkdir()
        for f in files:
            (tmp_path / stage / f).write_text("{}")
    found = M.checkpoints(tmp_path, extra={"ablation": tmp_path / "x.pt"})
    assert list(found) == ["pretraining", "grpo", "ablation"]
    assert found["grpo"] == tmp_path / "grpo" / "model.pt"
    assert M.checkpoints(tmp_path / "missing") == {}
    with pytest.raises(ValueError, match="already a stage"):
        M.checkpoints(tmp_path, extra={"grpo": tmp_path / "x.pt"})


def test_evaluate_checkpoints_one_row(tok, tmp_path, monkeypatch):
    model = tiny_model(tok)
    path = tmp_path / "model.pt"
    save_model_file(model.cfg, model.state_dict(), path)
    stream = np.array(tok.encode(" ".join(t.prompt for t in tasks.generate(20))), np.uint16)
    heldout = {"math": np.stack([stream[i * 16:i * 16 + 17] for i in range(4)]),
               "code": np.stack([stream[100 + i * 16:100 + i * 16 + 17] for i in range(2)])}
    rows = M.evaluate_checkpoints({"base": path}, tok, heldout=heldout, problems=PROBLEMS[:3],
                                  samples=2, max_new_tokens=3, progress=False)
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {"label", "path", "nll.math", "bpb.math", "nll.code", "bpb.code", "nll",
                        "bpb", "accuracy", "solved_any", "length", "distinct", "pass@1",
                        "pass@2", "entropy"}
    assert row["label"] == "base"
    assert all(math.isfinite(v) for k, v in row.items() if k not in ("label", "path"))
    assert row["nll"] == pytest.approx((row["nll.math"] + row["nll.code"]) / 2)
    assert row["nll.math"] == pytest.approx(
        M.family_nll(model, heldout, tok)["math"]["nll"], rel=1e-5)
    assert 0 < row["nll"] and 0 < row["bpb"]
    long = np.stack([stream[i * 32:i * 32 + 33] for i in range(2)])
    rows = M.evaluate_checkpoints({"base": path}, tok, heldout=heldout, problems=PROBLEMS[:3],
                                  samples=2, max_new_tokens=3, progress=False,
                                  long_windows=long, cut=16)
    assert rows[0]["context_gain"] == pytest.approx(
        M.context_gain(model, long, 16)["gain"], rel=1e-5)
    # the sampler reaches the task evaluation: the nucleus sampler's row is sample_accuracy's
    # with that sampler (the same distribution, other random numbers than the vocabulary's)
    rows = M.evaluate_checkpoints({"base": path}, tok, heldout=heldout, problems=PROBLEMS[:3],
                                  samples=2, max_new_tokens=3, progress=False,
                                  sampler="nucleus")
    ev = M.sample_accuracy(model, tok, PROBLEMS[:3], samples=2, max_new_tokens=3, seed=0,
                           stops=M.stop_ids(tok), ks=(1, 2), sampler="nucleus")
    assert (rows[0]["accuracy"], rows[0]["length"], rows[0]["distinct"]) == \
        (ev.accuracy, ev.length, ev.distinct)
    assert rows[0]["nll"] == row["nll"]  # the likelihoods do not sample
    seen = []
    monkeypatch.setattr(M, "sample_accuracy",
                        lambda *a, **k: seen.append(k["sampler"]) or ev)
    for sampler in ("vocabulary", "nucleus"):
        M.evaluate_checkpoints({"base": path}, tok, heldout=heldout, problems=PROBLEMS[:3],
                               samples=2, max_new_tokens=3, progress=False, sampler=sampler)
    assert seen == ["vocabulary", "nucleus"]


class CountsPositions(nn.Module):
    """Predicts token (position in its input + 1) mod V with logit 10: right on every target of
    a window 0, 1, 2, ... read whole, wrong after a cut that restarts the positions."""

    def __init__(self, vocab=7):
        super().__init__()
        self.vocab = vocab
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        pos = torch.arange(x.shape[1])
        logits = torch.zeros(*x.shape, self.vocab) + self.p
        logits[:, pos, (pos + 1) % self.vocab] = 10.0
        return logits, None


def test_context_gain_by_hand():
    V, L, cut = 7, 8, 4
    windows = np.stack([np.arange(L + 1) % V] * 2)
    out = M.context_gain(CountsPositions(V), windows, cut)
    right = math.log(1 + (V - 1) * math.exp(-10))  # -log softmax of the logit-10 token
    wrong = math.log(math.exp(10) + V - 1)  # -log softmax of a logit-0 token
    # positions 4..7 read whole are right; cut at 4 they predict 1, 2, 3, 4 for 5, 6, 0, 1
    assert out["loss_whole"] == pytest.approx(right, abs=1e-6)  # float32 near 0
    assert out["loss_cut"] == pytest.approx(wrong, rel=1e-5)
    assert out["gain"] == pytest.approx(wrong - right, rel=1e-5) and out["gain"] > 9
    with pytest.raises(ValueError, match="divide"):
        M.context_gain(CountsPositions(V), windows, 3)
