"""The retrieval stage: C distinct candidate items for each served user, before the policy ranks them.

Each candidate is drawn uniformly from the catalog, or, with probability ``popular_share``, in
proportion to item popularity (inverse-CDF on the cumulative popularity). The draws of one
user-step come from a splitmix64 sequence whose start is a hash of (user, the user's interaction
count), so a user's candidates do not depend on batching. Duplicates are redrawn (8 tries) and then
resolved by probing the next free item id.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from simenv.rng import CANDIDATE, stream_next, stream_start

SAMPLERS = ("uniform", "popularity", "mixed")


_CHUNK = 256  # users per parallel task, sharing one catalog-sized "taken" bitmap


@njit(parallel=True, cache=True)
def draw_candidates(users, mask, steps, key, num_items, popular_share, pop_cdf, out):
    """Fill ``out[b]`` ((B, C) int32) for ``users[mask]``; rows not in the mask are left as they are."""
    n, n_cand = out.shape
    for chunk in prange((n + _CHUNK - 1) // _CHUNK):
        taken = np.zeros(num_items, np.bool_)  # O(1) duplicate checks; cleared after each user
        for b in range(chunk * _CHUNK, min(n, (chunk + 1) * _CHUNK)):
            if not mask[b]:
                continue
            u = users[b]
            state = stream_start(key, u, steps[u], CANDIDATE)
            for c in range(n_cand):
                item = -1
                for _ in range(8):
                    state, x = stream_next(state)
                    popular = False
                    if popular_share > 0:
                        state, y = stream_next(state)
                        popular = y < popular_share
                    if popular:
                        item = min(np.searchsorted(pop_cdf, x), num_items - 1)
                    else:
                        item = int(x * num_items)
                    if not taken[item]:
                        break
                while taken[item]:
                    item = (item + 1) % num_items
                taken[item] = True
                out[b, c] = item
            for c in range(n_cand):
                taken[out[b, c]] = False


def popular_share_of(sampler: str, mixed_share: float = 0.5) -> float:
    """The probability of a popularity-proportional draw for a named sampler."""
    if sampler not in SAMPLERS:
        raise ValueError(f"candidate_sampler={sampler!r}: use one of {SAMPLERS}.")
    return {"uniform": 0.0, "popularity": 1.0, "mixed": mixed_share}[sampler]
