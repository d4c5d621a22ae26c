"""Homogenization and echo chambers over time, measured on the true user state.

- consumption similarity (Chaney et al. 2018): mean Jaccard similarity of recently consumed item
  sets over pairs of users; for pairs of users with similar initial tastes it is the
  homogenization signal, for random pairs the population baseline;
- interest dispersion: trace of the covariance of users' tastes, and their mean pairwise cosine;
- neighbor similarity: mean cosine between a user's taste and each neighbor's, and its excess
  over random pairs (an echo chamber on the graph);
- consumption genre entropy per user (a filter bubble narrows it).

A user's *taste* is the unit vector of the weight-averaged interests, t_u = unit(sum_k w_uk x_uk).
"""
from __future__ import annotations

import numpy as np

from simenv.audit.errors import UndefinedMetric
from simenv.audit.diversity import genre_distribution


def tastes(interests: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, d) unit tastes from (B, K, d) interests and (B, K) weights."""
    t = np.einsum("bk,bkd->bd", np.asarray(weights, np.float32), np.asarray(interests, np.float32))
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) Jaccard similarity |A ∩ B| / |A ∪ B| of item sets given as (P, M) rows, -1 padded.

    Pairs where both sets are empty are NaN (similarity of nothing is undefined)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"jaccard: shapes {a.shape} and {b.shape}, expected equal (P, M).")
    out = np.full(len(a), np.nan)
    # count matches by membership of a's items in b's row: (P, M, M) booleans with M a small memory
    am = np.where(a >= 0, a, -1)
    bm = np.where(b >= 0, b, -2)  # -1 and -2 never match each other
    a_unique = _unique_rows(am)
    b_unique = _unique_rows(bm)
    inter = (a_unique[:, :, None] == b_unique[:, None, :]).any(axis=2) & (a_unique >= 0)
    n_inter = inter.sum(axis=1)
    n_a = (a_unique >= 0).sum(axis=1)
    n_b = (b_unique >= 0).sum(axis=1)
    union = n_a + n_b - n_inter
    np.divide(n_inter, union, out=out, where=union > 0)
    return out


def _unique_rows(x: np.ndarray) -> np.ndarray:
    """Rows with repeated ids replaced by -3 (so a re-watched item counts once); order is irrelevant."""
    s = np.sort(x, axis=1)
    dup = np.zeros_like(s, bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    return np.where(dup | (s < 0), -3, s)


def dispersion(t: np.ndarray) -> tuple[float, float]:
    """(trace of the covariance, mean pairwise cosine) of unit taste rows.

    The mean cosine over distinct pairs is (|sum t|^2 - sum |t|^2) / (n (n - 1)), without the n x n matrix.
    """
    t = np.asarray(t, np.float64)
    n = len(t)
    if n < 2:
        raise UndefinedMetric("dispersion needs at least 2 users.")
    trace = float(t.var(axis=0).sum())
    s = t.sum(axis=0)
    cos = float((s @ s - (t * t).sum()) / (n * (n - 1)))
    return trace, cos


def neighbor_similarity(users: np.ndarray, indptr: np.ndarray, indices: np.ndarray,
                        interests: np.ndarray, weights: np.ndarray) -> float:
    """Mean cosine between the tastes of the given users and of each of their neighbors (CSR graph).

    Only the tastes of the users and their neighbors are computed, so it stays cheap in a huge world.
    """
    users = np.asarray(users, np.int64)
    lo, hi = indptr[users], indptr[users + 1]
    deg = hi - lo
    if deg.sum() == 0:
        raise UndefinedMetric("neighbor similarity: the users have no neighbors (empty social graph).")
    first = np.repeat(lo - (np.cumsum(deg) - deg), deg)  # flat edge e sits at CSR position first[e] + e
    nbrs = indices[first + np.arange(deg.sum())].astype(np.int64)
    involved, where = np.unique(np.concatenate([users, nbrs]), return_inverse=True)
    t = tastes(interests[involved], weights[involved])
    src, dst = np.repeat(where[: len(users)], deg), where[len(users):]
    return float(np.einsum("ed,ed->e", t[src], t[dst]).mean())


def genre_entropy(items: np.ndarray, genres: np.ndarray) -> np.ndarray:
    """(B',) normalised entropy of the genre mix of each non-empty item list (1 = all genres equally)."""
    p = genre_distribution(items, genres)
    keep = p.sum(axis=1) > 0
    p = p[keep]
    g = p.shape[1]
    logp = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logp).sum(axis=1) / np.log(max(g, 2))
