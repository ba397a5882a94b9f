#!/usr/bin/env python3
"""NumPy reference for `recsift bench rank`: every user's top-K items by dot product.

recsift writes the user and item vectors (little-endian float32, row-major) and runs this
script on them. For each block of users it computes the block's scores against the whole
catalogue with one BLAS product (`U_b @ V.T`), takes each row's K best with
`argpartition`, resolves ties at the K-th score by the lower item index (rows without a
boundary tie need no extra work), and sorts the K by (score descending, item ascending),
the order recsift documents. It prints one JSON object: the wall time of the ranking (after
loading) and its peak resident memory; the lists go to --out as uint32.

Needs NumPy (`pip install numpy`). Its BLAS uses every core, as recsift does.
"""

import argparse
import json
import resource
import sys
import time

import numpy as np


def top_k_block(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's k best columns, best first, ties by the lower column."""
    n = scores.shape[1]
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(scores, part, 1).min(axis=1)
    at_least = (scores >= kth[:, None]).sum(axis=1)
    # Rows with more than k scores >= the k-th have a tie at the boundary: argpartition
    # may have picked any of the tied columns, so redo those rows exactly.
    for row in np.nonzero(at_least > k)[0]:
        s = scores[row]
        above = np.nonzero(s > kth[row])[0]
        tied = np.nonzero(s == kth[row])[0][: k - len(above)]
        part[row] = np.concatenate([above, tied])
    chosen = np.take_along_axis(scores, part, 1)
    order = np.lexsort((part, -chosen), axis=1)
    assert n >= k
    return np.take_along_axis(part, order, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", required=True)
    parser.add_argument("--items", required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--block", type=int, default=1024)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    users = np.fromfile(args.users, dtype="<f4").reshape(-1, args.dim)
    items = np.fromfile(args.items, dtype="<f4").reshape(-1, args.dim)
    out = np.empty((users.shape[0], args.k), dtype="<u4")
    items_t = np.ascontiguousarray(items.T)
    started = time.perf_counter()
    for start in range(0, users.shape[0], args.block):
        block = users[start : start + args.block] @ items_t
        out[start : start + args.block] = top_k_block(block, args.k)
    seconds = time.perf_counter() - started
    out.tofile(args.out)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_kib / 1024, "numpy": np.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
