"""Ladder rungs, ablation variants, one training run, and the stage end to end (synthetic
shards, tiny models)."""

import json
import math

import numpy as np
import pytest

from mai_repro import artifacts, config
from mai_repro.data.config import FAMILIES
from mai_repro.model.accounting import forward_flops_per_token
from mai_repro.schema import to_dict
from mai_repro.stages import ladder, read_metrics
from mai_repro.train.config import ABLATIONS, report_objective

VOCAB = 64


def write_synthetic_tokenizer_stage(run: artifacts.Run, n_seq: int = 64, seq_len: int = 32
                                    ) -> None:
    """A 'tokenizer' stage with shards in which each family draws from its own token range."""
    rng = np.random.default_rng(0)
    with run.stage("tokenizer") as st:
        for k, fam in enumerate(FAMILIES):
            d = st.path("shards", fam, "x").parent
            for split in ("train", "heldout"):
                lo = 4 + 10 * k
                seqs = rng.integers(lo, lo + 12, size=(n_seq, seq_len + 1)).astype(np.uint16)
                seqs[:, ::4] = 1  # a shared structure every family has
                np.save(d / f"{split}.npy", seqs)
                np.save(d / f"{split}_docs.npy", np.zeros(1, dtype=np.int64))
                (d / f"{split}_ids.json").write_text(json.dumps([f"{fam}-{split}"]))
        st.path("shards", "index.json").write_text(json.dumps({"families": list(FAMILIES)}))
        st.path("plan.json").write_text(json.dumps({"weights": {f: 0.2 for f in FAMILIES}}))


def tiny_cfg(**sections):
    sweep = {"widths": [16, 32, 48], "depths": [1, 1, 1], "tokens_per_param": 0.01,
             "batch_size": 2, "seq_len": 16, "eval_seqs": 4, "workers": 1}
    return config.load("smoke", {"model.vocab_size": VOCAB, "ladder": sweep,
                                 "mixsearch": {**sweep, "widths": [16, 32], "depths": [1, 1],
                                               "n_mixtures": 5, "n_boot": 50},
                                 **sections}, device="cpu")


def test_rung_model_scales_the_preset_model():
    base = config.load("laptop").model
    m = ladder.rung_model(base, 32, 3, 16, 128)
    assert (m.d_model, m.n_layers, m.n_heads) == (32, 3, 2)
    assert m.n_heads % m.n_kv_heads == 0
    assert m.d_ff == round(base.d_ff * 32 / base.d_model)
    assert m.latent_dim == round(base.latent_dim * 32 / base.d_model)
    assert m.window <= 64 and m.max_seq_len == 128
    assert m.check() == []


def test_variants_change_one_choice():
    base = ladder.rung_model(config.load("laptop").model, 64, 3, 16, 128)
    assert not ladder.variant(base, "standard_init").zero_init_attn and base.zero_init_attn
    assert ladder.variant(base, "all_global").attn_period == 1
    assert ladder.variant(base, "all_moe").ffn_layout == "all_moe"
    std = ladder.variant(base, "standard_moe")
    assert std.d_latent is None and base.is_latent
    # equal active compute: the forward FLOPs per token match to within rounding of d_expert
    f_base = forward_flops_per_token(base, 128)["total"]
    f_std = forward_flops_per_token(std, 128)["total"]
    assert abs(f_std - f_base) / f_base < 0.01
    assert set(ABLATIONS) == {"standard_init", "standard_moe", "all_moe", "all_global"}
    with pytest.raises(ValueError, match="unknown variant"):
        ladder.variant(base, "bigger")


def test_tokens_follow_the_ratio_in_whole_steps():
    lc = config.load("laptop").ladder
    m = ladder.rung_model(config.load("laptop").model, 32, 3, 16, lc.seq_len)
    tokens = ladder.run_tokens(m, lc)
    per_step = lc.batch_size * lc.seq_len
    assert tokens % per_step == 0
    assert 0 <= tokens - lc.tokens_per_param * ladder.nonembedding_params(m) < per_step


def test_ladder_config_is_checked():
    with pytest.raises(config.ConfigError, match="ladder.widths"):
        config.load("smoke", {"ladder.widths": [16, 32], "ladder.depths": [2, 2]})  # 2 rungs
    with pytest.raises(config.ConfigError, match="ladder.depths"):
        config.load("smoke", {"ladder.depths": [2, 2]})  # 3 widths
    with pytest.raises(config.ConfigError, match="multiple of head_dim"):
        config.load("smoke", {"ladder.widths": [16, 24, 32]})
    with pytest.raises(config.ConfigError, match="ladder.ablations"):
        config.load("smoke", {"ladder.ablations": ["wider"]})


def test_one_run_reports_compute_and_objective(tmp_path):
    cfg = tiny_cfg()
    run = artifacts.Run(cfg, tmp_path)
    write_synthetic_tokenizer_stage(run)
    m = ladder.rung_model(cfg.model, 16, 1, 16, 16)
    obj = report_objective()
    r = ladder.train_run(model=to_dict(m), weights={f: 0.2 for f in FAMILIES}, tokens=100,
                         batch_size=2, seq_len=16, lr=3e-3, warmup_frac=0.1, seed=0,
                         shard_dir=str(tmp_path / "tokenizer" / "shards"), eval_seqs=4,
                         objective=obj)
    assert r["steps"] == math.ceil(100 / 32) and r["tokens"] == r["steps"] * 32
    assert r["compute"] == pytest.approx(3 * forward_flops_per_token(m, 16)["total"]
                                         * r["tokens"])
    assert set(r["nll"]) == set(FAMILIES)
    assert r["objective"] == pytest.approx(sum(w * r["nll"][f] for f, w in obj.items()))
    with pytest.raises(ValueError, match="exceeds the shards"):
        ladder.train_run(**{**dict(model=to_dict(m), weights={"code": 1.0}, tokens=10,
                                   batch_size=2, seq_len=64, lr=1e-3, warmup_frac=0.0, seed=0,
                                   shard_dir=str(tmp_path / "tokenizer" / "shards"),
                                   eval_seqs=2, objective=obj)})


def test_stage_end_to_end_and_resume(tmp_path):
    cfg = tiny_cfg(**{"ladder.ablations": ["standard_init", "all_global"],
                      "ladder.allocation_ratios": [4.0, 16.0]})
    run = artifacts.Run(cfg, tmp_path)
    write_synthetic_tokenizer_stage(run)
    res = ladder.build(run)
    assert run.status("ladder") == "complete"
    m = read_metrics(run, "ladder")  # LadderMetrics, loaded strictly from the manifest
    assert set(m.eg) == set(cfg.ladder.ablations)
    assert all(len(v) == 3 for v in m.eg.values())
    assert m.fit.alpha >= 0 and set(m.sign_holds) == set(cfg.ladder.ablations)
    assert res.figures["ladder"].is_file()
    # 3 variants x 3 rungs, and the baseline at 2 more token multiples per rung
    assert len(list((tmp_path / "ladder" / "runs").glob("*.json"))) == 3 * 3 + 2 * 3
    grid = m.allocation_runs
    assert len(grid) == 3 * 3 and len({g.params_nonembedding for g in grid}) == 3
    for w in (16, 32, 48):  # each size trained on three token counts, the ladder's among them
        tokens = sorted(g.tokens for g in grid if g.width == w)
        assert len(set(tokens)) == 3 and tokens[0] < tokens[2]
    # a rebuild finds every run on disk and trains nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "ladder" / "runs").glob("*.json")}
    again = ladder.build(run)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert again.metrics.rungs == m.rungs and again.metrics.eg == m.eg
