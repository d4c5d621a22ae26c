"""Fused numba kernels behind the monitor's snapshots: the same metrics as the pure numpy functions of
``diversity``, ``popularity`` and ``homogenization`` (which stay the specification; the tests hold the
two equal), computed row by row in one pass.

Why they exist: a snapshot applies about twenty small numpy metrics to a few hundred rows, and in a
world of a thousand users that costs more than the step it measures; the cost was call overhead and
(B, n, n) or sparse temporaries, not arithmetic. One parallel pass per snapshot phase has neither.

Rows whose metric is undefined (an empty history, an empty memory) carry NaN; the monitor drops them
and notes why when none is left.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _genre_mix(items, genres, out):
    """out[:] = p(g | list) as ``diversity.genre_distribution``; returns the number of listed items."""
    out[:] = 0.0
    n = 0
    for j in range(items.shape[0]):
        item = items[j]
        if item < 0:
            continue
        n += 1
        count = 0
        for g in range(genres.shape[1]):
            if genres[item, g]:
                count += 1
        if count == 0:
            continue
        for g in range(genres.shape[1]):
            if genres[item, g]:
                out[g] += 1.0 / count
    if n > 0:
        out /= n
    return n


@njit(cache=True)
def slate_rows(history, slates, genres, embeddings, inv_norm, pop, alpha, out):
    """Per served row b: out[b] = (Steck's C_KL, intra-list diversity, history popularity, slate
    popularity), the first and third NaN for an empty history.

    history (B, M) -1 padded; slates (B, k); genres (I, G) bool; embeddings (I, d) with inv_norm (I,)
    their reciprocal norms; pop (I,) popularity shares.
    """
    n_rows, k = slates.shape
    n_genres = genres.shape[1]
    d = embeddings.shape[1]
    for b in prange(n_rows):
        p = np.empty(n_genres)
        q = np.empty(n_genres)
        filled = _genre_mix(history[b], genres, p)
        _genre_mix(slates[b], genres, q)
        # mean pairwise cosine = (|sum_i e_i|^2 - sum_i |e_i|^2) / (k (k - 1)) for unit e_i: O(k d), not O(k^2 d)
        total = np.zeros(d)
        squares = 0.0
        for i in range(k):
            item = slates[b, i]
            for x in range(d):
                e = embeddings[item, x] * inv_norm[item]
                total[x] += e
                squares += e * e
        if k > 1:
            out[b, 1] = 1.0 - (np.dot(total, total) - squares) / (k * (k - 1))
        else:
            out[b, 1] = math.nan
        gap_r = 0.0
        for j in range(k):
            gap_r += pop[slates[b, j]]
        out[b, 3] = gap_r / k
        if filled == 0:
            out[b, 0] = math.nan
            out[b, 2] = math.nan
            continue
        kl = 0.0
        for g in range(n_genres):
            if p[g] > 0:
                kl += p[g] * math.log(p[g] / ((1 - alpha) * q[g] + alpha * p[g]))
        out[b, 0] = kl
        gap_p = 0.0
        for j in range(history.shape[1]):
            if history[b, j] >= 0:
                gap_p += pop[history[b, j]]
        out[b, 2] = gap_p / filled


@njit(cache=True)
def relevance_counts(values, candidates, slates, tail, counts):
    """PopREO's tallies: counts += (hits head, hits tail, relevant head, relevant tail), where the
    relevant items of a row are the k candidates of highest true value and a hit is one in the slate."""
    n_rows, k = slates.shape
    n_cand = candidates.shape[1]
    for b in range(n_rows):
        for c in range(n_cand):
            rank = 0  # candidates ranked above c; ties go to the earlier one
            for o in range(n_cand):
                if values[b, o] > values[b, c] or (values[b, o] == values[b, c] and o < c):
                    rank += 1
            if rank >= k:
                continue
            item = candidates[b, c]
            is_tail = tail[item]
            counts[3 if is_tail else 2] += 1.0
            for j in range(k):
                if slates[b, j] == item:
                    counts[1 if is_tail else 0] += 1.0
                    break


@njit(cache=True, inline="always")
def _first(row, i):
    """Whether row[i] is an item (>= 0) seen for the first time in its row (re-watches count once)."""
    if row[i] < 0:
        return False
    for j in range(i):
        if row[j] == row[i]:
            return False
    return True


@njit(cache=True, inline="always")
def _jaccard(a, b):
    """``homogenization.jaccard`` of one pair of -1 padded rows (NaN when both are empty)."""
    n_a = 0
    n_b = 0
    inter = 0
    for i in range(a.shape[0]):
        if not _first(a, i):
            continue
        n_a += 1
        for j in range(b.shape[0]):
            if b[j] == a[i]:
                inter += 1
                break
    for i in range(b.shape[0]):
        if _first(b, i):
            n_b += 1
    union = n_a + n_b - inter
    return inter / union if union > 0 else math.nan


@njit(cache=True, inline="always")
def _taste(interests, weights, u, out):
    """out[:] = unit(sum_k w_uk x_uk), as ``homogenization.tastes``."""
    out[:] = 0.0
    for k in range(interests.shape[1]):
        w = weights[u, k]
        for x in range(interests.shape[2]):
            out[x] += w * interests[u, k, x]
    norm = 0.0
    for x in range(out.shape[0]):
        norm += out[x] * out[x]
    out /= max(math.sqrt(norm), 1e-12)


@njit(cache=True)
def followed_rows(followed, memory, nn, rand, genres, interests, weights, indptr, indices, tastes, out):
    """Per followed user b: tastes[b] = unit taste, out[b] = (Jaccard with the initially most similar
    user, Jaccard with a random user, genre entropy of the memory (NaN if empty), sum of cosines to the
    neighbors' tastes, number of neighbors)."""
    n_rows = followed.shape[0]
    n_genres = genres.shape[1]
    d = interests.shape[2]
    for b in prange(n_rows):
        _taste(interests, weights, followed[b], tastes[b])
    for b in prange(n_rows):
        out[b, 0] = _jaccard(memory[b], memory[nn[b]])
        out[b, 1] = _jaccard(memory[b], memory[rand[b]])
        p = np.empty(n_genres)
        if _genre_mix(memory[b], genres, p) == 0:
            out[b, 2] = math.nan
        else:
            h = 0.0
            for g in range(n_genres):
                if p[g] > 0:
                    h -= p[g] * math.log(p[g])
            out[b, 2] = h / math.log(max(n_genres, 2))
        u = followed[b]
        other = np.empty(d)
        total = 0.0
        for e in range(indptr[u], indptr[u + 1]):
            _taste(interests, weights, indices[e], other)
            dot = 0.0
            for x in range(d):
                dot += tastes[b, x] * other[x]
            total += dot
        out[b, 3] = total
        out[b, 4] = indptr[u + 1] - indptr[u]
