"""Popularity bias of what is shown: ARP, APLT, popularity lift (ΔGAP), PopRSP and PopREO.

``popularity`` is the item's share of interactions (non-negative, sums to 1): the catalog prior
``Catalog.popularity`` in this simulator, or counts from a warm-up log. Formulas follow
Abdollahpouri et al. (ARP, APLT, ΔGAP) and Zhu et al. SIGIR 2020 (PopRSP, PopREO), as collected in
``shared/research/steering_bias.md`` §4.1.
"""
from __future__ import annotations

import numpy as np

from simenv.audit.errors import UndefinedMetric


def shares(popularity: np.ndarray) -> np.ndarray:
    """Normalise non-negative popularity counts to shares that sum to 1."""
    p = np.asarray(popularity, np.float64)
    if p.ndim != 1 or len(p) == 0 or np.any(p < 0) or not np.all(np.isfinite(p)):
        raise ValueError("popularity: expected a non-empty 1-d array of finite, non-negative counts or shares.")
    total = p.sum()
    if total <= 0:
        raise UndefinedMetric("popularity sums to 0: no item has any interaction, so shares are undefined.")
    return p / total


def long_tail(popularity: np.ndarray, head_share: float = 0.8) -> np.ndarray:
    """(I,) bool: True for long-tail items.

    The short head is the smallest set of most popular items that together hold ``head_share`` of
    all interactions (Elliot's convention, 80%); everything else is the tail. Ties at the boundary
    are broken by item index, so the split is deterministic.
    """
    if not 0 < head_share < 1:
        raise ValueError(f"head_share={head_share}: must be in (0, 1).")
    p = shares(popularity)
    order = np.argsort(-p, kind="stable")
    cum = np.cumsum(p[order])
    n_head = int(np.searchsorted(cum, head_share - 1e-12) + 1)
    tail = np.ones(len(p), bool)
    tail[order[:n_head]] = False
    return tail


def _rows(slates: np.ndarray) -> np.ndarray:
    s = np.asarray(slates)
    if s.ndim != 2 or s.shape[1] == 0:
        raise ValueError(f"slates: shape {s.shape}, expected (users, k) item ids with k >= 1.")
    if s.shape[0] == 0:
        raise UndefinedMetric("no slates: nothing was recommended.")
    return s


def arp(slates: np.ndarray, popularity: np.ndarray) -> float:
    """Average recommendation popularity: mean over slates of the mean popularity share of their items.

    ARP = 1/|U| sum_u 1/k sum_{i in L_u} phi(i), phi = popularity share. A uniformly random
    recommender scores 1/I on average; multiply by I to read it as "times the average item".
    """
    s = _rows(slates)
    return float(shares(popularity)[s].mean())


def aplt(slates: np.ndarray, tail: np.ndarray) -> float:
    """Average percentage of long-tail items: mean over slates of the share of tail items."""
    s = _rows(slates)
    return float(np.asarray(tail, bool)[s].mean())


def popularity_lift(slates: np.ndarray, histories: np.ndarray, popularity: np.ndarray) -> float:
    """ΔGAP = (GAP_r - GAP_p) / GAP_p: how much more popular the recommendations are than the users'
    own consumption (Abdollahpouri et al. 2019). GAP_p averages, over users, the mean popularity
    share of their history items (-1 = empty slot); GAP_r the same over their slates. Users with an
    empty history are left out of both, since they have no taste to compare against.
    """
    s = _rows(slates)
    h = np.asarray(histories)
    if h.ndim != 2 or h.shape[0] != s.shape[0]:
        raise ValueError(f"histories: shape {h.shape}, expected ({s.shape[0]}, M) item ids, -1 padded.")
    p = shares(popularity)
    filled = h >= 0
    n = filled.sum(axis=1)
    keep = n > 0
    if not keep.any():
        raise UndefinedMetric("popularity lift: no user has a history yet, so there is no taste to compare to.")
    gap_p = np.where(filled, p[np.maximum(h, 0)], 0.0).sum(axis=1)[keep] / n[keep]
    return lift(gap_p, p[s[keep]].mean(axis=1))


def lift(history_popularity: np.ndarray, slate_popularity: np.ndarray) -> float:
    """ΔGAP from per-user mean popularity shares of histories and of slates (users with a history)."""
    if len(history_popularity) == 0:
        raise UndefinedMetric("popularity lift: no user has a history yet, so there is no taste to compare to.")
    gap_p, gap_r = float(np.mean(history_popularity)), float(np.mean(slate_popularity))
    if gap_p <= 0:
        raise UndefinedMetric("popularity lift: the histories hold only items of zero popularity.")
    return (gap_r - gap_p) / gap_p


def _parity(numer: np.ndarray, denom: np.ndarray, what: str) -> float:
    numer, denom = np.asarray(numer, np.float64), np.asarray(denom, np.float64)
    if np.any(denom <= 0):
        raise UndefinedMetric(f"{what}: a popularity group has no {'available' if 'RSP' in what else 'relevant'} "
                              "items, so its rate is undefined.")
    rates = numer / denom
    mean = rates.mean()
    if mean <= 0:
        raise UndefinedMetric(f"{what}: both group rates are 0.")
    return float(rates.std() / mean)


def pop_rsp(recommended: np.ndarray, available: np.ndarray) -> float:
    """Popularity-based ranking statistical parity (Zhu et al. 2020).

    For groups g in (head, tail): P_g = sum_u |L_u ∩ g| / sum_u |g \\ H_u| (recommended items of g
    over the items of g the users had not consumed). RSP = std(P_g) / mean(P_g); 0 = parity.

    Args:
        recommended: (2,) counts of recommended head and tail items.
        available: (2,) counts of head and tail items not in the users' histories.
    """
    return _parity(recommended, available, "PopRSP")


def pop_reo(hits: np.ndarray, relevant: np.ndarray) -> float:
    """Popularity-based ranking equal opportunity (Zhu et al. 2020): like ``pop_rsp``, restricted to
    relevant items: P_g = (relevant items of g that were recommended) / (relevant items of g).
    In the simulator "relevant" is known: the candidates the true user model ranks in its top k.

    Args:
        hits: (2,) head and tail items that were both relevant and recommended.
        relevant: (2,) head and tail items that were relevant.
    """
    return _parity(hits, relevant, "PopREO")
