"""Does a pre-trained model copy? The induction test in several forms, on one model.

    python benchmarks/induction_probe.py [--run runs/laptop] [--seqs 16]

Notebook 07's probe (eval.longctx.induction_score) repeats random token ids drawn from the
whole vocabulary. A model can fail it for two reasons: it has no copying circuit, or the
circuit does not work on rare, barely trained token ids. This script separates the two: the
same test with ids drawn only from the commonest tokens of the run's training shards, at two
lengths (within the local layers' window and
past it), and on held-out text of the run's own corpus (the first ``half`` tokens of a held-out
window, repeated). A model that copies has a second-copy / first-copy loss ratio well under 1
in every row; one that does not sits near 1. Prints one table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mai_repro.data.shards import open_shards
from mai_repro.data.tokenizer import SPECIALS
from mai_repro.eval.longctx import induction_score, repeat_losses
from mai_repro.train.checkpoint import load_model_file


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/laptop", help="run directory with pretraining/ and "
                    "tokenizer/ (default runs/laptop)")
    ap.add_argument("--seqs", type=int, default=16, help="sequences per row")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    run = Path(args.run)
    model_path = run / "pretraining" / "model.pt"
    if not model_path.exists():
        raise SystemExit(f"{model_path} not found: run notebook 07 first "
                         f"(python -m mai_repro.pipeline --only 07)")
    torch.manual_seed(args.seed)
    model = load_model_file(model_path).eval()
    vocab = model.cfg.vocab_size
    window = model.cfg.window
    low = len(SPECIALS)
    counts = sum(np.bincount(np.asarray(sh.seqs).ravel(), minlength=vocab)
                 for sh in open_shards(run / "tokenizer" / "shards", "train").values())
    counts[:low] = 0
    by_freq = np.argsort(-counts, kind="stable")
    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for half in (window // 2, 2 * window):
        s = induction_score(model, vocab, half_len=half, n_seqs=args.seqs, seed=args.seed,
                            low=low)
        rows.append({"probe": f"random ids, all {vocab - low}", "half": half,
                     "first": s.first, "second": s.second})
        for top in (1000, 200):
            pool = torch.as_tensor(by_freq[:top].copy())
            ids = pool[torch.randint(0, top, (args.seqs, half), generator=g)]
            s = repeat_losses(model, ids)
            rows.append({"probe": f"random ids, commonest {top}", "half": half,
                         "first": s.first, "second": s.second})
    heldout = open_shards(run / "tokenizer" / "shards", "heldout")
    seqs = torch.cat([torch.as_tensor(sh.seqs[: args.seqs].astype("int64"))
                      for sh in heldout.values()])
    for half in (window // 2, 2 * window):
        if seqs.shape[1] >= half:
            s = repeat_losses(model, seqs[:, :half])
            rows.append({"probe": f"held-out text ({len(heldout)} families)", "half": half,
                         "first": s.first, "second": s.second})
    print(f"{'probe':34} {'half':>5} {'1st copy':>9} {'2nd copy':>9} {'ratio':>6}")
    for r in rows:
        r["ratio"] = r["second"] / r["first"]
        print(f"{r['probe']:34} {r['half']:5d} {r['first']:9.3f} {r['second']:9.3f} "
              f"{r['ratio']:6.3f}")
    print(json.dumps({"model": str(model_path), "window": window, "rows": rows}))


if __name__ == "__main__":
    main()
