"""What every world source (synthetic generator, dataset loader) hands to the simulator.

A world is a catalog, the users' personas, their initial interests and, for logged data, the
interactions it was estimated from (kept for offline evaluation and replay).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from simenv.catalog import Catalog
from simenv.persona import Persona

# The 21 occupations of MovieLens (u.occupation), shared by the synthetic world so that
# persona codes mean the same thing in both.
MOVIELENS_OCCUPATIONS: tuple[str, ...] = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)


@dataclass(frozen=True)
class Interactions:
    """Logged interactions, one entry per (user, item) event; all arrays have length n.

    Attributes:
        user: (n,) int32 dense user index.
        item: (n,) int32 dense item index.
        rating: (n,) float32 explicit rating on the dataset's scale (MovieLens: 1..5).
        timestamp: (n,) int64 seconds since the Unix epoch.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.user)
        for name, dtype in (("user", np.int32), ("item", np.int32), ("rating", np.float32),
                            ("timestamp", np.int64)):
            arr = getattr(self, name)
            if arr.shape != (n,):
                raise ValueError(f"Interactions.{name}: shape {arr.shape}, expected ({n},) like user.")
            if arr.dtype != dtype:
                raise ValueError(f"Interactions.{name}: dtype {arr.dtype}, expected {np.dtype(dtype)}.")

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class WorldData:
    """Everything needed to start a simulation.

    Attributes:
        catalog: the items.
        persona: U users' persona attributes.
        interests: (U, K, d) float32 unit rows: initial interest directions, d == catalog.dim.
        weights: (U, K) float32, non-negative, rows sum to 1: initial attention per interest.
        interactions: the logged data the world was built from; None for synthetic worlds.
    """

    catalog: Catalog
    persona: Persona
    interests: np.ndarray
    weights: np.ndarray
    interactions: Interactions | None

    def __post_init__(self) -> None:
        # Shape checks only: a norm check would cost a full pass over the largest array.
        if self.interests.ndim != 3:
            raise ValueError(f"WorldData.interests: shape {self.interests.shape}, expected (U, K, d).")
        u, k, d = self.interests.shape
        if d != self.catalog.dim:
            raise ValueError(f"WorldData.interests: d={d}, but catalog embeddings have d={self.catalog.dim}.")
        if u != self.persona.num_users:
            raise ValueError(f"WorldData.interests: {u} users, but persona has {self.persona.num_users}.")
        if self.weights.shape != (u, k):
            raise ValueError(f"WorldData.weights: shape {self.weights.shape}, expected ({u}, {k}).")
        if self.interactions is not None and len(self.interactions):
            ia = self.interactions
            if ia.user.min() < 0 or ia.user.max() >= u:
                raise ValueError(f"WorldData.interactions.user: indices must lie in 0..{u - 1}.")
            if ia.item.min() < 0 or ia.item.max() >= self.catalog.num_items:
                raise ValueError(f"WorldData.interactions.item: indices must lie in 0..{self.catalog.num_items - 1}.")

    @property
    def num_users(self) -> int:
        return int(self.interests.shape[0])

    @property
    def num_interests(self) -> int:
        return int(self.interests.shape[1])


def item_texts(titles: Sequence[str], genres: np.ndarray, genre_names: Sequence[str]) -> list[str]:
    """The text each item is embedded from: ``"{title}. Genres: {g1}, {g2}."``.

    One format for every world source, so that a title means the same thing everywhere and
    genre words give the embedding its genre structure.

    Args:
        titles: I titles.
        genres: (I, G) bool multi-hot.
        genre_names: the G names.
    """
    names = np.asarray(genre_names, dtype=object)
    return [f"{t}. Genres: {', '.join(names[row])}." for t, row in zip(titles, np.asarray(genres, bool))]


def genre_centroids(catalog: Catalog) -> np.ndarray:
    """(G, d) float32: unit mean embedding of the items of each genre (zero row if none)."""
    sums = catalog.genres.T.astype(np.float32) @ catalog.embeddings  # (G, d)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.where(norms > 0, sums / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
