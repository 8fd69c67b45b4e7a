"""The one training step (mai_repro.train.step) and the loops that go through it.

Every loop that trains an MoE model must update the routing biases under ``balance: bias``: a
loop that forgets it trains with no load balancing at all (the bug this module exists to end).
"""

import ast
import copy
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import mai_repro.config as C
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.rl import climb, distill, tasks
from mai_repro.rl.distill import Trace
from mai_repro.rl.grpo import EntropyController, GRPOConfig
from mai_repro.stages import architecture, midtraining
from mai_repro.stages.pretraining import make_trainer
from mai_repro.train.loop import lm_loss_fn, lm_step, make_optimizer, train_lm
from mai_repro.train.step import LossOut, train_step

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 64


def moe_cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=VOCAB, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                attn_period=2, window=8, max_seq_len=64, d_ff=64, n_experts=4, top_k=2,
                d_expert=32, d_latent=16, ffn_layout="all_moe", balance="bias",
                bias_update_rate=0.01)
    return ModelConfig(**{**base, **kw})


def batches(n_rows=4, length=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(0, VOCAB, (n_rows, length), generator=g)


def assert_balanced(model: torch.nn.Module, what: str) -> None:
    """After an odd number of steps the bias (a sum of +-rate per step) cannot be back at 0."""
    layers = model.moe_layers
    assert layers, f"{what}: the model has no MoE layer"
    for m in layers:
        assert m.balance_bias.abs().sum() > 0, f"{what}: the routing bias never moved"
        assert m.load.sum() == 0, f"{what}: the load was not reset after the step"


# -- the step itself ---------------------------------------------------------------------------

def test_accumulation_over_micro_batches_equals_one_pass():
    torch.manual_seed(0)
    a = Transformer(moe_cfg(balance="none"))
    b = copy.deepcopy(a)
    batch = next(batches(n_rows=4))
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    ra = train_step(a, opt_a, [batch], lm_loss_fn(a))
    rb = train_step(b, opt_b, list(batch.split(2)), lm_loss_fn(b))
    assert rb.loss == pytest.approx(ra.loss, rel=1e-5)
    assert rb.grad_norm == pytest.approx(ra.grad_norm, rel=1e-4)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


def test_the_step_sets_the_lr_clips_and_reports_the_norm_before_clipping():
    torch.manual_seed(0)
    model = Transformer(moe_cfg(balance="none"))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    r = train_step(model, opt, [next(batches())], lm_loss_fn(model), lr=0.25, grad_clip=1e-3)
    assert opt.param_groups[0]["lr"] == 0.25
    assert r.applied and r.grad_norm > 1e-3  # the reported norm is before the clip
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) \
        == pytest.approx(1e-3, rel=1e-3)


def test_a_vetoed_step_changes_nothing_and_resets_the_load():
    torch.manual_seed(0)
    model = Transformer(moe_cfg())
    before = copy.deepcopy(model.state_dict())
    opt = make_optimizer(model, 1e-2, weight_decay=0.0)
    seen = []
    r = train_step(model, opt, [next(batches())], lm_loss_fn(model),
                   accept=lambda loss, norm: seen.append((float(loss), norm)) or False)
    assert not r.applied and r.load is None and len(seen) == 1
    for k, v in model.state_dict().items():
        if not k.endswith(".load"):
            assert torch.equal(v, before[k]), k
    assert all(m.load.sum() == 0 for m in model.moe_layers)
    assert all(p.grad is None for p in model.parameters())


def test_weights_and_stats_are_combined_with_the_given_shares():
    torch.manual_seed(0)
    model = Transformer(moe_cfg(balance="none"))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    values = iter([2.0, 5.0])

    def loss_fn(x):
        v = next(values)
        loss = model(x).logits.float().mean() * 0 + v
        return LossOut(loss, weight=0.25 if v == 2.0 else 0.75, stats={"v": v})

    r = train_step(model, opt, list(next(batches()).split(2)), loss_fn)
    assert r.loss == pytest.approx(0.25 * 2 + 0.75 * 5)
    assert r.stats["v"] == pytest.approx(0.25 * 2 + 0.75 * 5)
    assert float(r.loss_sum) == pytest.approx(7.0)


def test_no_module_but_the_step_calls_an_optimizer_step():
    """Every training loop goes through train_step: nobody else steps an optimizer."""
    offenders = []
    for path in sorted((ROOT / "mai_repro").rglob("*.py")):
        if path.relative_to(ROOT).as_posix() == "mai_repro/train/step.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "step"
                    and re.search(r"opt|optimizer", ast.unparse(node.func.value))):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


# -- MoE balancing under ``balance: bias`` in every loop that trains an MoE model ----------------

def test_balancing_in_the_plain_loop():
    """train_lm: the ladder, the mixture search, the collapse generations, the detector."""
    torch.manual_seed(0)
    model = Transformer(moe_cfg())
    train_lm(model, batches(), steps=3, lr=1e-2, progress=False)
    assert_balanced(model, "train_lm")
    model2 = Transformer(moe_cfg())
    lm_step(model2, make_optimizer(model2, 1e-2, weight_decay=0.0), next(batches()))
    assert_balanced(model2, "lm_step")


def test_balancing_in_the_pretraining_trainer(tmp_path):
    cfg = C.load("smoke", {
        "model": {"vocab_size": VOCAB, "balance": "bias", "bias_update_rate": 0.01},
        "pretrain": {"steps": 2, "batch_size": 4, "seq_len": 16, "warmup_steps": 0,
                     "eval_every": 2, "eval_seqs": 2, "ckpt_every": 2, "faults": "",
                     "bad_batches": "", "ckpt_mode": "sync"}})
    rng = np.random.default_rng(0)
    data = {"code": rng.integers(0, VOCAB, (16, 17)), "math": rng.integers(0, VOCAB, (16, 17))}
    t = make_trainer(cfg, data, data, {"code": 0.5, "math": 0.5}, tmp_path, progress=False)
    rec = t.train_step()
    assert rec["action"] == "ok" and rec["load_cv"] is not None
    assert_balanced(t.model, "pre-training trainer")


def test_balancing_in_midtraining(tiny_midtrain):
    m, windows = tiny_midtrain(3, VOCAB)
    torch.manual_seed(0)
    model, _ = midtraining.train_run(Transformer(moe_cfg()), "base", m, windows,
                                     {"code": 0.5, "stem": 0.5}, 16, 0, "cpu", None,
                                     progress=False)
    assert_balanced(model, "mid-training")


def test_balancing_in_the_architecture_probe(monkeypatch):
    created = []
    real = architecture.Transformer

    def spy(cfg):
        created.append(real(cfg))
        return created[-1]

    monkeypatch.setattr(architecture, "Transformer", spy)
    probe = C.load("smoke", {"probe": {"steps": 3, "batch_size": 2, "seq_len": 16,
                                       "record_every": 1}}).probe
    texts = ["def f(x):\n    return x + 1\n" * 50] * 4
    architecture.run_probe(moe_cfg(vocab_size=256), True, texts, probe, 0, "cpu",
                           progress=False)
    assert_balanced(created[0], "architecture probe")


@pytest.fixture(scope="module")
def tok():
    from mai_repro.data import tokenizer as tk

    texts = [t.prompt + "\nAnswer: " + str(t.answer) + "\n" for t in tasks.generate(200)]
    return tk.train(texts, vocab_size=300)


def test_balancing_in_the_grpo_learner(tok):
    from mai_repro.rl import rollout
    from mai_repro.rl.grpo import group_advantages

    torch.manual_seed(0)
    model = Transformer(moe_cfg(vocab_size=tok.vocab_size, max_seq_len=128))
    problems = tasks.generate(2, kinds=("arithmetic",), difficulty=0, seed=0)
    groups = rollout.sample_groups(model, tok, problems, 4, 4, top_p=0.9,
                                   generator=torch.Generator().manual_seed(0))
    batch = rollout.learner_batch(groups, group_advantages(torch.randn(8), 4), tok.vocab_size,
                                  tok.pad_id)
    for m in model.moe_layers:
        m.load.zero_()
    climb.optimizer_step(model, make_optimizer(model, 1e-3, weight_decay=0.0), batch,
                         EntropyController(target=0.5, delta=0.1), GRPOConfig(),
                         climb.Stabilisers())
    assert_balanced(model, "GRPO learner")


def test_balancing_in_self_distillation_sft(tok):
    torch.manual_seed(0)
    model = Transformer(moe_cfg(vocab_size=tok.vocab_size, max_seq_len=128))
    problems = tasks.generate(4, kinds=("arithmetic",), difficulty=0)
    traces = [Trace(t, tuple(tok.encode(tasks.rl_prompt(t))), tuple(tok.encode(f" {t.answer}\n")),
                    "a") for t in problems]
    student, _ = distill.sft(model, traces, C.DistillConfig(sft_steps=3, sft_batch=4), seed=0,
                             pad_id=tok.pad_id)
    assert_balanced(student, "self-distillation SFT")
