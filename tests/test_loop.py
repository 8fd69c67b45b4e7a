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


# -- one cross-entropy ----------------------------------------------------------------------

def test_token_nll_is_minus_the_log_softmax_of_the_target_bit_for_bit():
    """So GRPO's log-probs of sampled tokens and every NLL of the library agree exactly."""
    from mai_repro.train.loop import token_nll, weighted_nll

    torch.manual_seed(0)
    logits = torch.randn(3, 7, 259) * 3
    targets = torch.randint(0, 259, (3, 7))
    nll = token_nll(logits, targets)
    assert nll.shape == (3, 7) and nll.dtype == torch.float32
    ref = -logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    assert torch.equal(nll, ref)
    assert torch.equal(token_nll(logits[:, 2:], targets[:, 2:]), ref[:, 2:])  # a strided view
    assert lm_loss(logits, targets).item() == pytest.approx(ref.mean().item(), rel=1e-6)
    w = torch.zeros(3, 7)
    w[1, 3:] = 2.0
    assert weighted_nll(logits, targets, w).item() == pytest.approx(ref[1, 3:].mean().item(),
                                                                    rel=1e-6)


def test_no_module_but_the_loop_computes_a_cross_entropy():
    """Token-level cross-entropy lives in train/loop.py; a log-softmax elsewhere is allowed only
    where the whole distribution is needed (a reason for each)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    whole_distribution = {
        "mai_repro/model/generation.py",  # sampling: temperature, nucleus (model layer)
        "mai_repro/rl/grpo.py",  # the policy's entropy over the masked distribution
        "mai_repro/rl/evaluate.py",  # the entropy of the next-token distribution
        "mai_repro/data/ai_content.py",  # Binoculars: cross-entropy between two models
        "mai_repro/data/ai_features.py",  # the performer's entropy per token
    }
    ce, logsm = [], []
    for path in sorted((root / "mai_repro").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text()
        if rel == "mai_repro/train/loop.py":  # the one cross-entropy
            continue
        if re.search(r"cross_entropy\(|nll_loss\(", text):
            ce.append(rel)
        if re.search(r"log_softmax\(", text) and rel not in whole_distribution:
            logsm.append(rel)
    assert ce == [] and logsm == []
