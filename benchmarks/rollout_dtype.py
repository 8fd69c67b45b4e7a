"""What bfloat16 rollouts cost on a CPU without bfloat16 arithmetic (``grpo.rollout_dtype``).

    python benchmarks/rollout_dtype.py --model MODEL_FILE [--run runs/laptop] [--problems 32]
        [--samples 4] [--cap 160] [--threads 1] [--repeats 3]

Samples ``--samples`` worked-format completions of ``--problems`` two-digit additions and
subtractions (``rl.tasks`` kind ``addsub``) with the climb's inference engine
(``rl.climb.engine_model``) in float32 (the baseline) and in bfloat16, alternating, the same
random numbers each time. Prints each median time, their ratio and the pass rates (the two
dtypes round differently, so their samples differ after the first tokens whose probabilities
move). On CPUs without ``avx512_bf16`` or AMX torch computes bfloat16 matrix products by
conversion, and the laptop's worked-format climbs are rollout-bound. Figures:
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.rl import tasks
from mai_repro.rl.climb import engine_model
from mai_repro.rl.rollout import sample_groups, stop_ids
from mai_repro.train.checkpoint import load_model_file


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", default="runs/laptop")
    ap.add_argument("--problems", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--cap", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tok = load_tokenizer(Path(a.run) / "tokenizer" / "tokenizer.json")
    model = load_model_file(Path(a.model)).eval()
    problems = tasks.generate(a.problems, kinds=("addsub",), difficulty=1, seed=5,
                              split="train", fmt="worked")
    engines = {dt: engine_model(model, dt) for dt in ("float32", "bfloat16")}
    stops = stop_ids(tok)
    times: dict[str, list[float]] = {dt: [] for dt in engines}
    passed: dict[str, float] = {}
    for _ in range(a.repeats):
        for dt, engine in engines.items():
            t0 = time.perf_counter()
            groups = sample_groups(engine, tok, problems, a.samples, a.cap, temperature=1.0,
                                   top_p=0.97, generator=torch.Generator().manual_seed(0),
                                   stops=stops)
            times[dt].append(time.perf_counter() - t0)
            passed[dt] = sum(sum(g.correct) for g in groups) / (a.problems * a.samples)
    base, bf16 = (statistics.median(times[dt]) for dt in ("float32", "bfloat16"))
    print(json.dumps({"rows": a.problems * a.samples, "cap": a.cap, "threads": a.threads,
                      "float32_s": round(base, 2), "bfloat16_s": round(bf16, 2),
                      "bfloat16_over_float32": round(bf16 / base, 2),
                      "pass_rate": {k: round(v, 3) for k, v in passed.items()}}))


if __name__ == "__main__":
    main()
