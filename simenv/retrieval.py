"""The retrieval stage: C distinct candidate items for each served user, before the policy ranks them.

Each candidate is drawn uniformly from the catalog, or, with probability ``popular_share``, in
proportion to item popularity (inverse-CDF on the cumulative popularity). Draws are counter-based,
keyed by (user, the user's interaction count, slot, retry), so a user's candidates do not depend on
batching. Duplicates are redrawn (8 tries) and then resolved by probing the next free item id.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from simenv.rng import CANDIDATE, uniform

SAMPLERS = ("uniform", "popularity", "mixed")


@njit(inline="always", cache=True)
def _seen(row, c, item):
    for j in range(c):
        if row[j] == item:
            return True
    return False


@njit(parallel=True, cache=True)
def draw_candidates(users, mask, steps, key, num_items, popular_share, pop_cdf, out):
    """Fill ``out[b]`` ((B, C) int32) for ``users[mask]``; rows not in the mask are left as they are."""
    n_cand = out.shape[1]
    for b in prange(users.shape[0]):
        if not mask[b]:
            continue
        u = users[b]
        t = steps[u]
        row = out[b]
        for c in range(n_cand):
            item = -1
            for r in range(8):
                stream = CANDIDATE + (np.uint64(r) << np.uint64(32)) + np.uint64(c)
                x = uniform(key, u, t, stream)
                if popular_share > 0 and uniform(key, u, t, stream + (np.uint64(1) << np.uint64(40))) < popular_share:
                    item = np.searchsorted(pop_cdf, x)
                    if item >= num_items:
                        item = num_items - 1
                else:
                    item = int(x * num_items)
                if not _seen(row, c, item):
                    break
            while _seen(row, c, item):
                item = (item + 1) % num_items
            row[c] = item


def popular_share_of(sampler: str, mixed_share: float = 0.5) -> float:
    """The probability of a popularity-proportional draw for a named sampler."""
    if sampler not in SAMPLERS:
        raise ValueError(f"candidate_sampler={sampler!r}: use one of {SAMPLERS}.")
    return {"uniform": 0.0, "popularity": 1.0, "mixed": mixed_share}[sampler]
