"""How much procedural worked arithmetic does the laptop model need before a worked-format RL
task is at its edge of competence? (issue 22)

    python benchmarks/worked_bootstrap.py [--run runs/laptop] [--start pretraining]
        [--steps 300] [--eval-every 100] [--train-difficulties 0,1,2] [--eval-difficulty 1]
        [--kinds arithmetic] [--cap 160] [--save MODEL_FILE] [--model MODEL_FILE] [--show]

``--steps 0`` evaluates the start model only (with ``--model``: any saved model file).

Fine-tunes the run's ``--start`` model (``pretraining`` or ``midtraining``) on procedural
worked solutions only (``rl.worked``, arithmetic, packed into 256-token windows; every text
that poses or writes out one of 512 held-out problems removed), ``--batch`` windows per step
at ``--lr`` (20 warm-up steps, cosine to a tenth), and every ``--eval-every`` steps samples
``--samples`` completions of each of ``--n-eval`` held-out problems in the ``worked`` format
(temperature 1, top-p 0.97, cap ``--cap``): one JSON line with the pass rate, pass@k and the
histogram of correct samples per problem, and at the end one completion of the first two
problems. Figures: docs/rl.md, "The worked format at laptop".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

import mai_repro.config as C
from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.rl import tasks
from mai_repro.rl.evaluate import sample_accuracy
from mai_repro.rl.rollout import stop_ids
from mai_repro.stages.midtraining import reasoning_bootstrap
from mai_repro.train.checkpoint import load_model_file, save_model_file


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/laptop")
    ap.add_argument("--start", default="pretraining", choices=["pretraining", "midtraining"])
    ap.add_argument("--train-difficulties", default="0,1,2")
    ap.add_argument("--eval-difficulty", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--n-eval", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--cap", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kinds", default="arithmetic")
    ap.add_argument("--model", default="", help="start from this model file instead of the "
                                                "run's --start stage")
    ap.add_argument("--show", action="store_true", help="print two completions at every "
                                                        "evaluation, not only the last")
    ap.add_argument("--ban", type=int, default=512, help="held-out problems whose texts are "
                                                         "removed (difficulty 0 holds 300)")
    ap.add_argument("--save", default="", help="write the fine-tuned model here (a model "
                                                "file, as the stages write them)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    run = Path(a.run)
    model_file = run / a.start / "model.pt"
    if not model_file.exists():
        raise SystemExit(f"{model_file} not found: run the notebooks up to {a.start} first")
    tok = load_tokenizer(run / "tokenizer" / "tokenizer.json")
    model = load_model_file(a.model or model_file)
    kinds = tuple(a.kinds.split(","))
    held = tasks.generate(a.n_eval, kinds=kinds, difficulty=a.eval_difficulty, seed=0,
                          split="eval", fmt="worked")
    banned_questions = [tasks.question(t) for t in tasks.generate(
        max(a.ban, a.n_eval), kinds=kinds, difficulty=a.eval_difficulty, seed=0, split="eval")]
    difficulties = tuple(int(x) for x in a.train_difficulties.split(","))
    # the stage's bootstrap with this script's settings: at most 16,000 texts (two-digit
    # additions and subtractions hold about 20,000 problems), windows taken again in turn
    m = dataclasses.replace(C.load("laptop").midtrain, bootstrap_steps=a.steps,
                            bootstrap_lr=a.lr, bootstrap_context=a.context,
                            tokens_per_step=a.batch * a.context, bootstrap_texts=16_000,
                            procedural_kinds=list(kinds),
                            procedural_difficulties=list(difficulties))
    stops = stop_ids(tok)

    def evaluate(step: int) -> None:
        r = sample_accuracy(model, tok, held, samples=a.samples, max_new_tokens=a.cap,
                            stops=stops, ks=(1, a.samples))
        print(json.dumps({"step": step, "tokens": step * a.batch * a.context,
                          "pass@1": r.accuracy, f"pass@{a.samples}": r.pass_at[a.samples],
                          "correct_per_problem": np.bincount(r.correct,
                                                             minlength=a.samples + 1).tolist(),
                          "length": round(r.length, 1),
                          # pass@1 per operation (arithmetic: +, - and * mixed)
                          "pass@1_by_op": {op: round(float(np.mean(
                              [c / a.samples for t, c in zip(held, r.correct, strict=True)
                               if f" {op} " in tasks.question(t)] or [np.nan])), 4)
                              for op in "+-*"}}), flush=True)
        if step == a.steps or a.show:
            for t, texts_ in zip(held[:2], r.texts[:2], strict=True):
                print(repr(tasks.question(t)), "->", repr(texts_[0][:240]), flush=True)

    evaluate(0)
    if a.steps == 0:  # evaluate a saved model only
        return
    t0 = time.time()

    def every(step: int, loss: float) -> None:
        if step % a.eval_every == 0:
            print(json.dumps({"step": step, "loss": round(loss, 3),
                              "s": round(time.time() - t0)}), flush=True)
            evaluate(step)

    model, rec = reasoning_bootstrap(model, m, tok, banned_questions, 0, "cpu",
                                     progress=False, on_step=every)
    print(json.dumps({"texts": rec["texts"], "removed_heldout": rec["removed_heldout"],
                      "windows": rec["windows"], "start": a.model or a.start}), flush=True)
    if a.save:
        save_model_file(model.cfg, model.state_dict(), Path(a.save))


if __name__ == "__main__":
    main()
