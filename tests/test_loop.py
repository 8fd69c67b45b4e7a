import math

import pytest
import torch

from mai_repro.train.loop import eval_loss, lm_loss, lr_at, split_output, train_lm


class Bigram(torch.nn.Module):
    def __init__(self, V=8):
        super().__init__()
        self.table = torch.nn.Embedding(V, V)

    def forward(self, ids):
        return self.table(ids), torch.tensor(0.0)


def test_lm_loss_by_hand():
    logits = torch.zeros(1, 2, 4)  # uniform over 4 tokens
    assert lm_loss(logits, torch.tensor([[1, 2]])).item() == pytest.approx(math.log(4))
    logits[0, 0, 1] = 100.0  # first position certain and right
    mask = torch.tensor([[True, False]])
    assert lm_loss(logits, torch.tensor([[1, 2]]), mask).item() == pytest.approx(0.0, abs=1e-6)


def test_lr_schedule():
    assert lr_at(0, peak=1.0, warmup=10, total=100) == pytest.approx(0.1)
    assert lr_at(9, peak=1.0, warmup=10, total=100) == pytest.approx(1.0)
    assert lr_at(10, peak=1.0, warmup=10, total=100) == pytest.approx(1.0)
    assert lr_at(100, peak=1.0, warmup=10, total=100) == pytest.approx(0.1)


def test_wsd_schedule():
    kw = dict(peak=1.0, warmup=10, total=100, schedule="wsd", decay_frac=0.2)
    assert lr_at(5, **kw) == pytest.approx(0.6)
    assert lr_at(79, **kw) == 1.0  # stable until the last 20 steps
    assert lr_at(80, **kw) == pytest.approx(1 - 0.9 / 20)
    assert lr_at(99, **kw) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="schedule"):
        lr_at(50, peak=1.0, warmup=0, total=100, schedule="step")


def test_split_output():
    t = torch.zeros(1)
    assert split_output(t) == (t, None)
    assert split_output((t, t))[1] is t


def test_training_learns_a_deterministic_sequence():
    torch.manual_seed(0)
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 0]] * 4)  # next token = current + 1 mod 8

    def batches():
        while True:
            yield seq

    model = Bigram()
    before = eval_loss(model, [seq])
    hist = train_lm(model, batches(), steps=150, lr=0.1, warmup=5, progress=False)
    after = eval_loss(model, [seq])
    assert before > 1.5 and after < 0.1 and hist.loss[-1] < hist.loss[0]
    assert len(hist.lr) == 150 and max(hist.lr) == pytest.approx(0.1)
