"""Exposure concentration over the catalog: Gini, entropy, coverage, top-share, Lorenz curve.

``exposure`` is an (I,) array over *all* items of the catalog, zeros included (an item never shown
is the point of the measure). Position-weighted exposure counts slot j (0-based) as
1 / log2(2 + j), the DCG discount, so the top slot weighs 1.
"""
from __future__ import annotations

import math

import numpy as np

from simenv.audit.errors import UndefinedMetric


def position_weights(k: int) -> np.ndarray:
    """(k,) float64 attention of slate positions 0..k-1: 1 / log2(2 + j)."""
    return 1.0 / np.log2(2.0 + np.arange(k))


def _checked(exposure: np.ndarray) -> np.ndarray:
    x = np.asarray(exposure, np.float64)
    if x.ndim != 1 or len(x) == 0 or np.any(x < 0) or not np.all(np.isfinite(x)):
        raise ValueError("exposure: expected a non-empty 1-d array of finite, non-negative counts over all items.")
    if x.sum() <= 0:
        raise UndefinedMetric("no exposure recorded: nothing was shown yet.")
    return x


def gini(exposure: np.ndarray) -> float:
    """Gini coefficient of exposure across items: 0 when every item is shown equally, (n-1)/n when one
    item takes everything. G = sum_k (2k - n - 1) x_(k) / (n sum x), x sorted ascending, k = 1..n."""
    x = np.sort(_checked(exposure))
    n = len(x)
    k = np.arange(1, n + 1)
    return float(((2 * k - n - 1) * x).sum() / (n * x.sum()))


def gini_of_counts(counts: np.ndarray) -> float:
    """``gini`` of integer exposure counts by counting sort: the monitor's snapshots call it on a
    catalog-sized array, where a comparison sort costs more than the step being measured.

    With c_v items at count v and s_v items below it, the items at v hold sorted ranks s_v+1..s_v+c_v,
    so sum_k (2k - n - 1) x_(k) = sum_v v c_v (2 s_v + c_v - n). Counts far above n fall back to a sort.
    """
    x = np.asarray(counts)
    n = len(x)
    top = int(x.max()) if n else 0
    if top > 4 * n:
        return gini(x)
    c = np.bincount(_checked(x).astype(np.int64), minlength=top + 1).astype(np.float64)
    v = np.arange(top + 1, dtype=np.float64)
    below = np.cumsum(c) - c
    return float((v * c * (2 * below + c - n)).sum() / (n * x.sum()))


def entropy(exposure: np.ndarray) -> float:
    """Shannon entropy of the exposure distribution, normalised by log(n): 1 = uniform, 0 = one item."""
    x = _checked(exposure)
    if len(x) == 1:
        return 1.0
    p = x[x > 0] / x.sum()
    return float(-(p * np.log(p)).sum() / math.log(len(x)))


def coverage(exposure: np.ndarray) -> float:
    """Share of the catalog shown at least once."""
    x = np.asarray(exposure)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("exposure: expected a non-empty 1-d array over all items.")
    return float((x > 0).mean())


def top_share(exposure: np.ndarray, fraction: float = 0.01) -> float:
    """Share of all exposure that goes to the top ``fraction`` of items (at least one item)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}: must be in (0, 1].")
    x = _checked(exposure)
    m = max(1, int(math.ceil(fraction * len(x))))
    return float(np.sort(x)[::-1][:m].sum() / x.sum())


def lorenz(exposure: np.ndarray, points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Lorenz curve: (share of items, share of exposure they hold), items sorted from least to most
    exposed, both starting at 0 and ending at 1. ``points`` resamples it on an even grid for plotting."""
    x = np.sort(_checked(exposure))
    n = len(x)
    frac_items = np.arange(n + 1) / n
    frac_exp = np.concatenate([[0.0], np.cumsum(x) / x.sum()])
    if points is not None and points < n + 1:
        grid = np.linspace(0, 1, points)
        return grid, np.interp(grid, frac_items, frac_exp)
    return frac_items, frac_exp
