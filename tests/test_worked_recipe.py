"""Issue 22's recipe as the `laptop-worked` preset runs it: a preset that extends another, the
reasoning bootstrap that ends mid-training, the learner's optimizer, and the self-distillation
after the climb (``grpo.distill_steps``)."""

import numpy as np
import pytest
import torch

import mai_repro.config as C
from mai_repro.data import tokenizer as tk
from mai_repro.rl import climb, distill, tasks, worked
from mai_repro.stages import midtraining
from tests.test_rl_loop import tiny_model


@pytest.fixture(scope="module")
def tok():
    texts = [w.text for w in worked.generate(300, difficulties=(0, 1), kinds=("addsub",))]
    return tk.train(texts * 2, vocab_size=400)


def test_laptop_worked_is_laptop_with_only_its_own_keys_changed():
    import yaml

    base, variant = C.to_dict(C.load("laptop")), C.to_dict(C.load("laptop-worked"))
    own = yaml.safe_load(C.preset_path("laptop-worked").read_text())
    assert own.pop("extends") == "laptop" and variant["preset"] == "laptop-worked"
    for section, values in own.items():
        for key, value in values.items():
            assert variant[section][key] == value, (section, key)
            base[section][key] = value
    base["preset"] = "laptop-worked"
    assert variant == base  # nothing else moved: pre-training's stages are laptop's
    v = C.load("laptop-worked")
    assert v.grpo.answer_format == "worked" and v.grpo.final_cap >= 16
    assert v.grpo.n_eval >= 512 and v.midtrain.bootstrap_steps > 0


def test_extends_names_a_preset_and_refuses_cycles_and_non_names(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"extends: {b}\nseed: 3\n")
    b.write_text("extends: smoke\ngrpo:\n  steps: 70\n")
    cfg = C.load(str(a))
    assert (cfg.seed, cfg.grpo.steps, cfg.preset) == (3, 70, "a")
    assert cfg.pretrain == C.load("smoke").pretrain
    b.write_text(f"extends: {a}\n")
    with pytest.raises(C.ConfigError, match="cycle"):
        C.load(str(a))
    b.write_text("extends: [smoke]\n")
    with pytest.raises(C.ConfigError, match="extends"):
        C.load(str(a))
    b.write_text("extends: no-such-preset\n")
    with pytest.raises(C.ConfigError, match="no-such-preset"):
        C.load(str(a))


def test_reasoning_bootstrap_trains_on_worked_text_without_held_out_problems(tok, monkeypatch):
    """The bootstrap's texts: the configured kinds, none posing or writing out a held-out
    problem (some were dropped for it); steps x batch windows of the configured length; the
    model moves; the bill of materials lists it as procedural."""
    m = C.load("smoke", {"midtrain": {"bootstrap_steps": 3, "bootstrap_context": 64,
                                      "tokens_per_step": 128, "procedural_kinds": ["addsub"],
                                      "procedural_difficulties": [0, 1],
                                      "bootstrap_texts": 400}}).midtrain
    # held-out problems among the first texts the generator writes, and others
    held = [w.text.split("\n")[0] for w in worked.generate(4, difficulties=(0, 1),
                                                            kinds=("addsub",))]
    held += [tasks.question(t) for t in tasks.generate(60, kinds=("addsub",), difficulty=1,
                                                       split="eval")]
    seen_docs, batches = [], []
    real_pack, real_step = worked.pack_windows, midtraining.lm_step

    def pack(docs, *args):
        seen_docs.extend(docs)
        return real_pack(docs, *args)

    def step(model, opt, batch, **kw):
        batches.append(batch.clone())
        return real_step(model, opt, batch, **kw)

    monkeypatch.setattr(worked, "pack_windows", pack)
    monkeypatch.setattr(midtraining, "lm_step", step)
    model = tiny_model(tok)
    before = [p.detach().clone() for p in model.parameters()]
    model, rec = midtraining.reasoning_bootstrap(model, m, tok, held, 0, "cpu", progress=False)
    texts = [tok.decode(list(d)) for d in seen_docs]
    assert texts and worked.contaminated(texts, worked.heldout_keys(held)) == []
    assert rec["removed_heldout"] > 0 and rec["heldout_problems"] == len(held)
    assert rec["kinds"] == ["addsub"] and set(rec["difficulties"]) <= {0, 1}
    assert [tuple(b.shape) for b in batches] == [(2, 65)] * 3
    assert rec["tokens"] == 3 * 2 * 64 and len(rec["loss"]) == 3 and not model.training
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    [row] = midtraining.bill_of_materials({}, [], None, rec)
    assert row["part"] == "bootstrap" and row["procedural"] and row["tokens"] == rec["tokens"]


def test_bootstrap_control_trains_the_same_compute_on_human_stem_math_text(tok, monkeypatch):
    """The control matches the bootstrap's steps, batch, window length and tokens, and trains
    on the STEM and math families' text alone (no worked solution, no other family), in an
    order fixed by the seed; the model moves. Without STEM or math text it says so."""
    from mai_repro.data.shards import FamilyShard, pack

    m = C.load("smoke", {"midtrain": {"bootstrap_steps": 3, "bootstrap_context": 64,
                                      "tokens_per_step": 128, "bootstrap_control": True}}
               ).midtrain
    # each family's tokens from its own range, so a batch shows where it came from
    ranges = {"code": (30, 40), "stem": (10, 20), "math": (20, 30), "general": (40, 50)}
    rng = np.random.default_rng(0)
    shards = {f: FamilyShard(pack(rng.integers(a, b, 1000).astype(np.uint16), 16),
                             np.arange(0, 1000, 250), ["d"] * 4) for f, (a, b) in ranges.items()}
    batches = []
    real_step = midtraining.lm_step

    def step(model, opt, batch, **kw):
        batches.append(batch.clone())
        return real_step(model, opt, batch, **kw)

    monkeypatch.setattr(midtraining, "lm_step", step)
    model = tiny_model(tok)
    before = [p.detach().clone() for p in model.parameters()]
    model, rec = midtraining.bootstrap_control(model, m, shards, 0, "cpu", progress=False)
    assert [tuple(b.shape) for b in batches] == [(2, 65)] * 3  # the bootstrap's shapes
    assert rec["tokens"] == 3 * 2 * 64 and len(rec["loss"]) == 3 and not model.training
    seen = torch.cat(batches)
    assert int(seen.min()) >= 10 and int(seen.max()) < 30  # STEM and math only
    assert set(rec["families"]) == {"stem", "math"}
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    first = batches[0]
    batches.clear()
    midtraining.bootstrap_control(tiny_model(tok), m, shards, 0, "cpu", progress=False)
    assert torch.equal(batches[0], first)  # same seed, same windows
    batches.clear()
    midtraining.bootstrap_control(tiny_model(tok), m, shards, 1, "cpu", progress=False)
    assert not torch.equal(batches[0], first)
    with pytest.raises(ValueError, match="STEM or math text"):
        midtraining.bootstrap_control(tiny_model(tok), m, {"code": shards["code"]}, 0, "cpu",
                                      progress=False)
    with pytest.raises(C.ConfigError, match="bootstrap_control"):
        C.load("smoke", {"midtrain": {"bootstrap_steps": 0, "bootstrap_control": True}})


def test_learner_optimizer_is_the_configured_one(tok):
    model = tiny_model(tok)
    g = C.load("smoke").grpo
    sgd = climb.learner_optimizer(model, C.load("smoke", {"grpo": {
        "optimizer": "sgd", "lr": 0.03, "momentum": 0.8}}).grpo, C.OptimConfig())
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == 0.03 and sgd.param_groups[0]["momentum"] == 0.8
    adamw = climb.learner_optimizer(model, g, C.OptimConfig())
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == g.lr
    with pytest.raises(C.ConfigError, match="optimizer"):
        C.load("smoke", {"grpo": {"optimizer": "adam"}})


def test_after_climb_distils_the_chosen_student_on_the_chosen_traces(tok):
    c = C.load("smoke", {"grpo": {"kinds": ["addsub"], "answer_format": "worked",
                                  "max_new_tokens": 8, "curriculum_stages": 1,
                                  "distill_steps": 2, "distill_problems": 3}}).grpo
    d = C.load("smoke").distill
    problems = tasks.generate(5, kinds=("addsub",), difficulty=1, fmt="worked")
    start, climbed = tiny_model(tok, seed=0), tiny_model(tok, seed=1)
    start_state = {k: v.clone() for k, v in start.state_dict().items()}
    model, info = distill.after_climb(climbed, start, tok, problems, c, d, seed=0,
                                      source="program")
    assert (info["problems"], info["traces"], info["drawn"]) == (3, 3, 0)
    assert len(info["losses"]) == 2 and info["student"] == "start"
    assert all(torch.equal(v, start.state_dict()[k]) for k, v in start_state.items())
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in start_state.items())
    assert model.cfg.dropout == 0.0 and not model.training
    # the climbed model's own answers: one sample of each problem, only verified ones kept
    _, info = distill.after_climb(climbed, start, tok, problems, c, d, seed=0)
    assert info["drawn"] == 3 and 0 <= info["traces"] <= 3
    with pytest.raises(ValueError, match="student"):
        distill.after_climb(climbed, start, tok, problems, c, d, seed=0, student="both")


def test_another_seed_is_climbed_then_distilled_like_the_main_climb(tok):
    """grpo.seeds with grpo.distill_steps > 0: each other seed's climb is followed by its own
    self-distillation, evaluated as the main climb's distilled model is (same held-out
    problems, its seed's random numbers): what the interval over seeds of the recipe's gain
    is made of."""
    cfg = C.load("smoke", {"grpo": {"kinds": ["addsub"], "answer_format": "worked",
                                    "max_new_tokens": 8, "curriculum_stages": 1,
                                    "steps": 1, "ablation_from": 0, "ablation_steps": 1,
                                    "n_eval": 3, "eval_samples": 2,
                                    "distill_steps": 2, "distill_problems": 3}})
    c = cfg.grpo
    pool, held = climb.task_sets(c, 0)
    start = tiny_model(tok, seed=0)
    res = climb.replica(start, tok, pool, held, c, 1, None, cfg.distill)
    assert res.model is None and res.evals[0]["step"] == 0
    assert set(res.distilled) >= {"accuracy", "solved_any", "correct"}
    assert len(res.distilled["correct"]) == len(held)
    # the same seed's climb, distillation and evaluation done by hand give the same numbers
    again = climb.climb(start, tok, pool, held, c, steps=c.steps, seed=1, eval_every=c.steps,
                        keep_model=True)
    student, info = distill.after_climb(again.model, start, tok, pool, c, cfg.distill, seed=1)
    by_hand = climb.evaluate(student, tok, held, c, c.final_cap, 1, climb.stop_ids(tok))
    assert by_hand["correct"] == res.distilled["correct"]
    assert res.distilled_traces == info["traces"] and res.name == "seed 1"
    # without the distillation config (or with distill_steps 0) the replica only climbs; the
    # climb from the model before the bootstrap is a replica under its own name
    only = climb.replica(start, tok, pool, held, c, 1, None, name="without procedural")
    assert only.distilled is None and only.distilled_traces is None
    assert only.name == "without procedural"
    assert [e["correct"] for e in only.evals] == [e["correct"] for e in again.evals]


def test_compare_base_needs_the_bootstrap():
    """grpo.compare_base climbs from notebook 08's model before the reasoning bootstrap: a
    config without the bootstrap is refused, naming the key."""
    with pytest.raises(C.ConfigError, match="compare_base"):
        C.load("smoke", {"grpo": {"compare_base": True},
                         "midtrain": {"bootstrap_steps": 0, "bootstrap_control": False}})
    assert C.load("laptop-worked").grpo.compare_base
