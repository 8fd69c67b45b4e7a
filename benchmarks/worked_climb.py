"""Does a GRPO climb in the ``worked`` format climb from a model that was shown worked
arithmetic? (issue 22: a start between 5% and 60%, +25 points)

    python benchmarks/worked_climb.py --model MODEL_FILE [--run runs/laptop] [--preset laptop]
        [--steps 150] [--eval-every 25] [--threads 1] [--seed 0] [-p grpo.KEY=VALUE ...]

Runs the preset's main GRPO climb (no ablations, one seed) from ``--model`` (for instance
what ``benchmarks/worked_bootstrap.py --save`` wrote) with the run's tokenizer, the preset's
``grpo`` section and the ``-p`` overrides (``-p grpo.answer_format=worked -p
grpo.max_new_tokens=16``, ``-p grpo.credit=from_first_error``), evaluated every
``--eval-every`` steps on the held-out set (a line as each ends: pass@1 and the seconds of
climbing so far, the evaluations left out). With
``grpo.pool_samples`` > 0 the training pool is first cut to the model's edge of competence
and its pass-rate histogram printed. One JSON line per evaluation (pass@1, pass@k, mean
length, step, seconds), then the gain with the stage's paired interval, and two sampled
completions. ``--save FILE`` writes the climbed model, which ``--model FILE --temperatures
0.01,1.0`` then samples at low temperature: how much of the start's sharpening room the climb
used. ``--distill-steps N`` follows the climb with self-distillation on its own verified
traces (the report's recipe, RECIPE.md section 6), evaluated and timed with it.
Figures: docs/rl.md, "The worked format at laptop" and "Eighth round".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import yaml

import mai_repro.config as C
from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.rl import climb as climb_module
from mai_repro.rl import tasks
from mai_repro.rl.climb import climb, select_pool, task_sets
from mai_repro.rl.distill import after_climb
from mai_repro.rl.rollout import sample_groups, stop_ids
from mai_repro.stages.grpo import climb_gain
from mai_repro.train.checkpoint import load_model_file, save_model_file


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", default="runs/laptop")
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="the climb's seed (rollouts, problem "
                    "order, the evaluation's random numbers); the training pool and the "
                    "held-out problems stay the preset's (seed 0), as for notebook 09's "
                    "grpo.seeds, so that they stay the ones the bootstrap excluded")
    ap.add_argument("-p", action="append", default=[], metavar="grpo.KEY=VALUE")
    ap.add_argument("--freeze-router", action="store_true", help="the MoE routers are not "
                    "trained during the climb (a diagnostic: are routing flips what makes a "
                    "larger learning rate unstable?)")
    ap.add_argument("--optimizer", choices=["adamw", "sgd"], default=None,
                    help="grpo.optimizer (default: the preset's): 'sgd' is SGD with momentum "
                    "(grpo.lr its learning rate) instead of AdamW, whose per-coordinate "
                    "normalisation gives every weight a step of about lr, signal or noise")
    ap.add_argument("--momentum", type=float, default=None, help="grpo.momentum (SGD's)")
    ap.add_argument("--rollout-temperature", type=float, default=0.0, metavar="T",
                    help="a diagnostic: the climb samples its rollouts and computes the "
                    "learner's log-probs at temperature T (one policy, pi^(1/T)); the held-out "
                    "evaluation stays at grpo.temperature. T < 1 reinforces the answers the "
                    "model gives when sharpened")
    ap.add_argument("--temperatures", default="", metavar="T,T,...",
                    help="no climb: sample the start's held-out answers at each of these "
                    "temperatures (grpo.top_p, the evaluation's seed) and print pass@1 and "
                    "pass@k: how much a climb that only sharpens the model could gain")
    ap.add_argument("--decay", action="store_true", help="a diagnostic: the learning rate "
                    "falls from grpo.lr to a tenth of it along a cosine over --steps (the "
                    "climb's own schedule is constant after warm-up)")
    ap.add_argument("--scale-std", action="store_true", help="a diagnostic: advantages "
                    "divided by their group's standard deviation (GRPO as first written; the "
                    "climb's default leaves them unscaled), which weighs a rare right answer "
                    "of a hard problem up")
    ap.add_argument("--save", default="", help="write the climbed model here (the distilled "
                    "one with --distill-steps; a model file that --model reads: --temperatures "
                    "on it measures what the climb left to sharpen)")
    ap.add_argument("--distill-steps", type=int, default=0, metavar="N",
                    help="self-distillation after the climb (the report's, RECIPE.md section 6): "
                    "the climbed model samples --distill-samples completions of each of the "
                    "first --distill-problems training problems at --distill-temperature, keeps "
                    "the verified ones (distill.collect_traces) and a model is fine-tuned on "
                    "them for N steps (distill.sft: batch distill.sft_batch, --distill-lr, no "
                    "dropout); then its held-out evaluation and gain over the start, the "
                    "seconds counted with the climb's. --steps 0: the start distils itself")
    ap.add_argument("--distill-temperature", type=float, default=0.3, metavar="T")
    ap.add_argument("--distill-problems", type=int, default=1000)
    ap.add_argument("--distill-samples", type=int, default=1)
    ap.add_argument("--distill-lr", type=float, default=1e-4)
    ap.add_argument("--distill-source", choices=["verified", "program"], default="verified",
                    help="verified: the climbed model's verified samples; program: a control "
                    "with no sampling and no reward, the program's worked solutions of the same "
                    "problems (distill.program_traces)")
    ap.add_argument("--distill-student", choices=["climbed", "start"], default="climbed",
                    help="the model fine-tuned on the traces: the climbed one, or the start "
                    "(the report's pre-RL student)")
    ap.add_argument("--history", default="", help="write every step's statistics and the "
                    "evaluations here (JSON)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    overrides: dict = {}
    for item in a.p:
        key, _, value = item.partition("=")
        section, _, field = key.partition(".")
        overrides.setdefault(section, {})[field] = yaml.safe_load(value)
    for key in ("optimizer", "momentum"):
        if getattr(a, key) is not None:
            overrides.setdefault("grpo", {})[key] = getattr(a, key)
    cfg = C.load(a.preset, overrides)
    c = dataclasses.replace(cfg.grpo, steps=a.steps, ablations=[])
    tok = load_tokenizer(Path(a.run) / "tokenizer" / "tokenizer.json")
    start = load_model_file(Path(a.model))
    pool, held = task_sets(c, cfg.seed)
    if c.pool_samples > 0:
        sel = select_pool(start, tok, pool, c, cfg.seed)
        print(json.dumps({"pool": len(sel.kept), "of": len(pool),
                          "histogram": sel.histogram}), flush=True)
        pool = sel.kept
    if a.temperatures:
        for temp in (float(x) for x in a.temperatures.split(",")):
            t = time.time()  # the climb's own evaluation, at this temperature
            r = climb_module.evaluate(start, tok, held, dataclasses.replace(c, temperature=temp),
                                      c.final_cap, cfg.seed, stop_ids(tok))
            print(json.dumps({"temperature": temp, "pass@1": round(r["accuracy"], 4),
                              f"pass@{c.eval_samples}": round(r["solved_any"], 4),
                              "length": round(r["length"], 1), "s": round(time.time() - t)}),
                  flush=True)
        return
    t0 = time.time()
    eval_s: list[float] = []  # the held-out evaluations' seconds, left out of the climb's
    real_evaluate = climb_module.evaluate
    eval_temperature = c.temperature
    if a.rollout_temperature > 0:
        c = dataclasses.replace(c, temperature=a.rollout_temperature)

    def timed_evaluate(model, tok, held, cc, *args, **kwargs):
        t = time.time()  # the evaluation samples at grpo.temperature, whatever the rollouts'
        cc = dataclasses.replace(cc, temperature=eval_temperature)
        out = real_evaluate(model, tok, held, cc, *args, **kwargs)
        eval_s.append(time.time() - t)
        print(json.dumps({"eval": len(eval_s) - 1, "pass@1": round(out["accuracy"], 4),
                          "climb_s": round(time.time() - t0 - sum(eval_s))}), flush=True)
        return out

    climb_module.evaluate = timed_evaluate
    if a.freeze_router:
        real_learner_optimizer = climb_module.learner_optimizer

        def learner_optimizer_frozen_router(model, *args, **kwargs):
            for name, p in model.named_parameters():
                if ".router." in name:
                    p.requires_grad_(False)
            return real_learner_optimizer(model, *args, **kwargs)

        climb_module.learner_optimizer = learner_optimizer_frozen_router
    optimizers: list[torch.optim.Optimizer] = []
    if a.decay:  # remember the climb's optimizer, whose rate progress() then sets
        real_make = climb_module.learner_optimizer

        def make_remembered(*args, **kwargs):
            optimizers.append(real_make(*args, **kwargs))
            return optimizers[-1]

        climb_module.learner_optimizer = make_remembered
    if a.scale_std:
        real_advantages = climb_module.group_advantages

        def scaled_advantages(rewards, group_size, **kwargs):
            return real_advantages(rewards, group_size, scale_std=True)

        climb_module.group_advantages = scaled_advantages
    real_draw = climb_module.draw_batch

    def draw_batch(*args, **kwargs):  # one line per rollout batch: is the climb healthy?
        d = real_draw(*args, **kwargs)
        print(json.dumps({"draw_pass_rate": round(d.pass_rate, 3), "rollouts": d.rollouts,
                          "s": round(time.time() - t0)}), flush=True)
        return d

    climb_module.draw_batch = draw_batch
    done = 0

    def progress(n: int) -> None:  # called with 1 after each optimizer step
        nonlocal done
        done += n
        if a.decay:  # the next step's rate: cosine from grpo.lr to a tenth over --steps
            lr = c.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, done / a.steps))))
            for pg in optimizers[-1].param_groups:
                pg["lr"] = lr
        if done % 10 == 0:
            print(json.dumps({"progress": done, "s": round(time.time() - t0)}), flush=True)

    res = climb(start, tok, pool, held, c, steps=a.steps, seed=a.seed,
                eval_every=a.eval_every, keep_model=True, optim=cfg.optim, progress=progress)
    for e in res.evals:
        rows = [r for r in res.history if r["step"] <= e["step"]]
        print(json.dumps({"step": e["step"], "pass@1": round(e["accuracy"], 4),
                          f"pass@{c.eval_samples}": round(e["solved_any"], 4),
                          "length": round(e["length"], 1),
                          "entropy": round(rows[-1]["entropy"], 3) if rows else None,
                          "outer_bind_steps": sum((r.get("outer_bind") or 0) > 0
                                                  for r in rows)}), flush=True)
    g = climb_gain(res.evals[0], res.evals[-1], c.eval_samples, a.seed)
    climb_s = res.wall_s - sum(eval_s)
    print(json.dumps({"gain": round(g.mean, 4), "lo": round(g.lo, 4), "hi": round(g.hi, 4),
                      "verdict": g.verdict, "steps": len(res.history),
                      "empty_batches": res.empty_batches, "collapsed_at": res.collapsed_at,
                      "s": round(time.time() - t0), "climb_s": round(climb_s),
                      "eval_s": round(sum(eval_s))}), flush=True)
    distilled = None
    if a.distill_steps:
        cd = dataclasses.replace(c, distill_steps=a.distill_steps, distill_lr=a.distill_lr,
                                 distill_problems=a.distill_problems,
                                 distill_temperature=a.distill_temperature)
        res.model, info = after_climb(res.model, start, tok, pool, cd, cfg.distill,
                                      seed=a.seed, optim=cfg.optim, samples=a.distill_samples,
                                      student=a.distill_student, source=a.distill_source)
        collect_s, distill_s = info["collect_s"], info["collect_s"] + info["sft_s"]
        losses = info["losses"]
        final = timed_evaluate(res.model, tok, held, c, c.final_cap, a.seed, stop_ids(tok))
        g = climb_gain(res.evals[0], final, c.eval_samples, a.seed)
        distilled = {**info, "collect_s": collect_s, "distill_s": distill_s, **final}
        print(json.dumps({"distilled": a.distill_student, "source": a.distill_source,
                          "traces": info["traces"], "drawn": info["drawn"],
                          "pass@1": round(final["accuracy"], 4),
                          f"pass@{c.eval_samples}": round(final["solved_any"], 4),
                          "loss": [round(losses[0], 4), round(losses[-1], 4)] if losses else [],
                          "gain": round(g.mean, 4), "lo": round(g.lo, 4), "hi": round(g.hi, 4),
                          "verdict": g.verdict, "collect_s": round(collect_s),
                          "distill_s": round(distill_s),
                          "climb_s": round(climb_s + distill_s)}), flush=True)
    if a.history:
        Path(a.history).write_text(json.dumps({"history": res.history, "evals": res.evals,
                                               "eval_s": eval_s, "wall_s": res.wall_s,
                                               "distilled": distilled}))
    if a.save:
        save_model_file(res.model.cfg, res.model.state_dict(), Path(a.save))
    gen = torch.Generator().manual_seed(0)
    for gr in sample_groups(res.model, tok, held[:3], 1, c.final_cap,
                            temperature=eval_temperature, top_p=c.top_p, generator=gen):
        print(repr(tasks.rl_prompt(gr.task)), "->", repr(gr.texts[0][:200]), gr.correct[0])


if __name__ == "__main__":
    main()
