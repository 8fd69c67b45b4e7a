"""Near-dedup throughput on the raw sample: our MinHash LSH vs the datasketch package.

    python benchmarks/dedup.py [--docs N]

Both sides hash the same word 5-shingles of the same documents into 128-permutation MinHash
signatures and query an LSH index of 16 bands x 8 rows; prints documents per second of each
and their ratio, plus how many near-duplicate pairs each finds (needs: pip install datasketch).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from importlib import metadata

from mai_repro.data import dedup
from mai_repro.data.documents import Document
from mai_repro.data.sources import iter_sample

WORD = re.compile(r"\w+", re.UNICODE)


def ours(texts: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    h = dedup.MinHasher(128, 5)
    sigs = [h.signature(t) for t in texts]
    found = dedup.near_duplicates(sigs, 16, 8, 0.7)
    return time.perf_counter() - t0, len(found)


def theirs(texts: list[str]) -> tuple[float, int]:
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=0.7, num_perm=128, params=(16, 8))
    found = 0
    for i, t in enumerate(texts):
        words = WORD.findall(t.lower())
        m = MinHash(num_perm=128)
        m.update_batch([" ".join(words[j:j + 5]).encode() for j in
                        range(max(1, len(words) - 4))])
        if any(m.jaccard(lsh_m) >= 0.7 for _, lsh_m in
               ((k, stored[k]) for k in lsh.query(m))):
            found += 1
        lsh.insert(str(i), m)
        stored[str(i)] = m
    return time.perf_counter() - t0, found


stored: dict = {}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--docs", type=int, default=3000)
    args = p.parse_args()
    texts = [d.text for d in iter_sample() if isinstance(d, Document)][: args.docs]
    t_ours, n_ours = ours(texts)
    t_theirs, n_theirs = theirs(texts)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(json.dumps({
        "documents": len(texts), "MB": round(mb, 2),
        "ours_docs_per_s": round(len(texts) / t_ours, 1),
        "datasketch_docs_per_s": round(len(texts) / t_theirs, 1),
        "throughput_ratio_ours_over_datasketch": round(t_theirs / t_ours, 3),
        "near_duplicates_found": {"ours": n_ours, "datasketch": n_theirs},
        "same_count": n_ours == n_theirs,
        "datasketch_version": metadata.version("datasketch"),
    }, indent=2))


if __name__ == "__main__":
    main()
