"""The shared ``optim`` section: every training loop builds its AdamW and clips its gradients
from it, no other section repeats its fields, and a key that moved there is refused with its
new name."""

import dataclasses
import json

import numpy as np
import pytest
import torch

import mai_repro.config as C
from mai_repro import artifacts, pipeline
from mai_repro.config import MOVED, ConfigError, load
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.rl import climb, distill, tasks
from mai_repro.rl.distill import Trace
from mai_repro.schema import describe, to_dict
from mai_repro.stages import architecture, midtraining
from mai_repro.stages.pretraining import make_trainer
from mai_repro.train.config import OptimConfig
from mai_repro.train.loop import lr_at, make_optimizer, train_lm

VOCAB = 64
# every value unlike its default, so a loop that ignores the section is caught
OPTIM = OptimConfig(weight_decay=0.05, rl_weight_decay=0.02, beta1=0.8, beta2=0.9, eps=1e-7,
                    grad_clip=0.37, min_lr_ratio=0.25)
SHARED = {f.name for f in dataclasses.fields(OptimConfig)}


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=VOCAB, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                attn_period=2, window=8, max_seq_len=128, d_ff=64, n_experts=4, top_k=2,
                d_expert=32, d_latent=16, ffn_layout="interleaved")
    return ModelConfig(**{**base, **kw})


def batches(n_rows=4, length=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randint(0, VOCAB, (n_rows, length), generator=g)


class Spy:
    """Records every AdamW the library builds and every gradient clip it applies."""

    def __init__(self, monkeypatch):
        self.optimizers: list[torch.optim.AdamW] = []
        self.clips: list[float] = []
        real_adamw, real_clip = torch.optim.AdamW, torch.nn.utils.clip_grad_norm_
        spy = self

        class RecordingAdamW(real_adamw):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                spy.optimizers.append(self)

        def clip(params, max_norm, *a, **kw):
            spy.clips.append(float(max_norm))
            return real_clip(params, max_norm, *a, **kw)

        monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)

    def check(self, what: str, weight_decay: float) -> None:
        assert self.optimizers, f"{what}: built no AdamW"
        assert self.clips and set(self.clips) == {OPTIM.grad_clip}, \
            f"{what}: clipped at {sorted(set(self.clips))}, not optim.grad_clip"
        for opt in self.optimizers:
            decay, no_decay = opt.param_groups
            assert (decay["betas"], decay["eps"]) == ((OPTIM.beta1, OPTIM.beta2), OPTIM.eps), what
            assert decay["weight_decay"] == weight_decay, what
            assert no_decay["weight_decay"] == 0.0, what


@pytest.fixture
def spy(monkeypatch):
    return Spy(monkeypatch)


# -- the section itself ------------------------------------------------------------------------

def test_make_optimizer_reads_the_section():
    model = Transformer(tiny_cfg())
    opt = make_optimizer(model, 1e-3, OPTIM)
    decay, no_decay = opt.param_groups
    assert decay["betas"] == (0.8, 0.9) and decay["eps"] == 1e-7 and decay["lr"] == 1e-3
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])
    assert make_optimizer(model, 1e-3, OPTIM, weight_decay=0.0).param_groups[0][
        "weight_decay"] == 0.0
    # the defaults are the values every loop used before the section existed
    d = make_optimizer(model, 1e-3).param_groups[0]
    assert (d["betas"], d["eps"], d["weight_decay"]) == ((0.9, 0.95), 1e-8, 0.1)
    assert (OptimConfig().grad_clip, OptimConfig().min_lr_ratio,
            OptimConfig().rl_weight_decay) == (1.0, 0.1, 0.0)


@pytest.mark.parametrize("impl, flags", [("auto", (None, None)), ("for_loop", (False, None)),
                                         ("foreach", (True, None)), ("fused", (None, True))])
def test_the_adamw_implementation_switch(impl, flags):
    """auto leaves the choice to torch; the others force it (all agree to rounding)."""
    torch.manual_seed(0)
    model = Transformer(tiny_cfg())
    opt = make_optimizer(model, 1e-2, dataclasses.replace(OPTIM, impl=impl))
    assert (opt.defaults["foreach"], opt.defaults["fused"]) == flags
    ref = Transformer(tiny_cfg())
    ref.load_state_dict(model.state_dict())
    ref_opt = make_optimizer(ref, 1e-2, OPTIM)
    for m, o in ((model, opt), (ref, ref_opt)):
        torch.manual_seed(1)
        loss = m(next(batches())[:, :-1]).logits.float().square().mean()
        loss.backward()
        o.step()
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_old_positional_weight_decay_is_refused():
    with pytest.raises(TypeError, match="weight_decay= by keyword"):
        make_optimizer(Transformer(tiny_cfg()), 1e-3, 0.1)


def test_no_other_section_repeats_an_optim_field():
    """A field every trainer shares lives in ``optim`` only."""
    same_name_other_meaning = {"grpo.eps"}  # GRPO's clip range 1 - eps, not AdamW's epsilon
    repeated = [key for key, *_ in describe(C.Config)
                if not key.startswith("optim.") and key.rsplit(".", 1)[-1] in SHARED]
    assert set(repeated) == same_name_other_meaning


@pytest.mark.parametrize("old, new", sorted(MOVED.items()))
def test_a_moved_key_names_its_new_home(old, new):
    section, key = old.split(".")
    assert key not in {f.name for f in dataclasses.fields(type(getattr(load("smoke"),
                                                                         section)))}
    assert new.split(".")[1] in SHARED
    for overrides in ({old: 0.5}, {section: {key: 0.5}}):
        with pytest.raises(ConfigError) as err:
            load("smoke", overrides)
        assert err.value.key == old
        assert str(err.value).startswith(f"{old}: moved to {new}")


def test_a_moved_key_in_a_preset_file_or_on_the_command_line(tmp_path, capsys):
    p = tmp_path / "old.yaml"
    p.write_text("pretrain:\n  steps: 3\n  grad_clip: 0.5\n")
    with pytest.raises(ConfigError, match=r"^pretrain.grad_clip: moved to optim.grad_clip"):
        load(str(p))
    code = pipeline.main(["--preset", "smoke", "-p", "midtrain.weight_decay=0.2",
                          "--run-dir", str(tmp_path / "r"), "--notebooks", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "midtrain.weight_decay: moved to optim.weight_decay" in err


def test_the_new_keys_load_and_reach_the_config():
    cfg = load("smoke", {"optim.grad_clip": 0.5, "optim": {"impl": "fused"}})
    assert (cfg.optim.grad_clip, cfg.optim.impl) == (0.5, "fused")
    with pytest.raises(ConfigError, match="optim.impl"):
        load("smoke", {"optim.impl": "apex"})


def test_optim_invalidates_every_stage_that_trains():
    """Changing the section re-runs exactly the stages whose training reads it."""
    a, b = load("smoke"), load("smoke", {"optim.grad_clip": 0.5})
    changed = {name for name in artifacts.STAGES
               if artifacts.config_hash(a, artifacts.STAGES[name].sections)
               != artifacts.config_hash(b, artifacts.STAGES[name].sections)}
    assert changed == {"architecture", "ladder", "mixtures", "pretraining", "midtraining",
                       "grpo", "self_distillation", "collapse"}


# -- every loop that trains reads it -------------------------------------------------------------

def test_train_lm_reads_optim(spy):
    """The ladder, the mixture search, the collapse generations (and the detector's models)."""
    torch.manual_seed(0)
    hist = train_lm(Transformer(tiny_cfg()), batches(), steps=5, lr=1e-2, warmup=1,
                    optim=OPTIM, progress=False)
    spy.check("train_lm", OPTIM.weight_decay)
    assert hist.lr[-1] == lr_at(4, peak=1e-2, warmup=1, total=5, min_ratio=OPTIM.min_lr_ratio)
    assert hist.lr[-1] != lr_at(4, peak=1e-2, warmup=1, total=5)  # not the default ratio


def test_the_sweep_runs_read_optim(spy, tmp_path):
    from mai_repro.stages import ladder
    from mai_repro.train.config import SweepConfig, report_objective

    shards = tmp_path / "shards"
    job = ladder.sweep_job("k", tiny_cfg(), {"code": 1.0}, 64, SweepConfig(), 0, shards,
                           report_objective(), "cpu", OPTIM)
    assert job.kwargs["optim"] == to_dict(OPTIM)  # a changed optim re-runs the job
    rng = np.random.default_rng(0)
    for fam in report_objective():  # the shard layout of the tokenizer stage
        d = shards / fam
        d.mkdir(parents=True)
        for split in ("train", "heldout"):
            np.save(d / f"{split}.npy", rng.integers(4, VOCAB, (16, 17)).astype(np.uint16))
            np.save(d / f"{split}_docs.npy", np.zeros(1, dtype=np.int64))
            (d / f"{split}_ids.json").write_text(json.dumps([f"{fam}-{split}"]))
    (shards / "index.json").write_text(json.dumps({"families": list(report_objective())}))
    ladder.train_run(model=to_dict(tiny_cfg()), weights={"code": 1.0}, tokens=64,
                     batch_size=2, seq_len=16, lr=1e-2, warmup_frac=0.0, seed=0,
                     shard_dir=str(shards), eval_seqs=2, objective=report_objective(),
                     optim=to_dict(OPTIM))
    spy.check("ladder.train_run", OPTIM.weight_decay)


def test_the_pretraining_trainer_reads_optim(spy, tmp_path):
    cfg = C.load("smoke", {
        "model": {"vocab_size": VOCAB}, "optim": to_dict(OPTIM),
        "pretrain": {"steps": 2, "batch_size": 4, "seq_len": 16, "warmup_steps": 0,
                     "eval_every": 2, "eval_seqs": 2, "ckpt_every": 2, "faults": "",
                     "bad_batches": "", "ckpt_mode": "sync", "induction_seqs": 0}})
    rng = np.random.default_rng(0)
    data = {"code": rng.integers(0, VOCAB, (16, 17)), "math": rng.integers(0, VOCAB, (16, 17))}
    t = make_trainer(cfg, data, data, {"code": 0.5, "math": 0.5}, tmp_path, progress=False)
    t.train_step()
    spy.check("pre-training trainer", OPTIM.weight_decay)
    assert t.schedule(t.p.steps) == pytest.approx(t.p.lr * OPTIM.min_lr_ratio)


def test_midtraining_reads_optim(spy, tiny_midtrain):
    m, windows = tiny_midtrain(2, VOCAB)
    torch.manual_seed(0)
    midtraining.train_run(Transformer(tiny_cfg()), "base", m, windows,
                          {"code": 0.5, "stem": 0.5}, 16, 0, "cpu", None, progress=False,
                          optim=OPTIM)
    spy.check("mid-training", OPTIM.weight_decay)


def test_the_architecture_probe_reads_optim(spy):
    probe = C.load("smoke", {"probe": {"steps": 2, "batch_size": 2, "seq_len": 16,
                                       "record_every": 1}}).probe
    texts = ["def f(x):\n    return x + 1\n" * 50] * 4
    architecture.run_probe(tiny_cfg(vocab_size=256), True, texts, probe, 0, "cpu",
                           progress=False, optim=OPTIM)
    spy.check("architecture probe", OPTIM.weight_decay)


@pytest.fixture(scope="module")
def tok():
    from mai_repro.data import tokenizer as tk

    texts = [t.prompt + "\nAnswer: " + str(t.answer) + "\n" for t in tasks.generate(200)]
    return tk.train(texts, vocab_size=300)


def test_the_grpo_learner_reads_optim(spy, tok):
    cfg = C.load("smoke", {"grpo": {"n_train": 6, "n_eval": 2, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "early_lo": 0.0,
                                    "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                    "max_new_tokens": 3, "curriculum_stages": 1}})
    pool, held = climb.task_sets(cfg.grpo, 0)
    torch.manual_seed(0)
    model = Transformer(tiny_cfg(vocab_size=tok.vocab_size))
    climb.climb(model, tok, pool, held, cfg.grpo, steps=1, seed=0, optim=OPTIM)
    spy.check("GRPO learner", OPTIM.rl_weight_decay)


def test_self_distillation_sft_reads_optim(spy, tok):
    torch.manual_seed(0)
    model = Transformer(tiny_cfg(vocab_size=tok.vocab_size))
    problems = tasks.generate(4, kinds=("arithmetic",), difficulty=0)
    traces = [Trace(t, tuple(tok.encode(tasks.rl_prompt(t))), tuple(tok.encode(f" {t.answer}\n")),
                    "a") for t in problems]
    distill.sft(model, traces, C.DistillConfig(sft_steps=2, sft_batch=4), seed=0,
                pad_id=tok.pad_id, optim=OPTIM)
    spy.check("self-distillation SFT", OPTIM.rl_weight_decay)
