"""What looking for the nucleus among the top 64 tokens saves in a worked-format rollout.

    python benchmarks/nucleus.py --model MODEL_FILE [--run runs/laptop] [--problems 64]
        [--samples 4] [--cap 80] [--threads 1] [--repeats 3]

Samples ``--samples`` worked-format completions of ``--problems`` two-digit additions and
subtractions (``rl.tasks`` kind ``addsub``) with the rollout sampler twice per repeat: with
``model.generation.nucleus_mask`` sorting the whole vocabulary for every token (the baseline)
and looking among the 64 most probable tokens first (the default). Prints each median time,
their ratio, and whether the two sampled exactly the same tokens (they must: same mask, same
random numbers). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.model import generation
from mai_repro.rl import tasks
from mai_repro.rl.rollout import sample_groups
from mai_repro.train.checkpoint import load_model_file


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--run", default="runs/laptop")
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--cap", type=int, default=80)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    tok = load_tokenizer(Path(a.run) / "tokenizer" / "tokenizer.json")
    model = load_model_file(Path(a.model))
    problems = tasks.generate(a.problems, kinds=("addsub",), difficulty=1, seed=0,
                              fmt="worked")
    default = generation._NUCLEUS_FIRST
    times: dict[str, list[float]] = {"full sort": [], "top 64 first": []}
    tokens: dict[str, list] = {}
    for _ in range(a.repeats):
        for name, first in (("full sort", tok.vocab_size), ("top 64 first", default)):
            generation._NUCLEUS_FIRST = first
            t0 = time.perf_counter()
            groups = sample_groups(model, tok, problems, a.samples, a.cap,
                                   generator=torch.Generator().manual_seed(0))
            times[name].append(time.perf_counter() - t0)
            tokens[name] = [c for g in groups for c in g.completions]
    generation._NUCLEUS_FIRST = default
    base, new = (statistics.median(times[k]) for k in ("full sort", "top 64 first"))
    print(json.dumps({"rows": a.problems * a.samples, "cap": a.cap, "threads": a.threads,
                      "full_sort_s": round(base, 2), "top64_first_s": round(new, 2),
                      "speedup": round(base / new, 2),
                      "same_tokens": tokens["full sort"] == tokens["top 64 first"]}))


if __name__ == "__main__":
    main()
