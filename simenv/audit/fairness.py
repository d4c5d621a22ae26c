"""Fairness across groups: users grouped by a persona attribute, items grouped by popularity or genre.

User groups compare engagement (click-through rate, mean rating) between, e.g., genders; item groups
compare how much exposure each group gets per item (demographic parity of exposure, Singh & Joachims
2018). A gap is max - min over groups, a ratio is min / max (1 = parity).
"""
from __future__ import annotations

import numpy as np

from simenv.audit.errors import UndefinedMetric
from simenv.persona import AGE_BANDS, Persona

USER_ATTRIBUTES = ("gender", "age_band", "occupation")


def user_groups(persona: Persona, attribute: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """(U,) int group code of each user and the group names, for a persona attribute."""
    if attribute == "gender":
        return persona.gender.astype(np.int64), tuple(persona.gender_names)
    if attribute == "occupation":
        return persona.occupation.astype(np.int64), tuple(persona.occupation_names)
    if attribute == "age_band":
        edges = list(AGE_BANDS) + [None]
        names = tuple(f"{lo}-{hi - 1}" if hi else f"{lo}+" for lo, hi in zip(edges[:-1], edges[1:]))
        return persona.age_band.astype(np.int64), names
    raise ValueError(f"group attribute {attribute!r} does not exist: use one of {USER_ATTRIBUTES}.")


def rates(numerator: np.ndarray, denominator: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """Per-group rate numerator / denominator; a group with a zero denominator is NaN (not 0)."""
    num, den = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    if num.shape != den.shape or len(names) != len(num):
        raise ValueError(f"rates: {len(names)} names for numerator {num.shape} and denominator {den.shape}.")
    out = np.full(len(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return dict(zip(names, out.tolist()))


def gap(values: dict[str, float]) -> tuple[float, float]:
    """(max - min, min / max) over the groups with a defined value."""
    v = np.array([x for x in values.values() if np.isfinite(x)])
    if len(v) < 2:
        raise UndefinedMetric(f"a group gap needs at least 2 groups with data; got {len(v)} of {len(values)}.")
    hi, lo = v.max(), v.min()
    return float(hi - lo), float(lo / hi) if hi > 0 else float("nan")


def exposure_by_item_group(exposure: np.ndarray, item_group: np.ndarray,
                           names: tuple[str, ...]) -> dict[str, float]:
    """Mean exposure per item of each item group: Exp(G) = 1/|G| sum_{i in G} x_i.

    Raises if a group has no items, since its exposure per item does not exist.
    """
    x = np.asarray(exposure, np.float64)
    g = np.asarray(item_group, np.int64)
    if g.shape != x.shape:
        raise ValueError(f"item_group: shape {g.shape}, expected {x.shape} like exposure.")
    size = np.bincount(g, minlength=len(names)).astype(np.float64)
    if np.any(size == 0):
        empty = [n for n, s in zip(names, size) if s == 0]
        raise ValueError(f"item group(s) {empty} hold no items; choose groups that partition the catalog.")
    return dict(zip(names, (np.bincount(g, weights=x, minlength=len(names)) / size).tolist()))
