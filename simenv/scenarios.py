"""Scenarios that make yesterday's alignment stale: scheduled interest shifts (trends) and item releases.

An ``InterestShift`` moves, at world tick ``at``, every interest of a share of the users toward
a trend direction, the mean embedding of one genre's items:

    i_uk <- normalise((1 - s) * i_uk + s * g),   g = normalise(mean of e_j over items j of the genre)

for the chosen users u and all their K interests; weights, memory and anchors stay as they are,
so the Friedkin-Johnsen anchor (``stubbornness``) pulls a trend back unless consumption and
friends keep it alive. Who shifts:

- ``seeding="random"``: each user independently with probability ``share``, a counter-based draw
  of (key, user), so the same seed picks the same users in any batching or sharding;
- ``seeding="hubs"``: the ``share`` most connected users of the social graph (ties by user id), a
  trend started by influencers that the social dynamics then spread to their neighbors.

An ``ItemRelease`` keeps the ``count`` items with the highest ids out of every retrieval until
tick ``at``: they exist in the catalog from the start (titles, embeddings, genres), so offline
logs and training before ``at`` never see them, and from ``at`` on they are candidates like any
other item. Releases take the last ids, so several releases partition the tail of the catalog in
order of their ticks.

The shift runs inside ``World.tick`` before that tick's social refresh, on every replica of a
sharded world alike (it reads nothing but the world itself), so sharded runs stay equal to the
single process.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from simenv.rng import uniforms

SHIFT_STREAM = 1 << 19  # within uniforms' custom streams: apart from user simulators' own streams
SEEDINGS = ("random", "hubs")


@dataclass(frozen=True)
class InterestShift:
    """At tick ``at``, a ``share`` of users move their interests a fraction ``strength`` toward ``genre``."""

    at: int
    genre: str
    share: float = 0.2
    strength: float = 0.5
    seeding: Literal["random", "hubs"] = "random"

    def __post_init__(self) -> None:
        if isinstance(self.at, bool) or not isinstance(self.at, int) or self.at < 1:
            raise ValueError(f"shift.at={self.at!r}: the world tick of the shift, an integer >= 1.")
        if not 0 < self.share <= 1 or not 0 < self.strength <= 1:
            raise ValueError(f"shift share={self.share}, strength={self.strength}: both must be in (0, 1].")
        if self.seeding not in SEEDINGS:
            raise ValueError(f"shift.seeding={self.seeding!r}: use one of {SEEDINGS}.")


def trend_direction(catalog, genre: str) -> np.ndarray:
    """(d,) float32 unit vector: the mean embedding of the genre's items."""
    if genre not in catalog.genre_names:
        raise ValueError(f"shift.genre={genre!r}: not a genre of this catalog; use one of {list(catalog.genre_names)}.")
    members = catalog.genres[:, catalog.genre_names.index(genre)]
    g = catalog.embeddings[members].mean(axis=0, dtype=np.float64)
    return (g / max(np.linalg.norm(g), 1e-12)).astype(np.float32)


def shifted_users(world, shift: InterestShift) -> np.ndarray:
    """(n,) int64 ids of the users the shift moves, sorted."""
    u = world.num_users
    if shift.seeding == "hubs":
        n = max(1, math.ceil(shift.share * u))
        order = np.lexsort((np.arange(u), -world.social.degrees()))
        return np.sort(order[:n]).astype(np.int64)
    everyone = np.arange(u, dtype=np.int64)
    draws = uniforms(world.key, everyone, np.zeros(u, np.int64), 1, SHIFT_STREAM + shift.at)[:, 0]
    return everyone[draws < shift.share]


def apply_shift(world, shift: InterestShift) -> np.ndarray:
    """Move the chosen users' interests toward the trend, in place; returns who moved."""
    users = shifted_users(world, shift)
    g = trend_direction(world.catalog, shift.genre)
    p = world.population
    moved = (1.0 - shift.strength) * p.interests[users] + shift.strength * g
    moved /= np.maximum(np.linalg.norm(moved, axis=-1, keepdims=True), 1e-12)
    p.interests[users] = moved.astype(np.float32)
    return users


@dataclass(frozen=True)
class ItemRelease:
    """``count`` new items (the last ids of the catalog not released later) become candidates at tick ``at``."""

    at: int
    count: int

    def __post_init__(self) -> None:
        for name in ("at", "count"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"release.{name}={v!r}: must be an integer >= 1.")


def available_items(num_items: int, releases: tuple[ItemRelease, ...], clock: int) -> int:
    """How many items (ids 0..n-1) retrieval may draw at world tick ``clock``."""
    return num_items - sum(r.count for r in releases if r.at > clock)
