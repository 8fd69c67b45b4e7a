"""What ``grpo.vocab_work: needed`` saves in a worked-format GRPO climb and its evaluation.

    python benchmarks/vocab_work.py --model MODEL_FILE [--run runs/laptop-worked]
        [--preset laptop-worked] [--steps 4] [--problems 128] [--threads 2] [--repeats 2]

Runs, with each of ``grpo.vocab_work`` all (the baseline: every vocabulary-sized pass, as
the recorded runs did it) and needed (a token drawn among its nucleus's tokens, the
learner's logits at the completion positions only, its top-p-masked distribution on the
nucleus's columns), in turn and ``--repeats`` times:

- ``--steps`` optimizer steps of the preset's main climb from ``--model`` (no evaluation);
- one held-out evaluation: ``--problems`` problems x ``grpo.eval_samples`` samples.

Prints one JSON line: the median seconds of each, the ratios, and the two climbs' mean
rollout pass rates (the two paths draw other random numbers, so the climbs differ; both
sample the same distributions: tests/test_model.py and tests/test_grpo.py). Figures:
docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

import mai_repro.config as C
from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.rl import climb as climb_module
from mai_repro.rl.climb import climb, task_sets
from mai_repro.rl.rollout import stop_ids
from mai_repro.train.checkpoint import load_model_file


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", default="runs/laptop-worked")
    ap.add_argument("--preset", default="laptop-worked")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = C.load(a.preset)
    tok = load_tokenizer(Path(a.run) / "tokenizer" / "tokenizer.json")
    start = load_model_file(Path(a.model))
    times: dict[str, dict[str, list[float]]] = {}
    pass_rates: dict[str, float] = {}
    pool, held = task_sets(cfg.grpo, cfg.seed)  # vocab_work does not change the problems
    for _ in range(a.repeats):
        for work in ("all", "needed"):
            c = dataclasses.replace(cfg.grpo, vocab_work=work, steps=a.steps, ablations=[])
            t = time.perf_counter()
            res = climb(start, tok, pool, [], c, steps=a.steps, seed=cfg.seed)
            climb_s = time.perf_counter() - t
            t = time.perf_counter()
            climb_module.evaluate(start, tok, held[: a.problems], c, c.final_cap, cfg.seed,
                                  stop_ids(tok))
            eval_s = time.perf_counter() - t
            for key, v in (("climb", climb_s), ("eval", eval_s)):
                times.setdefault(work, {}).setdefault(key, []).append(v)
            pass_rates[work] = statistics.mean(h["pass_rate_drawn"] for h in res.history)
    med = {w: {k: statistics.median(v) for k, v in d.items()} for w, d in times.items()}
    print(json.dumps({
        "steps": a.steps, "eval_rows": a.problems * cfg.grpo.eval_samples,
        "threads": a.threads, "repeats": a.repeats,
        "climb_s": {w: round(med[w]["climb"], 1) for w in med},
        "eval_s": {w: round(med[w]["eval"], 1) for w in med},
        "climb_speedup": round(med["all"]["climb"] / med["needed"]["climb"], 2),
        "eval_speedup": round(med["all"]["eval"] / med["needed"]["eval"], 2),
        "rollout_pass_rate": {w: round(v, 3) for w, v in pass_rates.items()}}))


if __name__ == "__main__":
    main()
